"""Kill the operator mid-rollout of 50 tenants, restart it: all converge, nothing left over.

Runs on a control plane of its own, so that killing this operator never disturbs the session's.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.devenv import install_crds
from tests.conftest import Ledger, OperatorProcess
from tests.helpers import GROUP, VERSION, conditions_of, eventually

TENANTS = 50


@pytest.fixture(scope="module")
def own_plane() -> Iterator[LocalControlPlane]:
    with LocalControlPlane() as plane:
        install_crds(plane.admin_kubeconfig)
        yield plane


def _all_ready(custom: client.CustomObjectsApi, names: set[str]) -> bool:
    items = custom.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"]
    ready = {t["metadata"]["name"] for t in items
             if conditions_of(t).get("Ready", {}).get("status") == "True"}
    return names <= ready


def test_killed_mid_rollout_converges_without_orphans_or_duplicates(
        own_plane: LocalControlPlane, operator_options: list[str], ledger: Ledger,
        tmp_path: Path) -> None:
    api = kube.api_client(own_plane.admin_kubeconfig)
    custom = client.CustomObjectsApi(api)
    names = {f"roll-{i:02d}" for i in range(TENANTS)}
    first = OperatorProcess(own_plane.admin_kubeconfig, tmp_path / "first.log",
                            extra_args=operator_options)
    second = None
    try:
        first.wait_ready()
        # Somewhere in the middle of the rollout, without warning.
        kill_at = random.randint(10, TENANTS - 10)  # noqa: S311 - a random moment, not crypto
        for index, name in enumerate(sorted(names)):
            if index == kill_at:
                first.process.kill()  # SIGKILL: no cleanup, handlers cut mid-flight
                first.stop()
            custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant",
                "metadata": {"name": name},
                "spec": {"members": [{"kind": "User", "name": f"{name}-owner",
                                      "role": "owner"}],
                         "namespaces": [{"name": name}],
                         "network": {"egress": [{"cidr": "0.0.0.0/0"}]}},
            })
        half_done = _all_ready(custom, names)

        second = OperatorProcess(own_plane.admin_kubeconfig, tmp_path / "second.log",
                                 extra_args=operator_options)
        second.wait_ready()
        eventually(lambda: _all_ready(custom, names), timeout=180,
                   what=f"all {TENANTS} tenants to be Ready after the restart")
    finally:
        for process in (first, second):
            if process is not None:
                process.stop()

    assert not half_done, "the kill came too late to interrupt anything"
    core = client.CoreV1Api(api)
    net = client.NetworkingV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    selector = "tenantry.dev/tenant"
    children: Counter[tuple[str, str]] = Counter()
    for kind, items in (
        ("Namespace", core.list_namespace(label_selector=selector).items),
        ("NetworkPolicy", net.list_network_policy_for_all_namespaces(
            label_selector=selector).items),
        ("ResourceQuota", core.list_resource_quota_for_all_namespaces(
            label_selector=selector).items),
        ("LimitRange", core.list_limit_range_for_all_namespaces(
            label_selector=selector).items),
        ("RoleBinding", rbac.list_role_binding_for_all_namespaces(
            label_selector=selector).items),
        ("ClusterRoleBinding", rbac.list_cluster_role_binding(label_selector=selector).items),
    ):
        for item in items:
            owner = item.metadata.labels["tenantry.dev/tenant"]
            assert owner in names, f"orphan {kind} {item.metadata.name} of {owner}"
            children[(owner, kind)] += 1
    for name in names:
        # Exactly one of each; four policies (deny, DNS, intra-tenant, egress).
        assert children[(name, "Namespace")] == 1
        assert children[(name, "NetworkPolicy")] == 4
        assert children[(name, "ResourceQuota")] == 1
        assert children[(name, "LimitRange")] == 1
        assert children[(name, "RoleBinding")] == 1
        assert children[(name, "ClusterRoleBinding")] == 1
    for name in names:
        tenant = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
        assert tenant["status"]["observedGeneration"] == tenant["metadata"]["generation"]
    api.close()

    # The audit trail survived the kill: every tenant's rollout is in the ledger, every chain
    # verifies, and nothing is left behind in the spool.
    spool = Path(operator_options[operator_options.index("--ledger-spool") + 1])
    assert not list(spool.glob("*.event.json")), "events left undelivered in the spool"
    recorded = {name for name in names
                if any(e["action"] == "tenant.reconcile" for e in ledger.entries(name))}
    assert recorded == names
    broken = [r.describe() for r in map(ledger.verify, sorted(names)) if not r.ok]
    assert not broken, broken

