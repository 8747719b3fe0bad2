"""The hardening rules as one registry, and the pure functions that apply them.

    check_pod(metadata, spec)   -> every violation of a pod, paths relative to the pod
    check_object(obj)           -> every violation of a Pod or pod-template kind, paths relative
                                   to the object (spec.template.spec.containers[0]...)

Nothing here does I/O; the webhook and `tenantry check` both call these. Rules run at a level:
`baseline` and `restricted` reproduce Pod Security Admission's profiles (a stricter rule replacing
the baseline one it overrides, as PSA does); `tenantry`, the default, is `restricted` plus
Tenantry's own rules. Every rule runs, so all violations come back at once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from tenantry.admission import hardening, podspecs, psa
from tenantry.admission.violation import Level, Pod, Rule, Violation

RULES: Mapping[str, Rule] = {rule.id: rule for rule in (*psa.RULES, *hardening.RULES)}
"""Every pod rule by id, in evaluation order: PSA baseline, PSA restricted, Tenantry's own."""

RULE_IDS = frozenset(RULES)


@functools.cache
def rules_at(level: Level) -> tuple[Rule, ...]:
    """The rules a level runs: those of its level and below, minus the ones overridden."""
    included = [rule for rule in RULES.values() if rule.level.rank <= level.rank]
    overridden = {rule_id for rule in included for rule_id in rule.overrides}
    return tuple(rule for rule in included if rule.id not in overridden)


def check_pod(metadata: podspecs.Obj, spec: podspecs.Obj, *,
              level: Level = Level.TENANTRY) -> list[Violation]:
    """Every violation of the pod with this metadata and spec; paths start at the pod."""
    pod = Pod.of(metadata, spec)
    violations: list[Violation] = []
    for rule in rules_at(level):
        violations += rule.check(pod)
    return violations


def check_pod_ref(ref: podspecs.PodRef, *, level: Level = Level.TENANTRY) -> list[Violation]:
    """Every violation of a pod found in an object; paths start at that object."""
    return [v.with_prefix(ref.prefix) for v in check_pod(ref.metadata, ref.spec, level=level)]


def check_object(obj: podspecs.Obj, *, level: Level = Level.TENANTRY) -> list[Violation]:
    """Every violation of a Pod or pod-template object; [] for any other kind."""
    ref = podspecs.find_pod(obj)
    return [] if ref is None else check_pod_ref(ref, level=level)
