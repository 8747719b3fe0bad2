"""The aiohttp application: routes from the table, 400 for malformed reviews, never a 500."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tenantry.webhook import clientauth, review, server
from tenantry.webhook.routes import Rule, WebhookRoute
from tests.unit.admission.admission_helpers import hardened_pod
from tests.unit.webhook.webhook_unit_helpers import review_body

READY = {"value": False}
# TestServer speaks plain HTTP: client certificates are tested in test_clientauth.py.
ANYONE = clientauth.ClientPolicy.unauthenticated()


async def _allow(request: review.AdmissionRequest) -> review.Verdict:
    return review.Verdict.allow(warnings=(f"saw {request.display_name}",))


async def _crash(request: review.AdmissionRequest) -> review.Verdict:
    raise KeyError("bug")


RULES = (Rule(("",), ("v1",), ("pods",)),)
ROUTES = [WebhookRoute("ok.test.tenantry.dev", "/validate/ok", _allow, rules=RULES),
          WebhookRoute("crash.test.tenantry.dev", "/validate/crash", _crash, rules=RULES)]


@pytest.fixture
async def http() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = server.make_app(ROUTES, ready=lambda: READY["value"], clients=ANYONE)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_review_gets_its_verdict(http: TestClient) -> None:  # type: ignore[type-arg]
    response = await http.post("/validate/ok", json=review_body(hardened_pod()))
    assert response.status == 200
    answer = await response.json()
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                                  "allowed": True, "warnings": ["saw hardened"]}


async def test_malformed_reviews_get_400(http: TestClient) -> None:  # type: ignore[type-arg]
    for body in (b"", b"{", json.dumps({"kind": "AdmissionReview"}).encode()):
        response = await http.post("/validate/ok", data=body,
                                   headers={"Content-Type": "application/json"})
        assert response.status == 400
        answer = await response.json()
        assert answer["kind"] == "Status" and answer["reason"] == "BadRequest"
        assert answer["message"].startswith("malformed AdmissionReview: ")


async def test_a_crashing_handler_refuses_instead_of_500(
        http: TestClient, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[type-arg]
    response = await http.post("/validate/crash", json=review_body(hardened_pod()))
    assert response.status == 200
    answer = (await response.json())["response"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 500
    assert "internal error" in answer["status"]["message"]
    assert "handler failed" in caplog.text


async def test_other_methods_and_paths(http: TestClient) -> None:  # type: ignore[type-arg]
    assert (await http.get("/validate/ok")).status == 405
    assert (await http.post("/nowhere", json={})).status == 404


async def test_health_and_readiness(http: TestClient) -> None:  # type: ignore[type-arg]
    assert (await http.get("/healthz")).status == 200
    READY["value"] = False
    assert (await http.get("/readyz")).status == 503
    READY["value"] = True
    assert (await http.get("/readyz")).status == 200


async def test_oversized_bodies_are_refused(http: TestClient) -> None:  # type: ignore[type-arg]
    response = await http.post("/validate/ok", data=io.BytesIO(b"x" * (server.MAX_BODY + 1)),
                               headers={"Content-Type": "application/json"})
    assert response.status == 413


def test_paths_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        server.make_app([*ROUTES, ROUTES[0]], ready=lambda: True, clients=ANYONE)
