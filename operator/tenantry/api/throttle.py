"""Progressive per-account login throttling that cannot lock a victim out.

Thresholds (per login name and client IP; the name need not exist, so the throttle's answers
do not reveal which accounts exist):

- the first `FREE_FAILURES` (5) consecutive failures cost nothing extra;
- from the 5th on, each failure locks further attempts of that name from that IP for
  1 s, 2 s, 4 s, ... doubling, capped at `MAX_LOCK` (15 minutes): 15 failures lock for 15 min;
- while locked, attempts are answered 429 with Retry-After and are neither checked nor counted;
- a success clears the record; a record with no failure for `FORGET_AFTER` (24 h) starts over.

Why keyed by (name, IP) and bounded: a lock binds only the client that earned it, so an
attacker guessing alice's password does not lock alice out from her own address, and even a
shared address (NAT) waits at most 15 minutes. Guessing from many addresses is bounded by
the per-IP rate limit on auth endpoints (`ratelimit`) and Argon2's cost; an account-wide lock
would hand attackers a lever to lock out anyone, which the issue forbids.
"""

from __future__ import annotations

import datetime

FREE_FAILURES = 5
BASE_LOCK = datetime.timedelta(seconds=1)
MAX_LOCK = datetime.timedelta(minutes=15)
FORGET_AFTER = datetime.timedelta(hours=24)


def lock_after(failures: int) -> datetime.timedelta:
    """How long the `failures`-th consecutive failure locks the (name, IP) pair."""
    if failures < FREE_FAILURES:
        return datetime.timedelta(0)
    doublings = min(failures - FREE_FAILURES, 20)  # 2**20 s is far beyond the cap
    return min(BASE_LOCK * (1 << doublings), MAX_LOCK)
