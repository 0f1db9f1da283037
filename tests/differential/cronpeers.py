"""Shared parts of the differential cron tests: random expressions, start instants near real zone transitions,
taskserver's own answers, and a tally that the tests print so the figures can be quoted.

Random but reproducible: the seed is fixed (TASKSERVER_DIFF_SEED overrides it to explore further).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from taskserver.runtime import cron
from taskserver.runtime.model import Cron, JobDef
from taskserver.runtime.schedule import next_fire

SEED = int(os.environ.get("TASKSERVER_DIFF_SEED", "20261201"))
# DST both ways (Berlin, New York), a 30-minute DST (Lord Howe), a negative DST (Dublin: winter time is the
# "daylight saving" one in its TZif data), a whole day skipped (Apia, 2011-12-30), and UTC as the control.
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Europe/Dublin", "Pacific/Apia", "UTC")
TRANSITION_YEARS = (1996, 2011, 2026, 2038, 2071)
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _value(rng: random.Random, index: int, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    if index == 3 and rng.random() < 0.15:
        return _MONTHS[n - 1]
    if index == 4 and n < 7 and rng.random() < 0.15:
        return _DAYS[n]
    return str(n)


def _item(rng: random.Random, index: int) -> str:
    lo, hi = _RANGES[index]
    kind = rng.choices(["*/k", "a", "a-b", "a-b/k", "a/k"], weights=[3, 5, 2, 1, 1])[0]
    step = str(rng.randint(2, max(2, (hi - lo) // 2 + 1)))
    if kind == "*/k":
        return f"*/{step}"
    if kind == "a":
        return _value(rng, index, lo, hi)
    a = rng.randint(lo, hi)
    if kind == "a/k":
        return f"{a}/{step}"
    b = rng.randint(a, hi)
    return f"{a}-{b}" + (f"/{step}" if kind == "a-b/k" else "")


def _field(rng: random.Random, index: int) -> str:
    star = {0: 0.05, 1: 0.15, 2: 0.45, 3: 0.55, 4: 0.5}[index]  # day fields: starred or not, about evenly
    if rng.random() < star:
        return "*"
    return ",".join(_item(rng, index) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def expressions(count: int, seed: int = SEED) -> tuple[list[str], int]:
    """``count`` random expressions taskserver accepts, and how many generated ones it rejected."""
    rng = random.Random(seed)
    out: list[str] = []
    rejected = 0
    while len(out) < count:
        expr = " ".join(_field(rng, i) for i in range(5))
        try:
            cron.parse(expr)
        except cron.CronError:
            rejected += 1  # e.g. "0 0 31 2 *": never matches, refused at config time
            continue
        out.append(expr)
    return out, rejected


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """Instants (UTC) where the zone's UTC offset changes, in TRANSITION_YEARS and around Apia's lost day."""
    tz = ZoneInfo(zone)
    found: list[datetime] = []
    for year in (*TRANSITION_YEARS, 2011):
        t = datetime(year, 1, 1, tzinfo=UTC)
        while t.year == year:
            nxt = t + timedelta(days=1)
            if t.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
                found.append(_bisect(tz, t, nxt))
            t = nxt
    return tuple(sorted(set(found)))


def _bisect(tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def starts(rng: random.Random, zone: str, count: int, *, second: int = 0) -> list[datetime]:
    """Start instants (UTC): half within 36 hours of one of the zone's transitions, half in 1971-2099."""
    near = transitions(zone)
    out = []
    for i in range(count):
        if near and i % 2 == 0:
            t = rng.choice(near) + timedelta(minutes=rng.randint(-36 * 60, 36 * 60))
        else:
            t = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 128 * 365 * 1440))
        out.append(t.replace(second=second, microsecond=0))
    return out


def canonical(expr: str) -> str:
    """The same schedule with every field spelled out as a list of numbers (parsed by taskserver), keeping
    which day fields start with '*': such a field always holds its first value, and ``*/31`` (day of month)
    or ``*/7`` (day of week) adds nothing else, so the sets stay exact. Tells a parsing difference from a
    difference in matching."""
    spec = cron.parse(expr)

    def spell(values: Iterable[int]) -> str:
        return ",".join(str(v) for v in sorted(values))

    dom = ("*/31," if spec.dom_any else "") + spell(spec.doms)
    dow = ("*/7," if spec.dow_any else "") + spell(spec.dows)
    return f"{spell(spec.minutes)} {spell(spec.hours)} {dom} {spell(spec.months)} {dow}"


def parse_quirk(expr: str) -> str:
    """Name the documented way croniter reads ``expr`` differently, or "other"."""
    if day_quirk(expr) != "other":
        return day_quirk(expr)  # croniter folds a range such as 0-6, though not the same days as a list
    fields = expr.split()
    items = [item for f in fields for item in f.split(",")]
    if any(_same_ends(item) for item in items):
        return "croniter reads a one-value range a-a as * (and a-a/k as */k)"
    if any("/" in item and not item.startswith("*") and "-" not in item for item in fields[4].split(",")):
        return ("N/STEP in day of week: taskserver runs to 7 (Sunday), as Vixie's * does; "
                "croniter stops at 6")
    return "other"


FULL_DAY_FIELD = "croniter reads an unstarred day field that lists every value as * (AND, not Vixie's OR)"


def day_quirk(expr: str) -> str:
    """A matching difference croniter is known for, or "other": with neither day field starting with '*',
    Vixie ORs the two day sets even when one of them holds every day; croniter folds such a field to '*'."""
    spec = cron.parse(expr)
    full = len(spec.doms) == 31 or len(spec.dows) == 7
    return FULL_DAY_FIELD if full and not (spec.dom_any or spec.dow_any) else "other"


def _same_ends(item: str) -> bool:
    a, dash, b = item.partition("/")[0].partition("-")
    return bool(dash) and a == b


def job(expr: str) -> JobDef:
    return JobDef(name="j", tenant="t", trigger=Cron(expr), command=("true",))


def ours(expr: str, zone: str, after: datetime, n: int) -> list[datetime]:
    """taskserver's next ``n`` due times (UTC) after ``after``, as the daemon computes them."""
    j, out = job(expr), []
    t: datetime | None = after
    for _ in range(n):
        t = next_fire(j, zone, t) if t is not None else None
        if t is None:
            break
        out.append(t)
    return out


def near_transition(zone: str, lo: datetime, hi: datetime, margin: timedelta = timedelta(days=2)) -> bool:
    return any(lo - margin <= t <= hi + margin for t in transitions(zone))


def wall_exists(zone: str, wall: datetime) -> bool:
    """Whether naive local ``wall`` exists in ``zone`` (not in a gap of a forward jump)."""
    tz = ZoneInfo(zone)
    there = wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return there == wall


def repeated(zone: str, instant: datetime) -> bool:
    """Whether ``instant`` is the second pass of a wall time that occurs twice (clocks set back)."""
    tz = ZoneInfo(zone)
    wall = instant.astimezone(tz).replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    return first < instant.astimezone(UTC)


@dataclass
class Tally:
    peer: str
    expressions: int = 0
    rejected: int = 0
    instants: int = 0
    comparisons: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def disagree(self, kind: str, example: str) -> None:
        self.kinds[kind] += 1
        self.examples.setdefault(kind, example)

    def report(self) -> str:
        lines = [f"differential vs {self.peer}: {self.expressions} expressions ({self.rejected} more "
                 f"generated and rejected as never matching), {self.instants} start instants, "
                 f"{self.comparisons} comparisons, {sum(self.kinds.values())} disagreements"]
        lines += [f"  {n:6d}  {kind}    e.g. {self.examples[kind]}" for kind, n in self.kinds.most_common()]
        return "\n".join(lines)
