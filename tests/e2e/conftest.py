"""Fixtures shared by the e2e tests: Tenants created through the real operator."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tenantry.devcluster import build
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import OperatorProcess
from tests.helpers import GROUP, VERSION, conditions_of, eventually

TenantFactory = Callable[..., dict[str, Any]]


def _tenant(name: str, namespaces: list[str], members: list[dict[str, Any]],
            **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
        "spec": {"members": members, "namespaces": [{"name": n} for n in namespaces], **spec},
    }


@pytest.fixture
def tenants(admin_api: client.ApiClient, operator: OperatorProcess) -> Iterator[TenantFactory]:
    """Create Tenants and wait for a verdict; everything is deleted afterwards."""
    custom = client.CustomObjectsApi(admin_api)
    created: list[str] = []

    def make(name: str, namespaces: list[str], members: list[dict[str, Any]], *,
             wait_ready: bool = True, **spec: Any) -> dict[str, Any]:
        custom.create_cluster_custom_object(GROUP, VERSION, "tenants",
                                            _tenant(name, namespaces, members, **spec))
        created.append(name)
        return wait_for(name, ready=wait_ready)

    def wait_for(name: str, *, ready: bool = True) -> dict[str, Any]:
        def reported() -> dict[str, Any] | None:
            obj = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
            status = conditions_of(obj).get("Ready", {}).get("status")
            generation = obj["metadata"]["generation"]
            current = (obj.get("status") or {}).get("observedGeneration") == generation
            wanted = "True" if ready else "False"
            return obj if current and status == wanted else None

        return eventually(reported, timeout=60, what=f"tenant {name} Ready={ready}")

    make.wait_for = wait_for  # type: ignore[attr-defined]
    yield make
    for name in created:
        with contextlib.suppress(client.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name,
                                               {"spec": {"deletionPolicy": "Delete"}})
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


def owner(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "role": "owner"}


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl_binary() -> Path:
    """The real kubectl of the control plane's version (built once into the cache)."""
    return build.ensure_kubectl()


@pytest.fixture(scope="session")
def kubectl(control_plane: LocalControlPlane, kubectl_binary: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """`kubectl("describe", "tenant", name)`: the real client as the cluster admin, or as
    `user=` in `groups=`; returns the finished process (check=True raises with its stderr).

    Its discovery cache and kuberc are the test's own: nothing of the developer's ~/.kube is
    read or written."""
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, user: str | None = None, groups: Sequence[str] = (),
            check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        kubeconfig = (control_plane.admin_kubeconfig if user is None
                      else control_plane.kubeconfig_for(user, groups))
        result = subprocess.run(
            [str(kubectl_binary), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache),
             *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "KUBERC": "off"})
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    return run
