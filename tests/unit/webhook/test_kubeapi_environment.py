"""The API client of the webhook and the operator reads proxy settings once, not per request.

kubernetes_asyncio's session trusts the environment, so aiohttp would look up the proxy
variables and read ~/.netrc in an executor thread on every request; `KubeApi.from_kubeconfig`
resolves the proxy once. These tests pin both halves: the proxy the environment names is still
used, and the session itself no longer consults the environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tenantry import kubeapi


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_the_proxy_the_environment_names_is_resolved_once_and_the_session_stops_looking(
        tmp_path: Path, no_proxy_variables: pytest.MonkeyPatch) -> None:
    no_proxy_variables.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    api = await kubeapi.KubeApi.from_kubeconfig(
        str(_kubeconfig(tmp_path, "https://api.cluster.example:6443")))
    try:
        assert api.api.rest_client.proxy == "http://proxy.example:3128"
        assert api.api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()


async def test_no_proxy_still_exempts_the_apiserver(
        tmp_path: Path, no_proxy_variables: pytest.MonkeyPatch) -> None:
    no_proxy_variables.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    no_proxy_variables.setenv("NO_PROXY", "cluster.example")
    api = await kubeapi.KubeApi.from_kubeconfig(
        str(_kubeconfig(tmp_path, "https://api.cluster.example:6443")))
    try:
        assert api.api.rest_client.proxy is None
    finally:
        await api.close()


async def test_without_proxy_variables_there_is_no_proxy(
        tmp_path: Path, no_proxy_variables: pytest.MonkeyPatch) -> None:
    api = await kubeapi.KubeApi.from_kubeconfig(
        str(_kubeconfig(tmp_path, "https://127.0.0.1:6443")))
    try:
        assert api.api.rest_client.proxy is None
        assert api.api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
