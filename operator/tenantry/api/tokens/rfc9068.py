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

A client presents the same token on every request for its 15 minutes, and the signature check
is most of the cost of a request (an Ed25519 verification, about 0.1-0.2 ms). So a token that
passed every rule is remembered (`VerifiedTokens`, bounded LRU, keyed by the exact token
string): presented again under the same policy and with the very key object that verified it
still in the key set, only the rules that depend on the clock (exp, nbf, iat) are checked
again. Everything else is a function of the token's bytes, the key and the policy, so the
answer cannot differ; a token that fails is never remembered (nothing to fill the cache with
but tokens we signed), and a key dropped from the set stops verifying its tokens at once.
Revocation is not a rule of the token and is checked on every request by the caller
(`deps.caller`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import secrets
import time
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


@dataclasses.dataclass(frozen=True)
class _Verified:
    policy: Policy
    key: ed25519.Ed25519PublicKey
    kid: str
    not_before: float
    claims: AccessClaims


class VerifiedTokens:
    """Tokens that passed every rule, most recently used last, at most `size` of them."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: collections.OrderedDict[str, _Verified] = collections.OrderedDict()

    def get(self, token: str, keys: Mapping[str, ed25519.Ed25519PublicKey],
            policy: Policy) -> _Verified | None:
        entry = self._entries.get(token)
        if entry is None or entry.policy != policy or keys.get(entry.kid) is not entry.key:
            return None
        self._entries.move_to_end(token)  # most recently used last
        return entry

    def put(self, token: str, entry: _Verified) -> None:
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


VERIFIED = VerifiedTokens()


def clock() -> float:
    """The clock the remembered tokens are checked against (seconds since the epoch)."""
    return time.time()


def _check_clock(entry: _Verified, policy: Policy, now: float) -> None:
    """The clock rules, as `jwt.decode` applies them with our leeway."""
    if entry.claims.expires_at <= now - policy.leeway:
        raise TokenInvalid("expired")
    if entry.not_before > now + policy.leeway or entry.claims.issued_at > now + policy.leeway:
        raise TokenInvalid("not yet valid")


def verifying_key(token: str, keys: Mapping[str, ed25519.Ed25519PublicKey],
                  types: tuple[str, ...], wrong_type: str) -> tuple[str, ed25519.Ed25519PublicKey]:
    """The header rules every token of ours obeys (a JSON header, alg on the allow-list, `typ`
    one of `types`, no `crit`, a `kid` we hold); (kid, its key), or TokenInvalid."""
    try:
        header = json.loads(jwt.utils.base64url_decode(token.split(".", 1)[0]))
    except (ValueError, TypeError):
        raise TokenInvalid("malformed") from None
    if not isinstance(header, dict):
        raise TokenInvalid("malformed")
    if header.get("alg") not in ALGORITHMS:
        raise TokenInvalid("algorithm not allowed")
    if header.get("typ") not in types:
        raise TokenInvalid(wrong_type)
    if "crit" in header:
        raise TokenInvalid("unsupported critical header")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or not isinstance(kid, str):
        raise TokenInvalid("unknown key id")
    return kid, key


def verify(token: str, keys: Mapping[str, ed25519.Ed25519PublicKey],
           policy: Policy) -> AccessClaims:
    """The claims of `token`, or TokenInvalid naming the first rule it breaks."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenInvalid("malformed")
    known = VERIFIED.get(token, keys, policy)
    if known is not None:
        _check_clock(known, policy, clock())
        return known.claims
    kid, key = verifying_key(token, keys, (TYPE, f"application/{TYPE}"),
                             "not an access token (typ)")
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
    claims = _claims(payload, policy)
    VERIFIED.put(token, _Verified(policy=policy, key=key, kid=str(kid), claims=claims,
                                  not_before=float(payload["nbf"])))
    return claims


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
