"""Cron parsing and next-match math on wall times (no zones here; DST is in test_schedule_dst.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from taskserver.runtime.cron import CronError, next_match, parse


def nxt(expr: str, after: str) -> str:
    got = next_match(parse(expr), datetime.fromisoformat(after))
    assert got is not None
    return got.isoformat(timespec="minutes")


def brute(expr: str, after: datetime, limit_days: int = 800) -> datetime:
    """Reference: scan minute by minute (only used to cross-check the jumping search)."""
    spec = parse(expr)
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = after + timedelta(days=limit_days)
    while t < end:
        if spec.matches(t):
            return t
        t += timedelta(minutes=1)
    raise AssertionError("no match")


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2026-01-01T00:00:30", "2026-01-01T00:01"),
        ("*/15 * * * *", "2026-01-01T00:14", "2026-01-01T00:15"),
        ("0 9-17/4 * * *", "2026-01-01T10:00", "2026-01-01T13:00"),
        ("5,10 0 * * *", "2026-01-01T00:10", "2026-01-02T00:05"),
        ("0 0 1 jan *", "2026-01-01T00:00", "2027-01-01T00:00"),
        ("0 0 * * sun", "2026-01-01T00:00", "2026-01-04T00:00"),  # 2026-01-04 is a Sunday
        ("0 0 * * 7", "2026-01-01T00:00", "2026-01-04T00:00"),  # 7 is Sunday too
        ("0 0 * * 0", "2026-01-01T00:00", "2026-01-04T00:00"),
        ("0 0 * * fri-sun", "2026-01-03T00:00", "2026-01-04T00:00"),
        ("0 0 * * 5-7", "2026-01-03T00:00", "2026-01-04T00:00"),
        ("0 0 29 feb *", "2026-01-01T00:00", "2028-02-29T00:00"),
        ("0 0 29 2 *", "2097-01-01T00:00", "2104-02-29T00:00"),  # 2100 is no leap year
        ("0 0 31 * *", "2026-04-01T00:00", "2026-05-31T00:00"),
        ("30 23 * DEC *", "2026-06-01T00:00", "2026-12-01T23:30"),
        ("0 12 10/10 * *", "2026-01-11T00:00", "2026-01-20T12:00"),
        ("59 23 31 12 *", "2026-12-31T23:59", "2027-12-31T23:59"),
    ],
)
def test_next_match(expr: str, after: str, expected: str) -> None:
    assert nxt(expr, after) == expected


def test_dom_dow_or_rule_when_both_restricted() -> None:
    # Friday the 13th written classically means "the 13th OR any Friday"
    assert nxt("0 0 13 * fri", "2026-01-01T00:00") == "2026-01-02T00:00"  # Friday Jan 2
    assert nxt("0 0 13 * fri", "2026-01-09T00:00") == "2026-01-13T00:00"  # Tuesday the 13th


def test_star_step_day_of_month_counts_as_unrestricted() -> None:
    # Vixie rule: a field starting with '*' is unrestricted, so the days combine with AND
    assert nxt("0 0 */2 * mon", "2026-01-01T00:00") == "2026-01-05T00:00"  # Mon 5th (odd day)
    assert nxt("0 0 */2 * mon", "2026-01-05T00:00") == "2026-01-19T00:00"  # Mon 12th is even


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", "2026-01-01T00:00", "2026-01-01T01:00"),
        ("@daily", "2026-01-01T00:00", "2026-01-02T00:00"),
        ("@midnight", "2026-01-01T12:00", "2026-01-02T00:00"),
        ("@weekly", "2026-01-01T00:00", "2026-01-04T00:00"),
        ("@monthly", "2026-01-15T00:00", "2026-02-01T00:00"),
        ("@yearly", "2026-01-15T00:00", "2027-01-01T00:00"),
        ("@annually", "2026-01-15T00:00", "2027-01-01T00:00"),
        ("@DAILY", "2026-01-01T00:00", "2026-01-02T00:00"),
    ],
)
def test_aliases(alias: str, after: str, expected: str) -> None:
    assert nxt(alias, after) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 13 * fri",
        "*/7 3-5 * * *",
        "15 2 1,15 * 1-5",
        "0 */5 */3 feb-apr *",
        "0 0 31 * *",
        "1-59/13 22 * * sat",
        "0 0 */2 * mon",
        "30 1 5-9,20 * *",
    ],
)
def test_jumping_search_agrees_with_minute_scan(expr: str) -> None:
    t = datetime(2026, 1, 27, 21, 58)
    for _ in range(15):
        got = next_match(parse(expr), t)
        assert got == brute(expr, t)
        t = got


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range"),
        ("* * 0 * *", "day of month: 0 is out of range"),
        ("* * * 13 *", "month: 13 is out of range"),
        ("* * * * 8", "day of week: 8 is out of range"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("*/ * * * *", "minute: step '' must be a positive number"),
        ("0 5/ * * *", "hour: step '' must be a positive number"),
        ("0 0 1-10/ * *", "day of month: step '' must be a positive number"),
        ("0 0 * * mon/", "day of week: step '' must be a positive number"),
        ("5-1 * * * *", "runs backwards"),
        ("* * * foo *", "'foo' is not a number or a name"),
        ("1,,2 * * * *", "empty list item"),
        ("@reboot", "unknown alias"),
        ("0 0 30 feb *", "no month in the expression has that many days"),
    ],
)
def test_bad_expressions(expr: str, words: str) -> None:
    with pytest.raises(CronError, match=words.replace("(", r"\(")):
        parse(expr)


def test_parse_is_cached() -> None:
    assert parse("7 7 * * *") is parse("7 7 * * *")
