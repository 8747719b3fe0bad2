"""A tenant's pod-security policy applied to violations: the admission decision, as a pure function.

    decide(violations, pod_security, namespace=..., images=...) -> Decision
    evaluate(obj, pod_security=..., quota=..., namespace=...)    -> Decision

Modes: Deny (the default) refuses an object with any violation left after exemptions; Warn admits
it and returns one warning per violation; Audit admits it silently. In every mode the decision
lists the violations and the exemptions that applied, for the audit ledger.

An exemption names a rule, an image prefix and/or a namespace, and matches a violation when every
criterion it names matches:

- rule: the violation's rule id;
- namespace: the object's namespace;
- image: the image of the container the violation is in matches the reference or prefix at a
  boundary (`registry.example.com` matches `registry.example.com/app:1` and
  `registry.example.com:5000/app`, never `registry.example.com.evil.io/app`;
  `registry.example.com/team` never matches `registry.example.com/team-b/app`). A pod-level
  violation has no container of its own; it is exempt by image only when every container of the
  pod matches, so an exempt sidecar never lifts the rules for the rest of the pod.

Only Tenantry's own rules can be exempt (`tenant.ExemptableRule`): Pod Security `restricted` is
enforced by the apiserver on every tenant namespace, so lifting one of its rules here could never
admit a Pod. An exemption that names nothing matches nothing (the CRD refuses it anyway): nothing
bypasses the rules by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from tenantry.admission import podspecs, rules, services
from tenantry.admission.violation import Level, Violation, mapping
from tenantry.model import tenant

KNOWN_RULE_IDS = rules.RULE_IDS | services.RULE_IDS
"""Every rule id an exemption may name."""


@dataclasses.dataclass(frozen=True, slots=True)
class Exempted:
    """A violation an exemption let through, and that exemption (with its reason)."""

    violation: Violation
    exemption: tenant.Exemption


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What admission does with an object."""

    allowed: bool
    mode: tenant.EnforcementMode
    violations: tuple[Violation, ...]
    """Violations no exemption covers; in Deny mode, any of them refuses the object."""
    exempted: tuple[Exempted, ...]
    """Violations an exemption covers, for the audit record."""
    warnings: tuple[str, ...]
    """Warnings for the client (Warn mode): one per violation."""

    @property
    def message(self) -> str:
        """One line for the AdmissionReview status (empty when there is nothing to say)."""
        if not self.violations:
            return ""
        return "violates Tenantry's hardening rules: " + "; ".join(
            f"{v.field_path}: {v.message} [{v.rule_id}]" for v in self.violations)


EXEMPTABLE_RULE_IDS = frozenset(rule.value for rule in tenant.ExemptableRule)
_IMAGE_BOUNDARIES = "/:@"


def image_matches(prefix: str, image: str) -> bool:
    """Whether `image` is `prefix` or lies under it at a registry/repository/tag boundary."""
    if not prefix or not image.startswith(prefix):
        return False
    return (len(image) == len(prefix) or prefix[-1] in _IMAGE_BOUNDARIES
            or image[len(prefix)] in _IMAGE_BOUNDARIES)


def exemption_matches(exemption: tenant.Exemption, violation: Violation, *,
                      namespace: str | None, images: Sequence[str]) -> bool:
    """Whether `exemption` covers `violation` in an object of `namespace` whose pod (if any) has
    these container images."""
    if exemption.rule is None and exemption.image is None and exemption.namespace is None:
        return False
    if violation.rule_id not in EXEMPTABLE_RULE_IDS:
        return False
    if exemption.rule is not None and exemption.rule != violation.rule_id:
        return False
    if exemption.namespace is not None and exemption.namespace != namespace:
        return False
    if exemption.image is not None:
        prefix = exemption.image
        if violation.container is not None:
            return image_matches(prefix, violation.image or "")
        return bool(images) and all(image_matches(prefix, image) for image in images)
    return True


def decide(violations: Iterable[Violation], pod_security: tenant.PodSecurity | None = None, *,
           namespace: str | None = None, images: Sequence[str] = ()) -> Decision:
    """The decision for an object with these violations, under the tenant's policy.

    `images` are the images of every container of the object's pod (for exemptions by image of
    pod-level violations); `namespace` is the object's namespace.
    """
    policy = pod_security if pod_security is not None else tenant.PodSecurity()
    remaining: list[Violation] = []
    exempted: list[Exempted] = []
    for violation in violations:
        exemption = next((e for e in policy.exemptions if exemption_matches(
            e, violation, namespace=namespace, images=images)), None)
        if exemption is None:
            remaining.append(violation)
        else:
            exempted.append(Exempted(violation, exemption))
    mode = policy.mode
    warnings: tuple[str, ...] = ()
    if mode is tenant.EnforcementMode.WARN:
        warnings = tuple(f"{v.field_path}: {v.message}" for v in remaining)
    return Decision(
        allowed=mode is not tenant.EnforcementMode.DENY or not remaining,
        mode=mode,
        violations=tuple(remaining),
        exempted=tuple(exempted),
        warnings=warnings,
    )


def evaluate(obj: podspecs.Obj, pod_security: tenant.PodSecurity | None = None, *,
             quota: tenant.Quota | None = None, namespace: str | None = None,
             level: Level = Level.TENANTRY) -> Decision:
    """The decision for one object under a tenant's policy and quota.

    Pod-bearing kinds go through the pod rules at `level`; a Service through the service rules
    under `quota` (default: a Tenant's default quota, which allows no node ports and no load
    balancers); any other kind is allowed with no violations. `namespace` defaults to the
    object's metadata.namespace.
    """
    if namespace is None:
        value = mapping(obj.get("metadata")).get("namespace")
        namespace = value if isinstance(value, str) else None
    if services.is_service(obj):
        found = services.check_service(obj, quota if quota is not None else tenant.Quota())
        return decide(found, pod_security, namespace=namespace)
    ref = podspecs.find_pod(obj)
    if ref is None:
        return decide((), pod_security, namespace=namespace)
    return decide(rules.check_pod_ref(ref, level=level), pod_security, namespace=namespace,
                  images=podspecs.images(ref.spec))
