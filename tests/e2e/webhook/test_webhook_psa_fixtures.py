"""Pod Security Admission's own fixture pods (v1.35) through the real apiserver and the webhook.

Bare pods go to a namespace of tenant wh-acme without Pod Security enforcement, so every verdict
is the webhook's own; the same pods wrapped in a Deployment and a CronJob go to the tenant's
operator-made namespace (Pod Security only warns about workloads, so the webhook decides there
too). Every request is a dry run: nothing is stored.

- every `fail` pod is refused by the webhook, bare or wrapped, listing exactly the violations
  (field paths and rule ids; paths prefixed with the template path) that the rules find offline
  in the object as the apiserver has defaulted it (it copies AppArmor annotations into fields,
  for one). The defaulted object comes from the same dry run in a namespace of no tenant;
- every restricted `pass` pod is admitted, or refused only for Tenantry's extra rules
  (readOnlyRootFilesystem, writableMounts), wrapped or not.
"""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.admission import hardening, rules
from tests.e2e.webhook.webhook_helpers import (
    DENIED_BY_WORKLOADS,
    Outcome,
    RawApi,
    cronjob,
    deployment,
    dns_name,
    in_namespace,
)
from tests.unit.admission.admission_helpers import PsaCase

EXTRAS = {rule.id for rule in hardening.RULES}
WRAPPERS = {"Deployment": (deployment, "spec.template."),
            "CronJob": (cronjob, "spec.jobTemplate.spec.template.")}


def _expected(raw: RawApi, obj: dict[str, Any], elsewhere: str) -> set[tuple[str, str]] | None:
    """What the rules find in `obj` once the apiserver has defaulted it; None when the
    apiserver refuses the object as invalid anywhere, before admission."""
    outcome = raw.create({**obj, "metadata": {**obj["metadata"], "namespace": elsewhere}})
    if outcome.status == 422:
        return None
    assert outcome.status == 201, outcome
    return {(v.field_path, v.rule_id) for v in rules.check_object(outcome.body)}


def _assert_invalid(outcome: Outcome) -> None:
    """The object can exist nowhere: the apiserver's validation refuses it before admission
    (PSA's procMount fixtures need hostUsers: false at this version)."""
    assert outcome.status == 422, outcome
    assert DENIED_BY_WORKLOADS not in outcome.message


def _name(case: PsaCase) -> str:
    return dns_name(f"{case.level}-{case.verdict}-{case.path.stem}")


def _assert_refused(outcome: Outcome, expected: set[tuple[str, str]]) -> None:
    assert outcome.status == 403, outcome
    assert DENIED_BY_WORKLOADS in outcome.message, outcome
    assert outcome.findings() == expected, outcome


def test_fail_pod_is_refused(raw_api: RawApi, acme_psa_off: str, outsider: str,
                             psa_fail_case: PsaCase) -> None:
    pod = in_namespace(psa_fail_case.pod, acme_psa_off, _name(psa_fail_case))
    assert rules.check_object(pod), "a fail fixture the rules pass"
    expected = _expected(raw_api, pod, outsider)
    outcome = raw_api.create(pod)
    if expected is None:
        _assert_invalid(outcome)
    else:
        _assert_refused(outcome, expected)


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_wrapped_fail_pod_is_refused(raw_api: RawApi, acme: str, outsider: str,
                                     psa_fail_case: PsaCase, kind: str) -> None:
    wrap, prefix = WRAPPERS[kind]
    obj = wrap(psa_fail_case.pod, acme, _name(psa_fail_case))
    expected = _expected(raw_api, obj, outsider)
    outcome = raw_api.create(obj)
    if expected is None:
        _assert_invalid(outcome)
        return
    _assert_refused(outcome, expected)
    assert all(path.startswith(prefix) for path, _ in outcome.findings())


def test_pass_pod_is_admitted_or_refused_only_for_extras(
        raw_api: RawApi, acme_psa_off: str, outsider: str,
        psa_restricted_pass_case: PsaCase) -> None:
    case = psa_restricted_pass_case
    pod = in_namespace(case.pod, acme_psa_off, _name(case))
    expected = _expected(raw_api, pod, outsider)
    assert expected is not None, "a pass fixture the apiserver refuses"
    assert {rule for _, rule in expected} <= EXTRAS
    outcome = raw_api.create(pod)
    if expected:
        _assert_refused(outcome, expected)
    else:
        assert outcome.status == 201, outcome
        assert outcome.warnings == (), outcome


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_wrapped_pass_pod_gets_the_same_verdict(raw_api: RawApi, acme: str, outsider: str,
                                                psa_restricted_pass_case: PsaCase,
                                                kind: str) -> None:
    case = psa_restricted_pass_case
    wrap, prefix = WRAPPERS[kind]
    obj = wrap(case.pod, acme, _name(case))
    expected = _expected(raw_api, obj, outsider)
    assert expected is not None, "a pass fixture the apiserver refuses"
    assert {rule for _, rule in expected} <= EXTRAS
    outcome = raw_api.create(obj)
    if expected:
        _assert_refused(outcome, expected)
        assert all(path.startswith(prefix) for path, _ in outcome.findings())
    else:
        assert outcome.status == 201, outcome
