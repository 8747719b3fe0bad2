"""The verified-token cache of `rfc9068.verify`: a token verified once is answered from memory,
and still refused by every rule that can change after it was first verified (the clock, the key
set, the policy)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tenantry.api.tokens import rfc7517, rfc9068

POLICY = rfc9068.Policy(issuer="tenantry-api", audience="tenantry-api")


@pytest.fixture
def keys() -> rfc7517.KeySet:
    rfc9068.VERIFIED.clear()
    return rfc7517.KeySet(signing=rfc7517.generate())


def _issue(keys: rfc7517.KeySet) -> str:
    token, _ = rfc9068.issue(keys, POLICY, subject="6f1c0b1e-0000-4000-8000-000000000001",
                             username="alice", session_id="s-1", now=int(time.time()))
    return token


def _at(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr(rfc9068, "clock", lambda: now)


def _refused(token: str, keys: Any, policy: rfc9068.Policy, reason: str) -> None:
    with pytest.raises(rfc9068.TokenInvalid) as refused:
        rfc9068.verify(token, keys, policy)
    assert refused.value.reason == reason


def test_a_token_verified_once_is_answered_without_another_signature_check(
        keys: rfc7517.KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _issue(keys)
    first = rfc9068.verify(token, keys.verification_keys(), POLICY)

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("verified again")

    monkeypatch.setattr(jwt, "decode", no_decode)  # the module rfc9068 calls
    assert rfc9068.verify(token, keys.verification_keys(), POLICY) == first


def test_a_remembered_token_still_expires(keys: rfc7517.KeySet,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    token = _issue(keys)
    claims = rfc9068.verify(token, keys.verification_keys(), POLICY)
    _at(monkeypatch, claims.expires_at + POLICY.leeway - 1)
    assert rfc9068.verify(token, keys.verification_keys(), POLICY) == claims  # within skew
    _at(monkeypatch, claims.expires_at + POLICY.leeway)
    _refused(token, keys.verification_keys(), POLICY, "expired")


def test_a_remembered_token_is_not_valid_before_its_time_if_the_clock_goes_back(
        keys: rfc7517.KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _issue(keys)
    claims = rfc9068.verify(token, keys.verification_keys(), POLICY)
    _at(monkeypatch, claims.issued_at - POLICY.leeway - 1)
    _refused(token, keys.verification_keys(), POLICY, "not yet valid")


def test_a_remembered_token_stops_verifying_when_its_key_is_retired(
        keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    rotated = rfc7517.KeySet(signing=rfc7517.generate(), previous=(keys.signing.public_key(),))
    assert rfc9068.verify(token, rotated.verification_keys(), POLICY).username == "alice"
    retired = rfc7517.KeySet(signing=rotated.signing)
    _refused(token, retired.verification_keys(), POLICY, "unknown key id")


def test_a_remembered_token_is_checked_again_under_another_key_with_its_kid(
        keys: rfc7517.KeySet) -> None:
    """A key set holding a different key under the same kid (a mapping built by hand) gets
    the signature checked, not the remembered answer."""
    token = _issue(keys)
    rfc9068.verify(token, keys.verification_keys(), POLICY)
    impostor = {keys.kid: rfc7517.generate().public_key()}
    _refused(token, impostor, POLICY, "bad signature")


def test_a_remembered_token_is_checked_again_under_another_policy(
        keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    rfc9068.verify(token, keys.verification_keys(), POLICY)
    other = rfc9068.Policy(issuer="tenantry-api", audience="another-api")
    _refused(token, keys.verification_keys(), other, "wrong audience")


def test_refused_tokens_are_never_remembered(keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    forged = jwt.encode({"sub": "x"}, rfc7517.generate(), algorithm="EdDSA",
                        headers={"typ": "at+jwt", "kid": keys.kid})
    for bad in (tampered, forged, tampered, forged):  # twice: the second is not a hit either
        with pytest.raises(rfc9068.TokenInvalid):
            rfc9068.verify(bad, keys.verification_keys(), POLICY)
    assert rfc9068.VERIFIED.get(tampered, keys.verification_keys(), POLICY) is None
    assert rfc9068.VERIFIED.get(forged, keys.verification_keys(), POLICY) is None


def test_the_cache_is_bounded_least_recently_used_first(keys: rfc7517.KeySet,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    small = rfc9068.VerifiedTokens(size=2)
    monkeypatch.setattr(rfc9068, "VERIFIED", small)
    verification = keys.verification_keys()
    first, second, third = (_issue(keys) for _ in range(3))
    rfc9068.verify(first, verification, POLICY)
    rfc9068.verify(second, verification, POLICY)
    rfc9068.verify(first, verification, POLICY)  # first is now the most recent
    rfc9068.verify(third, verification, POLICY)
    assert small.get(second, verification, POLICY) is None
    assert small.get(first, verification, POLICY) is not None
    assert small.get(third, verification, POLICY) is not None


def test_the_key_set_builds_its_mapping_once_and_read_only(keys: rfc7517.KeySet) -> None:
    mapping = keys.verification_keys()
    assert keys.verification_keys() is mapping
    with pytest.raises(TypeError):
        mapping[keys.kid] = rfc7517.generate().public_key()  # type: ignore[index]
