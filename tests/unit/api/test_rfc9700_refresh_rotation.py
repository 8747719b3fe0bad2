"""RFC 9700 4.14.2 refresh-token rotation: every case of `decide`, each its own test."""

from __future__ import annotations

import datetime

import pytest

from tenantry.api.tokens import rfc9700

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
Outcome = rfc9700.Outcome


def stored(*, generation: int = 1, family_generation: int = 1, used_ago: float | None = None,
           grace_used: bool = False, revoked: bool = False,
           expires_in: datetime.timedelta = rfc9700.LIFETIME) -> rfc9700.Stored:
    used = None if used_ago is None else NOW - datetime.timedelta(seconds=used_ago)
    return rfc9700.Stored(generation=generation, expires_at=NOW + expires_in, used_at=used,
                          grace_used=grace_used, family_generation=family_generation,
                          family_revoked=revoked)


def test_newest_unused_token_rotates() -> None:
    assert rfc9700.decide(stored(), NOW) is Outcome.ROTATE


def test_unknown_token_is_refused() -> None:
    assert rfc9700.decide(None, NOW) is Outcome.UNKNOWN


def test_reused_token_revokes_the_family() -> None:
    reused = stored(generation=1, family_generation=2, used_ago=120)
    assert rfc9700.decide(reused, NOW) is Outcome.REUSED


def test_reuse_of_an_older_generation_is_reuse_even_within_the_grace() -> None:
    """Only the immediately previous token gets the grace; an older one is theft."""
    old = stored(generation=1, family_generation=3, used_ago=1)
    assert rfc9700.decide(old, NOW) is Outcome.REUSED


def test_immediate_retry_within_grace_is_allowed_once() -> None:
    retry = stored(generation=1, family_generation=2, used_ago=3)
    assert rfc9700.decide(retry, NOW) is Outcome.GRACE


def test_second_retry_within_grace_is_reuse() -> None:
    again = stored(generation=1, family_generation=2, used_ago=3, grace_used=True)
    assert rfc9700.decide(again, NOW) is Outcome.REUSED


def test_retry_after_the_grace_is_reuse() -> None:
    late = stored(generation=1, family_generation=2, used_ago=11)
    assert rfc9700.decide(late, NOW) is Outcome.REUSED


def test_zero_grace_makes_every_retry_reuse() -> None:
    retry = stored(generation=1, family_generation=2, used_ago=0.5)
    assert rfc9700.decide(retry, NOW, datetime.timedelta(0)) is Outcome.REUSED


def test_grace_longer_than_sixty_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 60"):
        rfc9700.check_grace(datetime.timedelta(seconds=61))


def test_unused_token_of_a_superseded_branch_is_reuse() -> None:
    """After a grace retry the family's other branch moved on: the leftover sibling is dead."""
    sibling = stored(generation=2, family_generation=3)
    assert rfc9700.decide(sibling, NOW) is Outcome.REUSED


def test_token_of_a_revoked_family_is_refused() -> None:
    assert rfc9700.decide(stored(revoked=True), NOW) is Outcome.REVOKED


def test_expired_token_is_refused() -> None:
    expired = stored(expires_in=datetime.timedelta(seconds=-1))
    assert rfc9700.decide(expired, NOW) is Outcome.EXPIRED


def test_tokens_are_prefixed_random_and_only_their_hash_is_kept() -> None:
    a, b = rfc9700.new_token(), rfc9700.new_token()
    assert a != b
    assert a.startswith("tntr_")
    assert rfc9700.well_formed(a)
    assert len(rfc9700.token_hash(a)) == 32
    assert a.encode() not in rfc9700.token_hash(a)


@pytest.mark.parametrize("token", ["", "tntr_", "tntr_" + "a" * 42, "tntr_" + "a" * 44,
                                   "xxxx_" + "a" * 43, "tntr_" + "a" * 42 + "!"])
def test_malformed_tokens_are_not_looked_up(token: str) -> None:
    assert not rfc9700.well_formed(token)
