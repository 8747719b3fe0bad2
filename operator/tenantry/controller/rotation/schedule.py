"""Cron schedules (5 fields, UTC, and the @daily/@weekly... macros), through `croniter`.

Why a library: cron has corners (day-of-month OR day-of-week, month lengths, leap years) that a
hand-written matcher gets wrong; croniter is maintained and widely used. Why only here: the rest
of the rotation code sees two pure functions and aware UTC datetimes, never croniter's types.
The CRD's pattern already refuses most bad schedules; `problem` catches the rest (61 minutes,
month 13) with a message naming the field.
"""

from __future__ import annotations

import datetime
import re
from typing import cast

import croniter  # type: ignore[import-untyped]

FIELDS = 5


def problem(schedule: str) -> str | None:
    """Why `schedule` is not a usable 5-field cron expression or macro, or None."""
    text = schedule.strip()
    if not text.startswith("@") and len(text.split()) != FIELDS:
        return (f"spec.schedule {schedule!r} has {len(text.split())} fields; a schedule has 5 "
                "(minute hour day-of-month month day-of-week, UTC) or is a macro such as @daily")
    if not croniter.croniter.is_valid(text):
        return (f"spec.schedule {schedule!r} is not a valid cron expression (5 fields: minute "
                "0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6; or @hourly, "
                "@daily, @weekly, @monthly, @yearly)")
    return None


def next_time(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first time strictly after `after` (aware, UTC) that `schedule` names."""
    if after.tzinfo is None:
        raise ValueError("`after` must be timezone-aware")
    start = after.astimezone(datetime.UTC)
    following = croniter.croniter(schedule.strip(), start).get_next(datetime.datetime)
    return cast(datetime.datetime, following).astimezone(datetime.UTC)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> datetime.timedelta:
    """A Go duration as the CRD admits it (`24h`, `1h30m`, `90s`); ValueError otherwise."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 24h, 90m or 1h30m")
    return datetime.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))
