"""`tenantry dev up`, the README's main command: starts everything, stops everything."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
import yaml
from kubernetes import client

from tenantry import kube
from tenantry.devcluster import devenv
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
    assert re.search(r"^export TENANTRY_API_URL=http://127\.0\.0\.1:\d+$", result.stdout, re.M)
    assert re.search(r"^export TENANTRY_DEV_PASSWORD_FILE=\S+$", result.stdout, re.M)
    assert "database tenantry migrated (schemas: ledger, api)" in result.stderr
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


def test_dev_user_is_the_sample_tenants_owner() -> None:
    tenant = yaml.safe_load((REPO_ROOT / "manifests/samples/tenant-acme.yaml").read_text())
    owners = [m["name"] for m in tenant["spec"]["members"]
              if m["kind"] == "User" and m["role"] == "owner"]
    assert owners == [devenv.DEV_USER]


def _exports(stdout: IO[str]) -> dict[str, str]:
    """The `export NAME=VALUE` lines dev up prints once ready (the password file's is last)."""
    exports: dict[str, str] = {}
    while "TENANTRY_DEV_PASSWORD_FILE" not in exports:
        line = stdout.readline()
        assert line.startswith("export "), (line, exports)
        name, _, value = line.removeprefix("export ").strip().partition("=")
        exports[name] = value
    return exports


def test_dev_api_logs_in_the_dev_user_and_dies_with_a_killed_dev_up() -> None:
    process = subprocess.Popen(
        [*TENANTRY, "dev", "up", "--no-samples", "--no-operator"], cwd=REPO_ROOT,
        env=_env_without_cluster(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        exports = _exports(process.stdout)
        assert exports["KUBECONFIG"]
        url = exports["TENANTRY_API_URL"]
        password_file = Path(exports["TENANTRY_DEV_PASSWORD_FILE"])
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        # etcd, kube-apiserver, kube-controller-manager, postgres and the API
        children = _children_of(process.pid)
        api = [pid for pid in children
               if b"\0api\0run\0" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(children) == 5 and len(api) == 1, children
        with httpx.Client(base_url=url, timeout=30) as http:
            # No bypass: without credentials the API refuses, with a wrong password too.
            assert http.get("/v1/me").status_code == 401
            wrong = http.post("/v1/auth/login",
                              json={"username": devenv.DEV_USER, "password": password + "x"})
            assert wrong.status_code == 401, wrong.text
            assert "access_token" not in wrong.text
            login = http.post("/v1/auth/login",
                              json={"username": devenv.DEV_USER, "password": password})
            assert login.status_code == 200, login.text
            tokens = login.json()
            assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
            me = http.get("/v1/me",
                          headers={"Authorization": f"Bearer {tokens['access_token']}"})
            assert me.status_code == 200, me.text
            assert me.json()["user"] == devenv.DEV_USER
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
