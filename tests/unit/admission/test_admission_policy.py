"""Decisions under a tenant's mode and exemptions."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.admission import policy, rules
from tenantry.admission.violation import Violation
from tenantry.model.tenant import EnforcementMode, Exemption, PodSecurity
from tests.unit.admission.admission_helpers import hardened_pod, wrap


def writable_pod() -> dict[str, Any]:
    """A pod whose "app" container (image registry.example/app:1.0) has a writable root, and a
    hostNetwork that is a pod-level violation."""
    pod = hardened_pod()
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["spec"]["containers"][1]["image"] = "registry.example/sidecar:2.0"
    pod["spec"]["hostNetwork"] = True
    return pod


def test_default_policy_denies_and_exempts_nothing() -> None:
    decision = policy.evaluate(writable_pod())
    assert not decision.allowed
    assert decision.mode is EnforcementMode.DENY
    assert {v.rule_id for v in decision.violations} == {"readOnlyRootFilesystem",
                                                        "hostNamespaces"}
    assert decision.exempted == ()
    assert decision.warnings == ()
    assert "spec.containers[0].securityContext.readOnlyRootFilesystem" in decision.message
    assert "spec.hostNetwork" in decision.message


def test_hardened_pod_is_allowed_with_nothing_to_say() -> None:
    decision = policy.evaluate(hardened_pod())
    assert decision.allowed
    assert (decision.violations, decision.exempted, decision.warnings) == ((), (), ())
    assert decision.message == ""


def test_warn_mode_admits_with_one_warning_per_violation() -> None:
    decision = policy.evaluate(writable_pod(), PodSecurity(mode=EnforcementMode.WARN))
    assert decision.allowed
    assert len(decision.warnings) == len(decision.violations) == 2
    assert any(w.startswith("spec.containers[0].securityContext.readOnlyRootFilesystem: must")
               for w in decision.warnings)


def test_audit_mode_admits_silently_but_keeps_the_violations() -> None:
    decision = policy.evaluate(writable_pod(), PodSecurity(mode=EnforcementMode.AUDIT))
    assert decision.allowed
    assert decision.warnings == ()
    assert len(decision.violations) == 2


def test_exemption_by_rule() -> None:
    exemption = Exemption(rule="readOnlyRootFilesystem", reason="legacy app writes to /var")
    decision = policy.evaluate(writable_pod(), PodSecurity(exemptions=[exemption]))
    assert not decision.allowed  # hostNetwork is still there
    assert [e.violation.rule_id for e in decision.exempted] == ["readOnlyRootFilesystem"]
    assert decision.exempted[0].exemption is exemption
    assert [v.rule_id for v in decision.violations] == ["hostNamespaces"]


def test_exemption_by_image_covers_only_that_containers_violations() -> None:
    exemption = Exemption(image="registry.example/app:", reason="vendor image")
    decision = policy.evaluate(writable_pod(), PodSecurity(exemptions=[exemption]))
    assert [e.violation.rule_id for e in decision.exempted] == ["readOnlyRootFilesystem"]
    # hostNetwork belongs to the whole pod, whose sidecar is another image: not exempt.
    assert [v.rule_id for v in decision.violations] == ["hostNamespaces"]


def test_pod_security_rules_cannot_be_exempt_not_even_by_image_of_every_container() -> None:
    """Pod Security `restricted` is enforced by the apiserver on every tenant namespace: an
    exemption of one of its rules could never admit a Pod, so none is honoured or accepted."""
    pod = writable_pod()
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        container["image"] = "registry.example/node-agent:3"
    with pytest.raises(ValueError, match="readOnlyRootFilesystem"):
        Exemption(rule="hostNamespaces", image="registry.example/node-agent",
                  reason="node agent needs the host network")
    exemption = Exemption(image="registry.example/node-agent", reason="node agent")
    decision = policy.evaluate(pod, PodSecurity(exemptions=[exemption]))
    assert [e.violation.rule_id for e in decision.exempted] == ["readOnlyRootFilesystem"]
    assert [v.rule_id for v in decision.violations] == ["hostNamespaces"]
    forged = Exemption.model_construct(rule="hostNamespaces", image=None, namespace=None,
                                       reason="past the schema")
    assert policy.evaluate(pod, PodSecurity(exemptions=[forged])).exempted == ()


def test_exemption_by_image_covers_pod_level_violations_when_every_container_matches() -> None:
    violation = Violation("readOnlyRootFilesystem", "spec", "pod-level", "x")
    exemption = Exemption(image="registry.example/node-agent", reason="node agent")
    images = ["registry.example/node-agent:3", "registry.example/node-agent@sha256:ab"]
    assert policy.exemption_matches(exemption, violation, namespace="x", images=images)
    assert not policy.exemption_matches(exemption, violation, namespace="x",
                                        images=[*images, "busybox"])
    assert not policy.exemption_matches(exemption, violation, namespace="x", images=[])


@pytest.mark.parametrize(("prefix", "image", "matches"), [
    ("registry.example.com", "registry.example.com/app:1", True),
    ("registry.example.com", "registry.example.com:5000/app", True),
    ("registry.example.com", "registry.example.com.evil.io/app", False),
    ("registry.example.com", "registry.example.community/app", False),
    ("registry.example.com/team", "registry.example.com/team/app:2", True),
    ("registry.example.com/team", "registry.example.com/team-b/app:2", False),
    ("registry.example.com/app", "registry.example.com/app", True),
    ("registry.example.com/app", "registry.example.com/app:1.0", True),
    ("registry.example.com/app", "registry.example.com/app@sha256:00", True),
    ("registry.example.com/app", "registry.example.com/apple:1", False),
    ("registry.example.com/app:", "registry.example.com/app:1.0", True),
    ("registry.example.com/", "registry.example.com/x", True),
])
def test_image_exemptions_match_at_a_registry_or_repository_boundary(
        prefix: str, image: str, matches: bool) -> None:
    exemption = Exemption(image=prefix, reason="vendor")
    violation = Violation("readOnlyRootFilesystem", "spec.containers[0]", "m", "true",
                          container="app", image=image)
    assert policy.exemption_matches(exemption, violation, namespace="x",
                                    images=[image]) is matches


def test_exemption_by_namespace_uses_the_objects_namespace() -> None:
    exemption = Exemption(namespace="legacy", reason="migration until Q3")
    pod = writable_pod()
    assert policy.evaluate(pod, PodSecurity(exemptions=[exemption])).exempted == ()
    pod["metadata"]["namespace"] = "legacy"
    decision = policy.evaluate(pod, PodSecurity(exemptions=[exemption]))
    # Tenantry's own rule is exempt; hostNetwork is Pod Security's, never exempt.
    assert [e.violation.rule_id for e in decision.exempted] == ["readOnlyRootFilesystem"]
    assert [v.rule_id for v in decision.violations] == ["hostNamespaces"]
    del pod["spec"]["hostNetwork"]
    assert policy.evaluate(pod, PodSecurity(exemptions=[exemption])).allowed
    # The caller may name the namespace (an AdmissionReview carries it apart from the object).
    del pod["metadata"]["namespace"]
    assert policy.evaluate(pod, PodSecurity(exemptions=[exemption]),
                           namespace="legacy").allowed


def test_exemption_criteria_must_all_match() -> None:
    exemption = Exemption(rule="readOnlyRootFilesystem", namespace="legacy", reason="both")
    decision = policy.evaluate(wrap(writable_pod(), "Deployment"),
                               PodSecurity(exemptions=[exemption]))
    assert decision.exempted == ()  # the Deployment is in team-a


def test_exemption_naming_nothing_matches_nothing() -> None:
    exemption = Exemption.model_construct(rule=None, image=None, namespace=None, reason="none")
    violation = Violation("privileged", "spec.containers[0].securityContext.privileged",
                          "must be false", "false", container="app", image="app")
    assert not policy.exemption_matches(exemption, violation, namespace="x", images=["app"])


def test_exemptions_apply_to_templates_with_prefixed_paths() -> None:
    exemption = Exemption(rule="readOnlyRootFilesystem", reason="legacy")
    decision = policy.evaluate(wrap(writable_pod(), "CronJob"),
                               PodSecurity(exemptions=[exemption]))
    [exempted] = decision.exempted
    assert exempted.violation.field_path == (
        "spec.jobTemplate.spec.template.spec.containers[0].securityContext."
        "readOnlyRootFilesystem")


def test_services_are_judged_under_the_quota() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"type": "NodePort"}}
    assert not policy.evaluate(svc).allowed


@pytest.mark.parametrize("obj", [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
    {"apiVersion": "v1", "kind": "Namespace"},
])
def test_other_kinds_are_allowed(obj: dict[str, Any]) -> None:
    decision = policy.evaluate(obj)
    assert decision.allowed and decision.violations == ()


def test_known_rule_ids_include_pod_and_service_rules() -> None:
    assert rules.RULE_IDS < policy.KNOWN_RULE_IDS
    assert {"nodePortServices", "loadBalancerServices"} < policy.KNOWN_RULE_IDS
