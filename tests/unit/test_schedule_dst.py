"""Schedules on real zones across real DST transitions, driven by a fake clock (no sleeping, no timing).

Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).
America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from taskserver.runtime.model import Cron, Every, JobDef
from taskserver.runtime.schedule import next_fire, to_instant

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cron_job(expr: str, tz: str | None = None) -> JobDef:
    return JobDef(name="j", tenant="t", trigger=Cron(expr), command=("true",), timezone=tz)


def run_clock(job: JobDef, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """A fake daemon: sleep until each due time (jump the clock), 'run', ask for the next one."""
    clock, fired = start, []
    while True:
        due = next_fire(job, tz, clock)
        assert due is not None
        if due >= end:
            return fired
        assert due > clock
        fired.append(due.astimezone(UTC))
        clock = due  # the daemon wakes exactly at the due time


def test_skipped_local_time_runs_once_at_the_jump_berlin() -> None:
    fired = run_clock(cron_job("30 2 * * *"), BERLIN, utc("2026-03-27T12:00"), utc("2026-03-31T12:00"))
    assert fired == [
        utc("2026-03-28T01:30"),  # 02:30 CET
        utc("2026-03-29T01:00"),  # 02:30 does not exist: runs at the jump (03:00 CEST)
        utc("2026-03-30T00:30"),  # 02:30 CEST
        utc("2026-03-31T00:30"),
    ]


def test_several_skipped_times_collapse_into_one_run() -> None:
    fired = run_clock(cron_job("*/15 2 * * *"), BERLIN, utc("2026-03-28T22:00"), utc("2026-03-29T22:00"))
    assert fired == [utc("2026-03-29T01:00")]


def test_hourly_on_spring_forward_has_no_duplicate() -> None:
    fired = run_clock(cron_job("0 * * * *"), BERLIN, utc("2026-03-28T22:30"), utc("2026-03-29T03:30"))
    # local 00:00 01:00 (02:00 skipped -> jump == 03:00 CEST, one run) 04:00 05:00
    assert fired == [utc("2026-03-28T23:00"), utc("2026-03-29T00:00"), utc("2026-03-29T01:00"),
                     utc("2026-03-29T02:00"), utc("2026-03-29T03:00")]


def test_repeated_local_time_runs_once_berlin() -> None:
    fired = run_clock(cron_job("30 2 * * *"), BERLIN, utc("2026-10-24T12:00"), utc("2026-10-26T12:00"))
    assert fired == [utc("2026-10-25T00:30"), utc("2026-10-26T01:30")]  # 02:30 CEST once, then 02:30 CET


def test_hourly_on_fall_back_runs_each_wall_hour_once() -> None:
    fired = run_clock(cron_job("0 * * * *"), BERLIN, utc("2026-10-24T21:30"), utc("2026-10-25T03:30"))
    # local 00:00 01:00 02:00(CEST) [02:00 CET repeated: not again] 03:00 04:00
    assert fired == [utc("2026-10-24T22:00"), utc("2026-10-24T23:00"), utc("2026-10-25T00:00"),
                     utc("2026-10-25T02:00"), utc("2026-10-25T03:00")]


def test_started_inside_the_second_pass_of_the_repeated_hour() -> None:
    # the clock is at 02:15 CET (second pass); 02:30 already ran at 02:30 CEST, so the next is tomorrow
    due = next_fire(cron_job("30 2 * * *"), BERLIN, utc("2026-10-25T01:15"))
    assert due == utc("2026-10-26T01:30")


def test_new_york_both_transitions() -> None:
    job = cron_job("30 2 * * *")
    fired = run_clock(job, NEW_YORK, utc("2026-03-07T12:00"), utc("2026-03-09T12:00"))
    assert fired == [utc("2026-03-08T07:00"), utc("2026-03-09T06:30")]  # 02:30 skipped -> at the jump
    fired = run_clock(cron_job("30 1 * * *"), NEW_YORK, utc("2026-10-31T12:00"), utc("2026-11-02T12:00"))
    assert fired == [utc("2026-11-01T05:30"), utc("2026-11-02T06:30")]  # 01:30 EDT once, 01:30 EST


def test_job_timezone_overrides_tenant_zone() -> None:
    job = cron_job("0 9 * * *", tz=NEW_YORK)
    assert next_fire(job, BERLIN, utc("2026-01-05T00:00")) == utc("2026-01-05T14:00")


def test_every_counts_absolute_time_across_dst() -> None:
    job = JobDef(name="j", tenant="t", trigger=Every(3600), command=("true",))
    fired = run_clock(job, BERLIN, utc("2026-10-24T23:00"), utc("2026-10-25T03:30"))
    assert fired == [utc("2026-10-25T00:00"), utc("2026-10-25T01:00"), utc("2026-10-25T02:00"),
                     utc("2026-10-25T03:00")]


def test_to_instant_gap_and_fold() -> None:
    zone = ZoneInfo(BERLIN)
    assert to_instant(datetime(2026, 3, 29, 2, 30), zone) == utc("2026-03-29T01:00")
    assert to_instant(datetime(2026, 10, 25, 2, 30), zone) == utc("2026-10-25T00:30")
    assert to_instant(datetime(2026, 3, 29, 3, 0), zone) == utc("2026-03-29T01:00")
    # a half-hour zone with a half-hour DST shift: Lord Howe Island
    lh = ZoneInfo("Australia/Lord_Howe")
    jump = to_instant(datetime(2026, 10, 4, 2, 15), lh)
    assert jump.astimezone(lh).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 30)
    assert jump - timedelta(seconds=1) < jump


def test_utc_works_without_time_zone_data(tmp_path: Path) -> None:
    """A box without tzdata still runs UTC schedules (the default zone); other zones fail as config errors."""
    script = (  # the tzdata package (a test dependency pulls it in) is hidden like the system's data
        "import sys\nsys.modules['tzdata'] = None  # type: ignore\n"
        "from datetime import datetime, UTC\n"
        "from pathlib import Path\n"
        "from taskserver.runtime.config import parse_text, ConfigInvalid\n"
        "from taskserver.runtime.schedule import next_fire\n"
        "cfg = parse_text('tenants:\\n  t:\\n    jobs:\\n      j: {cron: \"0 3 * * *\", command: [x]}\\n',"
        " Path('c.yaml'))\n"
        "t = cfg.tenants[0]\n"
        "print(next_fire(t.jobs[0], t.timezone, datetime(2026, 1, 1, tzinfo=UTC)))\n"
        "try:\n"
        "    parse_text('tenants:\\n  t:\\n    timezone: Europe/Berlin\\n', Path('c.yaml'))\n"
        "except ConfigInvalid as e:\n"
        "    print(e)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONTZPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "2026-01-01 03:00:00+00:00",
        "c.yaml:3:15: tenants.t.timezone: unknown time zone 'Europe/Berlin'",
    ]
