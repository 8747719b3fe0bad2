"""Two operator replicas with --leader-elect: one acts, the other stands by and takes over.

Runs on a control plane of its own, so these operators never race the session's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import (
    OPERATOR_GROUPS,
    OPERATOR_USER,
    OperatorProcess,
    operator_ready_plane,
)
from tests.helpers import GROUP, VERSION, conditions_of, eventually

LEASE_SECONDS = 4


@pytest.fixture(scope="module")
def plane() -> Iterator[LocalControlPlane]:
    with operator_ready_plane() as plane:
        yield plane


def _lease(api: client.ApiClient) -> Any:
    return client.CoordinationV1Api(api).read_namespaced_lease("tenantry-operator",
                                                               "tenantry-system").spec


def _create_tenants(custom: client.CustomObjectsApi, names: list[str]) -> None:
    for name in names:
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"members": [{"kind": "User", "name": f"{name}-owner", "role": "owner"}],
                     "namespaces": [{"name": name}]}})


def _ready(custom: client.CustomObjectsApi, names: list[str]) -> bool:
    return all(conditions_of(custom.get_cluster_custom_object(GROUP, VERSION, "tenants", n))
               .get("Ready", {}).get("status") == "True" for n in names)


def _handled(log: str) -> bool:
    return "Handler 'reconcile_tenant" in log


def test_one_replica_leads_the_other_takes_over_when_it_dies(
        plane: LocalControlPlane, operator_options: list[str], tmp_path: Path) -> None:
    identity = plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS)
    election = ["--leader-elect", "--lease-duration", str(LEASE_SECONDS)]
    api = kube.api_client(plane.admin_kubeconfig)
    custom = client.CustomObjectsApi(api)
    first = OperatorProcess(identity, tmp_path / "first.log", election,
                            extra_args=operator_options)
    second: OperatorProcess | None = None
    try:
        first.wait_ready()
        eventually(lambda: _lease(api) and _lease(api).holder_identity,
                   what="the first replica to take the Lease")
        leader = _lease(api).holder_identity
        assert leader.endswith(f"-{first.process.pid}")
        second = OperatorProcess(identity, tmp_path / "second.log", election,
                                 extra_args=operator_options)
        second.wait_ready()  # standing by still answers liveness probes

        before = [f"lead-a-{i}" for i in range(5)]
        _create_tenants(custom, before)
        eventually(lambda: _ready(custom, before), timeout=60, what="tenants under replica 1")
        assert _handled(first.log())
        assert not _handled(second.log()), "the standby replica acted while the leader lived"
        assert "standing by" in second.log()

        first.process.kill()  # SIGKILL: no release, the Lease must expire
        first.stop()
        after = [f"lead-b-{i}" for i in range(5)]
        _create_tenants(custom, after)
        eventually(lambda: _ready(custom, after), timeout=60,
                   what="tenants after the standby took over")
        spec = _lease(api)
        assert spec.holder_identity.endswith(f"-{second.process.pid}")
        assert spec.lease_transitions >= 1
        assert _handled(second.log())

        # A clean stop hands the Lease back at once instead of letting it expire.
        second.stop()
        assert not _lease(api).holder_identity
        assert second.process.returncode == 0
    finally:
        for process in (first, second):
            if process is not None:
                process.stop()
        api.close()
