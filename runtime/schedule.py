"""When jobs are due: cron and interval triggers, time windows, time zones with DST, catch-up after downtime.

Rules (all datetimes are timezone-aware; the zone is the job's ``timezone`` or else the ``tz`` passed in):

- cron: matched on local wall time. A wall time that does not exist (skipped by a DST jump) runs once, at
  the instant of the jump; a wall time that exists twice (clocks set back) runs once, at its first
  occurrence.
- every: the next due time is the previous due time + interval, in absolute time (DST does not matter).
  A job never run before is first due one interval after the daemon first sees it
  (``next_fire(job, tz, now)``).
- windows: a run may start only inside one of the job's windows. A cron match outside every window is
  skipped; an interval run that would fall outside is moved to the next window opening and the interval
  counts on from there.
- catch_up(): after downtime, due times in (last_due, now] are split into runs to start now and runs to
  record as missed, per the job's policy and max_late. Lists are bounded (newest MAX_LISTED); older due times
  are counted in ``omitted`` so nothing disappears without a trace.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from . import cron
from .model import CatchUp, Cron, Every, JobDef, Window

MAX_LISTED = 100  # due times listed in a catch-up plan; older ones are only counted
COUNT_LIMIT = 10_000  # stop counting omitted due times here (``omitted_exact`` is then False)
ON_TIME = timedelta(seconds=60)  # with catch_up=skip, a run this late still counts as on time
_MAX_SKIPS = 10_000  # bound on cron matches skipped for windows / repeated hours before giving up


@dataclass
class CatchUpPlan:
    run: list[datetime] = field(default_factory=list)  # due times to run now, oldest first
    missed: list[datetime] = field(default_factory=list)  # due times to record as missed, oldest first
    omitted: int = 0  # further missed due times, older than everything listed, not listed
    omitted_exact: bool = True  # False: ``omitted`` is a lower bound (counting stopped at COUNT_LIMIT)
    omitted_first: datetime | None = None  # oldest omitted due time
    omitted_last: datetime | None = None  # newest omitted due time


def zone_of(job: JobDef, tz: str) -> ZoneInfo:
    return ZoneInfo(job.timezone or tz)


# ---- local wall time <-> instants


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    # via UTC: astimezone() to the instant's own zone would return a nonexistent wall time unchanged
    return instant.astimezone(UTC).astimezone(zone).replace(tzinfo=None, fold=0)


def to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) of a naive local wall time: first occurrence if repeated, the DST jump if skipped."""
    first = wall.replace(tzinfo=zone, fold=0)
    if _wall(first, zone) == wall:
        return first.astimezone(UTC)
    # wall time lies in a gap: bisect for the first second carrying the offset after the jump
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    after_offset = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi


# ---- windows


def in_windows(windows: tuple[Window, ...], wall: datetime) -> bool:
    """True when there are no windows or naive local ``wall`` lies inside one."""
    if not windows:
        return True
    day, now = wall.weekday(), wall.time()
    for w in windows:
        if w.start < w.end:
            if day in w.days and w.start <= now < w.end:
                return True
        elif (day in w.days and now >= w.start) or ((day - 1) % 7 in w.days and now < w.end):
            return True
    return False


def next_window_open(windows: tuple[Window, ...], wall: datetime) -> datetime:
    """The first window opening strictly after naive local ``wall``."""
    best: datetime | None = None
    for w in windows:
        for offset in range(8):
            d: date = wall.date() + timedelta(days=offset)
            opening = datetime.combine(d, w.start)
            if d.weekday() in w.days and opening > wall:
                best = opening if best is None else min(best, opening)
                break
    if best is None:  # a Window always has at least one day; kept for the type checker
        raise ValueError("window without days")
    return best


# ---- next fire


def _next_cron(expr: str, windows: tuple[Window, ...], zone: ZoneInfo, after: datetime) -> datetime | None:
    spec = cron.parse(expr)
    wall = _wall(after, zone)
    for _ in range(_MAX_SKIPS):
        match = cron.next_match(spec, wall)
        if match is None:
            return None
        if not in_windows(windows, match):
            # search again from the next opening (minus a moment, as next_match is strictly after)
            wall = next_window_open(windows, match) - timedelta(microseconds=1)
            continue
        instant = to_instant(match, zone)
        if instant > after:
            return instant
        wall = match  # second pass of a repeated hour, or a skipped time already run at the jump
    return None


def _next_every(seconds: float, windows: tuple[Window, ...], zone: ZoneInfo, after: datetime) -> datetime:
    due = after + timedelta(seconds=seconds)
    wall = _wall(due, zone)
    if in_windows(windows, wall):
        return due
    return to_instant(next_window_open(windows, wall), zone)


def next_fire(job: JobDef, tz: str, after: datetime) -> datetime | None:
    """The first due time strictly after ``after``; None for a one-off job (or a cron that never fires).

    The result is in UTC: aware datetimes in a zone compare wrongly around a repeated hour (PEP 495).
    """
    zone = zone_of(job, tz)
    after = after.astimezone(UTC)
    trigger = job.trigger
    if isinstance(trigger, Cron):
        return _next_cron(trigger.expr, job.windows, zone, after)
    if isinstance(trigger, Every):
        return _next_every(trigger.seconds, job.windows, zone, after)
    return None


def fires(job: JobDef, tz: str, after: datetime, until: datetime) -> Iterator[datetime]:
    """Due times in (after, until], oldest first."""
    due = next_fire(job, tz, after)
    while due is not None and due <= until:
        yield due
        due = next_fire(job, tz, due)


# ---- catch-up


def _newest(job: JobDef, tz: str, last_due: datetime, now: datetime) -> list[datetime]:
    """Up to MAX_LISTED newest due times in (last_due, now], oldest first.

    Searches back from ``now`` over a growing span so a long downtime costs no more than a short one.
    """
    span = timedelta(hours=1)
    if isinstance(job.trigger, Every):
        span = max(span, timedelta(seconds=job.trigger.seconds * (MAX_LISTED + 1)))
    while True:
        start = max(last_due, now - span)
        if isinstance(job.trigger, Every) and start > last_due:
            # stay on the interval grid anchored at last_due
            step = job.trigger.seconds
            start = last_due + timedelta(seconds=step * ((start - last_due).total_seconds() // step))
        found = deque(fires(job, tz, start, now), maxlen=MAX_LISTED)
        if len(found) == MAX_LISTED or start <= last_due:
            return list(found)
        span *= 4


def _count_omitted(job: JobDef, tz: str, last_due: datetime, upto: datetime, plan: CatchUpPlan) -> None:
    """Count due times in (last_due, upto] into ``plan.omitted``."""
    trigger = job.trigger
    if isinstance(trigger, Every) and not job.windows:
        # a plain interval grid: count it instead of walking it
        step = timedelta(seconds=trigger.seconds)
        plan.omitted = int((upto - last_due) / step)
        if plan.omitted:
            plan.omitted_first = last_due + step
            plan.omitted_last = last_due + step * plan.omitted
        return
    for due in fires(job, tz, last_due, upto):
        if plan.omitted_first is None:
            plan.omitted_first = due
        plan.omitted_last = due
        plan.omitted += 1
        if plan.omitted >= COUNT_LIMIT:
            plan.omitted_exact = False
            return


def catch_up(job: JobDef, tz: str, last_due: datetime | None, now: datetime) -> CatchUpPlan:
    """Split the due times in (last_due, now] into runs to start now and runs to record as missed.

    skip: none is run, except the newest if it is at most ON_TIME late; latest: the newest is run;
    all: each is run, oldest first. With max_late, a due time later than that is missed under any policy.
    A job never run before (last_due None) has nothing to catch up.
    """
    plan = CatchUpPlan()
    now = now.astimezone(UTC)
    if last_due is None or job.trigger is None:
        return plan
    last_due = last_due.astimezone(UTC)
    listed = _newest(job, tz, last_due, now)
    if not listed:
        return plan
    _count_omitted(job, tz, last_due, listed[0] - timedelta(microseconds=1), plan)
    max_late = timedelta(seconds=job.max_late) if job.max_late is not None else None

    def runnable(due: datetime) -> bool:
        return max_late is None or now - due <= max_late

    newest = listed[-1]
    if job.catch_up is CatchUp.ALL:
        plan.run = [d for d in listed if runnable(d)]
    elif job.catch_up is CatchUp.LATEST:
        plan.run = [newest] if runnable(newest) else []
    elif now - newest <= ON_TIME and runnable(newest):
        plan.run = [newest]
    chosen = set(plan.run)
    plan.missed = [d for d in listed if d not in chosen]
    return plan


_DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WINDOW_HINT = 'write days and/or a time range, e.g. "mon-fri 22:00-06:00", "sat,sun", "09:00-17:00"'


def _window_time(text: str) -> time:
    """HH:MM, with 24:00 allowed (midnight at the end of the day)."""
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 1 <= len(hh) <= 2):
        raise ValueError(f"{text!r} is not HH:MM")
    h, m = int(hh), int(mm)
    if (h, m) == (24, 0):
        return time(0, 0)
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(h, m)


def _day(name: str) -> int:
    try:
        return _DAY_NAMES.index(name.lower()[:3] if len(name) > 3 else name.lower())
    except ValueError:
        raise ValueError(f"{name!r} is not a weekday (mon..sun)") from None


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        a, dash, b = item.partition("-")
        first = _day(a)
        last = _day(b) if dash else first
        span = (last - first) % 7  # "fri-mon" wraps over the weekend
        days.update((first + i) % 7 for i in range(span + 1))
    return frozenset(days)


def parse_window(text: str) -> Window:
    """"mon-fri 22:00-06:00", "sat,sun", "09:00-17:00": days default to all, times to the whole day."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"{text!r} has {len(parts)} parts")
    days = frozenset(range(7))
    start = end = time(0, 0)
    if ":" not in parts[0]:
        days = _days(parts.pop(0))
    if parts:
        a, dash, b = parts.pop(0).partition("-")
        if not dash:
            raise ValueError(f"{text!r}: expected a range HH:MM-HH:MM")
        start, end = _window_time(a), _window_time(b)
    if parts:
        raise ValueError(f"{text!r}: days must come before the time range")
    return Window(days=days, start=start, end=end)
