"""The credentials handler: a Credential belongs in a namespace of its tenant."""

from __future__ import annotations

from typing import Any

import pytest

from tenantry.webhook import credentials, records
from tenantry.webhook.directory import TenantOf
from tests.unit.webhook.webhook_unit_helpers import (
    Collected,
    Tenants,
    acme,
    request_of,
    tenant_spec,
)

WEBHOOK = "credentials.admission.tenantry.dev"


def credential(namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential",
            "metadata": {"name": "api", "namespace": namespace},
            "spec": {"scope": "caller", "allowedServiceAccounts": ["checkout"],
                     "fromSecret": {"name": "plain"}, **spec}}


async def judge(tenants: Tenants, obj: dict[str, Any], namespace: str = "team-a") -> Any:
    sink = Collected()
    validate = credentials.handler(WEBHOOK, tenants, records.Recorder([sink]))
    return await validate(request_of(obj, namespace=namespace)), sink.records


async def test_a_credential_in_its_tenants_namespace_is_allowed() -> None:
    verdict, recorded = await judge(acme(), credential())
    assert verdict.allowed
    assert recorded[0].tenant == "acme" and recorded[0].allowed


async def test_outside_any_tenant_it_is_refused() -> None:
    verdict, _ = await judge(Tenants({}), credential("default"), namespace="default")
    assert not verdict.allowed
    assert "belongs to no tenant" in verdict.message
    assert verdict.message.startswith("metadata.namespace:")
    assert "[credentialNamespace]" in verdict.message


async def test_a_missing_tenant_is_refused() -> None:
    tenants = Tenants({"team-a": TenantOf("team-a", "ghost", problem="no Tenant ghost")})
    verdict, _ = await judge(tenants, credential())
    assert not verdict.allowed and verdict.message == "no Tenant ghost"


def test_the_namespace_must_be_listed_by_the_tenant() -> None:
    found = credentials.check_credential(credential("stray"), namespace="stray",
                                         tenant_name="acme", spec=tenant_spec())
    assert [(v.rule_id, v.field_path) for v in found] == [
        ("credentialNamespace", "metadata.namespace")]
    assert "team-a, team-b" in found[0].message


@pytest.mark.parametrize(("entry", "refused"), [
    ("checkout", False),
    ("system:serviceaccount:team-a:checkout", False),
    ("system:serviceaccount:team-b:checkout", True),
    ("team-b/checkout", True),
    ("team-a/checkout", False),
    ("system:serviceaccount:checkout", True),
    ("a:b", True),
    ("", True),
    (7, True),
])
def test_service_accounts_must_be_of_the_credentials_namespace(entry: Any,
                                                               refused: bool) -> None:
    obj = credential(allowedServiceAccounts=["ok", entry])
    found = credentials.check_credential(obj, namespace="team-a", tenant_name="acme",
                                         spec=tenant_spec())
    assert bool(found) is refused
    if refused:
        assert found[0].field_path == "spec.allowedServiceAccounts[1]"
        assert found[0].rule_id == "credentialServiceAccounts"
