"""Password hashing and verification: Argon2id for new hashes, imported bcrypt re-hashed.

- New hashes are Argon2id with OWASP's Password Storage Cheat Sheet parameters (m = 19 MiB,
  t = 2, p = 1; 16-byte salt, 32-byte tag), in the PHC string format argon2-cffi writes.
- bcrypt hashes (`$2a$`, `$2b$`, `$2y$`: the seeds' format, for imported users) are accepted;
  after a successful login `Verdict.rehash` asks the caller to store an Argon2id hash instead
  (so does an Argon2 hash with weaker parameters than today's).
- bcrypt reads only the first 72 bytes of a password. We never truncate silently: against a
  bcrypt hash, a password of more than 72 UTF-8 bytes is refused (a wrong password), because
  it cannot be the one the hash was made from by an implementation that refuses long inputs
  (Go's, the seeds') and accepting it would let a 73rd byte onwards be anything. Such a user
  sets a new password. Argon2id has no such limit; `MAX_PASSWORD_BYTES` only bounds work.
- Unknown users cost the same: `verify(None, ...)` runs a full Argon2id verification against
  a dummy hash made at start-up, so the response time does not tell whether a user exists.
- Argon2 passwords are NFKC-normalised first (NIST SP 800-63B 5.1.1.2), so the same password
  typed on two keyboards matches; bcrypt passwords are checked as given (the importing
  system did not normalise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import unicodedata

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_BYTES = 1024
BCRYPT_MAX_BYTES = 72
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def owasp_hasher() -> argon2.PasswordHasher:
    """Argon2id, OWASP parameters (m=19456 KiB, t=2, p=1)."""
    return argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32,
                                 salt_len=16, type=argon2.Type.ID)


class WeakPassword(ValueError):
    """A new password breaks a rule; the message names it (never the password)."""


def normalise_username(username: str) -> str:
    """The stored form of a login name: NFKC, trimmed, lower case."""
    return unicodedata.normalize("NFKC", username).strip().lower()


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise WeakPassword(f"password: at most {MAX_PASSWORD_BYTES} bytes")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise WeakPassword("password: no control characters (a stray newline from a file?)")


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    rehash: bool = False
    """Store `hash(password)` now: the stored hash is bcrypt or has outdated parameters."""


class Passwords:
    """Hash new passwords and verify presented ones, in equal time for unknown users."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self.hasher = hasher or owasp_hasher()
        self._dummy = self.hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        check_new_password(password)
        return self.hasher.hash(_nfkc(password))

    def rehash(self, password: str) -> str:
        """An Argon2id hash of a password that just verified (no new-password rules: an
        imported password may predate them)."""
        return self.hasher.hash(_nfkc(password))

    def verify(self, stored: str | None, password: str) -> Verdict:
        """Whether `password` matches `stored` (None: unknown user, always False)."""
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            self._burn()
            return Verdict(ok=False)
        if stored is None:
            self._burn()
            return Verdict(ok=False)
        if stored.startswith(_BCRYPT_PREFIXES):
            return self._verify_bcrypt(stored, password)
        try:
            self.hasher.verify(stored, _nfkc(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(ok=False)
        return Verdict(ok=True, rehash=self.hasher.check_needs_rehash(stored))

    def _verify_bcrypt(self, stored: str, password: str) -> Verdict:
        raw = password.encode()
        if len(raw) > BCRYPT_MAX_BYTES:
            # Refused, not truncated (module doc); the same work as a real check.
            self._burn()
            return Verdict(ok=False)
        try:
            ok = bcrypt.checkpw(raw, stored.encode())
        except ValueError:  # a malformed imported hash
            return Verdict(ok=False)
        return Verdict(ok=ok, rehash=ok)

    def _burn(self) -> None:
        """One full Argon2id verification that cannot succeed: the unknown-user path."""
        with contextlib.suppress(VerificationError):
            self.hasher.verify(self._dummy, secrets.token_urlsafe(24))


def _nfkc(password: str) -> str:
    return unicodedata.normalize("NFKC", password)
