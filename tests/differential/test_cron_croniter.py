"""taskserver's cron against croniter in its Vixie-compatible mode, over thousands of random expressions.

croniter is an independent implementation (a test-only dependency). ``implement_cron_bug=True`` with
``day_or=True`` is its Vixie mode: the day-of-month/day-of-week OR rule applies only when neither day field
starts with ``*`` (``*/2`` counts as starred, as in Vixie's and cronie's entry.c).

Every disagreement must be of a documented kind, or the test fails:

- ``croniter runs a repeated wall time twice``: when clocks are set back (a wall time exists twice), croniter
  yields both passes; taskserver runs such a wall time once, at its first pass (docs/configuration.md, the
  same as systemd and cronie).
- ``skipped wall time: taskserver runs it at the jump, croniter skips it``: as documented, a wall time that
  a forward jump skips runs once at the moment of the jump (croniter, like systemd, leaves it out).
- ``croniter reads a one-value range a-a as *``, ``N/STEP in day of week`` and ``croniter reads an unstarred
  day field that lists every value as *``: parsing differences, each confirmed by giving croniter the same
  sets spelled out as lists (then it agrees); taskserver reads ``5-5`` as 5 as Vixie does, ``1/3`` in day of
  week as 1,4,7 (its field runs 0-7, as Vixie's ``*`` does), and ORs the day sets when neither field starts
  with ``*`` even if one lists every value (Vixie's rule depends on the text, not on the set).
- ``DST: croniter shifts across the transition``: croniter moves some due times near a transition by the
  size of the UTC offset change (its cross-day DST adjustment) or runs a wall time in a forward jump at
  another instant than the jump itself; taskserver maps wall times to instants exactly as documented (a
  skipped wall time runs once, at the moment of the jump). Counted only when a transition of the zone lies
  within two days of the instants compared.

Away from transitions (and in UTC) the two must agree exactly: the "other" kind fails the test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cronpeers import (
    FULL_DAY_FIELD,
    SEED,
    ZONES,
    Tally,
    canonical,
    day_quirk,
    expressions,
    near_transition,
    ours,
    parse_quirk,
    repeated,
    starts,
    transitions,
)

from taskserver.runtime import cron, schedule

croniter_mod = pytest.importorskip("croniter")
SKIPPED = "skipped wall time: taskserver runs it at the jump, croniter skips it"
DOCUMENTED = {"croniter runs a repeated wall time twice", "DST: croniter shifts across the transition",
              SKIPPED}
PARSE_QUIRKS = {"croniter reads a one-value range a-a as * (and a-a/k as */k)", FULL_DAY_FIELD,
                "N/STEP in day of week: taskserver runs to 7 (Sunday), as Vixie's * does; "
                "croniter stops at 6"}


_PARSED: dict[str, Any] = {}  # croniter parses slowly (ms): one iterator per expression, moved to each start


def peer(expr: str, start: datetime) -> Any:
    it = _PARSED.get(expr)
    if it is None:
        it = _PARSED[expr] = croniter_mod.croniter(expr, start, implement_cron_bug=True, day_or=True)
    it.set_current(start, force=True)  # the start and its zone, as a new iterator would take them
    return it


def theirs(expr: str, start: datetime, n: int) -> list[datetime]:
    it = peer(expr, start)
    out = []
    for _ in range(n):
        try:
            out.append(it.get_next(datetime))
        except croniter_mod.CroniterBadDateError:
            break  # croniter gives up after 50 years without a match; taskserver searches 400
    return out


def test_wall_times_agree_with_croniter(capsys: pytest.CaptureFixture[str]) -> None:
    """Naive wall times: the field parsing and the day rule, with no zone in play."""
    exprs, rejected = expressions(2000)
    tally = Tally("croniter (wall times)", expressions=len(exprs), rejected=rejected)
    rng = random.Random(SEED)
    for expr in exprs:
        for _ in range(2):
            start = datetime(1971, 1, 1) + timedelta(minutes=rng.randint(0, 128 * 365 * 1440))
            tally.instants += 1
            mine, spec, t = [], cron.parse(expr), start
            for _ in range(5):
                found = cron.next_match(spec, t)
                if found is None:
                    break
                mine.append(found)
                t = found
            if not mine:
                tally.disagree("accepted but never fires", f"{expr!r} after {start}")
                continue
            other = theirs(expr, start, len(mine))
            tally.comparisons += len(other)
            if mine[: len(other)] != other:
                spelled = theirs(canonical(expr), start, len(mine))
                kind = parse_quirk(expr) if mine[: len(spelled)] == spelled else day_quirk(expr)
                tally.disagree(kind, f"{expr!r} after {start}: {mine[0]} vs croniter {other[:1]}")
    with capsys.disabled():
        print("\n" + tally.report())
    assert set(tally.kinds) <= PARSE_QUIRKS, tally.report()


def _kind(zone: str, start: datetime, mine: datetime | None, other: datetime | None) -> str:
    if other is not None and repeated(zone, other):
        return "croniter runs a repeated wall time twice"
    if mine is not None and mine in transitions(zone):
        return SKIPPED
    last = max(t for t in (start, mine, other) if t is not None)
    if near_transition(zone, start, last):
        return "DST: croniter shifts across the transition"
    return "other"


def test_due_instants_agree_with_croniter_in_zones_with_dst(capsys: pytest.CaptureFixture[str]) -> None:
    exprs, rejected = expressions(200, seed=SEED + 1)
    tally = Tally("croniter (instants in 6 zones)", expressions=len(exprs), rejected=rejected)
    rng = random.Random(SEED + 1)
    for zone in ZONES:
        for expr in exprs:
            for start in starts(rng, zone, 2):
                tally.instants += 1
                mine = ours(expr, zone, start, 4)
                local = start.astimezone(ZoneInfo(zone))
                other = [t.astimezone(UTC) for t in theirs(canonical(expr), local, len(mine))]
                for i, (a, b) in enumerate(zip(mine, other, strict=False)):
                    tally.comparisons += 1
                    if a != b:  # after the first difference the two sequences are out of step
                        where = f"{expr!r} in {zone} after {start}: #{i + 1} {a} vs {b}"
                        tally.disagree(_kind(zone, start, a, b), where)
                        break
    with capsys.disabled():
        print("\n" + tally.report())
    assert set(tally.kinds) <= DOCUMENTED, tally.report()


def test_catch_up_counts_agree_with_croniter_and_the_due_times(capsys: pytest.CaptureFixture[str]) -> None:
    """The catch-up count (arithmetic per day) equals the number of due times (walked one by one), and away
    from transitions equals croniter's count of matches in the same span."""
    exprs, _ = expressions(150, seed=SEED + 2)
    tally = Tally("croniter (catch-up counts)", expressions=len(exprs))
    rng = random.Random(SEED + 2)
    for zone in ZONES:
        for expr in exprs:
            start = starts(rng, zone, 1)[0]
            spec = cron.parse(expr)
            days = min(45.0, 300 / (len(spec.hours) * len(spec.minutes)))  # a few hundred due times at most
            end = start + timedelta(days=rng.uniform(days / 10, days))
            tally.instants += 1
            counted = schedule._count_cron(_job(expr), zone, expr, start, end)
            walked = sum(1 for _ in schedule.fires(_job(expr), zone, start, end))
            tally.comparisons += 1
            if counted != walked:
                tally.disagree("count differs from the due times", f"{expr!r} {zone} {start}..{end}")
            if near_transition(zone, start, end):
                continue
            tally.comparisons += 1
            it = peer(canonical(expr), start.astimezone(ZoneInfo(zone)))
            count = 0
            while it.get_next(datetime).astimezone(UTC) <= end:
                count += 1
            if count != counted:
                tally.disagree("other", f"{expr!r} {zone} {start}..{end}: {counted} vs croniter {count}")
    with capsys.disabled():
        print("\n" + tally.report())
    assert not tally.kinds, tally.report()


def _job(expr: str) -> schedule.JobDef:
    return schedule.JobDef(name="j", tenant="t", trigger=schedule.Cron(expr), command=("true",))
