"""policies/ is generated from the rules, covers all of them, and never drifts.

What the CEL says is tested against the real apiserver (tests/e2e/test_cel_policies.py); these
tests keep the generator honest without one: every enforced rule has a twin, the allowed values
come from the Python rules' own constants, every pod-bearing kind is matched, and the messages
stay within what the apiserver accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry import cli
from tenantry.admission import cel, cel_isolation, hardening, podspecs, psa, rules
from tenantry.admission.violation import Level
from tenantry.model import common, tenant

REPO_ROOT = Path(__file__).resolve().parents[3]


def _variables() -> dict[str, str]:
    return {v["name"]: v["expression"] for v in cel.policy()["spec"]["variables"]}


def test_committed_policies_match_the_generator() -> None:
    stale = cel.drift(REPO_ROOT / "policies")
    assert stale == [], f"policies/ drifted from the rules: {stale}; run `tenantry policies`"


def test_drift_is_detected(tmp_path: Path) -> None:
    cel.write(tmp_path)
    assert cel.drift(tmp_path) == []
    victim = tmp_path / cel.POLICY_FILE
    victim.write_text(victim.read_text().replace("'NET_BIND_SERVICE'", "'SYS_ADMIN'", 1))
    (tmp_path / cel.BINDINGS_FILE).unlink()
    assert cel.drift(tmp_path) == [cel.POLICY_FILE, cel.BINDINGS_FILE]


def test_the_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policies"
    assert cli.main(["policies", "--output-dir", str(out), "--check"]) == 1
    assert "run `tenantry policies`" in capsys.readouterr().err
    assert cli.main(["policies", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(cel.rendered_files())
    assert cli.main(["policies", "--output-dir", str(out), "--check"]) == 0


def test_files_are_what_kubectl_apply_k_applies() -> None:
    files = cel.rendered_files()
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["resources"] == [cel.POLICY_FILE, cel.BINDINGS_FILE,
                                          cel_isolation.POLICY_FILE, cel_isolation.BINDINGS_FILE]
    documents = [d for name in kustomization["resources"]
                 for d in yaml.safe_load_all(files[name])]
    assert [d["kind"] for d in documents] == ["ValidatingAdmissionPolicy"] + [
        "ValidatingAdmissionPolicyBinding"] * 3 + ["ValidatingAdmissionPolicy",
                                                   "ValidatingAdmissionPolicyBinding"]
    assert documents[0] == cel.policy()
    assert documents[1:4] == cel.bindings()
    assert documents[4] == cel_isolation.policy()
    assert documents[5:] == cel_isolation.bindings()
    for text in files.values():
        assert text.startswith(cel.HEADER)


def test_every_enforced_rule_has_a_twin_in_the_same_order() -> None:
    enforced = [rule.id for rule in rules.rules_at(Level.TENANTRY)]
    assert list(cel.RULE_EXPRESSIONS) == enforced
    names = list(_variables())
    assert [n for n in names if n in cel.RULE_EXPRESSIONS] == enforced
    assert _variables()["violations"].split("\n+ ") == [f"variables.{r}" for r in enforced]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule_id", list(cel.RULE_EXPRESSIONS))
def test_each_twin_reports_its_own_rule_id_only(rule_id: str) -> None:
    expression = _variables()[rule_id]
    assert set(re.findall(r" \[(\w+)\]'", expression)) == {rule_id}


def test_variables_are_defined_before_use() -> None:
    seen: set[str] = set()
    for name, expression in _variables().items():
        used = set(re.findall(r"variables\.(\w+)", expression))
        assert used <= seen, f"{name} uses {used - seen} before they are defined"
        seen.add(name)
    validation = cel.policy()["spec"]["validations"][0]
    for text in (validation["expression"], validation["messageExpression"]):
        assert set(re.findall(r"variables\.(\w+)", text)) <= seen


def test_allowed_values_come_from_the_python_rules() -> None:
    text = "\n".join(_variables().values())

    def listed(values: frozenset[str]) -> None:
        assert cel.lits(values) in text, sorted(values)

    listed(psa.SAFE_SYSCTLS)
    listed(psa.SELINUX_TYPES)
    listed(psa.SECCOMP_TYPES)
    listed(psa.APPARMOR_TYPES)
    listed(psa.RESTRICTED_VOLUME_SOURCES)
    listed(hardening.WRITABLE_SOURCES | hardening.READ_ONLY_SOURCES)
    for field in psa.HOST_NAMESPACES:
        assert f"variables.spec.?{field}" in text
    for probe in psa.PROBES:
        assert f"c.?{probe}.?httpGet.?host" in text and f"c.?{probe}.?tcpSocket.?host" in text
    assert psa.APPARMOR_ANNOTATION_PREFIX in text


def test_every_pod_bearing_kind_is_matched_and_located() -> None:
    assert set(cel.RESOURCES) == set(podspecs.POD_PATHS)
    rules_ = cel.policy()["spec"]["matchConstraints"]["resourceRules"]
    matched = {(group, resource) for rule in rules_ for group in rule["apiGroups"]
               for resource in rule["resources"]}
    expected = {(group, plural) for (group, _), plural in cel.RESOURCES.items()}
    assert matched == expected | {("", "pods/ephemeralcontainers")}
    for rule in rules_:
        assert rule["operations"] == ["CREATE", "UPDATE"] and rule["apiVersions"] == ["v1"]
    template, prefix = _variables()["template"], _variables()["prefix"]
    for (_, kind), keys in podspecs.POD_PATHS.items():
        assert f"'{kind}'" in template and f"'{kind}'" in prefix
        if keys:
            assert ".?" + ".?".join(keys) + ".orValue({})" in template
            assert cel.lit("".join(f"{key}." for key in keys)) in prefix


def test_tenant_namespaces_only_never_system_ones() -> None:
    own = yaml.safe_load((REPO_ROOT / "manifests" / "namespace.yaml").read_text())
    selector = cel.policy()["spec"]["matchConstraints"]["namespaceSelector"]
    assert selector == {"matchExpressions": [
        {"key": common.TENANT_LABEL, "operator": "Exists"},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
         "values": ["kube-system", "kube-public", "kube-node-lease", own["metadata"]["name"]]},
    ]}
    assert cel.policy()["spec"]["failurePolicy"] == "Fail"


def test_one_binding_per_mode_deny_by_default() -> None:
    assert cel.MODE_LABEL.startswith(f"{common.GROUP}/")
    by_name = {b["metadata"]["name"]: b["spec"] for b in cel.bindings()}
    modes = [str(mode) for mode in tenant.EnforcementMode]
    assert set(by_name) == {cel.binding_name(mode) for mode in modes}

    def selector(mode: str) -> dict[str, Any]:
        (expression,) = by_name[cel.binding_name(mode)]["matchResources"][
            "namespaceSelector"]["matchExpressions"]
        return dict(expression)

    assert selector("Deny") == {"key": cel.MODE_LABEL, "operator": "NotIn",
                                "values": ["Warn", "Audit"]}
    assert selector("Warn") == {"key": cel.MODE_LABEL, "operator": "In", "values": ["Warn"]}
    assert selector("Audit") == {"key": cel.MODE_LABEL, "operator": "In", "values": ["Audit"]}
    assert by_name[cel.binding_name("Deny")]["validationActions"] == ["Deny"]
    assert by_name[cel.binding_name("Warn")]["validationActions"] == ["Warn", "Audit"]
    assert by_name[cel.binding_name("Audit")]["validationActions"] == ["Audit"]
    for spec in by_name.values():
        assert spec["policyName"] == cel.POLICY_NAME


def _literals(expression: str) -> list[str]:
    return [m.replace("\\'", "'") for m in re.findall(r"'((?:[^'\\]|\\.)*)'", expression)]


def test_messages_are_parsable_and_fit() -> None:
    """Each violation reads "<path>: <required> [<rule>]" with no "; " inside (the separator),
    no newline (the apiserver drops multi-line messages), and short enough that the listed
    ones fit the apiserver's 5 KiB limit on a message."""
    longest = 0
    for rule_id in cel.RULE_EXPRESSIONS:
        for literal in _literals(_variables()[rule_id]):
            assert "; " not in literal and "\n" not in literal
            if literal.endswith(f" [{rule_id}]"):
                longest = max(longest, len(literal))
    # Dynamic parts: the longest prefix, container path and annotation key the apiserver allows.
    dynamic = len("spec.jobTemplate.spec.template.") + len("spec.ephemeralContainers[9999]") + 253
    assert cel.MESSAGE_ITEMS * (longest + dynamic + 2) + len(cel.MESSAGE_PREFIX) + 40 < 5 * 1024
    assert cel.MESSAGE_LIMIT + len(cel.MESSAGE_PREFIX) < 5 * 1024
    validation = cel.policy()["spec"]["validations"][0]
    assert validation["reason"] == "Forbidden"
    assert validation["messageExpression"].startswith(cel.lit(cel.MESSAGE_PREFIX))


def test_string_literals_are_escaped() -> None:
    assert cel.lit("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert cel.cat("a", "b", cel.Cel("x"), "c") == "'ab' + x + 'c'"
    assert cel.cat() == "''"
    assert cel.opt("c", "a.b") == "c.?a.?b"
