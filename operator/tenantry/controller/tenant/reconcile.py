"""Reconcile one Tenant: claim namespaces, apply children in order, prune, report.

This is the I/O shell around the pure builders of this package: it reads what exists, asks the
builders what should exist, server-side applies the difference under one field manager, and
turns the outcome into status conditions. Safe to run any number of times (every step is
idempotent), which is what lets kopf retry it, the drift watch re-run it, and a restarted
operator resume it.

Two rules guard the dangerous moments. A namespace is taken (created or adopted) by one atomic
write that fails when another tenant got there first (`claim_namespace`), never by deciding
from a read and applying: every tenant shares one field manager, so the last apply would win.
And access follows isolation per namespace: RoleBindings are applied in a namespace only when
all of its fences (the Namespace, NetworkPolicies, ResourceQuota, LimitRange) applied in the
same pass (`_withhold_access`). The operator's own Secret binding in each namespace is applied
with the fences and is not access: it is never withheld or revoked with the members' bindings.
Nor is access granted anywhere before the apiserver enforces the policy that keeps tenants' hands
off those fences (`ProtectionGate`): it does so a moment after the operator first installs it.

It also reports, without blocking anything, on the NetworkPolicies tenants wrote themselves:
admission refuses a policy wider than the Tenant's allow-list when it is written, but narrowing
the allow-list later can leave existing ones wider (`TenantNetworkPolicies` condition).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from tenantry import kubeapi, metrics
from tenantry.admission import networkpolicy
from tenantry.admission.violation import Violation
from tenantry.controller import conditions, protection
from tenantry.controller.tenant import children as child_view
from tenantry.controller.tenant import desired, meta, namespaces, rbac
from tenantry.controller.tenant.children import Children
from tenantry.crypto import custody
from tenantry.kubeapi import ApiError, KubeApi
from tenantry.model import tenant

logger = logging.getLogger(__name__)

# Which status condition reports on which kind of child.
PART_OF_KIND = {
    "Namespace": "Namespaces",
    "NetworkPolicy": "NetworkPolicies",
    "ResourceQuota": "Quotas",
    "LimitRange": "Quotas",
    "RoleBinding": "RBAC",
    "ClusterRole": "RBAC",
    "ClusterRoleBinding": "RBAC",
}
PARTS = ("Namespaces", "NetworkPolicies", "Quotas", "RBAC")
# A report on the tenant's own NetworkPolicies: shown, never part of Ready (nothing the operator
# applies is wrong, and a tenant's policy must not take its Tenant down).
POLICY_REPORT = "TenantNetworkPolicies"
WIDER_THAN_ALLOW_LIST = "WiderThanAllowList"
_REPORTED_POLICIES = 5
_REPORT_ENTRY_LENGTH = 200
_REPORT_LENGTH = 1024

# Apply stages: isolation before access (see desired.py); roles before the bindings that point
# at them (binding a role that does not exist yet fails RBAC's escalation check). Objects within
# a stage go in parallel. The operator's own Secret binding goes with the fences (its ClusterRole
# is shipped in manifests/, and the operator may bind it by name). The tenant's own view
# ClusterRole lets nobody in until its binding exists, so it goes with the fences too: one
# round trip fewer per pass than a stage of its own.
_STAGE_OF_KIND = {"Namespace": 0, "NetworkPolicy": 1, "ResourceQuota": 1, "LimitRange": 1,
                  "ClusterRole": 1, "RoleBinding": 2, "ClusterRoleBinding": 2}
_FENCE_STAGE = _STAGE_OF_KIND["NetworkPolicy"]
_ACCESS_STAGE = _STAGE_OF_KIND["RoleBinding"]


def _stage(obj: meta.Manifest) -> int:
    if rbac.is_operator_access(obj):
        return _FENCE_STAGE
    return _STAGE_OF_KIND.get(obj["kind"], _ACCESS_STAGE)


# How many Tenants reconcile at once. Unbounded, a mass rollout (200 Tenants created together,
# bench/bench_tenants.py) interleaves every tenant's stages, so nearly all of them turn Ready
# only at the very end (create->Ready p50 close to p99 close to the whole run). Bounded, they
# finish about in the order they came while the apiserver stays as busy: each pass sends up to
# one stage of applies (the fences: nine for one namespace) in parallel. Waiters are served first
# come first.
MAX_CONCURRENT_RECONCILES = 16
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


def reconcile_slots() -> asyncio.Semaphore:
    """The running loop's bound on concurrent reconciles (one per loop, made on first use)."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
    return slots


@dataclasses.dataclass(frozen=True)
class WiderPolicy:
    """A NetworkPolicy a tenant wrote that is wider than its Tenant allows, and the first way."""

    namespace: str
    name: str
    violation: Violation

    def __str__(self) -> str:
        text = f"{self.namespace}/{self.name}: {self.violation.field_path} {self.violation.message}"
        if len(text) <= _REPORT_ENTRY_LENGTH:
            return text
        return text[:_REPORT_ENTRY_LENGTH - 3] + "..."


def wider_policies(policies: Iterable[Mapping[str, Any]], spec: tenant.TenantSpec,
                   tenant_name: str, tenant_namespaces: Collection[str]) -> list[WiderPolicy]:
    """The policies (as read from the API) that the operator did not make and that open more
    than `spec` allows, each with its first violation, sorted (pure)."""
    found = []
    for policy in policies:
        if meta.is_operator_made(policy, tenant_name):
            continue
        violations = networkpolicy.check_network_policy(
            policy, spec, tenant_name=tenant_name, tenant_namespaces=tenant_namespaces)
        if violations:
            found.append(WiderPolicy(policy["metadata"].get("namespace", ""),
                                     policy["metadata"]["name"], violations[0]))
    return sorted(found, key=lambda w: (w.namespace, w.name))


def policy_report(outcome: Outcome, generation: int | None) -> dict[str, Any]:
    """The `TenantNetworkPolicies` condition (pure); bounded, whatever the number of policies."""
    if outcome.wider:
        message = (f"{len(outcome.wider)} NetworkPolicies written in the tenant's namespaces "
                   "are wider than its egress allow-list and namespaces (their next update is "
                   "refused; narrow or delete them): ")
        tail = f"; and {len(outcome.wider)} more"  # room for the longest possible tail
        shown = 0
        for wider in outcome.wider[:_REPORTED_POLICIES]:
            entry = ("; " if shown else "") + str(wider)
            if len(message) + len(entry) + len(tail) > _REPORT_LENGTH:
                break
            message += entry
            shown += 1
        if shown < len(outcome.wider):
            message += f"; and {len(outcome.wider) - shown} more"
        return conditions.condition(POLICY_REPORT, "False", WIDER_THAN_ALLOW_LIST, message,
                                    generation=generation)
    if outcome.policies_unchecked:
        return conditions.condition(POLICY_REPORT, "Unknown", "ListFailed",
                                    "; ".join(outcome.policies_unchecked)[:_REPORT_LENGTH],
                                    generation=generation)
    return conditions.condition(
        POLICY_REPORT, "True", "WithinAllowList",
        f"{outcome.policies_checked} NetworkPolicies written in the tenant's namespaces, all "
        "within its allow-list", generation=generation)


def newly_wider(previous: Mapping[str, Any] | None,
                current: Mapping[str, Any]) -> dict[str, Any] | None:
    """The policy report of `current` status when it is worth a Warning event: it turned False,
    or names other policies than before. None otherwise, so a resync repeats no event."""
    def report(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return next((c for c in (status or {}).get("conditions") or []
                     if c.get("type") == POLICY_REPORT), None)

    now, before = report(current), report(previous)
    if now is None or now["status"] != "False":
        return None
    if before and before.get("status") == "False" and before.get("message") == now["message"]:
        return None
    return now


@dataclasses.dataclass
class Outcome:
    """What one reconciliation did, for status and events."""

    decisions: dict[str, namespaces.Decision]
    failures: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    deleted: list[str] = dataclasses.field(default_factory=list)
    released: list[str] = dataclasses.field(default_factory=list)
    withheld: dict[str, str] = dataclasses.field(default_factory=dict)
    """Namespaces given no access this pass because a fence failed -> why (for status)."""
    revoked: list[str] = dataclasses.field(default_factory=list)
    """RoleBindings deleted because a fence of their namespace is missing altogether."""
    wider: list[WiderPolicy] = dataclasses.field(default_factory=list)
    """The tenant's own NetworkPolicies that open more than its spec allows now."""
    policies_checked: int = 0
    policies_unchecked: list[str] = dataclasses.field(default_factory=list)
    """Namespaces whose NetworkPolicies could not be listed, with the error."""
    unchanged: int = 0
    """Applies left out because the child was as the operator last applied it (resync)."""

    def fail(self, part: str, message: str) -> None:
        self.failures.setdefault(part, []).append(message)


CONFIRM_AFTER = 0.5
"""Seconds between the first refusal of the probe and the one that opens the gate."""
PROTECTION_PATIENCE = 5.0
"""Seconds after the operator's first probe during which it waits for the protection policy in
place (`ProtectionGate.patience`): it installs the policy as it starts, and the apiserver
enforces it about a second later."""
PROBE_INTERVAL = 0.25
"""Seconds between probes while the gate is patient."""


@dataclasses.dataclass
class ProtectionGate:
    """Whether the apiserver enforces the protection policy yet (`controller.protection`).

    Learned once per operator process, from this version of the policy refusing the operator's
    dry-run probe in a tenant namespace; until then every Tenant's RoleBindings are withheld
    and the Tenant is retried. Once seen enforced, it stays so: the operator only ever
    re-applies the policy.

    Two refusals `confirm_after` seconds apart open it, not one (the probe asks again after
    the first, while the reconciliations that asked wait). With several apiservers (HA), each
    loads a new policy from its own watch, and both probes usually travel the same kept-alive
    connection to the same one: the second refusal does not look at the others, it gives them
    that much grace, which their watches (following the same etcd) normally need far less of.

    One probe at a time: Tenants reconciled together wait for the probe under way and take its
    answer. Within `patience` seconds of its first probe, a probe that finds the policy not
    enforced yet (stored, nothing refused) is repeated every `PROBE_INTERVAL` before the gate
    answers, so the Tenants created as the operator starts get access in that same pass rather
    than a retry behind every Tenant queued meanwhile (in bench/bench_tenants.py those few were
    the run's create->Ready p99). Past that window one probe decides; a refusal for any other
    reason is answered at once. Either way nothing is granted before the policy is seen
    refusing the probe.
    """

    enforced: bool = False
    confirm_after: float = CONFIRM_AFTER
    patience: float = 0.0
    """0: one probe per call (`handlers` gives the operator's gate `PROTECTION_PATIENCE`)."""
    _first_refused: float | None = dataclasses.field(default=None, init=False, repr=False)
    _patient_until: float | None = dataclasses.field(default=None, init=False, repr=False)
    _probing: asyncio.Future[str | None] | None = dataclasses.field(
        default=None, init=False, repr=False)

    async def problem(self, api: KubeApi, namespace: str) -> str | None:
        """None once the policy is enforced; otherwise why no access may be granted yet."""
        if self.enforced:
            return None
        if self._probing is None or self._probing.done():  # never an earlier probe's answer
            self._probing = asyncio.ensure_future(self._probe(api, namespace))
        # Shielded: one reconciliation cancelled does not cancel the others' probe.
        return await asyncio.shield(self._probing)

    async def _probe(self, api: KubeApi, namespace: str) -> str | None:
        loop = asyncio.get_running_loop()
        if self._patient_until is None:
            self._patient_until = loop.time() + self.patience
        while True:
            problem, not_yet = await self._ask(api, namespace)
            now = loop.time()
            if problem is not None:
                self._first_refused = None
                if not_yet and now < self._patient_until:
                    await asyncio.sleep(PROBE_INTERVAL)
                    continue
                return problem
            if self._first_refused is None:
                self._first_refused = now
            waited = now - self._first_refused
            if waited >= self.confirm_after:
                break
            await asyncio.sleep(self.confirm_after - waited)
        self.enforced = True
        logger.info("the apiserver enforces ValidatingAdmissionPolicy %s: granting tenants "
                    "access", protection.POLICY_NAME)
        return None

    async def _ask(self, api: KubeApi, namespace: str) -> tuple[str | None, bool]:
        """(None when this version of the policy refused the probe, otherwise why not; whether
        the policy is merely not enforced yet, the probe stored: worth asking again soon)."""
        try:
            await api.create(protection.probe_object(namespace), dry_run=True)
        except ApiError as error:
            if protection.refused_by_policy(error.status, error.message):
                return None, False
            return (f"no access granted until the apiserver is seen enforcing "
                    f"ValidatingAdmissionPolicy {protection.POLICY_NAME}: its dry-run probe "
                    f"in namespace {namespace} failed with {error.status} {error.reason}"), False
        return (f"no access granted until the apiserver enforces ValidatingAdmissionPolicy "
                f"{protection.POLICY_NAME} (a policy takes a moment to load after it is "
                f"installed; if this persists, check that the policy and its binding exist)"), True


def _selector(tenant_name: str, labels: Mapping[str, str] | None = None) -> str:
    """What the operator applied for this tenant: both of its labels, never the tenant label
    alone. A namespace (or object) an admin merely labelled for a tenant is never pruned, so
    nothing the operator did not make is deleted or released behind someone's back."""
    chosen = meta.tenant_labels(tenant_name) if labels is None else labels
    return ",".join(f"{key}={value}" for key, value in chosen.items())


async def applied_children(api: KubeApi, tenant_name: str) -> list[meta.ObjectRef]:
    """Everything carrying this tenant's label now, across all child kinds, and the operator's
    own Secret bindings in its namespaces (labelled apart, see `rbac.operator_access_labels`)."""
    kinds = [*desired.CHILD_KINDS, (rbac.RBAC_API_VERSION, "RoleBinding")]
    selectors = [_selector(tenant_name)] * len(desired.CHILD_KINDS) + [
        _selector(tenant_name, rbac.operator_access_labels(tenant_name))]
    listings = await asyncio.gather(*(
        api.list(api_version, kind, all_namespaces=True, label_selector=selector)
        for (api_version, kind), selector in zip(kinds, selectors, strict=True)
    ))
    refs = []
    for (api_version, kind), items in zip(kinds, listings, strict=True):
        for item in items:
            refs.append(meta.ref({"apiVersion": api_version, "kind": kind, **item}))
    return refs


def _labels(found: dict[str, Any] | None) -> dict[str, str] | None:
    return None if found is None else dict(found["metadata"].get("labels") or {})


async def claim_namespace(api: KubeApi, tenant_name: str, entry: tenant.TenantNamespace,
                          mode: tenant.EnforcementMode, *,
                          assume_absent: bool = False) -> tuple[namespaces.Decision, str | None]:
    """Decide on one namespace and, to create or adopt it, take it atomically.

    Create is a plain POST (create-if-absent) and adoption an apply carrying the resourceVersion
    that was read, so of several tenants deciding at once exactly one write succeeds; a loser
    gets 409, re-reads and decides again from what the winner left (normally: owned by another
    tenant, a conflict). Returns the decision and, when this pass could not settle it, a failure
    message (the handler retries). Nothing else touches the namespace before its claim succeeds.

    `assume_absent` (a Tenant's first pass, whose namespaces are normally new) skips the first
    read and tries the create straight away: the POST is the same atomic claim, and its 409 sends
    the loop back to reading and deciding as usual, so it decides nothing from the assumption.
    """
    found = None if assume_absent else await api.get("v1", "Namespace", entry.name)
    # The optimistic create is not a decision from a read: it does not use up an attempt.
    for _attempt in range(namespaces.CLAIM_ATTEMPTS + int(assume_absent)):
        decision = namespaces.decide(tenant_name, entry, _labels(found))
        if not decision.claims:
            return decision, None
        manifest = namespaces.claim(tenant_name, entry.name, mode, found)
        try:
            if found is None:
                await api.create(manifest, field_manager=kubeapi.FIELD_MANAGER)
            else:
                await api.apply(manifest)
            metrics.CHILDREN_APPLIED.labels("Namespace").inc()
        except ApiError as error:
            if error.status != 409:
                message = (f"claiming namespace {entry.name}: {error.reason or error.status}: "
                           f"{error.message}")
                return namespaces.Decision(namespaces.Action.CONFLICT, "NamespaceClaimFailed",
                                           message), message
            found = await api.get("v1", "Namespace", entry.name)
            continue
        return decision, None
    lost = namespaces.contended(tenant_name, entry.name)
    return lost, lost.message


async def claim_namespaces(api: KubeApi, tenant_name: str, spec: tenant.TenantSpec, *,
                           assume_absent: bool = False) -> Outcome:
    """An Outcome holding the decision for every namespace of the spec, claims taken."""
    claims = await asyncio.gather(*(claim_namespace(api, tenant_name, entry,
                                                    spec.pod_security.mode,
                                                    assume_absent=assume_absent)
                                    for entry in spec.namespaces))
    outcome = Outcome(decisions={})
    for entry, (decision, failure) in zip(spec.namespaces, claims, strict=True):
        outcome.decisions[entry.name] = decision
        if failure:
            outcome.fail("Namespaces", failure)
    return outcome


def _not_just_created(wanted: Sequence[meta.Manifest],
                      outcome: Outcome) -> list[meta.Manifest]:
    """`wanted` without the Namespaces this pass created: the claim's POST was exactly the
    manifest `desired` holds (`namespaces.claim`), so applying it again right after would change
    nothing and cost a round trip before the fences (the next pass applies it as usual)."""
    created = {name for name, decision in outcome.decisions.items()
               if decision.action is namespaces.Action.CREATE}
    return [obj for obj in wanted
            if not (obj["kind"] == "Namespace" and obj["metadata"]["name"] in created)]


async def _apply_stage(api: KubeApi, objects: Sequence[meta.Manifest], outcome: Outcome,
                       children: Children | None = None) -> list[meta.ObjectRef]:
    """Apply objects in parallel; record and return the ones the cluster refused (and, in
    `children`, the resourceVersion each accepted apply returned)."""
    results = await asyncio.gather(*(api.apply(obj) for obj in objects),
                                   return_exceptions=True)
    failed = []
    for obj, result in zip(objects, results, strict=True):
        if isinstance(result, ApiError):
            outcome.fail(PART_OF_KIND.get(obj["kind"], "RBAC"),
                         f"{meta.ref(obj)}: {result.reason or result.status}: "
                         f"{result.message}")
            failed.append(meta.ref(obj))
        elif isinstance(result, BaseException):
            raise result
        else:
            metrics.CHILDREN_APPLIED.labels(str(obj["kind"])).inc()
            if children is not None:
                children.remember(meta.ref(obj), (result.get("metadata") or {}).get(
                    "resourceVersion") if isinstance(result, Mapping) else None)
    return failed


async def _apply_all(api: KubeApi, tenant_name: str, objects: Sequence[meta.Manifest],
                     outcome: Outcome, children: Children | None = None, *,
                     skip_unchanged: bool = False) -> None:
    """Apply `objects` stage by stage; with `children` and `skip_unchanged`, leave out what
    would not change."""
    stages: dict[int, list[meta.Manifest]] = {}
    for obj in objects:
        stages.setdefault(_stage(obj), []).append(obj)
    failed: list[meta.ObjectRef] = []
    for stage in sorted(stages):
        # Fences come in earlier stages, so by the access stage every failed fence is known.
        batch = desired.withhold_access(stages[stage], desired.unfenced(failed))
        if children is not None and skip_unchanged:
            changing = [obj for obj in batch if not child_view.unchanged(
                children.get(meta.ref(obj)), obj, children.written(meta.ref(obj)))]
            outcome.unchanged += len(batch) - len(changing)
            batch = changing
        failed += await _apply_stage(api, batch, outcome, children)
    gaps = desired.unfenced(failed)
    if gaps:
        await _withhold_access(api, tenant_name, objects, gaps, outcome)


async def _withhold_access(api: KubeApi, tenant_name: str, wanted: Sequence[meta.Manifest],
                           gaps: dict[str, list[meta.ObjectRef]], outcome: Outcome) -> None:
    """Report the namespaces left without access; revoke it where a fence is missing.

    Existing bindings stay while every failed fence still stands in an older version (the
    namespace is fenced; revoking would turn one refused update into an outage for the whole
    tenant). Where a fence is gone (a default-deny deleted and its re-creation refused, a quota
    that never existed), the namespace is open, so the tenant's RoleBindings there are deleted:
    fail closed. The next pass that applies every fence binds again.
    """
    by_ref = {meta.ref(obj): obj for obj in wanted}
    for name, refs in gaps.items():
        live = await asyncio.gather(*(api.get(ref.api_version, ref.kind, ref.name,
                                              ref.namespace or None) for ref in refs),
                                    return_exceptions=True)
        missing = []
        for ref, found in zip(refs, live, strict=True):
            if isinstance(found, BaseException) and not isinstance(found, ApiError):
                raise found
            # A fence that cannot even be read is treated as missing.
            if isinstance(found, ApiError) or not desired.fence_in_place(by_ref[ref], found):
                missing.append(ref)
        message = (f"no access granted in namespace {name} until its isolation applies: "
                   f"{', '.join(str(ref) for ref in refs)} failed")
        if missing:
            revoked = await _revoke_access(api, tenant_name, name, outcome)
            message += (f"; {', '.join(str(ref) for ref in missing)} missing, so the "
                        f"tenant's existing RoleBindings there were removed ({revoked})")
        outcome.withheld[name] = message


async def _revoke_access(api: KubeApi, tenant_name: str, namespace: str,
                         outcome: Outcome) -> int:
    try:
        bindings = await api.list(rbac.RBAC_API_VERSION, "RoleBinding", namespace,
                                  label_selector=_selector(tenant_name))
    except ApiError as error:
        outcome.fail("RBAC", f"listing RoleBindings in {namespace} to revoke them: {error}")
        return 0
    count = 0
    for binding in bindings:
        ref = meta.ref({"apiVersion": rbac.RBAC_API_VERSION, "kind": "RoleBinding", **binding})
        try:
            if await api.delete(ref.api_version, ref.kind, ref.name, namespace):
                outcome.revoked.append(str(ref))
                count += 1
        except ApiError as error:
            outcome.fail("RBAC", f"revoking {ref}: {error}")
    return count


async def _prune(api: KubeApi, tenant_name: str, wanted: Sequence[meta.Manifest],
                 policy: tenant.DeletionPolicy, outcome: Outcome,
                 previous: Sequence[meta.ObjectRef] | None = None) -> None:
    """Remove what was applied before (`previous`, else listed now) and is no longer wanted."""
    if previous is None:
        previous = await applied_children(api, tenant_name)
    plan = desired.prune(previous, wanted, policy)
    for ref in plan.delete:
        try:
            if await api.delete(ref.api_version, ref.kind, ref.name, ref.namespace or None):
                outcome.deleted.append(str(ref))
                metrics.CHILDREN_PRUNED.labels(ref.kind).inc()
        except ApiError as error:
            outcome.fail(PART_OF_KIND.get(ref.kind, "RBAC"), f"deleting {ref}: {error}")
    for name in plan.release:
        try:
            await api.apply(namespaces.released_namespace(name))
            await api.merge_patch("v1", "Namespace", name, namespaces.release_patch(name))
            outcome.released.append(name)
        except ApiError as error:
            outcome.fail("Namespaces", f"releasing namespace {name}: {error}")


async def reconcile(api: KubeApi, tenant_name: str, tenant_uid: str,
                    spec: tenant.TenantSpec, *, protection_gate: ProtectionGate,
                    first_time: bool = False, children: Children | None = None,
                    resync: bool = False) -> Outcome:
    """Make the cluster match `spec`; returns what happened (never raises for API refusals).

    `first_time` (no generation observed yet) skips pruning: nothing of an older spec can
    exist, and listing seven kinds cluster-wide per new tenant dominates a mass rollout; and it
    creates the namespaces without reading them first (`claim_namespace`). `children`, the
    operator's watches of every child kind, tells pruning what was applied before without a
    list (once they have listed; until then, and without them, it lists). `resync` (the
    periodic pass, not a spec change or a drift) with `children` sends no apply whose child
    the operator wrote last with the same stamp (`meta.stamped`): it would change nothing.
    Any other writer's change is drift, applied over; a spec change or a drift correction
    applies everything. No access is granted while `protection_gate` has not seen the
    protection policy enforced. At most `MAX_CONCURRENT_RECONCILES` run at once; the others
    wait.
    """
    async with reconcile_slots():
        return await _reconcile(api, tenant_name, tenant_uid, spec, first_time=first_time,
                                children=children, resync=resync,
                                protection_gate=protection_gate)


async def _reconcile(api: KubeApi, tenant_name: str, tenant_uid: str,
                     spec: tenant.TenantSpec, *, first_time: bool,
                     children: Children | None, resync: bool,
                     protection_gate: ProtectionGate) -> Outcome:
    outcome = await claim_namespaces(api, tenant_name, spec, assume_absent=first_time)
    granted = {name for name, decision in outcome.decisions.items() if decision.may_apply}
    wanted = [meta.stamped(obj) for obj in desired.desired_objects(
        tenant_name, tenant_uid, spec, granted=granted,
        operator_namespace=custody.operator_namespace())]
    unprotected = await protection_gate.problem(api, min(granted)) if granted else None
    applying = _not_just_created(wanted, outcome)
    if unprotected:
        applying = await _without_new_access(api, applying, outcome)
    await _apply_all(api, tenant_name, applying, outcome, children, skip_unchanged=resync)
    if unprotected:
        outcome.fail("RBAC", unprotected)
        for name in granted:
            outcome.withheld.setdefault(name, unprotected)
    if not first_time:
        previous = children.applied(tenant_name) if children is not None else None
        await _prune(api, tenant_name, wanted, spec.deletion_policy, outcome, previous)
    await _check_tenant_policies(api, tenant_name, spec, granted, outcome)
    return outcome


def _subject_key(subject: Mapping[str, Any]) -> tuple[str, str, str]:
    # As the apiserver defaults it, apiGroup is no part of who a subject is.
    return (str(subject.get("kind")), str(subject.get("namespace") or ""),
            str(subject.get("name")))


async def _without_new_access(api: KubeApi, objects: Sequence[meta.Manifest],
                              outcome: Outcome) -> list[meta.Manifest]:
    """`objects` as they may be applied while the protection policy is not seen enforced: no
    access is granted, but access taken away still is. Each RoleBinding of people is cut down
    to the subjects its live version already has (a member removed or moved to another tier
    loses the binding now), and one that does not exist yet is left out."""
    kept: list[meta.Manifest] = []
    for obj in objects:
        if not desired.is_access(obj):
            kept.append(obj)
            continue
        ref = meta.ref(obj)
        try:
            live = await api.get(ref.api_version, ref.kind, ref.name, ref.namespace or None)
        except ApiError as error:
            outcome.fail("RBAC", f"reading {ref} to keep its access from growing: {error}")
            continue
        if live is None or live.get("roleRef") != obj.get("roleRef"):
            continue
        present = {_subject_key(subject) for subject in live.get("subjects") or []}
        narrowed = {**obj, "subjects": [subject for subject in obj.get("subjects") or []
                                        if _subject_key(subject) in present]}
        kept.append(meta.stamped(narrowed))
    return kept


async def _check_tenant_policies(api: KubeApi, tenant_name: str, spec: tenant.TenantSpec,
                                 granted: Collection[str], outcome: Outcome) -> None:
    """List the NetworkPolicies in the tenant's namespaces and check the ones it wrote."""
    names = desired.tenant_namespaces(spec, granted)
    # A namespace created in this very pass holds only what the operator just applied.
    listed = [name for name in names
              if outcome.decisions[name].action is not namespaces.Action.CREATE]
    listings = await asyncio.gather(*(api.list("networking.k8s.io/v1", "NetworkPolicy", name)
                                      for name in listed), return_exceptions=True)
    policies: list[dict[str, Any]] = []
    for name, listing in zip(listed, listings, strict=True):
        if isinstance(listing, ApiError):
            outcome.policies_unchecked.append(f"listing NetworkPolicies in {name}: {listing}")
        elif isinstance(listing, BaseException):
            raise listing
        else:
            policies.extend({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             **item} for item in listing)
    outcome.policies_checked = sum(1 for p in policies
                                   if not meta.is_operator_made(p, tenant_name))
    outcome.wider = wider_policies(policies, spec, tenant_name, names)


async def finalize(api: KubeApi, tenant_name: str, spec: tenant.TenantSpec) -> Outcome:
    """Remove everything of a deleted Tenant; namespaces follow `spec.deletionPolicy`."""
    outcome = Outcome(decisions={})
    await _prune(api, tenant_name, [], spec.deletion_policy, outcome)
    return outcome


def audit_summary(outcome: Outcome) -> dict[str, Any]:
    """What a reconciliation changed, for the audit ledger (pure; names only, no contents)."""
    summary: dict[str, Any] = {
        "namespaces": {name: decision.action.value
                       for name, decision in sorted(outcome.decisions.items())},
    }
    if outcome.deleted:
        summary["deleted"] = sorted(outcome.deleted)
    if outcome.released:
        summary["released"] = sorted(outcome.released)
    if outcome.withheld:
        summary["accessWithheld"] = sorted(outcome.withheld)
    if outcome.revoked:
        summary["revoked"] = sorted(outcome.revoked)
    if outcome.failures:
        summary["failedParts"] = sorted(outcome.failures)
    return summary


def changed_anything(outcome: Outcome) -> bool:
    """Whether the reconciliation created, adopted, pruned, released or revoked something."""
    return bool(outcome.deleted or outcome.released or outcome.revoked or any(
        decision.action in (namespaces.Action.CREATE, namespaces.Action.ADOPT)
        for decision in outcome.decisions.values()))


def status_of(outcome: Outcome, spec: tenant.TenantSpec, generation: int | None,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    """The Tenant's status after a reconciliation (pure)."""
    conflicts = [d for d in outcome.decisions.values() if not d.may_apply]
    parts = []
    for part in PARTS:
        problems = list(outcome.failures.get(part, []))
        if part == "Namespaces":
            # A claim that failed is both a decision and a failure: say it once.
            problems = list(dict.fromkeys([d.message for d in conflicts] + problems))
        if part == "RBAC":
            problems = [message for _, message in sorted(outcome.withheld.items())] + problems
        if problems:
            reason = ("NamespaceConflict" if part == "Namespaces" and conflicts
                      else "IsolationIncomplete" if part == "RBAC" and outcome.withheld
                      else "ApplyFailed")
            if (len(conflicts) == 1 and part == "Namespaces"
                    and len(problems) == 1):
                reason = conflicts[0].reason
            parts.append(conditions.condition(part, "False", reason, "; ".join(problems),
                                              generation=generation))
        else:
            parts.append(conditions.condition(part, "True", "Applied", "",
                                              generation=generation))
    ready = conditions.summarize(parts, generation=generation)
    report = policy_report(outcome, generation)
    namespace_status = [
        {"name": name, "ready": decision.may_apply and not outcome.failures.get("Namespaces"),
         "reason": decision.reason, "message": decision.message[:1024]}
        if name not in outcome.withheld else
        {"name": name, "ready": False, "reason": "IsolationIncomplete",
         "message": outcome.withheld[name][:1024]}
        for name, decision in sorted(outcome.decisions.items())
    ]
    return {
        "observedGeneration": generation,
        "conditions": conditions.merge((previous or {}).get("conditions"),
                                       [ready, *parts, report]),
        "namespaces": namespace_status,
        "namespaceCount": sum(1 for d in outcome.decisions.values() if d.may_apply),
        "memberCount": len(spec.members),
    }
