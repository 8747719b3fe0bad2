"""RFC 9068 / RFC 8725 access tokens: one test per rule, each attacking it the way it breaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tenantry.api.tokens import rfc7517, rfc9068

POLICY = rfc9068.Policy(issuer="tenantry-api", audience="tenantry-api")


@pytest.fixture(scope="module")
def keys() -> rfc7517.KeySet:
    return rfc7517.KeySet(signing=rfc7517.generate())


def _issue(keys: rfc7517.KeySet, now: int | None = None) -> str:
    token, _ = rfc9068.issue(keys, POLICY, subject="6f1c0b1e-0000-4000-8000-000000000001",
                             username="alice", session_id="s-1",
                             now=int(time.time()) if now is None else now)
    return token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A compact JWS with any header, signed by `sign(signing_input)` (or unsigned)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def _claims(now: int | None = None, **overrides: Any) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    claims: dict[str, Any] = {"iss": POLICY.issuer, "aud": POLICY.audience, "sub": "u-1",
                              "iat": now, "nbf": now, "exp": now + 900, "jti": "j-1",
                              "sid": "s-1", "username": "alice"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(keys: rfc7517.KeySet, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, keys.signing, algorithm="EdDSA",
                      headers={"typ": "at+jwt", "kid": keys.kid, **header})


def _refused(token: str, keys: rfc7517.KeySet, reason: str,
             policy: rfc9068.Policy = POLICY) -> None:
    with pytest.raises(rfc9068.TokenInvalid) as refused:
        rfc9068.verify(token, keys.verification_keys(), policy)
    assert refused.value.reason == reason


def test_a_fresh_token_verifies_with_every_claim(keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": keys.kid}
    claims = rfc9068.verify(token, keys.verification_keys(), POLICY)
    assert claims.username == "alice"
    assert claims.session_id == "s-1"
    assert claims.expires_at - claims.issued_at == 15 * 60
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) >= {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id"}


def test_expired_token_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_issue(keys, now=int(time.time()) - 900 - POLICY.leeway - 5), keys, "expired")


def test_expiry_within_the_bounded_skew_still_verifies(keys: rfc7517.KeySet) -> None:
    rfc9068.verify(_issue(keys, now=int(time.time()) - 900 - POLICY.leeway + 5),
                   keys.verification_keys(), POLICY)


def test_skew_cannot_be_configured_beyond_sixty_seconds() -> None:
    with pytest.raises(ValueError, match="leeway"):
        rfc9068.Policy(issuer="i", audience="a", leeway=61)


def test_token_not_yet_valid_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_issue(keys, now=int(time.time()) + 300), keys, "not yet valid")


def test_wrong_audience_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_signed(keys, _claims(aud="another-api")), keys, "wrong audience")


def test_audience_list_is_refused_not_searched(keys: rfc7517.KeySet) -> None:
    _refused(_signed(keys, _claims(aud=["another-api", POLICY.audience])), keys,
             "wrong audience")


def test_wrong_issuer_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_signed(keys, _claims(iss="https://evil.example")), keys, "wrong issuer")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "iss", "aud"])
def test_missing_required_claim_is_refused(keys: rfc7517.KeySet, claim: str) -> None:
    with pytest.raises(rfc9068.TokenInvalid) as refused:
        rfc9068.verify(_signed(keys, _claims(**{claim: None})), keys.verification_keys(),
                       POLICY)
    assert refused.value.reason in (f"missing claim {claim}", "wrong audience",
                                    "wrong issuer")


def test_lifetime_longer_than_issued_is_refused(keys: rfc7517.KeySet) -> None:
    now = int(time.time())
    _refused(_signed(keys, _claims(now, exp=now + 86400)), keys, "lifetime longer than issued")


def test_alg_none_is_refused(keys: rfc7517.KeySet) -> None:
    token = _forge({"alg": "none", "typ": "at+jwt", "kid": keys.kid}, _claims())
    _refused(token, keys, "algorithm not allowed")


def test_hs256_signed_with_the_public_key_is_refused(keys: rfc7517.KeySet) -> None:
    """Algorithm confusion (RFC 8725 2.1): the public key, published in the JWKS, used as an
    HMAC secret. Forged by hand, since PyJWT itself refuses to sign that way."""
    public = keys.signing.public_key()
    for secret in (public.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo),
                   json.dumps(rfc7517.public_jwk(public)).encode()):
        token = _forge({"alg": "HS256", "typ": "at+jwt", "kid": keys.kid}, _claims(),
                       lambda data, s=secret: hmac.new(s, data, hashlib.sha256).digest())
        _refused(token, keys, "algorithm not allowed")


def test_es256_token_is_refused_even_when_validly_signed(keys: rfc7517.KeySet) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_claims(), other, algorithm="ES256",
                       headers={"typ": "at+jwt", "kid": keys.kid})
    _refused(token, keys, "algorithm not allowed")


def test_unknown_kid_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_signed(keys, _claims(), kid="someone-elses-key"), keys, "unknown key id")


def test_missing_kid_is_refused(keys: rfc7517.KeySet) -> None:
    token = jwt.encode(_claims(), keys.signing, algorithm="EdDSA", headers={"typ": "at+jwt"})
    _refused(token, keys, "unknown key id")


def test_token_of_another_key_under_our_kid_fails_the_signature(keys: rfc7517.KeySet) -> None:
    stranger = rfc7517.KeySet(signing=rfc7517.generate())
    token = jwt.encode(_claims(), stranger.signing, algorithm="EdDSA",
                       headers={"typ": "at+jwt", "kid": keys.kid})
    _refused(token, keys, "bad signature")


def test_tampered_payload_fails_the_signature(keys: rfc7517.KeySet) -> None:
    header, _, signature = _issue(keys).split(".")
    forged = _b64(json.dumps(_claims(sub="someone-else")).encode())
    _refused(f"{header}.{forged}.{signature}", keys, "bad signature")


def test_tampered_signature_is_refused(keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    _refused(flipped, keys, "bad signature")


def test_other_typ_is_refused(keys: rfc7517.KeySet) -> None:
    """An ID token or any other JWT from the same key is not an access token (RFC 8725 3.11)."""
    _refused(_signed(keys, _claims(), typ="JWT"), keys, "not an access token (typ)")


def test_crit_header_is_refused(keys: rfc7517.KeySet) -> None:
    _refused(_signed(keys, _claims(), crit=["exp"]), keys, "unsupported critical header")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "x" * 5000 + ".a.b"])
def test_malformed_tokens_are_refused(keys: rfc7517.KeySet, token: str) -> None:
    _refused(token, keys, "malformed")


def test_previous_key_still_verifies_after_rotation(keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    rotated = rfc7517.KeySet(signing=rfc7517.generate(), previous=(keys.signing.public_key(),))
    assert rfc9068.verify(token, rotated.verification_keys(), POLICY).username == "alice"
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [rotated.kid, keys.kid]


def test_retired_key_no_longer_verifies(keys: rfc7517.KeySet) -> None:
    token = _issue(keys)
    _refused(token, rfc7517.KeySet(signing=rfc7517.generate()), "unknown key id")


def test_kid_is_the_rfc7638_thumbprint() -> None:
    """RFC 8037 appendix A.3's key has this RFC 7638 thumbprint."""
    raw = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    assert rfc7517.thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
