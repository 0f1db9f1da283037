"""Intervals, windows (also across midnight) and catch-up policies, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from taskserver.runtime.model import CatchUp, Cron, Every, JobDef, Window
from taskserver.runtime.schedule import MAX_LISTED, MAX_LISTED_ALL, ON_TIME, catch_up, fires, next_fire
from taskserver.runtime.windows import in_windows, parse_window

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday
M = timedelta(minutes=1)


def job(trigger: Cron | Every | None, **kw: object) -> JobDef:
    return JobDef(name="j", tenant="t", trigger=trigger, command=("true",), **kw)  # type: ignore[arg-type]


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_every_next_is_previous_plus_interval() -> None:
    j = job(Every(90))
    assert next_fire(j, "UTC", T0) == T0 + timedelta(seconds=90)


def test_one_off_job_has_no_next_fire() -> None:
    assert next_fire(job(None), "UTC", T0) is None


def test_parse_window_forms() -> None:
    w = parse_window("mon-fri 22:00-06:00")
    assert w.days == frozenset(range(5)) and w.start == time(22) and w.end == time(6)
    assert parse_window("sat,sun").days == frozenset({5, 6})
    assert parse_window("09:00-17:00").days == frozenset(range(7))
    assert parse_window("fri-mon 08:00-24:00").days == frozenset({4, 5, 6, 0})
    for bad in ["mon-fry", "25:00-06:00", "22:00", "22:00-06:00 mon", "mon tue wed", "9-17"]:
        with pytest.raises(ValueError):
            parse_window(bad)


def test_window_across_midnight_belongs_to_the_opening_day() -> None:
    fri_night = (parse_window("fri 22:00-06:00"),)
    assert in_windows(fri_night, local("2026-01-09T22:00"))  # Fri 22:00
    assert in_windows(fri_night, local("2026-01-10T05:59"))  # Sat 05:59
    assert not in_windows(fri_night, local("2026-01-10T06:00"))  # end is exclusive
    assert not in_windows(fri_night, local("2026-01-09T05:00"))  # Fri early morning: Thursday's window
    assert not in_windows(fri_night, local("2026-01-10T22:30"))  # Sat night


def test_whole_day_and_list_of_windows() -> None:
    ws = (parse_window("sat,sun"), parse_window("mon 12:00-13:00"))
    assert in_windows(ws, local("2026-01-10T00:00"))
    assert in_windows(ws, local("2026-01-11T23:59"))
    assert in_windows(ws, local("2026-01-12T12:30"))
    assert not in_windows(ws, local("2026-01-12T13:00"))
    assert not in_windows(ws, local("2026-01-13T12:30"))


def test_cron_outside_window_is_skipped() -> None:
    j = job(Cron("0 * * * *"), windows=(parse_window("fri 22:00-06:00"),))
    clock = datetime(2026, 1, 8, 0, 0, tzinfo=UTC)  # Thursday
    fired = []
    for _ in range(10):
        due = next_fire(j, "UTC", clock)
        assert due is not None
        fired.append(due)
        clock = due
    hours = [(d.strftime("%a"), d.hour) for d in fired]
    assert hours == [("Fri", 22), ("Fri", 23), ("Sat", 0), ("Sat", 1), ("Sat", 2), ("Sat", 3), ("Sat", 4),
                     ("Sat", 5), ("Fri", 22), ("Fri", 23)]


def test_every_outside_window_moves_to_the_opening() -> None:
    j = job(Every(3 * 3600), windows=(parse_window("mon-fri 22:00-06:00"),), timezone="Europe/Berlin")
    # Fri 2026-01-09 23:00 Berlin = 22:00 UTC; +3h = Sat 02:00 in window; +3h = Sat 05:00; +3h = Sat 08:00
    # outside -> next opening is Mon 22:00 Berlin (Sat/Sun are not opening days)
    clock = datetime(2026, 1, 9, 22, 0, tzinfo=UTC)
    seq = []
    for _ in range(4):
        due = next_fire(j, "UTC", clock)
        assert due is not None
        seq.append(due)
        clock = due
    assert seq == [datetime(2026, 1, 10, 1, tzinfo=UTC), datetime(2026, 1, 10, 4, tzinfo=UTC),
                   datetime(2026, 1, 12, 21, tzinfo=UTC), datetime(2026, 1, 13, 0, tzinfo=UTC)]


def test_window_opening_in_a_dst_gap_runs_at_the_jump() -> None:
    w = Window(days=frozenset(range(7)), start=time(2, 30), end=time(4, 0))
    j = job(Every(6 * 3600), windows=(w,), timezone="Europe/Berlin")
    due = next_fire(j, "UTC", datetime(2026, 3, 28, 19, 30, tzinfo=UTC))  # +6h = 03:30 CEST, in window
    assert due == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    due = next_fire(j, "UTC", datetime(2026, 3, 28, 18, 0, tzinfo=UTC))  # +6h = 01:00 CET: wait for 02:30
    assert due == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:30 is skipped: opens at the jump


# ---- catch-up


@pytest.mark.parametrize(
    ("policy", "max_late", "now", "run", "missed"),
    [
        # every 10 min, last due T0; due times T0+10 .. T0+60
        (CatchUp.LATEST, None, 65, [60], [10, 20, 30, 40, 50]),
        (CatchUp.ALL, None, 65, [10, 20, 30, 40, 50, 60], []),
        (CatchUp.SKIP, None, 65, [], [10, 20, 30, 40, 50, 60]),
        (CatchUp.SKIP, None, 61, [60], [10, 20, 30, 40, 50]),  # newest is on time (1 min late)
        (CatchUp.ALL, 20, 65, [50, 60], [10, 20, 30, 40]),
        (CatchUp.LATEST, 1, 65, [], [10, 20, 30, 40, 50, 60]),  # newest is 5 min late: too late
        (CatchUp.SKIP, 0.5, 61, [], [10, 20, 30, 40, 50, 60]),  # on time, but later than max_late
        (CatchUp.LATEST, None, 9, [], []),
    ],
)
def test_catch_up_policies(
    policy: CatchUp, max_late: float | None, now: int, run: list[int], missed: list[int]
) -> None:
    j = job(Every(600), catch_up=policy, max_late=None if max_late is None else max_late * 60)
    plan = catch_up(j, "UTC", T0, T0 + now * M)
    assert plan.run == [T0 + m * M for m in run]
    assert plan.missed == [T0 + m * M for m in missed]
    assert plan.omitted == 0


def test_on_time_is_one_minute() -> None:
    assert timedelta(seconds=60) == ON_TIME


def test_never_run_job_has_nothing_to_catch_up() -> None:
    plan = catch_up(job(Every(60)), "UTC", None, T0)
    assert plan.run == [] and plan.missed == [] and plan.omitted == 0


def test_long_downtime_is_bounded_and_counted_for_intervals() -> None:
    j = job(Every(1), catch_up=CatchUp.ALL)
    now = T0 + timedelta(days=30)
    plan = catch_up(j, "UTC", T0, now)
    assert len(plan.run) == MAX_LISTED_ALL and plan.run[-1] == now
    assert plan.omitted == 30 * 86400 - MAX_LISTED_ALL and plan.omitted_exact
    assert plan.omitted_first == T0 + timedelta(seconds=1)
    assert plan.omitted_last == plan.run[0] - timedelta(seconds=1)


def test_long_downtime_is_bounded_for_cron() -> None:
    j = job(Cron("0 * * * *"), catch_up=CatchUp.LATEST)
    now = T0 + timedelta(days=10, minutes=5)
    plan = catch_up(j, "UTC", T0, now)
    assert plan.run == [T0 + timedelta(days=10)]
    assert len(plan.missed) == MAX_LISTED - 1
    assert len(plan.missed) + len(plan.run) + plan.omitted == 240  # every hour of 10 days, none lost
    assert plan.omitted_exact


def test_catch_up_across_a_dst_gap() -> None:
    j = job(Cron("30 2 * * *"), catch_up=CatchUp.ALL, timezone="Europe/Berlin")
    plan = catch_up(j, "UTC", datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC))
    assert plan.run == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]


D = timedelta(days=1)


@pytest.mark.parametrize(
    ("expr", "tz", "start", "span"),
    [
        ("*/5 * * * *", "Europe/Berlin", datetime(2026, 3, 20, 13, 7, tzinfo=UTC), 30 * D),  # spring gap
        ("*/5 1-3 * * *", "Europe/Berlin", datetime(2026, 10, 20, 13, 7, tzinfo=UTC), 10 * D),  # fall fold
        ("30 2 * * *", "America/New_York", datetime(2026, 3, 1, 0, 0, tzinfo=UTC), 300 * D),
        ("0 0 13 * fri", "UTC", datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 400 * D),
        ("0 0 * * *", "UTC", datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 20 * D),  # due exactly at day boundaries
        ("*/7 9-17 * * *", "Asia/Tokyo", datetime(2026, 6, 1, 1, 3, 30, tzinfo=UTC), timedelta(hours=7)),
        ("* * * * *", "Asia/Kolkata", datetime(2026, 6, 1, 1, 3, 30, tzinfo=UTC), D),
        ("13,47 */2 * * *", "America/New_York", datetime(2026, 6, 1, 12, 13, tzinfo=UTC), 3 * D),
    ],
)
def test_omitted_count_matches_walking_every_due_time(
    expr: str, tz: str, start: datetime, span: timedelta
) -> None:
    j = job(Cron(expr), catch_up=CatchUp.LATEST, timezone=tz)
    now = start + span + M
    plan = catch_up(j, "UTC", start, now)
    walked = list(fires(j, "UTC", start, now))
    assert plan.omitted + len(plan.missed) + len(plan.run) == len(walked)
    assert plan.omitted_exact
    assert plan.omitted_first == walked[0] and plan.omitted_last == walked[plan.omitted - 1]
    assert plan.missed + plan.run == walked[plan.omitted:]


def test_catch_up_with_windows_counts_only_in_window_times() -> None:
    j = job(Cron("* * * * *"), catch_up=CatchUp.LATEST, windows=(parse_window("mon-fri 22:00-06:00"),))
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # Monday noon
    now = start + timedelta(days=7)
    plan = catch_up(j, "UTC", start, now)
    # Mon..Fri nights: 5 windows of 8 h, all before the next Monday noon
    assert plan.omitted + len(plan.missed) + len(plan.run) == 5 * 8 * 60 and plan.omitted_exact
    assert plan.run == [datetime(2026, 1, 10, 5, 59, tzinfo=UTC)]  # latest: the newest runs, however late
    assert plan.missed[-1] == datetime(2026, 1, 10, 5, 58, tzinfo=UTC)
    assert plan.omitted_first == datetime(2026, 1, 5, 22, 0, tzinfo=UTC)


def test_counting_through_windows_is_capped() -> None:
    from taskserver.runtime.schedule import COUNT_LIMIT

    j = job(Cron("* * * * *"), catch_up=CatchUp.SKIP, windows=(parse_window("00:00-23:00"),))
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    plan = catch_up(j, "UTC", start, start + timedelta(days=30))
    assert plan.omitted == COUNT_LIMIT and not plan.omitted_exact
    assert plan.run == [start + timedelta(days=30)]  # due right now: on time even with skip
    assert len(plan.missed) == MAX_LISTED - 1


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(job(Every(60)), "UTC", datetime(2026, 1, 1))
