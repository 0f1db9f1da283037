"""The daemon's own timer heap across real DST transitions (Europe/Berlin), on a fake clock: the real Daemon
class with a real SQLite store, woken at each due time it set itself, without starting any process.

2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from taskserver.runtime.config import parse_text
from taskserver.runtime.daemon import Daemon


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def due_times(tmp_path: Path, trigger: str, start: datetime, end: datetime) -> list[datetime]:
    """What the daemon would start between start and end: it wakes at each timer, takes what came due."""
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n"
            f"tenants:\n  t:\n    login: nobody\n    timezone: Europe/Berlin\n"
            f"    jobs:\n      j: {{{trigger}, command: [\"true\"]}}\n")
    cfg = parse_text(text, tmp_path / "c.yaml")
    d = Daemon(cfg, once=False, time_limit=None, notifier=None, config_loader=None)
    seen: list[datetime] = []
    try:
        d._open_tenants(cfg, start.timestamp())
        while d.timers and d.timers[0][0] < end.timestamp():
            d._fire_timers(d.timers[0][0])  # the clock jumps to the next wake-up
            for waiting in d.pending.values():
                seen.extend(datetime.fromtimestamp(due, UTC) for due, *_ in waiting if due is not None)
            d.pending.clear()  # as if each had run and ended at once
    finally:
        d.close()
    return seen


def test_a_daily_time_in_the_skipped_hour_runs_once_at_the_jump(tmp_path: Path) -> None:
    got = due_times(tmp_path, 'cron: "30 2 * * *"', utc("2026-03-27T12:00"), utc("2026-03-31T12:00"))
    assert got == [utc("2026-03-28T01:30"), utc("2026-03-29T01:00"), utc("2026-03-30T00:30"),
                   utc("2026-03-31T00:30")]


def test_a_daily_time_in_the_repeated_hour_runs_once(tmp_path: Path) -> None:
    got = due_times(tmp_path, 'cron: "30 2 * * *"', utc("2026-10-23T12:00"), utc("2026-10-27T12:00"))
    assert got == [utc("2026-10-24T00:30"), utc("2026-10-25T00:30"), utc("2026-10-26T01:30"),
                   utc("2026-10-27T01:30")]


def test_hourly_across_fall_back_runs_each_wall_hour_once(tmp_path: Path) -> None:
    got = due_times(tmp_path, 'cron: "0 * * * *"', utc("2026-10-24T22:30"), utc("2026-10-25T03:30"))
    # local 01:00 CEST, 02:00 CEST, (02:00 CET again: skipped), 03:00 CET, 04:00 CET
    assert got == [utc("2026-10-24T23:00"), utc("2026-10-25T00:00"), utc("2026-10-25T02:00"),
                   utc("2026-10-25T03:00")]
