"""kopf handlers for Credentials: thin decorators that hand events to `reconcile`.

- create, update (spec, labels or annotations), resume: reconcile, write status, post Events,
  record audit entries;
  problems that can go away by themselves (a keyring fixed, a Tenant or source Secret created)
  are retried with backoff, the others wait for the spec to change;
- a resync re-verifies every Credential's ciphertext now and then, whatever the watches saw
  (one task for all, not a kopf timer per Credential: kopf puts a finalizer on every object a
  timer follows, one more write at each creation and each deletion);
- a watch on the ciphertext Secrets (filtered server-side by label, so the operator never
  receives other Secrets through it) re-verifies a Credential as soon as its Secret is deleted or
  changed in any way but the operator's own last write (known by resourceVersion, not by a
  manager name anyone could claim): tampering is reported within a second. It is one watch per
  tenant namespace (`watches`), not kopf's cluster-wide one: the operator may read Secrets only
  in tenant namespaces.

A lock per Credential keeps these three from running over each other. The last intact copy of
each Credential's envelopes (ciphertext only) is kept in memory, so a tampered Secret of an
imported Credential, whose source is gone, can still be restored while the operator runs.

What one Credential costs the API. A reconcile used to read the namespace, the Tenant, the
ciphertext Secret and (for a rotation) the Credential itself before it wrote anything: four
reads of eight requests. The handlers now keep what kopf's watches deliver anyway (namespaces,
Tenants, the Credentials' latest bodies) and the ciphertext Secret as last written or verified,
offered to `reconcile` while the Secret's watch has seen no other version of it; every write of
the Secret carries the version it was verified at (see `reconcile`), so a copy out of date costs
a refused write and a read, never an unverified overwrite. The resync and a watch-reported
change always read the Secret afresh.

At start-up the operator loads its keys (see `custody`), logs which versions and fingerprints it
has (never key material), and publishes its sealing public key in a ConfigMap of its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import kopf

from tenantry import kubeapi, listwatch, logs, metrics
from tenantry.controller import audit, events
from tenantry.controller.credential import ciphertext, reconcile, watches
from tenantry.crypto import custody, errors
from tenantry.model import common
from tenantry.model import credential as credential_model
from tenantry.model import tenant as tenant_model

logger = logging.getLogger(__name__)

CREDENTIALS = (common.GROUP, common.VERSION, credential_model.PLURAL)
# Re-verifies every Credential this often, whatever the watches saw (missed events, a manager
# name spoofed to look like the operator's); this many at a time.
RESYNC_INTERVAL = 120.0
RESYNC_CONCURRENCY = 8
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
    ciphertexts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """"namespace/secret" -> the ciphertext Secret as the operator last wrote it or verified it
    intact: its own writes coming back through the watch are known by their resourceVersion
    (not mistaken for someone else's), and a reconcile need not read it again."""
    secret_watches: watches.TenantSecretWatches | None = None
    """The ciphertext Secret watches, one per tenant namespace, made at the first namespace."""
    directory: watches.Directory = dataclasses.field(default_factory=watches.Directory)
    bodies: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Credential UID -> its body as kopf's watch last delivered it (no managedFields)."""

    def known_version(self, key: str) -> str | None:
        """resourceVersion of the ciphertext Secret `key` as last written or verified."""
        found = self.ciphertexts.get(key)
        return None if found is None else listwatch.version_of(found)

    def cached_secret(self, namespace: str, secret: str) -> dict[str, Any] | None:
        """The Secret as last written or verified, if its watch has seen no other version."""
        key = f"{namespace}/{secret}"
        known = self.known_version(key)
        if known is None or self.secret_watches is None or \
                self.secret_watches.seen_version(namespace, secret) != known:
            return None
        return self.ciphertexts[key]

    def never_written(self, body: Mapping[str, Any], secret: str) -> bool:
        """Whether the Credential never had a ciphertext Secret and its watch lists none: a
        first encryption, whose write is then a create (refused if one exists after all)."""
        namespace = str(body["metadata"]["namespace"])
        return (not isinstance((body.get("status") or {}).get("secretRef"), Mapping)
                and f"{namespace}/{secret}" not in self.ciphertexts
                and self.secret_watches is not None
                and self.secret_watches.lists_none(namespace, secret))

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
    state.tasks["resync"] = asyncio.create_task(_resync_forever(memo, state))


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

async def _reconcile(memo: kopf.Memo, body: Mapping[str, Any], *,
                     fresh: bool = False) -> reconcile.Outcome:
    """`fresh`: read the ciphertext Secret whatever is known of it (the resync, a change the
    watch reported)."""
    state = _state(memo)
    meta = body["metadata"]
    uid, name, namespace = str(meta["uid"]), str(meta["name"]), str(meta["namespace"])
    logs.bind_reconcile(credential_model.KIND, name, namespace)
    secret = ciphertext.secret_name(name)
    cached = None if fresh else state.cached_secret(namespace, secret)
    outcome = await reconcile.reconcile(
        memo.api, state.keys, body, state.snapshots.get(uid), directory=state.directory,
        cached=cached, absent=not fresh and cached is None and state.never_written(body, secret))
    metrics.credential_state(uid, outcome.problem is None,
                             str(outcome.problem.reason) if outcome.problem else "Encrypted")
    if outcome.snapshot is not None:
        state.snapshots[uid] = outcome.snapshot
    key = f"{namespace}/{secret}"
    if outcome.secret is not None:
        state.ciphertexts[key] = outcome.secret
    elif outcome.written_version is None:
        # Not written, not verified intact (tampered, unreadable, gone...): read it next time.
        state.ciphertexts.pop(key, None)
    return outcome


async def _report(memo: kopf.Memo, body: kopf.Body, outcome: reconcile.Outcome,
                  previous: Mapping[str, Any] | None, *, announce: bool = True) -> None:
    """Events on the Credential and entries in the audit ledger (no values in either).
    `announce` False: no Event for a routine re-encryption (a rotation posts one per batch on
    its RotationPolicy; the ledger still gets an entry per Credential)."""
    await events.post(memo.api, body, [
        (type_, reason, message[:MAX_EVENT_MESSAGE]) for type_, reason, message in
        reconcile.events(outcome, previous, announce_reencryption=announce)])
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
@events.reported
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


@metrics.reconciliation(credential_model.KIND)
@events.reported
async def resync_credential(memo: kopf.Memo, body: Mapping[str, Any]) -> None:
    """Verify one Credential's ciphertext afresh (its Secret read again) and repair it."""
    await reconcile_now(memo, body, fresh=True)


async def _resync_forever(memo: kopf.Memo, state: CredentialState) -> None:
    """Every RESYNC_INTERVAL, `resync_credential` for each Credential kopf's watch knows."""
    await _api(memo)
    limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

    async def one(uid: str) -> None:
        async with limit:
            body = state.bodies.get(uid)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return  # deleted meanwhile
            try:
                await resync_credential(memo=memo, body=body)
            except Exception:
                # The next round tries again; tracebacks show code, never values.
                meta = body["metadata"]
                logger.exception("Credential %s/%s: resync failed", meta.get("namespace"),
                                 meta.get("name"))

    while True:
        await asyncio.sleep(RESYNC_INTERVAL)
        await asyncio.gather(*(one(uid) for uid in list(state.bodies)))


# -- the ciphertext Secrets: changed or deleted behind the operator's back -------------------------

async def reconcile_now(memo: kopf.Memo, found: Mapping[str, Any], *, fresh: bool = False,
                        announce: bool = True) -> reconcile.Outcome | None:
    """Reconcile the Credential `found` names now, under its lock; write its status, post its
    Events and audit entries. None if it is gone (or re-created) by the time the lock is held.

    What the ciphertext watch and the resync do (`fresh`: the Secret read again), and what a
    rotation does for each Credential it re-encrypts (`controller.rotation`; `announce` False:
    its batches are announced on the policy): one code path for every write."""
    state = _state(memo)
    api = memo.api
    meta = found["metadata"]
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    async with state.locked(uid):
        # Under the lock, the latest body kopf's watch delivered (a handler may have just
        # written status), or read it when there is none (no watch: `tenantry reencrypt`).
        body: dict[str, Any] | None = state.bodies.get(uid)
        if body is None or body["metadata"].get("deletionTimestamp"):
            body = await api.get(common.API_VERSION, credential_model.KIND, name, namespace)
        if body is None or body["metadata"]["uid"] != uid:
            return None
        outcome = await _reconcile(memo, body, fresh=fresh)
        previous = body.get("status") or {}
        status = reconcile.status_of(outcome, body["metadata"].get("generation"), previous)
        if not reconcile.status_unchanged(status, previous):
            await api.merge_patch(common.API_VERSION, credential_model.KIND, name,
                                  {"status": status}, namespace=namespace,
                                  subresource="status")
    await _report(memo, kopf.Body(cast(kopf.RawBody, body)), outcome, previous,
                  announce=announce)
    return outcome


async def _verify(memo: kopf.Memo, namespace: str, name: str, what: str,
                  owner_uid: str | None) -> None:
    """Re-reconcile the Credential `namespace/name` after its Secret was touched."""
    state = _state(memo)
    await asyncio.sleep(VERIFY_DEBOUNCE)
    state.tasks.pop(f"verify/{namespace}/{name}", None)
    secret = ciphertext.secret_name(name)
    if state.cached_secret(namespace, secret) is not None:
        # The last version seen is the operator's own write, whose event came before the
        # write's answer (so it was not recognised at once): nothing changed behind its back.
        return
    state.ciphertexts.pop(f"{namespace}/{secret}", None)
    api = memo.api
    try:
        found = await api.get(common.API_VERSION, credential_model.KIND, name, namespace)
        if found is None or found["metadata"].get("deletionTimestamp"):
            # Deleted with its Credential (garbage collection): forget its last copy too.
            state.snapshots.pop(owner_uid or "", None)
            return
        logger.info("Credential %s/%s: %s; verifying its ciphertext", namespace, name, what)
        await reconcile_now(memo, found, fresh=True)
    except kubeapi.ApiError as error:
        # The timer verifies again later; API errors carry no Secret values.
        logger.warning("Credential %s/%s: verification after '%s' failed: %s", namespace, name,
                       what, error)
    except Exception:
        # A task's exception would otherwise vanish; tracebacks show code, never values.
        logger.exception("Credential %s/%s: verification after '%s' failed", namespace, name,
                         what)


FEEDERS = ("credential-namespaces", "credential-tenants", "credential-bodies")


class _QuietFeeders(logging.Filter):
    """Drop kopf's "Handler 'credential-…' succeeded." line: the feeders below run on every
    watch event of every Namespace, Tenant and Credential; they reconcile nothing, and a line
    each would bury the reconciliations' own (their failures are still logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.endswith(" succeeded.")
                    and any(f"Handler '{feeder}'" in message for feeder in FEEDERS))


logging.getLogger("kopf.objects").addFilter(_QuietFeeders())


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
    state.directory.update_namespace(event.get("type"), event.get("object") or {})


@kopf.on.event(common.GROUP, common.VERSION, tenant_model.PLURAL, id="credential-tenants")
async def follow_tenant(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the Tenants' UIDs and namespaces for the reconciles (kopf watches Tenants anyway)."""
    _state(memo).directory.update_tenant(event.get("type"), event.get("object") or {})


@kopf.on.event(*CREDENTIALS, id="credential-bodies")
async def follow_credential(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep each Credential's latest body, so `reconcile_now` need not read it again."""
    obj = event.get("object") or {}
    meta = obj.get("metadata") or {}
    uid = meta.get("uid")
    if not isinstance(uid, str):
        return
    state = _state(memo)
    if event.get("type") == "DELETED":
        state.bodies.pop(uid, None)
        state.ciphertexts.pop(f"{meta.get('namespace')}/"
                              f"{ciphertext.secret_name(str(meta.get('name')))}", None)
    else:
        state.bodies[uid] = {**obj, "metadata": {k: v for k, v in meta.items()
                                                 if k != "managedFields"}}


def _on_ciphertext_event(memo: kopf.Memo, kind: str, obj: Mapping[str, Any]) -> None:
    """A ciphertext Secret changed (from `watches`): verify its Credential unless the change is
    the operator's own last write."""
    meta = obj.get("metadata") or {}
    namespace, secret = meta.get("namespace"), meta.get("name")
    state = _state(memo)
    written = state.known_version(f"{namespace}/{secret}")
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
