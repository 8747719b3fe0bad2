"""kopf handlers for Credentials: thin decorators that hand events to `reconcile`.

- create, update (spec, labels or annotations), resume: reconcile, write status, post Events,
  record audit entries;
  problems that can go away by themselves (a keyring fixed, a Tenant or source Secret created)
  are retried with backoff, the others wait for the spec to change;
- a timer re-verifies every Credential's ciphertext now and then, whatever the watches saw;
- a watch on the ciphertext Secrets (filtered server-side by label, so the operator never
  receives other Secrets through it) re-verifies a Credential as soon as its Secret is deleted or
  changed in any way but the operator's own last write (known by resourceVersion, not by a
  manager name anyone could claim): tampering is reported within a second. It is one watch per
  tenant namespace (`watches`), not kopf's cluster-wide one: the operator may read Secrets only
  in tenant namespaces.

A lock per Credential keeps these three from running over each other. The last intact copy of
each Credential's envelopes (ciphertext only) is kept in memory, so a tampered Secret of an
imported Credential, whose source is gone, can still be restored while the operator runs.

At start-up the operator loads its keys (see `custody`), logs which versions and fingerprints it
has (never key material), and publishes its sealing public key in a ConfigMap of its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf

from tenantry import logs, metrics
from tenantry.controller import audit, events, kubeapi
from tenantry.controller.credential import ciphertext, custody, reconcile, watches
from tenantry.crypto import errors
from tenantry.model import common
from tenantry.model import credential as credential_model

logger = logging.getLogger(__name__)

CREDENTIALS = (common.GROUP, common.VERSION, credential_model.PLURAL)
# Re-verifies every Credential this often, whatever the watches saw (missed events, a manager
# name spoofed to look like the operator's).
RESYNC_INTERVAL = 120.0
# Secret events within this window cause one verification, not one each.
VERIFY_DEBOUNCE = 0.5
# How often the published public key is compared with the sealing key file.
PUBLISH_INTERVAL = 60.0
MAX_RETRY_DELAY = 120.0
MAX_EVENT_MESSAGE = 1024


@dataclasses.dataclass
class CredentialState:
    """What the Credential handlers keep between calls (in `memo.credentials`)."""

    keys: custody.KeySource
    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)
    snapshots: dict[str, ciphertext.Snapshot] = dataclasses.field(default_factory=dict)
    """Credential UID -> last envelopes known intact (ciphertext only)."""
    tasks: dict[str, asyncio.Task[None]] = dataclasses.field(default_factory=dict)
    written: dict[str, str] = dataclasses.field(default_factory=dict)
    """"namespace/secret" -> resourceVersion the operator itself wrote last: its own writes
    coming back through the watch are not mistaken for someone else's."""
    secret_watches: watches.TenantSecretWatches | None = None
    """The ciphertext Secret watches, one per tenant namespace, made at the first namespace."""

    @contextlib.asynccontextmanager
    async def locked(self, uid: str) -> AsyncIterator[None]:
        async with self.locks.setdefault(uid, asyncio.Lock()):
            yield


def _state(memo: kopf.Memo) -> CredentialState:
    state: CredentialState = memo.credentials
    return state


@kopf.on.startup()
async def start_credentials(memo: kopf.Memo, **_: Any) -> None:
    options = memo.get("key_options") or custody.KeyOptions.from_env()
    state = CredentialState(keys=custody.KeySource(options))
    memo.credentials = state
    for line in state.keys.describe():
        (logger.warning if "unavailable" in line else logger.info)(line)
    state.tasks["publish-public-key"] = asyncio.create_task(_publish_public_key(memo, state))


async def _api(memo: kopf.Memo) -> kubeapi.KubeApi:
    """The shared client, once the operator's own start-up handler has made it."""
    while True:
        api: kubeapi.KubeApi | None = memo.get("api")
        if api is not None:
            return api
        await asyncio.sleep(0.2)


async def _publish_public_key(memo: kopf.Memo, state: CredentialState) -> None:
    """Keep ConfigMap tenantry-sealing-public-key in line with the sealing key file."""
    namespace = custody.operator_namespace()
    where = f"{namespace}/{custody.PUBLIC_KEY_CONFIGMAP}"
    published: str | None = None
    failures = 0
    api = await _api(memo)
    while True:
        try:
            keys = state.keys.sealing_keys()
        except errors.SealingKeyError:
            keys = None  # reported at start-up and on every sealed Credential
        if keys is not None and keys.fingerprint != published:
            try:
                await api.apply(custody.public_key_configmap(namespace, keys))
            except Exception as error:  # the API unreachable, refusing, ...: keep trying
                delay = min(2.0 ** failures, PUBLISH_INTERVAL)
                failures += 1
                why = (f"{error.status} {error.reason}" if isinstance(error, kubeapi.ApiError)
                       else type(error).__name__)
                logger.warning("publishing the sealing public key in ConfigMap %s failed "
                               "(%s); retrying in %.0fs", where, why, delay)
                await asyncio.sleep(delay)
                continue
            published, failures = keys.fingerprint, 0
            logger.info("sealing public key %s published in ConfigMap %s", published, where)
        await asyncio.sleep(PUBLISH_INTERVAL)


@kopf.on.cleanup()
async def stop_credentials(memo: kopf.Memo, **_: Any) -> None:
    state: CredentialState | None = memo.get("credentials")
    if state is None:
        return
    for task in list(state.tasks.values()):
        task.cancel()
    if state.secret_watches is not None:
        await state.secret_watches.stop()


# -- reconciliation ------------------------------------------------------------------------------

async def _reconcile(memo: kopf.Memo, body: Mapping[str, Any]) -> reconcile.Outcome:
    state = _state(memo)
    uid = str(body["metadata"]["uid"])
    logs.bind_reconcile(credential_model.KIND, str(body["metadata"]["name"]),
                        str(body["metadata"]["namespace"]))
    outcome = await reconcile.reconcile(memo.api, state.keys, body, state.snapshots.get(uid))
    metrics.credential_state(uid, outcome.problem is None,
                             str(outcome.problem.reason) if outcome.problem else "Encrypted")
    if outcome.snapshot is not None:
        state.snapshots[uid] = outcome.snapshot
    if outcome.written_version is not None:
        owner = outcome.owner
        state.written[f"{owner.namespace}/{ciphertext.secret_name(owner.name)}"] = \
            outcome.written_version
    return outcome


async def _report(memo: kopf.Memo, body: kopf.Body, outcome: reconcile.Outcome,
                  previous: Mapping[str, Any] | None) -> None:
    """Events on the Credential and entries in the audit ledger (no values in either)."""
    await events.post(memo.api, body, [(type_, reason, message[:MAX_EVENT_MESSAGE]) for
                                       type_, reason, message in reconcile.events(outcome,
                                                                                  previous)])
    owner = outcome.owner
    for action, changes in reconcile.audit_entries(outcome):
        await audit.record(memo, tenant=outcome.tenant.name if outcome.tenant else None,
                           action=action, kind=credential_model.KIND,
                           namespace=owner.namespace, name=owner.name, changes=changes)


def _retry_delay(retry: int) -> float:
    return float(min(5.0 * 2 ** min(retry, 10), MAX_RETRY_DELAY))


def _retry_message(outcome: reconcile.Outcome) -> str:
    if outcome.problem is not None:
        return f"{outcome.problem.reason}: {outcome.problem.message}"
    return "the source Secret changed while it was imported; importing it again"


@kopf.on.resume(*CREDENTIALS)
@kopf.on.create(*CREDENTIALS)
# Any change but status: a new spec, and also a touched annotation, which is how a person asks
# for an import now rather than at the next resync (e.g. after refilling the source Secret).
@kopf.on.update(*CREDENTIALS)
@metrics.reconciliation(credential_model.KIND)
async def reconcile_credential(body: kopf.Body, meta: kopf.Meta, status: kopf.Status,
                               patch: kopf.Patch, memo: kopf.Memo, retry: int,
                               **_: Any) -> None:
    async with _state(memo).locked(str(meta["uid"])):
        outcome = await _reconcile(memo, body)
    patch.status.update(reconcile.status_of(outcome, meta.get("generation"), status))
    await _report(memo, body, outcome, status)
    if outcome.retry:
        raise kopf.TemporaryError(_retry_message(outcome), delay=_retry_delay(retry))


@kopf.on.delete(*CREDENTIALS, optional=True)
async def forget_credential(meta: kopf.Meta, **_: Any) -> None:
    """A deleted Credential leaves the metrics (no finalizer: nothing to clean up)."""
    metrics.credential_state(str(meta.get("uid")), None)


@kopf.timer(*CREDENTIALS, interval=RESYNC_INTERVAL, initial_delay=RESYNC_INTERVAL, idle=10)
@metrics.reconciliation(credential_model.KIND)
async def resync_credential(body: kopf.Body, meta: kopf.Meta, status: kopf.Status,
                            patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    async with _state(memo).locked(str(meta["uid"])):
        outcome = await _reconcile(memo, body)
    patch.status.update(reconcile.status_of(outcome, meta.get("generation"), status))
    await _report(memo, body, outcome, status)


# -- the ciphertext Secrets: changed or deleted behind the operator's back -------------------------

async def reconcile_now(memo: kopf.Memo,
                        found: Mapping[str, Any]) -> reconcile.Outcome | None:
    """Reconcile the Credential `found` names now, under its lock; write its status, post its
    Events and audit entries. None if it is gone (or re-created) by the time the lock is held.

    What the ciphertext watch does after a Secret event, and what a rotation does for each
    Credential it re-encrypts (`controller.rotation`): one code path for every write."""
    state = _state(memo)
    api = memo.api
    meta = found["metadata"]
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    async with state.locked(uid):
        # Read again under the lock: a handler may have just written status.
        body = await api.get(common.API_VERSION, credential_model.KIND, name, namespace)
        if body is None or body["metadata"]["uid"] != uid:
            return None
        outcome = await _reconcile(memo, body)
        previous = body.get("status") or {}
        await api.merge_patch(
            common.API_VERSION, credential_model.KIND, name,
            {"status": reconcile.status_of(outcome, body["metadata"].get("generation"),
                                           previous)},
            namespace=namespace, subresource="status")
    await _report(memo, kopf.Body(body), outcome, previous)
    return outcome


async def _verify(memo: kopf.Memo, namespace: str, name: str, what: str,
                  owner_uid: str | None) -> None:
    """Re-reconcile the Credential `namespace/name` after its Secret was touched."""
    state = _state(memo)
    await asyncio.sleep(VERIFY_DEBOUNCE)
    state.tasks.pop(f"verify/{namespace}/{name}", None)
    api = memo.api
    try:
        found = await api.get(common.API_VERSION, credential_model.KIND, name, namespace)
        if found is None or found["metadata"].get("deletionTimestamp"):
            # Deleted with its Credential (garbage collection): forget its last copy too.
            state.snapshots.pop(owner_uid or "", None)
            return
        logger.info("Credential %s/%s: %s; verifying its ciphertext", namespace, name, what)
        await reconcile_now(memo, found)
    except kubeapi.ApiError as error:
        # The timer verifies again later; API errors carry no Secret values.
        logger.warning("Credential %s/%s: verification after '%s' failed: %s", namespace, name,
                       what, error)
    except Exception:
        # A task's exception would otherwise vanish; tracebacks show code, never values.
        logger.exception("Credential %s/%s: verification after '%s' failed", namespace, name,
                         what)


@kopf.on.event("", "v1", "namespaces", id="credential-namespaces")
async def follow_namespace(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Start or stop the ciphertext watch of a namespace as it becomes or stops being a tenant's.

    Every namespace, not only labelled ones: a namespace released by its Tenant loses its labels,
    and a label filter would never show that change. kopf watches namespaces anyway (the Tenant
    drift watch), so this adds no request; and the watches it starts inherit this handler's
    context, in which kopf Events can be posted.
    """
    state = _state(memo)
    if state.secret_watches is None:
        state.secret_watches = watches.TenantSecretWatches(
            memo.api.api, lambda kind, obj: _on_ciphertext_event(memo, kind, obj))
    state.secret_watches.update(event.get("type"), event.get("object") or {})


def _on_ciphertext_event(memo: kopf.Memo, kind: str, obj: Mapping[str, Any]) -> None:
    """A ciphertext Secret changed (from `watches`): verify its Credential unless the change is
    the operator's own last write."""
    meta = obj.get("metadata") or {}
    namespace, secret = meta.get("namespace"), meta.get("name")
    state = _state(memo)
    written = state.written.get(f"{namespace}/{secret}")
    if kind == "DELETED":
        what = f"Secret {secret} was deleted"
    elif kind == "MODIFIED" or (kind == "ADDED" and written is not None):
        # Not by the manager name (anyone can claim it), by the exact version it wrote. Anything
        # else is verified: at worst a needless check that finds everything in place. ADDED is
        # what a namespace's first list reports: only a Secret this operator wrote, in another
        # version than it wrote, was changed before the watch began (the rest was verified when
        # its Credential was reconciled).
        if written == meta.get("resourceVersion"):
            return
        what = f"Secret {secret} was changed by {ciphertext.last_writer(obj)}"
    else:
        return
    owner = ciphertext.owner_of(obj)
    name = owner[0] if owner else str(secret).removeprefix(ciphertext.SECRET_PREFIX)
    if not namespace or not name:
        return
    key = f"verify/{namespace}/{name}"
    if key not in state.tasks:
        state.tasks[key] = asyncio.create_task(
            _verify(memo, namespace, name, what, owner[1] if owner else None))
