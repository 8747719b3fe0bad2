"""API keys (pure): `tnt_` + 32 random base62 characters + a 6-character CRC32 checksum.

The format follows GitHub's token format idea: a fixed, greppable prefix and a checksum let
secret scanners find leaked keys with almost no false positives, and let the API refuse a
mistyped or made-up key without a database lookup. 32 base62 characters carry 190 bits of
randomness, so the key is stored as its SHA-256 only (a slow hash buys nothing against a
random 190-bit secret). The first 8 random characters are the key's public `prefix`, shown in
listings as `tnt_AbCd1234…` so an owner can tell keys apart; the full key is shown once, in the
response that creates it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import zlib

PREFIX = "tnt_"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
PUBLIC_PREFIX_LENGTH = 8
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PATTERN = re.compile(rf"^{PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}$")
LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def checksum(random_part: str) -> str:
    """CRC32 of the random part, as 6 base62 characters (62**6 > 2**32)."""
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


@dataclasses.dataclass(frozen=True)
class NewKey:
    key: str = dataclasses.field(repr=False)
    prefix: str
    """`tnt_` + the first 8 random characters: public, unique, shown in listings."""
    hash: bytes = dataclasses.field(repr=False)


def new_key() -> NewKey:
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    key = PREFIX + random_part + checksum(random_part)
    return NewKey(key=key, prefix=public_prefix(key), hash=key_hash(key))


def looks_like_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (it starts with the prefix)."""
    return token.startswith(PREFIX)


def well_formed(key: str) -> bool:
    """Length, alphabet and checksum: a key that fails this was never issued."""
    if len(key) != LENGTH or not PATTERN.match(key):
        return False
    random_part = key[len(PREFIX):len(PREFIX) + RANDOM_LENGTH]
    return secrets.compare_digest(checksum(random_part), key[-CHECKSUM_LENGTH:])


def public_prefix(key: str) -> str:
    return key[:len(PREFIX) + PUBLIC_PREFIX_LENGTH]


def masked(prefix: str) -> str:
    """How a listing shows a key: its public prefix and an ellipsis."""
    return prefix + "…"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()
