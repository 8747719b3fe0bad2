"""The API's /metrics, on its own port: numbers that move with what happened, bounded labels.

Parsed with prometheus_client's own parser, so a malformed exposition fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenantry.devcluster.process import free_port
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer


@pytest.fixture(scope="module")
def instrumented(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    port = free_port()
    server = ApiServer(api_db, signing_key, tmp_path_factory.mktemp("metrics") / "api.log",
                       ["--metrics-listen", f"127.0.0.1:{port}", "--auth-rate-limit", "50/min"],
                       kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        yield server, f"http://127.0.0.1:{port}/metrics"
    finally:
        server.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_follow_requests_logins_and_refusals(
        instrumented: tuple[ApiServer, str], api_db: ApiDatabase) -> None:
    server, url = instrumented
    before = scrape(url)
    user = api_db.add_user()
    tenant_path = "/v1/tenants/some-tenant-name/api-keys"
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/auth/login", json={"username": user,
                                                 "password": "wrong!"}).status_code == 401
        token = http.post("/v1/auth/login", json={"username": user, "password": PASSWORD}
                          ).json()["access_token"]
        assert http.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.get(tenant_path, headers={"Authorization": f"Bearer {token}"}
                        ).status_code == 403
        unmatched = http.get("/no/such/path").status_code
    after = scrape(url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tenantry_api_logins_total", method="password", result="failed") == 1
    assert grew("tenantry_api_logins_total", method="password", result="succeeded") == 1
    assert grew("tenantry_api_tokens_issued_total", grant="login") == 1
    assert grew("tenantry_api_requests_total", route="/v1/me", method="GET", status="200") == 1
    assert grew("tenantry_api_requests_total", route="/v1/tenants/{tenant}/api-keys",
                method="GET", status="403") == 1
    assert grew("tenantry_api_request_duration_seconds_count", route="/v1/me") == 1
    assert grew("tenantry_api_requests_total", route="unmatched", method="GET",
                status=str(unmatched)) == 1
    # Bounded labels: no raw path, tenant name, user name or token in the exposition.
    text = httpx.get(url, timeout=10).text
    for leak in ("some-tenant-name", user, token, "/no/such/path"):
        assert leak not in text


def test_metrics_are_not_on_the_public_port(instrumented: tuple[ApiServer, str]) -> None:
    server, _ = instrumented
    assert httpx.get(f"{server.url}/metrics").status_code in (401, 404)
