"""Refresh tokens: opaque, hashed at rest, rotated on every use, reuse revokes the family.

RFC 9700 (OAuth 2.0 Security BCP) section 4.14.2 and OAuth 2.1 section 4.3.1: a public client's
refresh token is rotated on every use; when a token that was already used is presented again,
either the legitimate client or an attacker holds a stolen copy, the server cannot tell which,
so it revokes the whole family (every token descended from the same login) and with it the
session's access tokens (`sid`).

Pure decision rules over what the store holds (`Stored`), so each case is unit-tested:

- unknown token: refused (`UNKNOWN`); family revoked: refused (`REVOKED`); past its 7 days:
  refused (`EXPIRED`);
- the family's newest token, unused: rotated (`ROTATE`);
- an already used token: the family is revoked (`REUSED`), except once, within `grace`
  (default 10 s, at most 60 s) after its use, for the immediately previous token: a client that
  lost the response (or two tabs racing) may retry it, and gets a sibling of the token it never
  received (`GRACE`). A second retry, or a retry after the grace, is reuse;
- an unused token that is no longer the family's newest (the sibling branch left over after a
  grace retry, once the other branch moved on) is reuse too: only one branch of a family lives.

Tokens are `tntr_` + 256 random bits (base64url): the prefix lets secret scanners find leaked
ones. Only SHA-256 of a token is stored: with 256 bits of entropy, a fast hash is enough.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import re
import secrets

PREFIX = "tntr_"
LIFETIME = datetime.timedelta(days=7)
DEFAULT_GRACE = datetime.timedelta(seconds=10)
MAX_GRACE = datetime.timedelta(seconds=60)
_FORMAT = re.compile(r"^tntr_[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    """Whether `token` could be one of ours (checked before hashing or querying anything)."""
    return bool(_FORMAT.match(token))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Outcome(enum.Enum):
    ROTATE = "rotate"
    GRACE = "grace"
    REUSED = "reused"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN = "unknown"

    @property
    def issues_token(self) -> bool:
        return self in (Outcome.ROTATE, Outcome.GRACE)


@dataclasses.dataclass(frozen=True)
class Stored:
    """A presented token's row and its family's, as the store read them (locked)."""

    generation: int
    expires_at: datetime.datetime
    used_at: datetime.datetime | None
    grace_used: bool
    family_generation: int
    family_revoked: bool


def check_grace(grace: datetime.timedelta) -> datetime.timedelta:
    if not datetime.timedelta(0) <= grace <= MAX_GRACE:
        raise ValueError(f"refresh grace must be between 0 and {MAX_GRACE.seconds} seconds")
    return grace


def decide(stored: Stored | None, now: datetime.datetime,
           grace: datetime.timedelta = DEFAULT_GRACE) -> Outcome:
    """What presenting a refresh token means (see module doc)."""
    if stored is None:
        return Outcome.UNKNOWN
    if stored.family_revoked:
        return Outcome.REVOKED
    if now >= stored.expires_at:
        # An expired token is refused whether used or not: nothing to detect any more.
        return Outcome.EXPIRED
    if stored.used_at is None:
        if stored.generation == stored.family_generation:
            return Outcome.ROTATE
        return Outcome.REUSED
    if (not stored.grace_used and stored.generation == stored.family_generation - 1
            and now - stored.used_at <= check_grace(grace)):
        return Outcome.GRACE
    return Outcome.REUSED
