"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

The document is loaded from a running `tenantry api run` over real HTTP (`/openapi.json`), and
every operation in it is called with generated requests, valid and invalid (schemathesis's
positive and negative modes): without credentials, with a real user's Bearer token, and as
the owner of a real Tenant on that tenant's own routes (so generated input gets past the role
check into the handlers). A few valid requests of each operation are also sent again with a
NUL byte in each string input in turn (`_nul_variants`), which random generation seldom
tries. Every response must:

- not be a server error (`not_a_server_error`): bad input is a 4xx, never a 5xx;
- have a status code the document declares for that operation (`status_code_conformance`);
- match the schema the document declares for that status (`response_schema_conformance`).

Bounded and deterministic: `MAX_EXAMPLES` per operation, `derandomize` (the examples follow
from the document, not from a random seed) and no example database, so a run is repeatable
and stays well under a minute. The server gets very high auth and tenant rate limits so
that the handlers themselves are fuzzed, not only the limiter in front of them (the limits are
tested in test_auth_wire, test_replicas and test_memberships).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Err

from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer
from tests.helpers import GROUP, VERSION, eventually

pytestmark = pytest.mark.postgres

MAX_EXAMPLES = 25
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.response_schema_conformance]
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None,
                         deadline=None, suppress_health_check=list(HealthCheck),
                         phases=[Phase.explicit, Phase.generate])
NUL_SETTINGS = settings(FUZZ_SETTINGS, max_examples=3)


@pytest.fixture(scope="module")
def fuzz_api(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(api_db, signing_key, tmp_path_factory.mktemp("fuzz") / "api.log",
                   ["--auth-rate-limit", "100000/s", "--tenant-rate-limit", "100000/s"],
                   kubeconfig=api_kubeconfig) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_api: ApiServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_api.url}/openapi.json")


@pytest.fixture(scope="module")
def fuzz_user(api_db: ApiDatabase) -> str:
    return api_db.add_user()


def _access_token(api: ApiServer, username: str) -> str:
    response = httpx.post(f"{api.url}/v1/auth/login", timeout=30,
                          json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def bearer(fuzz_api: ApiServer, fuzz_user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {_access_token(fuzz_api, fuzz_user)}"}


@pytest.fixture(scope="module")
def owned_tenant(admin_api: client.ApiClient, crds: None, fuzz_api: ApiServer,
                 fuzz_user: str, bearer: dict[str, str]) -> Iterator[str]:
    """A Tenant the fuzzing user owns, once the API's Tenant watch has it."""
    custom = client.CustomObjectsApi(admin_api)
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    custom.create_cluster_custom_object(GROUP, VERSION, "tenants", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name},
        "spec": {"members": [{"kind": "User", "name": fuzz_user, "role": "owner"}],
                 "namespaces": [{"name": f"{name}-ns"}]}})

    def listed() -> bool:
        me = httpx.get(f"{fuzz_api.url}/v1/me", headers=bearer, timeout=10).json()
        return name in {entry["name"] for entry in me["tenants"]}

    try:
        eventually(listed, timeout=20, what=f"tenant {name} in /v1/me")
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, "tenants", name,
                                               {"spec": {"deletionPolicy": "Delete"}})
            custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)


def _fuzz(schema: Any, headers_for: Callable[[Any], dict[str, str]],
          tenant: str | None = None) -> list[str]:
    """Run every operation of `schema` through the checks (with `tenant`: only the operations
    under /v1/tenants/{tenant}, in that tenant); one entry per failing operation (method, path,
    the failing request and what came back)."""
    failures = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the document does not load: {result.err()}")
            continue
        operation = result.ok()
        fixed = {}
        if tenant is not None:
            if "{tenant}" not in operation.path:
                continue
            fixed = {"path_parameters": {"tenant": tenant}}
        positive = operation.as_strategy(GenerationMode.POSITIVE, **fixed)

        @FUZZ_SETTINGS
        @given(case=st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE, **fixed)))
        def call(case: Any) -> None:
            case.call_and_validate(headers=headers_for(case), checks=CHECKS)

        @NUL_SETTINGS
        @given(case=positive)
        def call_with_nul(case: Any) -> None:
            for variant in _nul_variants(case):
                variant.call_and_validate(headers=headers_for(variant), checks=CHECKS)

        for run in (call, call_with_nul):
            try:
                run()
            except (AssertionError, BaseExceptionGroup) as failure:  # schemathesis's check
                # failures (a FailureGroup is a BaseExceptionGroup): reported per operation,
                # with the request that reproduces them
                failures.append(f"{operation.method.upper()} {operation.path}: {failure}")
    return failures


def _nul_variants(case: Any) -> Iterator[Any]:
    """`case` with one string input at a time (query, path or top-level body field) carrying a
    NUL byte. PostgreSQL refuses NUL in text, so an input that reaches a query unchecked is a
    500; random generation seldom places one, so every string input gets one here."""
    for where in ("query", "path_parameters", "body"):
        values = getattr(case, where)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if isinstance(value, str):
                variant = case.derive()
                getattr(variant, where)[name] = "a\x00b"
                yield variant


def test_every_operation_without_credentials(api_schema: Any) -> None:
    failures = _fuzz(api_schema, lambda case: {})
    assert not failures, "\n\n".join(failures)


def _signed_in(bearer: dict[str, str], fuzz_api: ApiServer,
               fuzz_user: str) -> Callable[[Any], dict[str, str]]:
    def headers_for(case: Any) -> dict[str, str]:
        if case.headers and "authorization" in {name.lower() for name in case.headers}:
            return {}  # the case fuzzes the header itself
        if case.path == "/v1/auth/logout":  # a session of its own: ours must live on
            return {"Authorization": f"Bearer {_access_token(fuzz_api, fuzz_user)}"}
        return bearer

    return headers_for


def test_every_operation_with_a_valid_bearer_token(api_schema: Any, bearer: dict[str, str],
                                                  fuzz_api: ApiServer, fuzz_user: str) -> None:
    failures = _fuzz(api_schema, _signed_in(bearer, fuzz_api, fuzz_user))
    assert not failures, "\n\n".join(failures)


def test_every_tenant_operation_as_the_owner_inside_the_tenant(
        api_schema: Any, bearer: dict[str, str], fuzz_api: ApiServer, fuzz_user: str,
        owned_tenant: str) -> None:
    """Past the role check: the tenant routes' own handling of what is generated."""
    failures = _fuzz(api_schema, _signed_in(bearer, fuzz_api, fuzz_user), tenant=owned_tenant)
    assert not failures, "\n\n".join(failures)
