"""The provider's signing keys (RFC 7517 JWK Set from its `jwks_uri`), cached, with kid rollover.

Providers rotate keys by publishing the new key shortly before signing with it, so a cached set
is usually enough; when a token names a `kid` we do not hold, the set is fetched again once
(the rollover), and the token is refused if the kid is still unknown. That refetch is rate
limited (`min_refetch_interval`, 60 s by default, counted from the previous unknown-kid
refetch): a stream of tokens with made-up kids costs the provider at most one request a minute,
never one per token, while a real rollover is followed at once. The set is also refreshed when
older than `max_age` (an hour). Concurrent callers share one fetch (a lock).

Keys the library cannot import (unknown kty, encryption-only `use: enc`) are skipped, not fatal:
one odd key must not take sign-in down. Without a `kid` in the token, the key is used only when
exactly one usable key exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from joserfc.jwk import JWKRegistry, Key

from tenantry.api.oauth.id_token import IdTokenInvalid

Fetch = Callable[[], Awaitable[Mapping[str, Any]]]

_KTY_OF_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def usable_keys(document: Mapping[str, Any]) -> list[Key]:
    """The signature keys of a JWK Set document that import cleanly."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no keys list")
    found: list[Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            found.append(JWKRegistry.import_key(public))
        except Exception:  # noqa: S112 - one unusable key is skipped, see the docstring
            continue
    return found


def pick(keys: list[Key], kid: str | None, alg: str) -> Key | None:
    kty = _KTY_OF_ALG.get(alg[:2])
    candidates = [k for k in keys if k.key_type == kty
                  and k.get("alg", alg) == alg]
    if kid is None:
        return candidates[0] if len(candidates) == 1 else None
    return next((k for k in candidates if k.kid == kid), None)


class JwksCache:
    def __init__(self, fetch: Fetch, *, min_refetch_interval: float = 60.0,
                 max_age: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._min_refetch = min_refetch_interval
        self._max_age = max_age
        self._clock = clock
        self._keys: list[Key] | None = None
        self._fetched_at = 0.0
        self._refetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many times the set was fetched (for logs and tests)."""

    async def _load(self) -> list[Key]:
        keys = usable_keys(await self._fetch())
        self.fetches += 1
        self._keys, self._fetched_at = keys, self._clock()
        return keys

    async def key(self, kid: str | None, alg: str) -> Key:
        """The key for a token's (kid, alg), or IdTokenInvalid("unknown kid")."""
        async with self._lock:
            keys, fresh = self._keys, False
            if keys is None or self._clock() - self._fetched_at >= self._max_age:
                keys, fresh = await self._load(), True
            found = pick(keys, kid, alg)
            if found is None and not fresh and (
                    self._refetched_at is None
                    or self._clock() - self._refetched_at >= self._min_refetch):
                self._refetched_at = self._clock()
                found = pick(await self._load(), kid, alg)
        if found is None:
            raise IdTokenInvalid("unknown kid" if kid else "no single key for a token "
                                 "without kid")
        return found
