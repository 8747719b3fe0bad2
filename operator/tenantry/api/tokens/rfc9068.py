"""JWT access tokens: the RFC 9068 profile, issued and verified by the RFC 8725 rules.

Issued: header `{"alg": "EdDSA", "typ": "at+jwt", "kid": <RFC 7638 thumbprint>}`; claims iss,
sub, aud, client_id, iat, nbf, exp (iat + 15 minutes), jti (128 random bits), plus `sid`, the
refresh family (session) the token belongs to, so logging out or a detected refresh reuse
revokes every access token of the session, and `username` for logs and `/v1/me`.

Verified, each rule its own refusal (`TokenInvalid.reason`), before any claim is trusted:

- the compact form is bounded (`MAX_TOKEN_LENGTH`) and has a JSON header;
- `alg` is on the allow-list (`ALGORITHMS`: EdDSA only). `none`, HS256 signed with the public
  key (algorithm confusion, RFC 8725 section 2.1) and every other alg are refused, and the
  verifying key is chosen by us, never by the header (no `jwk`/`jku`/`x5u`);
- `typ` is `at+jwt` (RFC 9068 section 4; RFC 8725 section 3.11: an ID token or any other JWT
  signed by the same key is not an access token); a `crit` header is refused (we implement no
  extension);
- `kid` names a key we hold (current or previous);
- signature, then iss and aud pinned to ours, exp/nbf/iat present and checked with a bounded
  clock skew (`MAX_LEEWAY` 60 s), the lifetime no longer than we issue, sub and jti present.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping
from typing import Any

import jwt
import jwt.utils
from cryptography.hazmat.primitives.asymmetric import ed25519

from tenantry.api.tokens import rfc7517

TYPE = "at+jwt"
ALGORITHMS = (rfc7517.ALGORITHM,)
LIFETIME_SECONDS = 15 * 60
MAX_LEEWAY = 60
MAX_TOKEN_LENGTH = 4096
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti")


class TokenInvalid(Exception):
    """The token is refused; `reason` says which rule (for logs and metrics, never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Policy:
    """Who we are as an issuer, and how long our tokens live."""

    issuer: str
    audience: str
    lifetime: int = LIFETIME_SECONDS
    """Seconds from iat to exp (RFC 9068 leaves it to us; the seeds say 15 minutes)."""
    leeway: int = 30
    """Clock skew tolerated on exp, nbf and iat, at most `MAX_LEEWAY` seconds."""
    client_id: str = "tenantry"

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ValueError("access token policy: issuer and audience must be set")
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"access token policy: leeway must be 0..{MAX_LEEWAY} seconds")
        if not 0 < self.lifetime <= LIFETIME_SECONDS:
            raise ValueError(f"access token policy: lifetime must be 1..{LIFETIME_SECONDS} s")


@dataclasses.dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says."""

    subject: str
    username: str
    jti: str
    session_id: str
    issued_at: int
    expires_at: int


def issue(keys: rfc7517.KeySet, policy: Policy, *, subject: str, username: str,
          session_id: str, now: int) -> tuple[str, AccessClaims]:
    """A signed access token for `subject` in session `session_id`, valid from `now`."""
    claims = AccessClaims(subject=subject, username=username, jti=secrets.token_urlsafe(16),
                          session_id=session_id, issued_at=now,
                          expires_at=now + policy.lifetime)
    payload = {"iss": policy.issuer, "sub": subject, "aud": policy.audience,
               "client_id": policy.client_id, "iat": now, "nbf": now,
               "exp": claims.expires_at, "jti": claims.jti, "sid": session_id,
               "username": username}
    token = jwt.encode(payload, keys.signing, algorithm=rfc7517.ALGORITHM,
                       headers={"typ": TYPE, "kid": keys.kid})
    return token, claims


def verify(token: str, keys: Mapping[str, ed25519.Ed25519PublicKey],
           policy: Policy) -> AccessClaims:
    """The claims of `token`, or TokenInvalid naming the first rule it breaks."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenInvalid("malformed")
    try:
        header = json.loads(jwt.utils.base64url_decode(token.split(".", 1)[0]))
    except (ValueError, TypeError):
        raise TokenInvalid("malformed") from None
    if not isinstance(header, dict):
        raise TokenInvalid("malformed")
    if header.get("alg") not in ALGORITHMS:
        raise TokenInvalid("algorithm not allowed")
    if header.get("typ") not in (TYPE, f"application/{TYPE}"):
        raise TokenInvalid("not an access token (typ)")
    if "crit" in header:
        raise TokenInvalid("unsupported critical header")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenInvalid("unknown key id")
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=list(ALGORITHMS), audience=policy.audience,
            issuer=policy.issuer, leeway=policy.leeway,
            options={"require": list(REQUIRED_CLAIMS), "strict_aud": True})
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenInvalid("not yet valid") from None
    except jwt.InvalidAudienceError:
        raise TokenInvalid("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise TokenInvalid("wrong issuer") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenInvalid(f"missing claim {error.claim}") from None
    except jwt.InvalidSignatureError:
        raise TokenInvalid("bad signature") from None
    except jwt.PyJWTError:
        raise TokenInvalid("malformed") from None
    return _claims(payload, policy)


def _claims(payload: Mapping[str, Any], policy: Policy) -> AccessClaims:
    iat, exp = payload["iat"], payload["exp"]
    if not (isinstance(iat, int) and isinstance(exp, int)) or exp - iat > policy.lifetime:
        raise TokenInvalid("lifetime longer than issued")
    fields = {name: payload.get(name) for name in ("sub", "jti", "sid", "username")}
    if not all(isinstance(value, str) and 0 < len(value) <= 256 for value in fields.values()):
        raise TokenInvalid("malformed claims")
    if len(str(fields["jti"])) > 128:
        raise TokenInvalid("malformed claims")
    return AccessClaims(subject=str(fields["sub"]), username=str(fields["username"]),
                        jti=str(fields["jti"]), session_id=str(fields["sid"]),
                        issued_at=iat, expires_at=exp)
