"""ID token validation, OpenID Connect Core 1.0 section 3.1.3.7, by the RFC 8725 rules. Pure.

The token came from the provider's token endpoint over TLS, but it is still verified whole
before any claim is believed (the token endpoint response is what an attacker who injects a
code, or a malicious provider configured next to an honest one, controls):

- the compact form is bounded and its header is JSON; `alg` must be on the provider's allow-list
  (`providers.check_algorithms`: asymmetric only) before a key is even looked up, so `none` and
  HS256-with-the-public-key (algorithm confusion) never reach signature checking; `crit` is
  refused (no extension is implemented); `jku`/`jwk`/`x5u` are ignored: the key comes from the
  provider's own JWKS (`jwks`), chosen by `kid`;
- the signature, with that key, for that algorithm only (`joserfc`, RFC 7515);
- `iss` exactly the provider's issuer (item 2), `aud` containing our client id (item 3), and with
  several audiences `azp` equal to our client id (items 4-5);
- `exp` present and in the future, `iat` present and not in the future (items 9-10), with a
  bounded clock skew;
- `nonce` present and equal, in constant time, to the one sent in this sign-in's authorization
  request (item 11): a token minted for another sign-in (replayed, or injected with a stolen
  code) is refused;
- `sub` a non-empty string of at most 255 characters (Core section 2).

`email_verified` is believed only when it is the JSON boolean true.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
from collections.abc import Mapping
from typing import Any

from joserfc import errors, jwt
from joserfc.jwk import Key

MAX_TOKEN_LENGTH = 16 * 1024
MAX_LEEWAY = 120


class IdTokenInvalid(Exception):
    """The ID token is refused; `reason` says by which rule (logged, never shown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Expected:
    """What this sign-in's ID token must say."""

    issuers: tuple[str, ...]
    client_id: str
    nonce: str
    algorithms: tuple[str, ...]
    leeway: int = 30
    groups_claim: str = "groups"
    """The claim listing the user's groups (a list of strings); absent: no groups."""
    groups_prefix: str = ""
    """Put before each group, as the apiserver's --oidc-groups-prefix does."""


@dataclasses.dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    groups: tuple[str, ...] = ()
    """The provider's groups for this user, prefixed (`Expected.groups_prefix`)."""


@dataclasses.dataclass(frozen=True)
class Header:
    alg: str
    kid: str | None


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def read_header(token: str, algorithms: tuple[str, ...]) -> Header:
    """The unverified header, refused unless its alg is allowed (checked before any key)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise IdTokenInvalid("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise IdTokenInvalid("not a compact JWS")
    try:
        header = _b64json(parts[0])
    except (ValueError, UnicodeError):
        raise IdTokenInvalid("header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise IdTokenInvalid("header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise IdTokenInvalid(f"alg {alg!r} not allowed")
    if "crit" in header:
        raise IdTokenInvalid("crit header not supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise IdTokenInvalid("kid is not a string")
    return Header(alg=alg, kid=kid)


def _claims(token: str, key: Key, algorithms: tuple[str, ...]) -> Mapping[str, Any]:
    try:
        decoded = jwt.decode(token, key, algorithms=list(algorithms))
    except errors.BadSignatureError:
        raise IdTokenInvalid("bad signature") from None
    except (errors.JoseError, ValueError, TypeError) as error:
        raise IdTokenInvalid(f"undecodable ({type(error).__name__})") from None
    claims = decoded.claims
    if not isinstance(claims, dict):
        raise IdTokenInvalid("claims are not a JSON object")
    return claims


def _number(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenInvalid(f"{name} missing or not a number")
    return int(value)


def check_claims(claims: Mapping[str, Any], expected: Expected, now: int) -> Identity:
    """The claim rules alone (the signature already verified)."""
    leeway = min(max(expected.leeway, 0), MAX_LEEWAY)
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in expected.issuers:
        raise IdTokenInvalid("wrong issuer")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or expected.client_id not in audiences:
        raise IdTokenInvalid("wrong audience")
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != expected.client_id:
        raise IdTokenInvalid("wrong authorized party (azp)")
    if _number(claims, "exp") <= now - leeway:
        raise IdTokenInvalid("expired")
    if _number(claims, "iat") > now + leeway:
        raise IdTokenInvalid("issued in the future")
    if "nbf" in claims and _number(claims, "nbf") > now + leeway:
        raise IdTokenInvalid("not yet valid")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(),
                                                             expected.nonce.encode()):
        raise IdTokenInvalid("wrong nonce")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise IdTokenInvalid("sub missing or too long")
    email = claims.get("email")
    return Identity(issuer=issuer, subject=subject,
                    email=email if isinstance(email, str) and email else None,
                    email_verified=claims.get("email_verified") is True,
                    groups=groups_of(claims.get(expected.groups_claim), expected.groups_prefix))


MAX_GROUPS = 256
MAX_GROUP_LENGTH = 253


def groups_of(value: object, prefix: str) -> tuple[str, ...]:
    """The groups claim as prefixed names: a list of non-empty strings, at most `MAX_GROUPS`
    of at most `MAX_GROUP_LENGTH` characters; a claim of any other shape is refused (a provider
    that sends a string where a list belongs is misconfigured, not "no groups")."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_GROUPS or not all(
            isinstance(group, str) and 0 < len(group) <= MAX_GROUP_LENGTH for group in value):
        raise IdTokenInvalid(f"groups claim: a list of at most {MAX_GROUPS} group names")
    return tuple(sorted({prefix + group for group in value}))


def verify(token: str, key: Key, expected: Expected, now: int) -> Identity:
    """Every rule above; `key` is the provider's key for this token's kid (`jwks`)."""
    read_header(token, expected.algorithms)
    return check_claims(_claims(token, key, expected.algorithms), expected, now)
