"""kopf handlers for RotationPolicies: read the world, let `plan` decide, write what it says.

- create, update (spec, labels or annotations) and resume run the policy's steps at once: a new
  `spec.trigger` starts a rotation without waiting for the timer;
- a timer runs them every few seconds: scheduled rotations fall due, a rotation paused by a
  missing keyring goes on once the keyring is back, and one left mid-way by a crash resumes.

One step: read the policy, the namespace's Credentials and RotationPolicies and the keyring's
primary version; `plan.decide`; write status (the checkpoint) before anything else; post Events
and ledger entries; re-encrypt the batch it named, each Credential through the Credential
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
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import kopf
import pydantic

from tenantry.controller import audit, conditions
from tenantry.controller.credential import custody, reconcile
from tenantry.controller.credential import handlers as credential_handlers
from tenantry.controller.credential.problems import Problem
from tenantry.controller.rotation import plan
from tenantry.crypto import errors
from tenantry.model import common
from tenantry.model import credential as credential_model
from tenantry.model import rotation as rotation_model

logger = logging.getLogger(__name__)

POLICIES = (common.GROUP, common.VERSION, rotation_model.PLURAL)
TIMER_INTERVAL = 5.0
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

def _credential_info(obj: Mapping[str, Any]) -> plan.CredentialInfo:
    meta = obj.get("metadata") or {}
    ref = (obj.get("status") or {}).get("secretRef") or {}
    return plan.CredentialInfo(name=str(meta.get("name")), labels=dict(meta.get("labels") or {}),
                               key_version=plan.key_version(ref.get("keyId")))


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


def _primary(memo: kopf.Memo) -> tuple[str | None, str]:
    keys: custody.KeySource = memo.credentials.keys
    try:
        return keys.keyring().primary, ""
    except errors.KeyringError as error:
        return None, str(error)


async def _observe(memo: kopf.Memo, body: Mapping[str, Any],
                   spec: rotation_model.RotationPolicySpec,
                   credentials: Sequence[Mapping[str, Any]]) -> plan.World:
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    policies = await memo.api.list(common.API_VERSION, rotation_model.KIND, namespace)
    primary, keyring_problem = _primary(memo)
    return plan.World(
        namespace=namespace, name=name, generation=meta.get("generation"),
        created=str(meta.get("creationTimestamp") or ""), spec=spec, status=_status_of(body),
        credentials=[_credential_info(c) for c in credentials],
        others=[_other_policy(p) for p in policies
                if p["metadata"]["uid"] != meta["uid"]
                and not p["metadata"].get("deletionTimestamp")],
        primary=primary, now=datetime.datetime.now(datetime.UTC),
        operator_namespace=custody.operator_namespace(), keyring_problem=keyring_problem)


# -- acting ----------------------------------------------------------------------------------------

async def _tenant_name(memo: kopf.Memo, namespace: str) -> str | None:
    found = await reconcile.find_tenant(memo.api, namespace)
    return None if isinstance(found, Problem) else found.name


async def _write(memo: kopf.Memo, body: Mapping[str, Any], decision: plan.Decision,
                 tenant: str | None) -> None:
    """Status first (the checkpoint), then Events and ledger entries (versions, never keys)."""
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    if patch := decision.status_patch():
        await memo.api.merge_patch(common.API_VERSION, rotation_model.KIND, name,
                                   {"status": patch}, namespace=namespace,
                                   subresource="status")
    for type_, reason, message in decision.events:
        kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason,
                   message=message[:MAX_EVENT_MESSAGE])
    for action, changes in decision.audit:
        await audit.record(memo, tenant=tenant, action=action, kind=rotation_model.KIND,
                           namespace=namespace, name=name, changes=changes)


def _result(name: str, outcome: reconcile.Outcome | None) -> plan.Result:
    if outcome is None:
        return plan.Result(name, None, gone=True)
    version = plan.key_version(outcome.stored.key_id) if outcome.stored else None
    if outcome.problem is not None:
        return plan.Result(name, version, outcome.problem.reason, outcome.problem.message)
    return plan.Result(name, version)


async def _reencrypt(memo: kopf.Memo, name: str,
                     found: Mapping[str, Any] | None) -> plan.Result:
    if found is None:
        return plan.Result(name, None, gone=True)
    try:
        return _result(name, await credential_handlers.reconcile_now(memo, found))
    except Exception as error:  # one Credential failing must not stop the batch
        logger.exception("rotation: re-encrypting Credential %s failed", name)
        return plan.Result(name, None, "ReencryptFailed", type(error).__name__)


async def _reencrypt_batch(memo: kopf.Memo, batch: plan.Batch,
                           credentials: Sequence[Mapping[str, Any]]) -> list[plan.Result]:
    by_name = {str(c["metadata"]["name"]): c for c in credentials}
    return list(await asyncio.gather(*(_reencrypt(memo, name, by_name.get(name))
                                       for name in batch.names)))


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


async def run_steps(memo: kopf.Memo, namespace: str, name: str) -> None:
    """Run the policy's steps until one asks for no batch (idle, invalid or complete)."""
    api = memo.api
    async with _state(memo).locked(f"{namespace}/{name}"):
        done: plan.Batch | None = None
        results: Sequence[plan.Result] = ()
        tenant: str | None = None
        tenant_known = False
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
            credentials = await api.list(common.API_VERSION, credential_model.KIND, namespace)
            decision = plan.decide(await _observe(memo, body, spec, credentials), done, results)
            if not tenant_known and (decision.audit or decision.batch):
                tenant, tenant_known = await _tenant_name(memo, namespace), True
            await _write(memo, body, decision, tenant)
            if decision.batch is None:
                return
            done = decision.batch
            results = await _reencrypt_batch(memo, decision.batch, credentials)


# -- handlers ------------------------------------------------------------------------------------

@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES)
async def reconcile_policy(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await run_steps(memo, str(meta["namespace"]), str(meta["name"]))


@kopf.timer(*POLICIES, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL)
async def tick_policy(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await run_steps(memo, str(meta["namespace"]), str(meta["name"]))
