"""Pure parts of credential exchange: scope rules, TokenReview answers and caching, files."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tenantry.api import exchange, tokenreview
from tenantry.api.tokenreview import Account
from tenantry.workload import fetch, files

APP = Account(namespace="acme", name="app", uid="u1")


def credential(scope: str = "caller", accounts: list[str] | None = None,
               namespace: str = "acme") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": "db"},
            "spec": {"scope": scope, "allowedServiceAccounts": accounts or []}}


@pytest.mark.parametrize(("obj", "who", "allowed"), [
    (credential(accounts=["app"]), APP, True),
    (credential(accounts=["other"]), APP, False),
    (credential(accounts=["app"], namespace="elsewhere"), APP, False),
    (credential("participant", ["app"]), APP, False),
    (credential("platform"), APP, False),
    (credential("platform"), Account("tenantry-system", "api", "u"), True),
    (credential("platform", ["operator"]), Account("tenantry-system", "api", "u"), False),
    (credential("bogus", ["app"]), APP, False),
])
def test_scope_rules(obj: dict[str, Any], who: Account, allowed: bool) -> None:
    assert exchange.decide(obj, who, "tenantry-system").allowed is allowed


def test_a_refusal_says_why_without_values() -> None:
    decision = exchange.decide(credential("participant"), APP, "tenantry-system")
    assert decision.status == 403 and "participant token" in decision.reason


def review(authenticated: bool = True, audiences: list[str] | None = None,
           username: str = "system:serviceaccount:acme:app") -> dict[str, Any]:
    return {"status": {"authenticated": authenticated,
                       "audiences": ["tenantry-api"] if audiences is None else audiences,
                       "user": {"username": username, "uid": "u1", "extra": {
                           "authentication.kubernetes.io/pod-name": ["app-0"]}}}}


def test_only_authenticated_service_accounts_for_our_audience() -> None:
    assert tokenreview.account_of(review(), "tenantry-api") == Account("acme", "app", "u1",
                                                                        "app-0")
    assert tokenreview.account_of(review(False), "tenantry-api") is None
    assert tokenreview.account_of(review(audiences=["kubernetes"]), "tenantry-api") is None
    assert tokenreview.account_of(review(audiences=[]), "tenantry-api") is None
    assert tokenreview.account_of(review(username="alice"), "tenantry-api") is None
    assert tokenreview.account_of(review(username="system:serviceaccount:acme"),
                                  "tenantry-api") is None
    assert tokenreview.account_of(review(username="system:serviceaccount:a:b:c"),
                                  "tenantry-api") is None


def jwt_with(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"e30.{body}.sig"


class FakeKube:
    """Counts TokenReviews; answers with a fixed review (pure unit test of the cache)."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer, self.calls = answer, 0

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return self.answer


def test_verdicts_are_cached_at_most_until_the_tokens_expiry() -> None:
    kube = FakeKube(review())
    reviewer = tokenreview.TokenReviewer(kube)
    soon = jwt_with({"exp": int(time.time()) + 600})
    expired = jwt_with({"exp": int(time.time()) - 1})

    async def go() -> None:
        for _ in range(3):
            assert await reviewer.review(soon) is not None
        assert kube.calls == 1
        for _ in range(2):
            await reviewer.review(expired)
        assert kube.calls == 3  # never cached past exp

    asyncio.run(go())


def test_no_cache_when_disabled() -> None:
    kube = FakeKube(review())
    reviewer = tokenreview.TokenReviewer(kube, enabled=False)
    token = jwt_with({"exp": int(time.time()) + 600})
    asyncio.run(reviewer.review(token))
    asyncio.run(reviewer.review(token))
    assert kube.calls == 2


def test_unverified_expiry_reads_exp_only_when_well_formed() -> None:
    assert tokenreview.unverified_expiry(jwt_with({"exp": 123})) == 123
    assert tokenreview.unverified_expiry(jwt_with({"exp": True})) is None
    assert tokenreview.unverified_expiry("garbage") is None
    assert tokenreview.unverified_expiry("a.!!!.c") is None


def test_the_reviewed_account_carries_the_tokens_lifetime() -> None:
    reviewer = tokenreview.TokenReviewer(FakeKube(review()))
    now = int(time.time())
    hour = asyncio.run(reviewer.review(jwt_with({"iat": now, "exp": now + 3600})))
    assert hour is not None and hour.lifetime == 3600
    legacy = asyncio.run(reviewer.review(jwt_with({"sub": "x"})))  # a Secret token: no exp
    assert legacy is not None and legacy.lifetime is None
    assert tokenreview.lifetime_of(jwt_with({"iat": 10, "exp": True})) is None


@pytest.mark.parametrize(("lifetime", "refused"), [
    (600, False), (3600, False), (86400, False),
    (86401, True), (10 * 365 * 86400, True), (None, True), (0, True), (-5, True),
])
def test_tokens_that_outlive_the_limit_are_refused(lifetime: int | None, refused: bool) -> None:
    # A tenant admin may mint a token for years; it would outlive their access to the tenant.
    account = Account("acme", "app", "u1", lifetime=lifetime)
    decision = exchange.lifetime_refusal(account, tokenreview.MAX_LIFETIME)
    assert (decision is not None) is refused
    if decision is not None:
        assert decision.status == 401 and "at most 86400 s" in decision.reason


def test_files_are_0400_swapped_atomically_and_stale_ones_removed(tmp_path: Path) -> None:
    files.write_values(tmp_path, {"a": b"1", "b": b"2"}, key_id="v1.x", generation=1)
    files.write_values(tmp_path, {"a": b"3"}, key_id="v1.x", generation=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tenantry.json", "a"]
    assert (tmp_path / "a").read_bytes() == b"3"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o400
    assert files.read_meta(tmp_path) == {"keyId": "v1.x", "generation": 2, "fields": ["a"]}


@pytest.mark.parametrize("field", ["../escape", ".tenantry.json", "a/b", ".."])
def test_field_names_that_are_not_plain_file_names_are_refused(tmp_path: Path,
                                                               field: str) -> None:
    with pytest.raises(files.UnsafeField):
        files.write_values(tmp_path / "d", {field: b"x"}, key_id="k", generation=1)


def test_answers_map_to_exit_codes() -> None:
    with pytest.raises(fetch.Refused):
        fetch.parse_answer(403, {"detail": "no"})
    with pytest.raises(fetch.Unavailable):
        fetch.parse_answer(409, {"detail": "not encrypted yet"})
    got = fetch.parse_answer(200, {"data": {"t": "x", "b": base64.b64encode(b"\xff").decode()},
                                   "base64Fields": ["b"], "keyId": "k", "generation": 3})
    assert got.values == {"t": b"x", "b": b"\xff"} and got.generation == 3
