"""Token-bucket rate limits whose state lives in PostgreSQL, shared by every replica.

A `Limit` of `capacity` requests per `period` refills continuously at capacity/period tokens
per second and holds at most `capacity`. One SQL statement per check (`store.take_token`)
refills, takes a token if one is there and records the decision, on the database's clock, so
replicas agree without clock sync and a burst spread over replicas is counted once.

Defaults (the seeds': auth endpoints 10 requests/min per client IP): `AUTH_PER_IP`, applied to
`/v1/auth/login` and `/v1/auth/refresh`; `TENANT_API`, every route under `/v1/tenants/{tenant}`
per tenant (600 requests/min: a tenant's automation cannot starve the others);
`EXCHANGE_PER_SERVICE_ACCOUNT`, credential exchanges per ServiceAccount (600/min). Refusals are
429 with `Retry-After` (seconds until a token is back) and the `RateLimit-Limit`,
`RateLimit-Remaining`, `RateLimit-Reset` headers (draft-ietf-httpapi-ratelimit-headers);
allowed responses carry the same three headers.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Limit:
    capacity: int
    period: float
    """Seconds to refill an empty bucket."""

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.period <= 0:
            raise ValueError("rate limit: capacity >= 1 and period > 0")

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.capacity / self.period

    @classmethod
    def parse(cls, text: str) -> Limit:
        """`10/min`, `100/s`, `500/hour`, `20/30s`."""
        count, _, unit = text.partition("/")
        units = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}
        try:
            if unit in units:
                period = units[unit]
            elif unit.endswith("s") and unit[:-1].isdigit():
                period = float(unit[:-1])
            else:
                raise ValueError(unit)
            return cls(capacity=int(count), period=period)
        except ValueError:
            raise ValueError(f"rate limit {text!r}: expected COUNT/UNIT, e.g. 10/min") from None


AUTH_PER_IP = Limit(capacity=10, period=60.0)
TENANT_API = Limit(capacity=600, period=60.0)
EXCHANGE_PER_SERVICE_ACCOUNT = Limit(capacity=600, period=60.0)


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: Limit
    tokens: float
    """Tokens left after this request."""

    @property
    def retry_after(self) -> int:
        """Whole seconds until one token is back (0 when allowed)."""
        if self.allowed:
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / self.limit.rate))

    def headers(self) -> dict[str, str]:
        reset = math.ceil((self.limit.capacity - self.tokens) / self.limit.rate)
        headers = {"RateLimit-Limit": str(self.limit.capacity),
                   "RateLimit-Remaining": str(max(0, math.floor(self.tokens))),
                   "RateLimit-Reset": str(max(0, reset))}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers
