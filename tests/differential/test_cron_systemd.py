"""taskserver's cron against systemd's calendar events (`systemd-analyze calendar --iterations=N`).

systemd is an independent implementation of wall-clock schedules with time zones. A cron expression
translates exactly when its fields are written out as value lists: minute, hour, day and month lists map one
to one, and the day rule becomes
- AND (a day field starts with '*'): one calendar event ``DOWS *-MONTHS-DAYS HH:MM:00``;
- OR (neither starts with '*'): the union of two events, one for the days of month and one for the weekdays,
  merged here (the first N of a union are among the first N of each part).
The start instant is set with faketime, so systemd computes from the same instant as taskserver.

Documented disagreements (any other kind fails the test):
- ``skipped wall time: taskserver runs it at the jump, systemd skips it``: docs/configuration.md states that a
  wall time skipped by a forward jump runs once at the moment of the jump; systemd does not run it at all.
  (Repeated wall times: both run the first pass only, so they agree.)
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from clocklab import LIBFAKETIME
from cronpeers import SEED, ZONES, Tally, expressions, ours, starts, transitions

from taskserver.runtime import cron

pytestmark = pytest.mark.skipif(not (shutil.which("systemd-analyze") and LIBFAKETIME),
                                reason="needs systemd-analyze and libfaketime (installed by scripts/test.sh)")
N = 4
SKIPPED = "skipped wall time: taskserver runs it at the jump, systemd skips it"
_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


def _list(values: Iterable[int], full: int) -> str:
    values = sorted(values)
    return "*" if len(values) == full else ",".join(f"{v:02d}" for v in values)


def events(expr: str) -> list[str]:
    """The calendar events (local time: TZ names the zone) whose union is exactly ``expr``'s schedule."""
    spec = cron.parse(expr)
    time = f"{_list(spec.hours, 24)}:{_list(spec.minutes, 60)}:00"
    months = _list(spec.months, 12)
    dows = ",".join(_DOW[d] for d in sorted(spec.dows))
    days = _list(spec.doms, 31)
    if spec.dom_any or spec.dow_any:  # AND
        return [f"{dows if len(spec.dows) < 7 else ''} *-{months}-{days} {time}".strip()]
    if len(spec.dows) == 7 or len(spec.doms) == 31:  # OR with a full set: every day
        return [f"*-{months}-* {time}"]
    return [f"*-{months}-{days} {time}", f"{dows} *-{months}-* {time}"]


def systemd_next(specs: list[str], zone: str, start: datetime) -> list[list[datetime]]:
    """For each event, its next N elapses (UTC) after ``start`` in ``zone``, computed by systemd-analyze.

    The zone goes in TZ (a zone suffix on each event makes systemd-analyze 20 times slower); libfaketime gets
    a relative offset, so no local time is interpreted. The start's 30 seconds absorb the moments it takes.
    libfaketime is preloaded directly: the `faketime` wrapper names a POSIX semaphore after its own pid and
    fails ("sem_open: File exists", exit 1) when a wrapper killed earlier left one of that name, which the
    suite's thousands of processes make likely (CI failed once so, on the Apia case).
    """
    offset = f"{round(start.timestamp() - time.time()):+d}s"
    env = {**os.environ, "TZ": zone, "LD_PRELOAD": LIBFAKETIME[0], "FAKETIME": offset}
    got = subprocess.run(["systemd-analyze", "calendar", f"--iterations={N}", *specs], capture_output=True,
                         text=True, env=env, check=False)
    assert got.returncode == 0, f"systemd-analyze exited {got.returncode}: {got.stderr.strip()}"
    out = got.stdout
    blocks = out.split("Normalized form:")[1:]
    assert len(blocks) == len(specs), out
    return [[_stamp(line) for line in _utc_lines(block)] for block in blocks]


def _stamp(line: str) -> datetime:
    text = line.split(":", 1)[1].strip()  # "Sat 2026-03-28 23:00:00 UTC"
    return datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def _utc_lines(block: str) -> list[str]:
    """The elapse lines in UTC: the "(in UTC)" lines, or the local ones when the zone is UTC itself."""
    lines = block.splitlines()
    in_utc = [line for line in lines if "(in UTC):" in line]
    local = [line for line in lines if "elapse:" in line or "Iter. #" in line]
    return in_utc or [line for line in local if "never" not in line]


def _merge(parts: list[list[datetime]]) -> list[datetime]:
    return sorted({t for part in parts for t in part})[:N]


def test_due_instants_agree_with_systemd_calendar(capsys: pytest.CaptureFixture[str]) -> None:
    exprs, rejected = expressions(300, seed=SEED + 3)
    tally = Tally("systemd-analyze calendar (6 zones)", expressions=len(exprs), rejected=rejected)
    rng = random.Random(SEED + 3)
    for zone in ZONES:
        for start in starts(rng, zone, 6, second=30):  # the clock keeps running under faketime
            chunk = rng.sample(exprs, 100)
            specs = [events(e) for e in chunk]
            answers = systemd_next([s for group in specs for s in group], zone, start)
            tally.instants += 1
            for expr, group in zip(chunk, specs, strict=True):
                theirs = _merge([answers.pop(0) for _ in group])
                mine = [t for t in ours(expr, zone, start, N) if t.year < 2200]
                _compare(tally, zone, expr, start, mine, theirs)
    with capsys.disabled():
        print("\n" + tally.report())
    assert set(tally.kinds) <= {SKIPPED}, tally.report()


def _compare(tally: Tally, zone: str, expr: str, start: datetime, mine: list[datetime],
             theirs: list[datetime]) -> None:
    for i in range(min(len(mine), len(theirs)) or 1):
        tally.comparisons += 1
        a, b = (mine[i] if i < len(mine) else None), (theirs[i] if i < len(theirs) else None)
        if a != b:  # after the first difference the two sequences are out of step
            kind = SKIPPED if a is not None and a in transitions(zone) else "other"
            tally.disagree(kind, f"{expr!r} in {zone} after {start}: #{i + 1} {a} vs systemd {b}")
            return


@pytest.mark.parametrize(("zone", "expr", "start", "jump"), [
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00:30", "2026-03-29T01:00:00"),
    ("America/New_York", "52 * * * 7", "2038-03-14T05:00:30", "2038-03-14T07:00:00"),
    ("Australia/Lord_Howe", "15 2 * * *", "2026-10-03T12:00:30", "2026-10-03T15:30:00"),
    ("Pacific/Apia", "0 12 * * *", "2011-12-29T12:00:30", "2011-12-30T10:00:00"),
])
def test_the_documented_dst_difference_is_real(zone: str, expr: str, start: str, jump: str) -> None:
    """The one documented kind, shown on purpose: taskserver runs a skipped wall time at the jump (Apia: the
    whole of 2011-12-30 was skipped), systemd leaves it out; the due times after it agree again."""
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    jumped = datetime.fromisoformat(jump).replace(tzinfo=UTC)
    mine = ours(expr, zone, begin, N)
    theirs = _merge(systemd_next(events(expr), zone, begin))
    assert jumped in transitions(zone) and jumped in mine and jumped not in theirs
    assert [t for t in mine if t != jumped][:2] == theirs[:2]
