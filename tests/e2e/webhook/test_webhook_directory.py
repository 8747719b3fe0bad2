"""The tenant directory against the real apiserver: watched caches, the GET fallback, and fail
closed when the apiserver cannot be asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.process import free_port
from tenantry.kubeapi import KubeApi
from tenantry.model import common
from tenantry.webhook.directory import TenantDirectory
from tests.helpers import GROUP, VERSION, unique

TENANT = {"members": [{"kind": "User", "name": "alice", "role": "owner"}],
          "namespaces": [{"name": "unused"}], "podSecurity": {"mode": "Warn"}}


@pytest.fixture
async def kube_api(control_plane: LocalControlPlane, crds: None) -> AsyncIterator[KubeApi]:
    api = await KubeApi.from_kubeconfig(str(control_plane.admin_kubeconfig))
    yield api
    await api.close()


@pytest.fixture
def labelled(admin_api: client.ApiClient) -> Callable[[str, str | None], None]:
    """Create or relabel a namespace for a tenant (None: no tenant); removed afterwards."""
    core = client.CoreV1Api(admin_api)
    made: list[str] = []

    def label(name: str, tenant: str | None) -> None:
        if name not in made:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            made.append(name)
        core.patch_namespace(name, {"metadata": {"labels": {common.TENANT_LABEL: tenant}}})

    yield label
    for name in made:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


@pytest.fixture
def tenant_object(admin_api: client.ApiClient) -> Callable[[str], None]:
    custom = client.CustomObjectsApi(admin_api)
    made: list[str] = []

    def create(name: str) -> None:
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
            "spec": TENANT})
        made.append(name)

    yield create
    for name in made:
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


async def _until(check: Callable[[], bool], what: str) -> None:
    """Poll `check` for up to 10 seconds."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_watched_caches_follow_namespaces_and_tenants(
        kube_api: KubeApi, labelled: Callable[[str, str | None], None],
        tenant_object: Callable[[str], None]) -> None:
    directory = TenantDirectory(kube_api)
    directory.start()
    try:
        await asyncio.wait_for(directory.wait_synced(), 10)
        namespace, tenant = unique("dir-ns"), unique("dir-tenant")
        tenant_object(tenant)
        labelled(namespace, tenant)
        await _until(lambda: directory.namespaces.items.get(namespace) == tenant,
                     "the labelled namespace in the cache")
        await _until(lambda: tenant in directory.tenants.items, "the Tenant in the cache")
        found = await directory.tenant_of(namespace)
        assert found.tenant == tenant and found.problem is None
        assert found.spec is not None and found.spec.pod_security.mode.value == "Warn"
        labelled(namespace, None)  # the label goes: so does the namespace, from the cache
        await _until(lambda: namespace not in directory.namespaces.items,
                     "the unlabelled namespace to leave the cache")
        assert (await directory.tenant_of(namespace)).tenant is None
    finally:
        await directory.stop()


async def test_without_caches_every_answer_comes_from_a_get(
        kube_api: KubeApi, labelled: Callable[[str, str | None], None],
        tenant_object: Callable[[str], None]) -> None:
    directory = TenantDirectory(kube_api)  # never started: every lookup is a cache miss
    namespace, tenant = unique("dir-ns"), unique("dir-tenant")
    labelled(namespace, tenant)
    missing = await directory.tenant_of(namespace)
    assert missing.tenant == tenant and missing.problem is not None
    assert "does not exist" in missing.problem and "fail closed" in missing.problem
    tenant_object(tenant)
    found = await directory.tenant_of(namespace)
    assert found.problem is None and found.spec is not None
    assert (await directory.tenant_of("kube-system")).tenant is None
    gone = await directory.tenant_of(unique("no-such-namespace"))
    assert gone.problem is not None and "not found" in gone.problem


async def test_an_unreachable_apiserver_fails_closed(control_plane: LocalControlPlane,
                                                     tmp_path: Path) -> None:
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    api = await KubeApi.from_kubeconfig(str(dead))
    try:
        directory = TenantDirectory(api, lookup_timeout=1.0)
        found = await directory.tenant_of("anything")
        assert found.problem is not None and found.code == 503
        assert "fail closed" in found.problem
    finally:
        await api.close()
