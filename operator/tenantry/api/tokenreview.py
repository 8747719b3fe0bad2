"""Who a workload is: its projected ServiceAccount token, checked by the apiserver (TokenReview).

The API never verifies a ServiceAccount token itself: it asks the apiserver that issued it
(`POST /apis/authentication.k8s.io/v1/tokenreviews` with `audiences: [tenantry-api]`), so a
token minted for another audience, expired, of a deleted ServiceAccount or a deleted pod is
refused exactly as the cluster would refuse it. Only ServiceAccount identities are accepted.

How long a token lives is checked here too (`Account.lifetime`, `MAX_LIFETIME`): whoever may
create ServiceAccount tokens in a namespace (a tenant admin) can ask the apiserver for one that
lives for years, not bound to any pod, and would keep reading the namespace's Credentials, and
every value they are rotated to, long after being taken off the Tenant. The lifetime is read from
the token's own `iat` and `exp` once the apiserver has vouched for the token (it signed them).

Answers are cached so that a burst of pods starting at once does not throttle the apiserver:
by the SHA-256 of the token (never the token), for at most `ttl` seconds (one minute) and never
beyond the token's own `exp`. A refusal is cached too, for a few seconds only, so a flood of bad
tokens costs one review each per few seconds. The cache is bounded.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

AUDIENCE = "tenantry-api"
CACHE_TTL = 60.0
REFUSAL_TTL = 5.0
CACHE_SIZE = 10_000
MAX_LIFETIME = 24 * 3600
"""The longest-lived ServiceAccount token the exchange takes by default (`--max-token-lifetime`):
a day, well above the hour of a kubelet's projected token, far below what TokenRequest allows."""
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclasses.dataclass(frozen=True)
class Account:
    """A ServiceAccount the apiserver vouched for."""

    namespace: str
    name: str
    uid: str
    pod: str | None = None
    """The pod the token is bound to, when it is a bound token."""
    lifetime: int | None = None
    """Seconds from the token's `iat` to its `exp`; None when it claims no such pair (a legacy
    Secret-based token never expires)."""

    @property
    def username(self) -> str:
        return f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:{self.name}"


class ReviewUnavailable(Exception):
    """The apiserver could not be asked (network, 5xx, our RBAC): not the token's fault."""


def service_account_of(username: object) -> tuple[str, str] | None:
    """(namespace, name) of `system:serviceaccount:NS:NAME`, else None."""
    if not isinstance(username, str) or not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    if not namespace or not name or ":" in name:
        return None
    return namespace, name


def _unverified_time_claim(token: str, claim: str) -> int | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    value = payload.get(claim) if isinstance(payload, dict) else None
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def unverified_expiry(token: str) -> int | None:
    """The `exp` a JWT claims, read without verifying it: only to bound how long a verdict the
    apiserver gave is cached, never to trust the token."""
    return _unverified_time_claim(token, "exp")


def lifetime_of(token: str) -> int | None:
    """`exp - iat` of a JWT, or None without both. Meaningful only for a token the apiserver
    has just authenticated (so it signed these claims)."""
    issued, expiry = _unverified_time_claim(token, "iat"), unverified_expiry(token)
    return None if issued is None or expiry is None else expiry - issued


def account_of(review: dict[str, Any], audience: str) -> Account | None:
    """The reviewed identity (pure): authenticated, for `audience`, and a ServiceAccount."""
    status = review.get("status") or {}
    if status.get("authenticated") is not True:
        return None
    audiences = status.get("audiences")
    if not isinstance(audiences, list) or audience not in audiences:
        return None
    user = status.get("user") or {}
    found = service_account_of(user.get("username"))
    if found is None:
        return None
    extra = user.get("extra") or {}
    pods = extra.get("authentication.kubernetes.io/pod-name") or []
    return Account(namespace=found[0], name=found[1], uid=str(user.get("uid") or ""),
                   pod=str(pods[0]) if pods else None)


class TokenReviewer:
    """TokenReviews through the API's `KubeApi` (its own identity), with a bounded cache."""

    def __init__(self, kube: Any, *, audience: str = AUDIENCE, ttl: float = CACHE_TTL,
                 enabled: bool = True) -> None:
        self._kube = kube
        self.audience = audience
        self._ttl = ttl if enabled else 0.0
        self._cache: OrderedDict[bytes, tuple[float, Account | None]] = OrderedDict()
        self.reviews = 0
        """TokenReviews sent (for tests and metrics)."""

    async def review(self, token: str) -> Account | None:
        """The ServiceAccount behind `token`, or None when the apiserver refuses it."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        account = await self._ask(token)
        self._remember(key, account, token, now)
        return account

    def _remember(self, key: bytes, account: Account | None, token: str, now: float) -> None:
        if self._ttl <= 0:
            return
        until = now + (self._ttl if account is not None else min(self._ttl, REFUSAL_TTL))
        expiry = unverified_expiry(token)
        if expiry is not None:
            until = min(until, float(expiry))
        if until <= now:
            return
        self._cache[key] = (until, account)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _ask(self, token: str) -> Account | None:
        self.reviews += 1
        try:
            review = await self._kube.create({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {}, "spec": {"token": token, "audiences": [self.audience]}})
        except Exception as error:  # any transport or API failure: the apiserver is unsure
            raise ReviewUnavailable(type(error).__name__) from None
        account = account_of(review, self.audience) if isinstance(review, dict) else None
        if account is None:
            return None
        return dataclasses.replace(account, lifetime=lifetime_of(token))
