"""Replaying Pod Security Admission's own fixture pods (v1.35) through the rules.

Every `fail` pod must break the very check it was written for (or the restricted check that
replaces that baseline check in the restricted profile); every `pass` pod must break no PSA rule
of its level, and at Tenantry's level only Tenantry's extra rules. The same pods wrapped in each
pod-template kind must give the same violations, with the paths of the enclosing object.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tenantry.admission import hardening, podspecs, rules
from tenantry.admission.violation import Level
from tests.unit.admission.admission_helpers import WRAPPERS, PsaCase, psa_cases, wrap


def _rule_for(psa_check: str, level: Level) -> str:
    """Our rule id for a fixture's PSA check at a level, following PSA's overrides."""
    by_psa = {rule.psa_id: rule.id for rule in rules.RULES.values() if rule.psa_id}
    rule_id = by_psa[next(psa_id for psa_id in by_psa if psa_id.lower() == psa_check)]
    for rule in rules.rules_at(level):
        if rule_id in rule.overrides:
            return rule.id
    return rule_id


def _check(case: PsaCase, level: Level) -> set[str]:
    pod = case.pod
    return {v.rule_id for v in rules.check_pod(pod.get("metadata", {}), pod["spec"], level=level)}


def test_fail_pod_breaks_its_check(psa_fail_case: PsaCase) -> None:
    expected = _rule_for(psa_fail_case.check, psa_fail_case.level)
    assert expected in _check(psa_fail_case, psa_fail_case.level)
    # Tenantry's level includes restricted, so the pod is refused there too, for the same rule.
    assert _rule_for(psa_fail_case.check, Level.RESTRICTED) in _check(psa_fail_case,
                                                                      Level.TENANTRY)


def test_pass_pod_breaks_no_psa_rule(psa_pass_case: PsaCase) -> None:
    assert _check(psa_pass_case, psa_pass_case.level) == set()


def test_restricted_pass_pod_breaks_only_tenantry_extras(
        psa_restricted_pass_case: PsaCase) -> None:
    extras = {rule.id for rule in hardening.RULES}
    assert _check(psa_restricted_pass_case, Level.TENANTRY) <= extras


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_wrapped_pods_give_the_same_violations(psa_root: Path, kind: str) -> None:
    _, prefix = WRAPPERS[kind]
    cases = psa_cases()
    assert cases
    for case in cases:
        bare = rules.check_object(case.pod)
        wrapped = rules.check_object(wrap(case.pod, kind))
        assert wrapped == [v.with_prefix(prefix) for v in bare], case
        assert all(v.field_path.startswith(prefix) for v in wrapped), case


def test_every_fixture_is_replayed(psa_root: Path) -> None:
    """Both levels, both verdicts, and every PSA check that has fixtures at v1.35."""
    cases = psa_cases()
    for level in (Level.BASELINE, Level.RESTRICTED):
        for verdict in ("pass", "fail"):
            assert any(c.level is level and c.verdict == verdict for c in cases)
    fixture_checks = set()
    for path in (psa_root.parent).glob("fixtures_*.go"):
        fixture_checks |= set(re.findall(r'check: "(\w+)"', path.read_text()))
    failing = {c.check for c in cases if c.verdict == "fail"}
    assert {check.lower() for check in fixture_checks} == failing


def _psa_checks(module_root: Path) -> dict[str, set[str]]:
    """PSA's check ids at this version and the ids each one overrides, read from its Go source."""
    constants: dict[str, str] = {}
    bodies = []
    for path in sorted((module_root / "policy").glob("check_*.go")):
        if path.name.endswith("_test.go"):
            continue
        text = path.read_text()
        constants.update(re.findall(r'(\w+)\s+CheckID\s*=\s*"(\w+)"', text))
        bodies.append(text)

    def resolve(token: str) -> str:
        return token.strip('"') if token.startswith('"') else constants[token]

    checks: dict[str, set[str]] = {}
    for text in bodies:
        match = re.search(r"\bID:\s+([\w\"]+)", text)
        assert match, "a check file without an ID"
        overrides = set()
        for group in re.findall(r"OverrideCheckIDs:\s*\[\]CheckID\{([^}]*)\}", text):
            overrides |= {resolve(t.strip()) for t in group.split(",") if t.strip()}
        checks[resolve(match.group(1))] = overrides
    return checks


def test_every_psa_check_is_mirrored_with_its_overrides(psa_root: Path) -> None:
    module_root = psa_root.parent.parent
    psa = _psa_checks(module_root)
    by_psa = {rule.psa_id: rule for rule in rules.RULES.values() if rule.psa_id}
    assert set(by_psa) == set(psa)
    for psa_id, overrides in psa.items():
        assert {by_psa[o].id for o in overrides} == set(by_psa[psa_id].overrides), psa_id


def test_feature_gated_fixtures_are_known(psa_root: Path) -> None:
    """PSA skips some fail fixtures when a feature gate is off (`failRequiresFeatures` in the Go
    generators; the YAML files carry no such marker). The rules judge fields regardless of gates,
    so these pods must fail here anyway (test_fail_pod_breaks_its_check); this test notices when
    a new version gates other checks, which would deserve a look."""
    gated: dict[str, set[str]] = {}
    for path in psa_root.parent.glob("fixtures_*.go"):
        text = path.read_text()
        features = set(re.findall(r"failRequiresFeatures:\s*\[\]featuregate\.Feature\{"
                                  r"([^}]*)\}", text))
        if features:
            for check in re.findall(r'check: "(\w+)"', text):
                gated.setdefault(check, set()).update(
                    f.strip().strip('"') for group in features for f in group.split(","))
    assert gated == {"procMount": {"ProcMountType"}, "procMount_restricted": {"ProcMountType"}}
    for case in psa_cases():
        assert "feature" not in case.path.read_text().lower(), case


def test_fixture_pods_are_plain_pods(psa_root: Path) -> None:
    """The fixtures are Pods (no templates, no Lists), so replaying them needs no unwrapping."""
    for case in psa_cases():
        ref = podspecs.find_pod(case.pod)
        assert ref is not None and ref.prefix == "", case
        assert yaml.safe_load(case.path.read_text())["kind"] == "Pod"
