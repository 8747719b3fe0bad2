"""`tenantry dev up`, the README's main command: starts everything, stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client

from tenantry import kube
from tenantry.devcluster.cluster import LocalControlPlane
from tests.conftest import REPO_ROOT

TENANTRY = [sys.executable, "-m", "tenantry"]


def _env_without_cluster() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    return env


def _children_of(pid: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            children.append(int(status.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def test_dev_up_starts_everything_and_cleans_up() -> None:
    result = subprocess.run(
        [*TENANTRY, "dev", "up", "--exit-when-ready"], cwd=REPO_ROOT, env=_env_without_cluster(),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", result.stdout, re.M)
    assert kubeconfig, result.stdout
    assert re.search(r"^export TENANTRY_LEDGER_DSN='postgresql://", result.stdout, re.M)
    assert "control plane ready" in result.stderr
    assert "CRDs installed" in result.stderr
    assert "applied 1 sample object(s)" in result.stderr
    assert "sample tenant(s) Ready: acme" in result.stderr
    # The webhook answers only the apiserver, which authenticates with its client certificate.
    assert "admission webhook running, for the apiserver only" in result.stderr
    # Everything it started is gone, files included.
    assert not Path(kubeconfig.group(1)).exists()
    workdir = str(Path(kubeconfig.group(1)).parent)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                 if workdir in p.read_bytes().decode(errors="replace")]
    assert leftovers == []


def test_children_die_with_a_killed_dev_up() -> None:
    process = subprocess.Popen(
        [*TENANTRY, "dev", "up", "--no-postgres", "--no-samples", "--no-operator"], cwd=REPO_ROOT,
        env=_env_without_cluster(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("export KUBECONFIG="), line
        children = _children_of(process.pid)
        assert len(children) == 3, children  # etcd, kube-apiserver, kube-controller-manager
        process.send_signal(signal.SIGKILL)  # no chance to clean up
        process.wait(10)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_dev_up_uses_a_given_cluster(control_plane: LocalControlPlane) -> None:
    result = subprocess.run(
        [*TENANTRY, "dev", "up", "--exit-when-ready", "--no-postgres", "--no-operator",
         "--kubeconfig", str(control_plane.admin_kubeconfig)],
        cwd=REPO_ROOT, env=_env_without_cluster(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"using the cluster of {control_plane.admin_kubeconfig}" in result.stderr
    assert "starting a local control plane" not in result.stderr
    api = kube.api_client(control_plane.admin_kubeconfig)
    try:
        custom = client.CustomObjectsApi(api)
        tenant = custom.get_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants", "acme")
        assert tenant["spec"]["displayName"] == "ACME Corp"
        custom.delete_cluster_custom_object("tenantry.dev", "v1alpha1", "tenants", "acme")
    finally:
        api.close()
