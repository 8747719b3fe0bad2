"""Scoped JWTs: tokens that can do one thing, signed by the API's access-token key.

Two kinds, each with a `typ` of its own, so neither is ever taken for an access token (which
`rfc9068.verify` accepts only as `at+jwt`) nor for the other:

- `tenantry-ticket+jwt`: a WebSocket upgrade ticket, 30 seconds, bound to the user (`sub`) and
  the exact path (`path`); single use (its jti is spent on use, `store.spend_jti`).
- `tenantry-participant+jwt`: a participant token, at most an hour, for one resource of one
  tenant (`tenant`, `resource` = `credentials/NS/NAME`) in one role (`viewer`: read its
  metadata; `member`: also exchange it, for a participant-scoped Credential); revocable by jti.

Verification pins everything the access tokens pin (EdDSA only, kid we hold, iss, aud, exp,
nbf, iat, a lifetime no longer than the kind allows, no `crit`), and the kind's `typ`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
import jwt.utils
from cryptography.hazmat.primitives.asymmetric import ed25519

from tenantry.api.tokens import rfc7517
from tenantry.api.tokens.rfc9068 import MAX_TOKEN_LENGTH, Policy, TokenInvalid, verifying_key

TICKET = "tenantry-ticket+jwt"
PARTICIPANT = "tenantry-participant+jwt"
LIFETIMES = {TICKET: 30, PARTICIPANT: 3600}
"""The longest each kind may live (seconds)."""
REQUIRED = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")


def issue(keys: rfc7517.KeySet, policy: Policy, kind: str, *, subject: str, ttl: int,
          now: int, claims: Mapping[str, Any]) -> tuple[str, str, int]:
    """(token, jti, exp) of a `kind` token for `subject` carrying `claims`."""
    if not 0 < ttl <= LIFETIMES[kind]:
        raise ValueError(f"ttl must be 1..{LIFETIMES[kind]} seconds")
    jti = secrets.token_urlsafe(16)
    payload = {**claims, "iss": policy.issuer, "aud": policy.audience, "sub": subject,
               "iat": now, "nbf": now, "exp": now + ttl, "jti": jti}
    token = jwt.encode(payload, keys.signing, algorithm=rfc7517.ALGORITHM,
                       headers={"typ": kind, "kid": keys.kid})
    return token, jti, now + ttl


def kind_of(token: str) -> str | None:
    """The `typ` a token claims (unverified: only to route it to the right verifier)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        header = json.loads(jwt.utils.base64url_decode(token.split(".", 1)[0]))
    except (ValueError, TypeError):
        return None
    typ = header.get("typ") if isinstance(header, dict) else None
    return typ if isinstance(typ, str) else None


def verify(token: str, keys: Mapping[str, ed25519.Ed25519PublicKey], policy: Policy,
           kind: str) -> dict[str, Any]:
    """The claims of a `kind` token, or TokenInvalid naming the rule it breaks."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenInvalid("malformed")
    _, key = verifying_key(token, keys, (kind,), "wrong token type")
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=[rfc7517.ALGORITHM], audience=policy.audience,
            issuer=policy.issuer, leeway=policy.leeway,
            options={"require": list(REQUIRED), "strict_aud": True})
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("expired") from None
    except jwt.InvalidSignatureError:
        raise TokenInvalid("bad signature") from None
    except jwt.PyJWTError:
        raise TokenInvalid("invalid") from None
    iat, exp = payload.get("iat"), payload.get("exp")
    if not (isinstance(iat, int) and isinstance(exp, int)) or exp - iat > LIFETIMES[kind]:
        raise TokenInvalid("lifetime longer than issued")
    if not all(isinstance(payload.get(name), str) and 0 < len(payload[name]) <= 256
               for name in ("sub", "jti")):
        raise TokenInvalid("malformed claims")
    return payload
