"""What one reconciliation sends, in what order: the requests a mass rollout pays for per Tenant.

A Tenant's first pass creates its namespace without reading it first and does not apply it again
right after; every fence has answered before the first RoleBinding that lets people in is sent
(and the tenant's view ClusterRole before the binding that points at it). A resync sends no apply
for a child the watches saw as the operator last applied it, and lists nothing for pruning; a
child someone else changed is applied over. The recording API below answers every call after
yielding to the event loop, so requests of one stage interleave as they do against the apiserver.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

from tenantry import kubeapi
from tenantry.controller import protection
from tenantry.controller.tenant import children, desired, meta, reconcile
from tenantry.controller.tenant.children import Children
from tenantry.kubeapi import KubeApi
from tenantry.model.tenant import TenantSpec

TENANT, UID = "acme", "uid-acme"
# The protection policy already enforced, as it is after the operator's first minute.
ENFORCED = reconcile.ProtectionGate(enforced=True)


class RecordingApi:
    """Accepts everything; records ("start"|"end", verb, ref) around every call."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, meta.ObjectRef | str]] = []
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.version = 100

    async def _call(self, verb: str, what: meta.ObjectRef | str) -> None:
        self.log.append(("start", verb, what))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.log.append(("end", verb, what))

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        await self._call("get", f"{kind} {name}")
        found = self.namespaces.get(name) if kind == "Namespace" else None
        return copy.deepcopy(found)

    async def create(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        await self._call("create", meta.ref(obj))
        created = {**copy.deepcopy(obj), "metadata": {**obj["metadata"],
                                                       "resourceVersion": "1"}}
        self.namespaces[obj["metadata"]["name"]] = created
        return created

    async def apply(self, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        await self._call("apply", meta.ref(obj))
        self.version += 1
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   **_: Any) -> list[dict[str, Any]]:
        await self._call("list", f"{kind} in {namespace or 'all namespaces'}")
        return []

    def sent(self, verb: str) -> list[Any]:
        return [what for phase, v, what in self.log if phase == "start" and v == verb]

    def index(self, phase: str, verb: str, ref: meta.ObjectRef) -> int:
        return self.log.index((phase, verb, ref))


class SeenAsApplied:
    """A stand-in for the watches: every wanted child is as the operator's last apply left it
    (the resourceVersion that apply returned), except those in `changed_by` (ref -> the
    manager the later write claimed; it got a newer resourceVersion)."""

    def __init__(self, wanted: list[dict[str, Any]],
                 changed_by: dict[meta.ObjectRef, str] | None = None) -> None:
        self.seen: dict[meta.ObjectRef, children.Child] = {}
        self._written: dict[meta.ObjectRef, str] = {}
        self.changed_by = changed_by or {}
        self.wanted = wanted

    def remember(self, ref: meta.ObjectRef, resource_version: str | None) -> None:
        """As the operator's apply returns: the watch then sees it at that version (unless
        someone writes it after, in `changed_by`)."""
        assert resource_version
        self._written[ref] = resource_version
        obj = next(o for o in self.wanted if meta.ref(o) == ref)
        stamped = meta.stamped(obj)
        writer = self.changed_by.get(ref, kubeapi.FIELD_MANAGER)
        later = ref in self.changed_by
        stamped["metadata"]["managedFields"] = [
            {"manager": writer, "operation": "Apply", "time": "2026-01-01T00:00:00Z"}]
        stamped["metadata"]["resourceVersion"] = resource_version + ("9" if later else "")
        self.seen[ref] = children.reduce(obj["apiVersion"], obj["kind"])(stamped)

    def written(self, ref: meta.ObjectRef) -> str | None:
        return self._written.get(ref)

    def get(self, ref: meta.ObjectRef) -> children.Child | None:
        return self.seen.get(ref)

    def applied(self, tenant_name: str) -> list[meta.ObjectRef]:
        return sorted(self.seen)


def _spec() -> TenantSpec:
    return TenantSpec.model_validate({
        "members": [{"kind": "User", "name": "alice", "role": "owner"},
                    {"kind": "User", "name": "bob", "role": "member"}],
        "namespaces": [{"name": "acme-prod"}, {"name": "acme-dev"}],
        "network": {"egress": [{"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}]}})


async def test_a_first_pass_creates_then_fences_then_lets_people_in() -> None:
    api = RecordingApi()
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        first_time=True, protection_gate=ENFORCED)
    assert not outcome.failures
    wanted = desired.desired_objects(TENANT, UID, _spec())
    namespaces = [meta.ref(o) for o in wanted if o["kind"] == "Namespace"]
    # No read before the create, no apply of the namespace just created, no list.
    assert api.sent("get") == [] and api.sent("list") == []
    assert sorted(api.sent("create")) == sorted(namespaces)
    assert sorted(api.sent("apply")) == sorted(meta.ref(o) for o in wanted
                                               if o["kind"] != "Namespace")
    fences = [meta.ref(o) for o in wanted
              if desired.fenced_namespace(meta.ref(o)) and o["kind"] != "Namespace"]
    access = [meta.ref(o) for o in wanted if desired.is_access(o)]
    assert fences and access
    last_fence = max(api.index("end", "apply", ref) for ref in fences)
    last_create = max(api.index("end", "create", ref) for ref in namespaces)
    assert all(api.index("start", "apply", ref) > last_create for ref in fences)
    assert all(api.index("start", "apply", ref) > last_fence for ref in access)
    [view_role] = [meta.ref(o) for o in wanted if o["kind"] == "ClusterRole"]
    [view_binding] = [meta.ref(o) for o in wanted if o["kind"] == "ClusterRoleBinding"]
    assert api.index("start", "apply", view_binding) > api.index("end", "apply", view_role)


async def test_a_resync_sends_no_apply_that_would_change_nothing_and_lists_nothing_to_prune(
        ) -> None:
    api = RecordingApi()
    wanted = desired.desired_objects(TENANT, UID, _spec())
    seen = cast(Children, SeenAsApplied(wanted))
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), first_time=True,
                              children=seen, protection_gate=ENFORCED)
    # The first pass created the namespaces (not applied): a pass applies them once.
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), children=seen,
                              protection_gate=ENFORCED)
    api.log.clear()
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        children=seen, resync=True, protection_gate=ENFORCED)
    assert not outcome.failures and outcome.unchanged == len(wanted)
    assert api.sent("apply") == [] and api.sent("create") == []
    # The namespaces are read to decide on them; only the tenant's own policies are listed.
    assert sorted(api.sent("get")) == ["Namespace acme-dev", "Namespace acme-prod"]
    assert sorted(api.sent("list")) == ["NetworkPolicy in acme-dev",
                                        "NetworkPolicy in acme-prod"]


async def test_a_resync_applies_over_what_someone_else_changed_and_a_spec_change_applies_all(
        ) -> None:
    api = RecordingApi()
    wanted = desired.desired_objects(TENANT, UID, _spec())
    quota = next(meta.ref(o) for o in wanted if o["kind"] == "ResourceQuota")
    policy = next(meta.ref(o) for o in wanted if o["kind"] == "NetworkPolicy")
    # The quota edited by hand; the policy by a client posing as the operator's field manager.
    seen = cast(Children, SeenAsApplied(wanted, changed_by={
        quota: "kubectl-edit", policy: kubeapi.FIELD_MANAGER}))
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), first_time=True,
                              children=seen, protection_gate=ENFORCED)
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), children=seen,
                              protection_gate=ENFORCED)
    api.log.clear()
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), children=seen,
                              resync=True, protection_gate=ENFORCED)
    assert sorted(api.sent("apply")) == sorted([quota, policy])
    # Not a resync (a spec change, a drift correction): everything is applied.
    api.log.clear()
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), children=seen,
                              protection_gate=ENFORCED)
    assert sorted(api.sent("apply")) == sorted(meta.ref(o) for o in wanted)


class PolicyApi(RecordingApi):
    """The apiserver's answer to the operator's dry-run probe: stored ("not enforced"), refused
    by the protection policy ("enforced"), or refused for another reason ("rbac")."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer
        self.probes: list[tuple[meta.ObjectRef, bool]] = []

    async def create(self, obj: dict[str, Any], **options: Any) -> dict[str, Any]:
        if obj["kind"] != "LimitRange":
            return await super().create(obj, **options)
        self.probes.append((meta.ref(obj), bool(options.get("dry_run"))))
        await self._call("create", meta.ref(obj))
        if self.answer == "enforced":
            raise kubeapi.ApiError(422, "Invalid", (
                f'secrets "{protection.PROBE_NAME}" is forbidden: ValidatingAdmissionPolicy '
                f"'{protection.POLICY_NAME}' with binding '{protection.POLICY_NAME}' denied "
                "request: names starting with 'tenantry-' are reserved"))
        if self.answer == "rbac":
            raise kubeapi.ApiError(403, "Forbidden", 'secrets is forbidden: User "x" cannot')
        return obj


# A gate that confirms a refusal at once (the real one asks again a second later).
def _gate() -> reconcile.ProtectionGate:
    return reconcile.ProtectionGate(confirm_after=0.01)


async def test_no_one_is_let_in_before_the_protection_policy_is_seen_enforced() -> None:
    api = PolicyApi("not enforced")
    gate = _gate()
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        first_time=True, protection_gate=gate)
    wanted = desired.desired_objects(TENANT, UID, _spec())
    access = {meta.ref(o) for o in wanted if desired.is_access(o)}
    fences = {meta.ref(o) for o in wanted if desired.fenced_namespace(meta.ref(o))
              and o["kind"] != "Namespace"}
    # The probe is a dry run in one of the tenant's namespaces, after they exist.
    [(probe, dry_run)] = api.probes
    assert dry_run and probe.name == protection.PROBE_NAME and probe.namespace in (
        "acme-prod", "acme-dev")
    assert api.index("start", "create", probe) > max(
        api.index("end", "create", ref) for ref in api.sent("create") if ref != probe)
    # Fences are applied, nobody's RoleBinding is; the Tenant is not Ready and is retried.
    applied = set(api.sent("apply"))
    assert fences <= applied and not access & applied
    assert not gate.enforced
    assert sorted(outcome.withheld) == ["acme-dev", "acme-prod"]
    assert any(protection.POLICY_NAME in message for message in outcome.withheld.values())
    assert list(outcome.failures) == ["RBAC"]
    status = reconcile.status_of(outcome, _spec(), 1, {})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"

    # Seen enforced (refused, and refused again a moment later): access is granted, and the
    # gate does not ask again.
    api.answer = "enforced"
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        protection_gate=gate)
    assert gate.enforced and not outcome.failures and not outcome.withheld
    assert access <= set(api.sent("apply"))
    await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), protection_gate=gate)
    assert len(api.probes) == 3


class ChangingPolicyApi(PolicyApi):
    """Answers the probes in turn from `answers` (the last one from then on)."""

    def __init__(self, *answers: str) -> None:
        super().__init__(answers[0])
        self.answers = list(answers)

    async def create(self, obj: dict[str, Any], **options: Any) -> dict[str, Any]:
        if obj["kind"] == "LimitRange":
            self.answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return await super().create(obj, **options)


async def test_one_refusal_is_not_enough_when_the_next_probe_is_let_through() -> None:
    """With several apiservers, the one that refused the probe has loaded the policy; the one
    that lets the next probe through has not. The gate stays closed until two refusals a
    moment apart."""
    api = ChangingPolicyApi("enforced", "not enforced", "enforced", "enforced")
    gate = _gate()
    first = await gate.problem(cast(KubeApi, api), "acme-prod")
    assert first is not None and "enforces" in first and not gate.enforced
    assert len(api.probes) == 2  # refused, then asked again a moment later: let through
    assert await gate.problem(cast(KubeApi, api), "acme-prod") is None and gate.enforced
    assert len(api.probes) == 4


async def test_a_refusal_is_confirmed_after_the_wait_the_gate_is_given() -> None:
    api = PolicyApi("enforced")
    gate = reconcile.ProtectionGate(confirm_after=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await gate.problem(cast(KubeApi, api), "acme-prod") is None
    assert loop.time() - started >= 0.2 and len(api.probes) == 2


async def test_tenants_that_ask_at_once_share_one_probe() -> None:
    api = PolicyApi("enforced")
    gate = _gate()
    answers = await asyncio.gather(*(gate.problem(cast(KubeApi, api), f"ns-{i}")
                                     for i in range(20)))
    assert answers == [None] * 20 and gate.enforced
    assert len(api.probes) == 2


def test_the_probe_is_named_for_this_version_of_the_policy() -> None:
    """Only this version's matchCondition leaves the probe's name to the validations; an
    earlier version, still enforced a moment after an upgrade, exempts it like every write
    of the operator's, so it is not taken for this one (the e2e test shows it on the real
    apiserver)."""
    policy, _binding = protection.protection_policy(["system:serviceaccount:t:op"])
    [condition] = policy["spec"]["matchConditions"]
    assert f"object.metadata.name == '{protection.PROBE_NAME}'" in condition["expression"]
    fingerprint = protection.PROBE_NAME.removeprefix(protection.PROBE_PREFIX)
    assert len(fingerprint) == 12 and set(fingerprint) <= set("0123456789abcdef")
    # The same whoever the operator is: the fingerprint is of what the policy refuses.
    other, _ = protection.protection_policy(["system:serviceaccount:u:other"])
    assert protection.PROBE_NAME in other["spec"]["matchConditions"][0]["expression"]


async def test_a_probe_refused_for_another_reason_is_not_taken_for_enforcement() -> None:
    api = PolicyApi("rbac")
    gate = _gate()
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        first_time=True, protection_gate=gate)
    assert not gate.enforced
    assert not {meta.ref(o) for o in desired.desired_objects(TENANT, UID, _spec())
                if desired.is_access(o)} & set(api.sent("apply"))
    [message] = outcome.failures["RBAC"]
    assert "403 Forbidden" in message and protection.POLICY_NAME in message


class LiveBindingsApi(PolicyApi):
    """PolicyApi whose RoleBindings exist as given (name in namespace -> subjects), and which
    keeps what was applied."""

    def __init__(self, answer: str, live: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        super().__init__(answer)
        self.live = live
        self.applied: dict[meta.ObjectRef, dict[str, Any]] = {}

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        if kind != "RoleBinding":
            return await super().get(api_version, kind, name, namespace)
        await self._call("get", f"{kind} {namespace}/{name}")
        subjects = self.live.get((str(namespace), name))
        if subjects is None:
            return None
        return {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": name}, "subjects": subjects}

    async def apply(self, obj: dict[str, Any], **options: Any) -> dict[str, Any]:
        self.applied[meta.ref(obj)] = obj
        return await super().apply(obj, **options)


async def test_a_member_removed_while_the_gate_is_closed_loses_access_at_once() -> None:
    """No access is granted before the protection policy is seen enforced, but none is kept
    that the spec took away: a tier's binding is cut down to who it already had."""
    wanted = desired.desired_objects(TENANT, UID, _spec())
    owner_binding = next(o for o in wanted if desired.is_access(o)
                         and o["metadata"]["namespace"] == "acme-prod"
                         and "alice" in {s["name"] for s in o["subjects"]})
    name = owner_binding["metadata"]["name"]
    # Live: alice and mallory (removed from the spec since) hold the tier; apiGroup defaulted.
    live = {("acme-prod", name): [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}]}
    api = LiveBindingsApi("not enforced", live)
    gate = _gate()
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        protection_gate=gate)
    assert not gate.enforced and list(outcome.failures) == ["RBAC"]
    applied_access = {ref: obj for ref, obj in api.applied.items() if desired.is_access(obj)}
    # Only the binding that exists was applied, with no one it did not already have.
    assert list(applied_access) == [meta.ref(owner_binding)]
    assert [s["name"] for s in applied_access[meta.ref(owner_binding)]["subjects"]] == ["alice"]


class EnforcedAfterApi(PolicyApi):
    """PolicyApi whose policy is enforced from the `after`-th probe on (None: never)."""

    def __init__(self, after: int | None) -> None:
        super().__init__("not enforced")
        self.after = after

    async def create(self, obj: dict[str, Any], **options: Any) -> dict[str, Any]:
        if obj["kind"] == "LimitRange" and self.after is not None and \
                len(self.probes) + 1 >= self.after:
            self.answer = "enforced"
        return await super().create(obj, **options)


async def test_a_patient_gate_grants_access_in_the_same_pass_once_the_policy_is_enforced() -> None:
    """The operator's gate waits a moment for the policy it just installed, probing again,
    rather than failing the pass (the Tenant would wait for a retry behind every other one)."""
    api = EnforcedAfterApi(after=3)
    gate = reconcile.ProtectionGate(patience=5.0, confirm_after=0.01)
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        first_time=True, protection_gate=gate)
    assert gate.enforced and not outcome.failures and not outcome.withheld
    # Stored twice, then refused, and refused again a moment later.
    assert len(api.probes) == 4 and all(dry_run for _, dry_run in api.probes)
    access = [meta.ref(o) for o in desired.desired_objects(TENANT, UID, _spec())
              if desired.is_access(o)]
    # Still: no RoleBinding before the probe that confirmed the policy refuses it.
    last_probe = max(i for i, (phase, verb, ref) in enumerate(api.log)
                     if phase == "end" and verb == "create" and ref == api.probes[-1][0])
    assert all(api.index("start", "apply", ref) > last_probe for ref in access)


async def test_a_patient_gate_still_withholds_access_from_a_policy_never_enforced() -> None:
    api = EnforcedAfterApi(after=None)
    gate = reconcile.ProtectionGate(patience=0.6, confirm_after=0.01)
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        first_time=True, protection_gate=gate)
    access = {meta.ref(o) for o in desired.desired_objects(TENANT, UID, _spec())
              if desired.is_access(o)}
    assert not gate.enforced and list(outcome.failures) == ["RBAC"]
    assert not access & set(api.sent("apply"))
    patient = len(api.probes)
    assert 2 <= patient <= 4  # every PROBE_INTERVAL within the patience, then it answers
    # Past its patience, one probe per pass again (the Tenant's retries back off meanwhile).
    outcome = await reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(),
                                        protection_gate=gate)
    assert len(api.probes) == patient + 1 and list(outcome.failures) == ["RBAC"]
    assert not access & set(api.sent("apply"))


async def test_tenants_reconciled_together_share_one_probe() -> None:
    api = PolicyApi("enforced")
    gate = reconcile.ProtectionGate(patience=5.0, confirm_after=0.01)
    outcomes = await asyncio.gather(*(
        reconcile.reconcile(cast(KubeApi, api), TENANT, UID, _spec(), first_time=True,
                            protection_gate=gate) for _ in range(3)))
    assert len(api.probes) == 2 and gate.enforced  # one probe: a refusal and its confirmation
    assert all(not outcome.failures for outcome in outcomes)
