"""The pydantic models refuse bad input with errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tenantry.model.credential import CredentialSpec
from tenantry.model.rotation import RotationPolicySpec
from tenantry.model.tenant import TenantSpec

MINIMAL_TENANT: dict[str, Any] = {
    "members": [{"kind": "User", "name": "alice", "role": "owner"}],
    "namespaces": [{"name": "team-a"}],
}


def test_minimal_tenant_gets_secure_defaults() -> None:
    spec = TenantSpec.model_validate(MINIMAL_TENANT)
    assert spec.pod_security.mode == "Deny"
    assert spec.pod_security.exemptions == []
    assert spec.quota.services_node_ports == 0
    assert spec.quota.services_load_balancers == 0
    assert spec.deletion_policy == "Retain"
    assert spec.network.egress == [] and spec.network.approved_private_ranges == []
    wire = spec.wire()
    assert wire["podSecurity"]["mode"] == "Deny" and "approvedPrivateRanges" in wire["network"]


@pytest.mark.parametrize(("patch", "field"), [
    ({"namespaces": [{"name": "Team_A"}]}, "namespaces.0.name"),
    ({"members": [{"kind": "Robot", "name": "x", "role": "owner"}]}, "members.0.kind"),
    ({"members": [{"kind": "User", "name": "x", "role": "root"}]}, "members.0.role"),
    ({"quota": {"cpu": "lots"}}, "quota.cpu"),
    ({"network": {"egress": [{"cidr": "10.0.0.1/8"}]}}, "network.egress.0.cidr"),
    ({"unknownField": True}, "unknownField"),
])
def test_bad_tenant_specs_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        TenantSpec.model_validate({**MINIMAL_TENANT, **patch})
    locations = [".".join(str(p) for p in e["loc"]) for e in error.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_quantities_accept_numbers_and_strings() -> None:
    spec = TenantSpec.model_validate({**MINIMAL_TENANT, "quota": {"cpu": 4, "memory": "8Gi"}})
    assert spec.quota.cpu == "4" and spec.quota.memory == "8Gi"


def test_credential_refuses_plaintext_fields_without_echoing_them() -> None:
    with pytest.raises(ValidationError, match="value") as error:
        CredentialSpec.model_validate({"value": "hunter2", "fromSecret": {"name": "s"}})
    assert "hunter2" not in str(error.value)


def test_rotation_policy_schedule_must_be_cron() -> None:
    RotationPolicySpec.model_validate({"targets": ["Credentials"], "schedule": "0 3 1 * *"})
    with pytest.raises(ValidationError, match="schedule"):
        RotationPolicySpec.model_validate({"targets": ["Credentials"], "schedule": "monthly"})
