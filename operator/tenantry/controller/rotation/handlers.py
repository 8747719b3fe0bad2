"""kopf handlers for RotationPolicies: read the world, let `plan` decide, write what it says.

- create, update (spec, labels or annotations) and resume run the policy's steps at once: a new
  `spec.trigger` starts a rotation without waiting for the timer;
- a timer runs them every few seconds (`plan.TIMER_INTERVAL`, `--rotation-interval`): scheduled
  rotations fall due, a rotation paused by a missing keyring goes on once the keyring is back,
  and one left mid-way by a crash resumes. `register_timer` registers it, not the import: kopf
  fixes a timer's interval when it is registered, and the interval is an option of the command.

One step: read the policy, the namespace's Credentials and RotationPolicies and the keyring's
primary version; `plan.decide` (`masterkey.decide` for a MasterKey policy, which also reads the
keyring Secret and every Credential of the cluster); record ledger entries and post Events, then
write status (the checkpoint), so a crash in between repeats them rather than losing them; write
the keyring Secret if the step says so (`KeyChange`: only that Secret, by name, at the
resourceVersion read); re-encrypt the batch it named, each Credential through the Credential
controller's own reconcile (`credential.handlers.reconcile_now`, under that Credential's lock),
so a rotation writes ciphertext exactly as any other reconcile does; then the next step. A lock
per policy keeps the handlers and the timer from running steps side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import kopf
import pydantic

from tenantry import logs, metrics
from tenantry.controller import audit, conditions, events
from tenantry.controller.credential import handlers as credential_handlers
from tenantry.controller.credential import reconcile
from tenantry.controller.credential.problems import Problem
from tenantry.controller.rotation import apisigning, masterkey, plan, signingkeys, webhookcerts
from tenantry.crypto import custody, errors, keyring
from tenantry.kubeapi import ApiError
from tenantry.model import common
from tenantry.model import credential as credential_model
from tenantry.model import rotation as rotation_model

logger = logging.getLogger(__name__)

POLICIES = (common.GROUP, common.VERSION, rotation_model.PLURAL)
MAX_EVENT_MESSAGE = 1024


@dataclasses.dataclass
class RotationState:
    """What the RotationPolicy handlers keep between calls (in `memo.rotations`)."""

    locks: dict[str, asyncio.Lock] = dataclasses.field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def locked(self, key: str) -> AsyncIterator[None]:
        async with self.locks.setdefault(key, asyncio.Lock()):
            yield


def _state(memo: kopf.Memo) -> RotationState:
    state: RotationState | None = memo.get("rotations")
    if state is None:
        state = memo.rotations = RotationState()
    return state


# -- reading the world ---------------------------------------------------------------------------

def _credential_name(obj: Mapping[str, Any], *, cluster_wide: bool) -> str:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name"))
    return masterkey.credential_key(str(meta.get("namespace")), name) if cluster_wide else name


def _credential_info(obj: Mapping[str, Any], *, cluster_wide: bool,
                     versions: Mapping[str, str | None]) -> plan.CredentialInfo:
    """`versions`: what a batch of this run left a Credential under (newer than `obj`)."""
    meta = obj.get("metadata") or {}
    ref = (obj.get("status") or {}).get("secretRef") or {}
    name = _credential_name(obj, cluster_wide=cluster_wide)
    version = versions[name] if name in versions else plan.key_version(ref.get("keyId"))
    return plan.CredentialInfo(name=name, labels=dict(meta.get("labels") or {}),
                               key_version=version)


def _other_policy(obj: Mapping[str, Any]) -> plan.OtherPolicy:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    selector = spec.get("credentialSelector")
    labels = (selector or {}).get("matchLabels") or {} if selector is not None else None
    return plan.OtherPolicy(name=str(meta.get("name")),
                            created=str(meta.get("creationTimestamp") or ""),
                            targets=frozenset(str(t) for t in spec.get("targets") or []),
                            match_labels=labels)


def _status_of(body: Mapping[str, Any]) -> rotation_model.RotationPolicyStatus:
    try:
        return rotation_model.RotationPolicyStatus.model_validate(dict(body.get("status") or {}))
    except pydantic.ValidationError:
        # Written only by the operator; if it no longer parses, start afresh (every step is
        # safe to repeat: Credentials already under the target version are skipped).
        return rotation_model.RotationPolicyStatus()


def _mounted(memo: kopf.Memo) -> tuple[str | None, tuple[str, ...], str]:
    """The mounted keyring's primary and versions (re-read when its files change)."""
    keys: custody.KeySource = memo.credentials.keys
    try:
        ring = keys.keyring()
    except errors.KeyringError as error:
        return None, (), str(error)
    return ring.primary, ring.versions, ""


async def _keyring_secret(memo: kopf.Memo) -> tuple[plan.KeyringSecret | None, str]:
    """The keyring Secret's public facts (MasterKey target), or why it cannot be had."""
    namespace = custody.operator_namespace()
    where = f"Secret {namespace}/{custody.KEYRING_SECRET}"
    try:
        found = await memo.api.get("v1", "Secret", custody.KEYRING_SECRET, namespace)
    except ApiError as error:
        return None, f"reading {where}: {error.status} {error.reason}"
    if found is None:
        return None, (f"{where} does not exist: create it with `tenantry keyring init --secret "
                      "| kubectl apply -f-` and mount it into the operator")
    try:
        return masterkey.keyring_facts(found), ""
    except errors.KeyringError as error:
        return None, f"{where}: {error}"


async def _observe(memo: kopf.Memo, body: Mapping[str, Any],
                   spec: rotation_model.RotationPolicySpec,
                   credentials: Sequence[Mapping[str, Any]], *, cluster_wide: bool,
                   versions: Mapping[str, str | None] | None = None) -> plan.World:
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    policies = await memo.api.list(common.API_VERSION, rotation_model.KIND, namespace)
    primary, mounted_versions, keyring_problem = _mounted(memo)
    secret: plan.KeyringSecret | None = None
    secret_problem = ""
    if cluster_wide:
        secret, secret_problem = await _keyring_secret(memo)
    return plan.World(
        namespace=namespace, name=name, generation=meta.get("generation"),
        created=str(meta.get("creationTimestamp") or ""), spec=spec, status=_status_of(body),
        credentials=[_credential_info(c, cluster_wide=cluster_wide, versions=versions or {})
                     for c in credentials],
        others=[_other_policy(p) for p in policies
                if p["metadata"]["uid"] != meta["uid"]
                and not p["metadata"].get("deletionTimestamp")],
        primary=primary, now=datetime.datetime.now(datetime.UTC),
        operator_namespace=custody.operator_namespace(), keyring_problem=keyring_problem,
        annotations=dict(meta.get("annotations") or {}), keyring_secret=secret,
        keyring_secret_problem=secret_problem, mounted_versions=mounted_versions)


# -- acting ----------------------------------------------------------------------------------------

async def _tenant_name(memo: kopf.Memo, namespace: str) -> str | None:
    found = await reconcile.find_tenant(memo.api, namespace, memo.credentials.directory)
    return None if isinstance(found, Problem) else found.name


async def _write(memo: kopf.Memo, body: Mapping[str, Any], decision: plan.Decision,
                 tenant: str | None) -> None:
    """Ledger entries and Events (versions, never keys) first, then status (the checkpoint),
    and only then whatever work the step asked for. A crash between the two repeats the step,
    and with it its entries and Events: they are recorded at least once, never lost."""
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    for action, changes in decision.audit:
        await audit.record(memo, tenant=tenant, action=action, kind=rotation_model.KIND,
                           namespace=namespace, name=name, changes=changes)
    await events.post(memo.api, body, [(type_, reason, message[:MAX_EVENT_MESSAGE])
                                       for type_, reason, message in decision.events])
    if patch := decision.status_patch():
        await memo.api.merge_patch(common.API_VERSION, rotation_model.KIND, name,
                                   {"status": patch}, namespace=namespace,
                                   subresource="status")
    _measure(f"{namespace}/{name}", body, decision)


def _measure(policy: str, body: Mapping[str, Any], decision: plan.Decision) -> None:
    """The step in the operator's metrics: its action, warnings, the rotation in progress."""
    for action, _ in decision.audit:
        metrics.ROTATION_STEPS.labels(action).inc()
    for type_, reason, _ in decision.events:
        if type_ == "Warning":
            metrics.ROTATION_WARNINGS.labels(reason).inc()
    status = {**(body.get("status") or {}), **(decision.status_patch() or {})}
    target, started = _in_progress(status)
    metrics.rotation_progress(policy, target, started)
    in_use = status.get("versionsInUse")
    if isinstance(in_use, Mapping) and in_use:
        for version, count in in_use.items():
            if isinstance(count, int):
                metrics.KEY_VERSION_CREDENTIALS.labels(str(version)).set(count)


# Where each target keeps the rotation in progress: the re-encryption (Credentials, and
# MasterKey's last step) in `rotation`, the other steps under the target's own status.
_ACTIVE_ROTATIONS = (("rotation", None), ("masterKey", rotation_model.Target.MASTER_KEY),
                     ("signingKeys", rotation_model.Target.API_SIGNING_KEYS),
                     ("webhookCertificates", rotation_model.Target.WEBHOOK_CERTIFICATES))


def _in_progress(status: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(target, start as Unix time) of the policy's rotation in progress, or (None, None)."""
    for field, target in _ACTIVE_ROTATIONS:
        section = status.get(field)
        active = section if field == "rotation" else (
            section.get("rotation") if isinstance(section, Mapping) else None)
        if isinstance(active, Mapping) and isinstance(active.get("startedTime"), str):
            with contextlib.suppress(ValueError):
                started = datetime.datetime.fromisoformat(
                    str(active["startedTime"]).replace("Z", "+00:00")).timestamp()
                return str(target or active.get("target")), started
    return None, None


def _result(name: str, outcome: reconcile.Outcome | None) -> plan.Result:
    if outcome is None:
        return plan.Result(name, None, gone=True)
    version = plan.key_version(outcome.stored.key_id) if outcome.stored else None
    if outcome.problem is not None:
        return plan.Result(name, version, outcome.problem.reason, outcome.problem.message)
    return plan.Result(name, version)


async def _reencrypt(memo: kopf.Memo, name: str, found: Mapping[str, Any] | None, *,
                     announce: bool) -> plan.Result:
    if found is None:
        return plan.Result(name, None, gone=True)
    try:
        return _result(name, await credential_handlers.reconcile_now(memo, found,
                                                                     announce=announce))
    except Exception as error:  # one Credential failing must not stop the batch
        logger.exception("rotation: re-encrypting Credential %s failed", name)
        return plan.Result(name, None, "ReencryptFailed", type(error).__name__)


async def reencrypt_batch(memo: kopf.Memo, batch: plan.Batch,
                           credentials: Sequence[Mapping[str, Any]], *,
                           cluster_wide: bool, announce: bool = True) -> list[plan.Result]:
    """Re-encrypt the batch's Credentials side by side, each through the Credential
    controller's own reconcile; also what `tenantry reencrypt` runs offline. `announce` False:
    no Event per Credential (a rotation posts its own per batch on the policy)."""
    by_name = {_credential_name(c, cluster_wide=cluster_wide): c for c in credentials}
    return list(await asyncio.gather(*(_reencrypt(memo, name, by_name.get(name),
                                                  announce=announce)
                                       for name in batch.names)))


async def _change_keyring(memo: kopf.Memo, body: Mapping[str, Any],
                          change: plan.KeyChange) -> None:
    """Write the keyring Secret as `change` says, only if it is still the version read (a
    409 means someone changed it meanwhile: the next step reads it again and decides anew)."""
    key = keyring.new_key() if change.action == "add" else None
    try:
        await memo.api.merge_patch("v1", "Secret", custody.KEYRING_SECRET,
                                   masterkey.keyring_patch(change, key),
                                   namespace=custody.operator_namespace())
    except ApiError as error:
        if error.status == 409:
            return
        # Never the patch (it may hold a key): status and reason only.
        message = (f"writing Secret {custody.operator_namespace()}/{custody.KEYRING_SECRET} "
                   f"({change.action} {change.version}) failed: {error.status} "
                   f"{error.reason}; retrying")
        logger.warning("rotation: %s", message)
        await events.post(memo.api, body, [events.warning("KeyringWriteFailed",
                                                          message[:MAX_EVENT_MESSAGE])])
        raise KeyringWriteFailed(message) from None
    finally:
        del key


class KeyringWriteFailed(Exception):
    """The keyring Secret could not be written (not a conflict); the timer tries again."""


async def _webhook_tls(memo: kopf.Memo) -> tuple[webhookcerts.WebhookTls | None, str]:
    """The webhook's published facts (WebhookCertificates target), or why not. Read from the
    rotation ConfigMap: the operator may not read the webhook's Secret (its keys)."""
    where = f"ConfigMap {custody.operator_namespace()}/{webhookcerts.CONFIGMAP}"
    try:
        found = await memo.api.get("v1", "ConfigMap", webhookcerts.CONFIGMAP,
                                   custody.operator_namespace())
    except ApiError as error:
        return None, f"reading {where}: {error.status} {error.reason}"
    if found is None:
        return None, f"{where} does not exist: the webhook makes it when it starts"
    try:
        return webhookcerts.facts(found), ""
    except ValueError as error:
        return None, f"{where}: {error}"


async def webhook_certificates_step(memo: kopf.Memo, body: Mapping[str, Any],
                                    spec: rotation_model.RotationPolicySpec) -> None:
    """One step of a WebhookCertificates policy: read the rotation ConfigMap (only for a policy
    in Tenantry's namespace), decide, record, then write the request there if the step asks."""
    namespace = str(body["metadata"]["namespace"])
    tls, why = (await _webhook_tls(memo) if namespace == custody.operator_namespace()
                else (None, ""))
    world = await _observe(memo, body, spec, [], cluster_wide=False)
    decision, ask = webhookcerts.decide(world, tls, why)
    await _write(memo, body, decision,
                 await _tenant_name(memo, namespace) if decision.audit else None)
    if ask is None:
        return
    try:
        await memo.api.merge_patch("v1", "ConfigMap", webhookcerts.CONFIGMAP, ask.patch(),
                                   namespace=custody.operator_namespace())
    except ApiError as error:
        if error.status != 409:  # 409: changed meanwhile; the next step reads it again
            message = (f"writing rotation request {ask.request} to ConfigMap "
                       f"{custody.operator_namespace()}/{webhookcerts.CONFIGMAP} failed: "
                       f"{error.status} {error.reason}; retrying")
            logger.warning("rotation: %s", message)
            await events.post(memo.api, body, [events.warning("WebhookRotationWriteFailed",
                                                              message[:MAX_EVENT_MESSAGE])])


async def api_signing_keys_step(memo: kopf.Memo, body: Mapping[str, Any],
                                spec: rotation_model.RotationPolicySpec) -> None:
    """Steps of an ApiSigningKeys policy (`signingkeys`): read the keyring's public facts (as
    the API publishes them) and the API replicas' Leases, decide, record, then ask the API for
    the change the step needs; the API applies it and publishes the new facts, which the next
    timer round sees (the operator never touches the keys)."""
    world = await _observe(memo, body, spec, [], cluster_wide=False)
    decision, change = signingkeys.decide(await apisigning.observe(memo, world))
    await _write(memo, body, decision, None)
    if change is not None:
        await apisigning.ask(memo, body, change)


async def _invalid_spec(memo: kopf.Memo, body: Mapping[str, Any],
                        error: pydantic.ValidationError) -> None:
    details = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"]
                        for e in error.errors()[:5])
    generation = body["metadata"].get("generation")
    previous = _status_of(body)
    condition = conditions.condition("Ready", "False", plan.INVALID_SPEC,
                                     f"spec does not validate: {details}",
                                     generation=generation)
    await memo.api.merge_patch(
        common.API_VERSION, rotation_model.KIND, str(body["metadata"]["name"]),
        {"status": {"observedGeneration": generation, "conditions": conditions.merge(
            [c.wire() for c in previous.conditions], [condition])}},
        namespace=str(body["metadata"]["namespace"]), subresource="status")


@contextlib.contextmanager
def _timed(target: rotation_model.Target) -> Iterator[None]:
    """A rotation step's work (a keyring or Secret write, a batch) in the step histogram."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.ROTATION_STEP_DURATION.labels(target.value).observe(
            time.perf_counter() - started)


async def run_steps(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Run the policy's steps until one asks for no batch (idle, invalid or complete)."""
    logs.bind_reconcile(rotation_model.KIND, name, namespace)
    api = memo.api
    async with _state(memo).locked(f"{namespace}/{name}"):
        done: plan.Batch | None = None
        results: Sequence[plan.Result] = ()
        tenant: str | None = None
        tenant_known = False
        listed: Listing | None = None
        while True:
            body = await api.get(common.API_VERSION, rotation_model.KIND, name, namespace)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                spec = rotation_model.RotationPolicySpec.model_validate(
                    dict(body.get("spec") or {}))
            except pydantic.ValidationError as error:
                await _invalid_spec(memo, body, error)
                return
            if webhookcerts.applies(spec):
                with _timed(rotation_model.Target.WEBHOOK_CERTIFICATES):
                    await webhook_certificates_step(memo, body, spec)
                return
            if signingkeys.applies(spec):
                with _timed(rotation_model.Target.API_SIGNING_KEYS):
                    await api_signing_keys_step(memo, body, spec)
                return
            # A MasterKey policy sees every Credential of the cluster (one outside Tenantry's
            # namespace is refused, and lists only its own namespace's).
            cluster_wide = masterkey.applies(spec) and namespace == custody.operator_namespace()
            fresh = listed is None or listed.cluster_wide != cluster_wide
            if fresh:
                listed = Listing(await api.list(common.API_VERSION, credential_model.KIND,
                                                namespace, all_namespaces=cluster_wide),
                                 cluster_wide)
            assert listed is not None
            world = await _observe(memo, body, spec, listed.credentials,
                                   cluster_wide=cluster_wide, versions=listed.versions)
            decision = (masterkey.decide if masterkey.applies(spec)
                        else plan.decide)(world, done, results)
            if not fresh and decision.batch is None:
                # About to complete (or stop) on a list kept from earlier steps: decide again
                # on a fresh one, so Credentials created meanwhile are not missed.
                listed = None
                continue
            if not tenant_known and (decision.audit or decision.batch):
                tenant, tenant_known = await _tenant_name(memo, namespace), True
            await _write(memo, body, decision, tenant)
            done, results = None, ()
            target = (rotation_model.Target.MASTER_KEY if masterkey.applies(spec)
                      else rotation_model.Target.CREDENTIALS)
            if decision.key_change is not None:
                try:
                    with _timed(target):
                        await _change_keyring(memo, body, decision.key_change)
                except KeyringWriteFailed:
                    return
                listed = None
                continue
            if decision.batch is None:
                return
            done = decision.batch
            with _timed(target):
                results = await reencrypt_batch(memo, decision.batch, listed.credentials,
                                                 cluster_wide=cluster_wide, announce=False)
            listed.learn(results)


@dataclasses.dataclass
class Listing:
    """The Credentials a rotation's steps look at, listed once and then kept up to date with
    what each batch did: listing them again at every step (thousands of objects, each decoded
    from JSON on the operator's one event loop) was most of a rotation's CPU time. A step that
    would complete the rotation, or stop, on a kept list decides again on a fresh one."""

    credentials: list[dict[str, Any]]
    cluster_wide: bool
    versions: dict[str, str | None] = dataclasses.field(default_factory=dict)
    """Name (as the planner names it) -> the key version a batch left it under."""

    def learn(self, results: Sequence[plan.Result]) -> None:
        gone = {r.name for r in results if r.gone}
        # Only what a batch re-encrypted: a failed Credential keeps the version its status
        # names, which is what holds the old key version in the keyring.
        self.versions.update({r.name: r.key_version for r in results
                              if not r.gone and r.reason is None and r.key_version})
        if gone:
            self.credentials = [c for c in self.credentials if _credential_name(
                c, cluster_wide=self.cluster_wide) not in gone]


# -- handlers ------------------------------------------------------------------------------------

@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
@metrics.reconciliation(rotation_model.KIND)
@events.reported
async def reconcile_policy(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await run_steps(memo, str(meta["namespace"]), str(meta["name"]))


@metrics.reconciliation(rotation_model.KIND)
@events.reported
async def tick_policy(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await run_steps(memo, str(meta["namespace"]), str(meta["name"]))


def register_timer(interval: float = plan.TIMER_INTERVAL) -> None:
    """Make `tick_policy` kopf's timer of every RotationPolicy, each `interval` seconds (the
    first round `interval` after the operator starts or the policy appears). Called once, by
    `tenantry operator run`, before kopf starts."""
    kopf.timer(*POLICIES, interval=interval, initial_delay=interval)(tick_policy)
