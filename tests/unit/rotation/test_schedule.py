"""Cron schedules: 5 fields in UTC and macros, through croniter; bad ones named clearly."""

from __future__ import annotations

import datetime

import pytest

from tenantry.controller.rotation import schedule
from tenantry.model import common

UTC = datetime.UTC


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*/15 * * * *", "2026-12-01T09:02:00Z", "2026-12-01T09:15:00Z"),
    ("0 3 * * MON", "2026-12-01T09:00:00Z", "2026-12-07T03:00:00Z"),
    ("@daily", "2026-12-01T09:00:00Z", "2026-12-02T00:00:00Z"),
    ("@monthly", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
])
def test_next_time_is_strictly_after_and_in_utc(expression: str, after: str,
                                                expected: str) -> None:
    start = common.parse_time(after)
    assert start is not None
    following = schedule.next_time(expression, start)
    assert common.format_time(following) == expected
    assert following.tzinfo is UTC


def test_next_time_converts_other_zones_to_utc() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    start = datetime.datetime(2026, 12, 1, 11, 2, tzinfo=plus_two)  # 09:02 UTC
    assert common.format_time(schedule.next_time("0 10 * * *", start)) == \
        "2026-12-01T10:00:00Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_time("@daily", datetime.datetime(2026, 12, 1))


@pytest.mark.parametrize(("expression", "words"), [
    ("61 * * * *", "not a valid cron expression"),
    ("* * 32 * *", "not a valid cron expression"),
    ("* * * *", "has 4 fields"),
    ("0 * * * * *", "has 6 fields"),
])
def test_bad_schedules_name_the_field(expression: str, words: str) -> None:
    message = schedule.problem(expression)
    assert message is not None
    assert message.startswith(f"spec.schedule {expression!r}")
    assert words in message


@pytest.mark.parametrize("expression", ["@hourly", "@weekly", "5 4 * * 0", "0 */6 1-15 * *"])
def test_good_schedules_have_no_problem(expression: str) -> None:
    assert schedule.problem(expression) is None


def test_parse_time_tolerates_garbage() -> None:
    assert common.parse_time(None) is None
    assert common.parse_time("yesterday") is None
    assert common.parse_time("2026-12-01T09:00:00Z") == datetime.datetime(
        2026, 12, 1, 9, tzinfo=UTC)
