"""When jobs are due: cron and interval triggers, time windows, time zones with DST, catch-up after downtime.

Rules (all datetimes are timezone-aware; the zone is the job's ``timezone`` or else the ``tz`` passed in):

- cron: matched on local wall time. A wall time that does not exist (skipped by a DST jump) runs once, at
  the instant of the jump; a wall time that exists twice (clocks set back) runs once, at its first
  occurrence.
- every: the next due time is the previous due time + interval, in absolute time (DST does not matter).
  A job never run before is first due one interval after the daemon first sees it. After any gap
  (downtime, a stall, a forward clock step) the interval grid goes on from the last due time:
  ``next_due(job, tz, last_due, now)`` is the first grid point after now, the same for the daemon and
  ``jobs list``.
- windows: a run may start only inside one of the job's windows. A cron match outside every window is
  skipped; an interval run that would fall outside is moved to the next window opening and the interval
  counts on from there.
- catch_up(): after downtime, due times in (last_due, now] are split into runs to start now and runs to
  record as missed, per the job's policy and max_late. Lists are bounded (newest MAX_LISTED, or
  MAX_LISTED_ALL with catch_up=all); older due times are counted in ``omitted`` so nothing disappears
  without a trace. Counting is arithmetic (per interval, or per day for cron), so a long downtime is cheap.
  A timer that fires late (a stall, a forward clock step) goes through the same function: see ``just_before``.
- clock set back (``after_step_back``): intervals keep their elapsed time (the next due time moves back with
  the clock); a cron job whose minute or hour field starts with ``*`` follows the new wall time at once;
  any other cron job does not repeat wall times it already ran when the step is at most STEP_BACK_KEEP
  (cronie's rule), and follows the new wall time after a larger step (the clock was wrong, not adjusted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import cron
from .model import CatchUp, Cron, Every, JobDef, Window
from .windows import in_windows, next_window_open, weekly_meets

MAX_LISTED = 10  # newest due times listed in a catch-up plan; older ones are only counted
MAX_LISTED_ALL = 100  # the same with catch_up=all: at most this many missed runs are run
COUNT_LIMIT = 10_000  # stop walking due times here (with windows); ``omitted_exact`` is then False
ON_TIME = timedelta(seconds=60)  # with catch_up=skip, a run this late still counts as on time
_MAX_SKIPS = 100_000  # bound on cron matches skipped for windows / repeated hours (safety net)
STEP_BACK_KEEP = timedelta(hours=3)  # cronie's limit: a smaller backward step does not repeat fixed times
_MAX_SHARED = 4096  # answers kept for jobs that share a schedule (a bound on memory, not a tuning knob)


@dataclass
class CatchUpPlan:
    run: list[datetime] = field(default_factory=list)  # due times to run now, oldest first
    missed: list[datetime] = field(default_factory=list)  # due times to record as missed, oldest first
    omitted: int = 0  # further missed due times, older than everything listed, not listed
    omitted_exact: bool = True  # False: ``omitted`` is a lower bound (counting stopped at COUNT_LIMIT)
    omitted_first: datetime | None = None  # oldest omitted due time
    omitted_last: datetime | None = None  # newest omitted due time


_NEXT: dict[tuple[object, ...], datetime | None] = {}  # next_fire's answers, by schedule and instant
_PLANS: dict[tuple[object, ...], CatchUpPlan] = {}  # catch_up's, by schedule, policy and times


def get_zone(name: str) -> tzinfo:
    """The zone called ``name``; UTC works even on a system without time zone data."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        if name == "UTC":
            return UTC
        raise


def zone_of(job: JobDef, tz: str) -> tzinfo:
    return get_zone(job.timezone or tz)


# ---- local wall time <-> instants


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    # via UTC: astimezone() to the instant's own zone would return a nonexistent wall time unchanged
    return instant.astimezone(UTC).astimezone(zone).replace(tzinfo=None, fold=0)


def to_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The instant (UTC) of a naive local wall time: first occurrence if repeated, the DST jump if skipped."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    before, after = first.utcoffset(), second.utcoffset()
    if before is None or after is None or before >= after:
        return first.astimezone(UTC)  # an ordinary time, or the first pass of a repeated one (PEP 495)
    # wall time lies in a gap: bisect for the first second carrying the offset after the jump
    lo, hi = second.astimezone(UTC), first.astimezone(UTC)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi


# ---- next fire


def _next_cron(
    expr: str, windows: tuple[Window, ...], zone: tzinfo, after: datetime, horizon: datetime
) -> datetime | None:
    """First matching instant after ``after`` whose wall time is not beyond ``horizon`` (naive wall)."""
    spec = cron.parse(expr)
    if windows and not _meets(spec, windows):
        return None  # decided exactly, instead of skipping from window to window for 400 years
    wall = _wall(after, zone)
    for _ in range(_MAX_SKIPS):
        match = cron.next_match(spec, wall)
        if match is None or match > horizon:
            return None  # e.g. the cron matches only outside the windows
        if not in_windows(windows, match):
            # search again from the next opening (minus a moment, as next_match is strictly after)
            wall = next_window_open(windows, match) - timedelta(microseconds=1)
            continue
        instant = to_instant(match, zone)
        if instant > after:
            return instant
        wall = match  # second pass of a repeated hour, or a skipped time already run at the jump
    return None


@lru_cache(maxsize=4096)
def _meets(spec: cron.CronSpec, windows: tuple[Window, ...]) -> bool:
    return weekly_meets(windows, cron.weekdays(spec), spec.hours, spec.minutes)


def _next_every(seconds: float, windows: tuple[Window, ...], zone: tzinfo, after: datetime) -> datetime:
    due = after + timedelta(seconds=seconds)
    wall = _wall(due, zone)
    if in_windows(windows, wall):
        return due
    return to_instant(next_window_open(windows, wall), zone)


def _next(job: JobDef, zone: tzinfo, after: datetime, until: datetime | None) -> datetime | None:
    trigger = job.trigger
    if isinstance(trigger, Cron):
        if until is None:
            wall = _wall(after, zone)
            horizon = wall.replace(year=min(wall.year + cron.HORIZON_YEARS, datetime.max.year - 1), day=1)
        else:  # nothing beyond ``until`` is wanted: stop searching a day past it (covers any UTC offset)
            horizon = _wall(until, zone) + timedelta(days=1)
        return _next_cron(trigger.expr, job.windows, zone, after, horizon)
    if isinstance(trigger, Every):
        return _next_every(trigger.seconds, job.windows, zone, after)
    return None


def next_fire(job: JobDef, tz: str, after: datetime) -> datetime | None:
    """The first due time strictly after ``after``; None for a one-off job (or a cron that never fires).

    The result is in UTC: aware datetimes in a zone compare wrongly around a repeated hour (PEP 495).
    """
    if after.tzinfo is None:
        raise ValueError("next_fire needs a timezone-aware datetime")  # naive would silently mean host time
    after = after.astimezone(UTC)
    # shared by jobs on the same schedule: start-up asks this of 10,000 jobs with one `now`
    key = (job.trigger, job.windows, job.timezone or tz, after)
    if key in _NEXT:
        return _NEXT[key]
    if len(_NEXT) >= _MAX_SHARED:
        _NEXT.clear()
    found = _NEXT[key] = _next(job, zone_of(job, tz), after, None)
    return found



def next_due(job: JobDef, tz: str, last_due: datetime | None, now: datetime) -> datetime | None:
    """The first due time after ``now``; an interval goes on on its grid from ``last_due``, the due time
    handled last (the due times in between are catch-up's business), also from one after ``now``: another
    host of a shared store whose clock is a little ahead handled it (a clock set back further had its
    last due times moved back to now: daemon._last_dues)."""
    trigger = job.trigger
    if not isinstance(trigger, Every) or last_due is None:
        return next_fire(job, tz, now)
    if last_due > now:
        return next_fire(job, tz, last_due)
    if not job.windows:
        step = timedelta(seconds=trigger.seconds)
        return last_due + step * ((now - last_due) // step + 1)
    newest = _newest(job, tz, last_due.astimezone(UTC), now.astimezone(UTC), 1)
    return next_fire(job, tz, newest[-1] if newest else last_due)


def just_before(job: JobDef, due: datetime) -> datetime:
    """An instant from which ``due`` (one of the job's due times) is the next due time: catch_up(job, tz,
    just_before(job, due), now) then covers [due, now], which is how a late timer is handled."""
    if isinstance(job.trigger, Every):
        return due - timedelta(seconds=job.trigger.seconds)  # the grid is anchored on the previous due time
    return due - timedelta(microseconds=1)


def after_step_back(job: JobDef, tz: str, due: datetime, step: timedelta, now: datetime) -> datetime | None:
    """Where a due time set before the wall clock was set back by ``-step`` (step < 0) moves to."""
    trigger = job.trigger
    if isinstance(trigger, Every):
        return due + step  # elapsed time: an interval neither stalls nor hurries
    if isinstance(trigger, Cron) and not cron.parse(trigger.expr).wild and -step <= STEP_BACK_KEEP:
        return due  # wall times already run are not run again
    return next_fire(job, tz, now)


def fires(job: JobDef, tz: str, after: datetime, until: datetime) -> Iterator[datetime]:
    """Due times in (after, until], oldest first."""
    zone, until = zone_of(job, tz), until.astimezone(UTC)
    due = _next(job, zone, after.astimezone(UTC), until)
    while due is not None and due <= until:
        yield due
        due = _next(job, zone, due, until)


def in_window(job: JobDef, tz: str, instant: datetime) -> bool:
    """Whether a run of ``job`` may start at ``instant``: inside one of its windows (always, without any)."""
    return not job.windows or in_windows(job.windows, _wall(instant, zone_of(job, tz)))


def next_window_opening(job: JobDef, tz: str, instant: datetime) -> datetime:
    """The first opening of one of the job's windows after ``instant`` (the job must have windows), in UTC."""
    zone = zone_of(job, tz)
    return to_instant(next_window_open(job.windows, _wall(instant, zone)), zone)


# ---- catch-up


def _newest(job: JobDef, tz: str, last_due: datetime, now: datetime, limit: int) -> list[datetime]:
    """Up to ``limit`` newest due times in (last_due, now], oldest first.

    Searches back from ``now`` over a growing span so a long downtime costs no more than a short one.
    """
    span = timedelta(hours=1)
    if isinstance(job.trigger, Every):
        span = max(span, timedelta(seconds=job.trigger.seconds * (limit + 1)))
    while True:
        start = max(last_due, now - span)
        if isinstance(job.trigger, Every) and start > last_due:
            # stay on the interval grid anchored at last_due
            step = job.trigger.seconds
            start = last_due + timedelta(seconds=step * ((start - last_due).total_seconds() // step))
        found = deque(fires(job, tz, start, now), maxlen=limit)
        if len(found) == limit or start <= last_due:
            return list(found)
        span *= 4


def _midnight(d: date, zone: tzinfo) -> datetime:
    return to_instant(datetime.combine(d, time()), zone)


def _minute_of_day(wall: datetime, d: date, default: int) -> int:
    if wall.date() != d:
        return default
    return wall.hour * 60 + wall.minute  # seconds dropped: matches fall on whole minutes


def _count_cron(job: JobDef, tz: str, expr: str, last_due: datetime, upto: datetime) -> int:
    """Due times of a window-less cron job in (last_due, upto], day by day: arithmetic on days whose UTC
    offset does not change, walking the (rare) days with a change. The day after a change is walked too: a
    change at midnight (Pacific/Apia skipped all of 2011-12-30) moves the skipped day's matches to the
    first instant of the next day."""
    zone, spec = zone_of(job, tz), cron.parse(expr)
    tick = timedelta(microseconds=1)  # fires() is (after, until]: step back so midnight counts in its day
    first, last = _wall(last_due, zone).date(), _wall(upto, zone).date()
    total, day = 0, first
    before = datetime.combine(day - timedelta(days=1), time(), zone).utcoffset()
    offset = datetime.combine(day, time(), zone).utcoffset()
    while day <= last:
        following = day + timedelta(days=1)
        next_offset = datetime.combine(following, time(), zone).utcoffset()
        regular = before == offset == next_offset
        if regular and first < day < last:
            total += cron.count_day(spec, day)
        else:
            lo = max(last_due, _midnight(day, zone) - tick)
            hi = min(upto, _midnight(following, zone) - tick)
            if regular:
                after = _minute_of_day(_wall(lo, zone), day, -1)
                total += cron.count_day(spec, day, after, _minute_of_day(_wall(hi, zone), day, 1439))
            else:
                total += sum(1 for _ in fires(job, tz, lo, hi))
        day, before, offset = following, offset, next_offset
    return total


def _count_omitted(job: JobDef, tz: str, last_due: datetime, newest: datetime, plan: CatchUpPlan) -> None:
    """Count the due times in (last_due, newest] into ``plan``; ``newest`` is itself a due time."""
    trigger = job.trigger
    plan.omitted_first, plan.omitted_last = next_fire(job, tz, last_due), newest
    if isinstance(trigger, Every) and not job.windows:
        plan.omitted = round((newest - last_due) / timedelta(seconds=trigger.seconds))
    elif isinstance(trigger, Cron) and not job.windows:
        plan.omitted = _count_cron(job, tz, trigger.expr, last_due, newest)
    else:
        plan.omitted = sum(1 for _ in islice(fires(job, tz, last_due, newest), COUNT_LIMIT))
        plan.omitted_exact = plan.omitted < COUNT_LIMIT


def catch_up(job: JobDef, tz: str, last_due: datetime | None, now: datetime) -> CatchUpPlan:
    """Split the due times in (last_due, now] into runs to start now and runs to record as missed.

    skip: none is run, except the newest if it is at most ON_TIME late; latest: the newest is run;
    all: each is run, oldest first. With max_late, a due time later than that is missed under any policy.
    A job never run before (last_due None) has nothing to catch up.

    The plan depends only on the job's schedule and policy, its last due time and ``now``: jobs that share
    them (after a downtime, many jobs on one cron line ran last at the same time) share the work.
    """
    if last_due is None or job.trigger is None:
        return CatchUpPlan()
    now, last_due = now.astimezone(UTC), last_due.astimezone(UTC)
    key = (job.trigger, job.windows, job.timezone or tz, job.catch_up, job.max_late, last_due, now)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_SHARED:
            _PLANS.clear()
        plan = _PLANS[key] = _catch_up(job, tz, last_due, now)
    return replace(plan, run=list(plan.run), missed=list(plan.missed))  # the caller's own lists



def _catch_up(job: JobDef, tz: str, last_due: datetime, now: datetime) -> CatchUpPlan:
    plan = CatchUpPlan()
    limit = MAX_LISTED_ALL if job.catch_up is CatchUp.ALL else MAX_LISTED
    listed = _newest(job, tz, last_due, now, limit + 1)  # one more: the newest of those only counted
    if len(listed) > limit:
        _count_omitted(job, tz, last_due, listed.pop(0), plan)
    if not listed:
        return plan
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
