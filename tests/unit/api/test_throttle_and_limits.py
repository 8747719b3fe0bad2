"""Login throttle thresholds, rate-limit arithmetic and headers, client address rules."""

from __future__ import annotations

import datetime

import pytest

from tenantry.api import clientip, ratelimit, throttle


def test_first_four_failures_are_free() -> None:
    assert [throttle.lock_after(n) for n in range(5)] == [datetime.timedelta(0)] * 5


def test_locks_double_from_the_fifth_failure() -> None:
    assert [throttle.lock_after(n).total_seconds() for n in range(5, 10)] == [1, 2, 4, 8, 16]


def test_lock_is_capped_at_fifteen_minutes_however_many_failures() -> None:
    """An attacker can never lock an account (from one address) for longer than the cap."""
    assert throttle.lock_after(15) == throttle.MAX_LOCK
    assert throttle.lock_after(10_000) == datetime.timedelta(minutes=15)


@pytest.mark.parametrize(("text", "capacity", "period"), [
    ("10/min", 10, 60.0), ("100/s", 100, 1.0), ("500/hour", 500, 3600.0), ("20/30s", 20, 30.0)])
def test_rate_limits_parse(text: str, capacity: int, period: float) -> None:
    limit = ratelimit.Limit.parse(text)
    assert (limit.capacity, limit.period) == (capacity, period)


@pytest.mark.parametrize("text", ["10", "x/min", "10/fortnight", "0/min", "-1/s"])
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        ratelimit.Limit.parse(text)


def test_refusal_says_when_to_retry() -> None:
    decision = ratelimit.Decision(allowed=False, limit=ratelimit.AUTH_PER_IP, tokens=0.25)
    assert decision.retry_after == 5  # 0.75 token at 1 token / 6 s = 4.5 s, rounded up
    headers = decision.headers()
    assert headers["Retry-After"] == "5"
    assert headers["RateLimit-Limit"] == "10"
    assert headers["RateLimit-Remaining"] == "0"


def test_allowed_requests_carry_ratelimit_headers_but_no_retry_after() -> None:
    headers = ratelimit.Decision(allowed=True, limit=ratelimit.AUTH_PER_IP, tokens=7.0).headers()
    assert headers == {"RateLimit-Limit": "10", "RateLimit-Remaining": "7",
                       "RateLimit-Reset": "18"}


PROXY = clientip.parse_networks(["10.0.0.0/8"])


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert clientip.client_ip("203.0.113.9", "198.51.100.1", ()) == "203.0.113.9"


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert clientip.client_ip("203.0.113.9", "198.51.100.1", PROXY) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    assert clientip.client_ip("10.1.1.1", "198.51.100.1", PROXY) == "198.51.100.1"


def test_client_cannot_prepend_a_fake_address() -> None:
    """The client wrote "1.2.3.4"; the proxy appended the real address: the rightmost
    untrusted hop wins."""
    assert clientip.client_ip("10.1.1.1", "1.2.3.4, 198.51.100.1", PROXY) == "198.51.100.1"


def test_chained_trusted_proxies_are_skipped() -> None:
    assert clientip.client_ip("10.1.1.1", "198.51.100.1, 10.2.2.2", PROXY) == "198.51.100.1"


def test_garbage_in_forwarded_for_stops_at_the_last_good_hop() -> None:
    assert clientip.client_ip("10.1.1.1", "198.51.100.1, not-an-ip", PROXY) == "10.1.1.1"


def test_bad_trusted_proxy_is_refused() -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        clientip.parse_networks(["10.0.0.0/33"])


def test_zoned_ipv6_hop_is_not_a_client_address() -> None:
    assert clientip.client_ip("10.1.1.1", "fe80::1%eth0", PROXY) == "10.1.1.1"
