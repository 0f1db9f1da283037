"""Standard 5-field cron expressions, parsed once and matched by jumping from field to field.

Fields: minute hour day-of-month month day-of-week, each a list of ``*``, ``N``, ``N-M``, with ``/step``
(``N/step`` means N to the field's maximum). Month and weekday names (jan-dec, sun-sat) are accepted;
weekday 0 and 7 are both Sunday. Aliases: @hourly @daily @midnight @weekly @monthly @yearly @annually.

The day rule is Vixie cron's (also cronie's and the BSDs'), decided by how the day fields are WRITTEN: a day
field whose text starts with ``*`` is "starred" (DOM_STAR/DOW_STAR in Vixie's entry.c, ``*/2`` included).
When either day field is starred, a day matches if it is in BOTH day sets; otherwise (both written as lists
or ranges) a day matches if it is in EITHER. So ``0 0 */2 * *`` runs on odd days (1, 3, ..., 31, then the
1st), ``0 0 * * */2`` on Sun/Tue/Thu/Sat, ``0 0 1-31 * mon`` every day (neither field starred: the OR
rule), and ``0 0 29 2 */7`` only on a Feb 29 that is a Sunday (2088, then 2128: 40 years apart).

The Gregorian calendar repeats every 400 years, so an expression that matches at all matches within any
400-year span: ``parse`` rejects one that never matches, and ``next_match`` searches that far (bounded).

Matching works on naive local wall times at minute resolution; time zones and DST are the caller's concern
(see schedule.py).
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names mapped to numbers)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
# one full Gregorian cycle (146097 days = 20871 weeks): the calendar, weekdays included, repeats after it,
# so a match that exists is found within this span (parse() rejects expressions without any)
HORIZON_YEARS = 401
MAX_TEXT = 40  # values quoted in an error message are cut to this length


class CronError(ValueError):
    """A cron expression that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class CronSpec:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    months: tuple[int, ...]
    dows: frozenset[int]  # 0 = Sunday
    dom_any: bool  # the day-of-month field starts with '*' (Vixie's DOM_STAR), whatever follows
    dow_any: bool  # the same for day of week (DOW_STAR)
    dom_list: tuple[int, ...] = ()  # sorted doms, for jumping when day-of-month must match
    every_day: bool = False  # both day sets are full: no day needs checking
    wild: bool = False  # minute or hour field starts with '*' (cronie's MIN_STAR|HR_STAR): see schedule.py

    def day_matches(self, d: date) -> bool:
        if self.every_day:
            return True
        dom_ok = d.day in self.doms
        dow_ok = (d.weekday() + 1) % 7 in self.dows
        if self.dom_any or self.dow_any:
            return dom_ok and dow_ok  # a starred field, '*/2' too, is a set like any other here
        return dom_ok or dow_ok

    def matches(self, t: datetime) -> bool:
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self.day_matches(t.date())
        )


def _cut(text: str) -> str:
    """``text`` quoted for an error message, cut to a readable length."""
    return repr(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "...")


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit() alone also takes '٣' and '²'


def _number(text: str, field: str, names: dict[str, int]) -> int:
    low = text.lower()
    if low in names:
        return names[low]
    if not _digits(text):
        raise CronError(f"{field}: {_cut(text)} is not a number" + (" or a name" if names else ""))
    if len(text) > 4:  # the range check names the limits; this only keeps int() of a huge text out
        raise CronError(f"{field}: {_cut(text)} is far out of range")
    return int(text)


def _parse_item(item: str, field: str, lo: int, hi: int, names: dict[str, int]) -> set[int]:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:  # "*/" or "5/" with nothing after: a step left out, not "no step" (it read as "*" or "5")
        if not _digits(step_text) or len(step_text) > 4 or int(step_text) == 0:
            raise CronError(f"{field}: step {_cut(step_text)} must be a positive number")
        step = int(step_text)
    if base == "*":
        start, end = lo, hi
    elif "-" in base:
        a, _, b = base.partition("-")
        start, end = _number(a, field, names), _number(b, field, names)
        if field == "day of week" and end == 0 and start > 0:
            end = 7  # "fri-sun": Sunday closes the week
        if start > end:
            raise CronError(f"{field}: range {_cut(base)} runs backwards")
    else:
        start = _number(base, field, names)
        end = hi if step_text else start
    for v in (start, end):
        if not lo <= v <= hi:
            raise CronError(f"{field}: {v} is out of range {lo}-{hi}")
    return set(range(start, end + 1, step))


def _parse_field(text: str, index: int) -> set[int]:
    field, lo, hi, names = _FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{field}: empty list item in {_cut(text)}")
        values |= _parse_item(item, field, lo, hi, names)
    return values


def _check_possible(spec: CronSpec) -> None:
    """Reject expressions that never match (Feb 30; Feb 31 on a Monday) instead of accepting them silently.

    One Gregorian cycle from any date holds every (date, weekday) pair there is: no match in it, none ever.
    """
    if next_match(spec, _CYCLE_START) is not None:
        return
    if spec.dom_any or spec.dow_any:
        longest = max(calendar.monthrange(2024, m)[1] for m in spec.months)  # 2024: a leap year
        if min(spec.doms) > longest:
            raise CronError("day of month: no month in the expression has that many days")
    raise CronError("no day ever matches both the day of month and the day of week "
                    "(a field starting with '*' makes both required)")


@lru_cache(maxsize=4096)
def parse(expr: str) -> CronSpec:
    """Parse a cron expression or @alias (cached: the same text is parsed once)."""
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    if text.startswith("@"):
        raise CronError(f"unknown alias {_cut(expr.strip())}; known: {', '.join(ALIASES)}")
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day month weekday), got {len(parts)}")
    sets = [_parse_field(p, i) for i, p in enumerate(parts)]
    dows = frozenset(d % 7 for d in sets[4])
    spec = CronSpec(
        every_day=len(sets[2]) == 31 and len(dows) == 7,
        wild=parts[0].startswith("*") or parts[1].startswith("*"),
        minutes=tuple(sorted(sets[0])),
        hours=tuple(sorted(sets[1])),
        doms=frozenset(sets[2]),
        months=tuple(sorted(sets[3])),
        dows=dows,
        dom_any=parts[2].startswith("*"),
        dow_any=parts[4].startswith("*"),
        dom_list=tuple(sorted(sets[2])),
    )
    _check_possible(spec)
    return spec


_CYCLE_START = datetime(2000, 1, 1)


def _next_in(values: tuple[int, ...], current: int) -> int | None:
    """The smallest value >= current, or None."""
    i = bisect_left(values, current)
    return values[i] if i < len(values) else None


def _next_day(spec: CronSpec, t: datetime) -> datetime:
    """Midnight of the next day that may match: the next listed day of month when that must match."""
    if spec.dom_any or spec.dow_any:  # AND rule: the day of month must be in the list
        day = _next_in(spec.dom_list, t.day + 1)
        if day is None or day > calendar.monthrange(t.year, t.month)[1]:
            return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1)
        return datetime(t.year, t.month, day)
    return datetime(t.year, t.month, t.day) + timedelta(days=1)


def next_match(spec: CronSpec, after: datetime) -> datetime | None:
    """The first wall time (whole minute) strictly after naive ``after`` that matches ``spec``."""
    t = after.replace(second=0, microsecond=0, tzinfo=None, fold=0) + timedelta(minutes=1)
    limit = min(t.year + HORIZON_YEARS, datetime.max.year - 1)
    while t.year <= limit:
        month = _next_in(spec.months, t.month)
        if month is None:
            t = datetime(t.year + 1, spec.months[0], 1)
            continue
        if month != t.month:
            t = datetime(t.year, month, 1)
        if not spec.day_matches(t.date()):
            t = _next_day(spec, t)
            continue
        hour = _next_in(spec.hours, t.hour)
        if hour is None:
            t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            continue
        if hour != t.hour:
            t = t.replace(hour=hour, minute=0)
        minute = _next_in(spec.minutes, t.minute)
        if minute is None:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        return t.replace(minute=minute)
    return None


@lru_cache(maxsize=4096)
def weekdays(spec: CronSpec) -> frozenset[int]:
    """The weekdays (Monday 0) on which some date matches: one Gregorian cycle holds every case there is."""
    found: set[int] = set()
    t = _CYCLE_START - timedelta(minutes=1)
    end = _CYCLE_START.replace(year=_CYCLE_START.year + 400)
    while len(found) < 7:
        match = next_match(spec, t)
        if match is None or match >= end:
            break
        found.add(match.weekday())
        t = match.replace(hour=23, minute=59)  # the rest of that day adds no weekday
    return frozenset(found)


def count_day(spec: CronSpec, d: date, after: int = -1, upto: int = 1439) -> int:
    """Matching minutes m of day ``d`` with after < m <= upto (minutes since midnight).

    Wall-time arithmetic that ignores DST: the caller uses it on days without a change of UTC offset.
    """
    if d.month not in spec.months or not spec.day_matches(d):
        return 0
    if after < 0 and upto >= 1439:
        return len(spec.hours) * len(spec.minutes)
    total = 0
    for h in spec.hours:
        lo, hi = after - h * 60, upto - h * 60  # the same bounds as minutes within hour h
        if hi < 0 or lo >= 59:
            continue
        total += bisect_right(spec.minutes, hi) - bisect_right(spec.minutes, lo)
    return total
