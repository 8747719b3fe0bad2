"""The report on NetworkPolicies a tenant wrote itself: which are wider than its Tenant (pure)."""

from __future__ import annotations

from typing import Any

from tenantry.controller.tenant import desired, meta, network, reconcile
from tenantry.model.tenant import TenantSpec
from tests.unit.tenant.conftest import TENANT, UID

NAMESPACE = "acme-prod"


def _egress_policy(name: str, cidr: str, *, labels: dict[str, str] | None = None,
                   port: int = 443) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"ipBlock": {"cidr": cidr}}],
                             "ports": [{"protocol": "TCP", "port": port}]}]},
    }


def _names(acme: TenantSpec) -> list[str]:
    return desired.tenant_namespaces(acme)


def test_the_operators_own_policies_are_not_the_tenants(acme: TenantSpec) -> None:
    ours = network.network_policies(TENANT, UID, NAMESPACE, acme.network, _names(acme))
    assert ours and all(meta.is_operator_made(p, TENANT) for p in ours)
    assert reconcile.wider_policies(ours, acme, TENANT, _names(acme)) == []
    # Another tenant's labels, or the labels without the reserved prefix, are not ours.
    assert not meta.is_operator_made(ours[0], "globex")
    forged = _egress_policy("allow-all", "0.0.0.0/0", labels=meta.tenant_labels(TENANT))
    assert not meta.is_operator_made(forged, TENANT)


def test_a_policy_inside_the_allow_list_passes_and_a_wider_one_is_named(
        acme: TenantSpec) -> None:
    inside = _egress_policy("to-payments", "203.0.113.0/25")
    wide = _egress_policy("everywhere", "0.0.0.0/0")
    forged = _egress_policy("allow-all", "0.0.0.0/0", labels=meta.tenant_labels(TENANT))
    [first, second] = reconcile.wider_policies([inside, wide, forged], acme, TENANT,
                                               _names(acme))
    assert (first.name, second.name) == ("allow-all", "everywhere")
    assert first.violation.field_path == "spec.egress[0].to[0].ipBlock.cidr"
    assert str(second).startswith(f"{NAMESPACE}/everywhere: spec.egress[0].to[0].ipBlock.cidr")


def test_narrowing_the_allow_list_makes_a_policy_wider(make_spec: Any) -> None:
    inside = _egress_policy("to-payments", "203.0.113.0/25")
    narrowed: TenantSpec = make_spec(network={"egress": [{"cidr": "198.51.100.0/24"}]})
    [wider] = reconcile.wider_policies([inside], narrowed, TENANT, _names(narrowed))
    assert wider.name == "to-payments"


def _outcome(**fields: Any) -> reconcile.Outcome:
    return reconcile.Outcome(decisions={}, **fields)


def test_the_report_is_a_condition_outside_ready(acme: TenantSpec) -> None:
    wide = _egress_policy("everywhere", "0.0.0.0/0")
    outcome = _outcome(wider=reconcile.wider_policies([wide], acme, TENANT, _names(acme)),
                       policies_checked=1)
    status = reconcile.status_of(outcome, acme, 4, None)
    by_type = {c["type"]: c for c in status["conditions"]}
    report = by_type["TenantNetworkPolicies"]
    assert report["status"] == "False" and report["reason"] == "WiderThanAllowList"
    assert f"{NAMESPACE}/everywhere" in report["message"]
    assert "spec.egress[0].to[0].ipBlock.cidr" in report["message"]
    assert report["observedGeneration"] == 4
    # A report, not a failure: the Tenant stays Ready.
    assert by_type["Ready"]["status"] == "True"

    within = reconcile.policy_report(_outcome(policies_checked=3), 4)
    assert within["status"] == "True" and within["reason"] == "WithinAllowList"
    unknown = reconcile.policy_report(_outcome(policies_unchecked=["listing: 403"]), 4)
    assert unknown["status"] == "Unknown"


def test_the_report_stays_bounded(acme: TenantSpec) -> None:
    many = [_egress_policy(f"wide-{i:03}-{'x' * 200}", "0.0.0.0/0") for i in range(100)]
    wider = reconcile.wider_policies(many, acme, TENANT, _names(acme))
    assert len(wider) == 100
    report = reconcile.policy_report(_outcome(wider=wider), 1)
    assert len(report["message"]) <= 1024
    assert "wide-000" in report["message"] and "more" in report["message"]


def test_an_event_only_when_the_report_turns_wider_or_names_others(acme: TenantSpec) -> None:
    def status(outcome: reconcile.Outcome, previous: dict[str, Any] | None) -> dict[str, Any]:
        return reconcile.status_of(outcome, acme, 1, previous)

    fine = status(_outcome(policies_checked=1), None)
    assert reconcile.newly_wider(None, fine) is None
    one = reconcile.wider_policies([_egress_policy("a", "0.0.0.0/0")], acme, TENANT,
                                   _names(acme))
    wide = status(_outcome(wider=one), fine)
    assert reconcile.newly_wider(fine, wide) is not None
    assert reconcile.newly_wider(wide, status(_outcome(wider=one), wide)) is None  # a resync
    two = reconcile.wider_policies([_egress_policy("a", "0.0.0.0/0"),
                                    _egress_policy("b", "0.0.0.0/0")], acme, TENANT,
                                   _names(acme))
    assert reconcile.newly_wider(wide, status(_outcome(wider=two), wide)) is not None
