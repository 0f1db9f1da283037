"""Standard 5-field cron expressions, parsed once and matched by jumping from field to field.

Fields: minute hour day-of-month month day-of-week, each a list of ``*``, ``N``, ``N-M``, with ``/step``
(``N/step`` means N to the field's maximum). Month and weekday names (jan-dec, sun-sat) are accepted;
weekday 0 and 7 are both Sunday. Day rule as in classic (Vixie) cron: when both day-of-month and day-of-week
are restricted a day matches if EITHER matches; a field that starts with ``*`` counts as unrestricted.
Aliases: @hourly @daily @midnight @weekly @monthly @yearly @annually.

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
# give up looking for a match this far ahead (Feb 29 on a given weekday repeats within 28 years)
HORIZON_YEARS = 30


class CronError(ValueError):
    """A cron expression that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class CronSpec:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    months: tuple[int, ...]
    dows: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool
    dom_list: tuple[int, ...] = ()  # sorted doms, for jumping when day-of-month must match

    def day_matches(self, d: date) -> bool:
        if self.dom_any and self.dow_any:
            return True
        dom_ok = d.day in self.doms
        dow_ok = (d.weekday() + 1) % 7 in self.dows
        if self.dom_any or self.dow_any:
            return dom_ok and dow_ok  # a '*' field is full unless stepped, as in Vixie cron
        return dom_ok or dow_ok

    def matches(self, t: datetime) -> bool:
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self.day_matches(t.date())
        )


def _number(text: str, field: str, names: dict[str, int]) -> int:
    low = text.lower()
    if low in names:
        return names[low]
    if not text.isdigit():
        raise CronError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
    return int(text)


def _parse_item(item: str, field: str, lo: int, hi: int, names: dict[str, int]) -> set[int]:
    base, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(f"{field}: step {step_text!r} must be a positive number")
        step = int(step_text)
    if base == "*":
        start, end = lo, hi
    elif "-" in base:
        a, _, b = base.partition("-")
        start, end = _number(a, field, names), _number(b, field, names)
        if field == "day of week" and end == 0 and start > 0:
            end = 7  # "fri-sun": Sunday closes the week
        if start > end:
            raise CronError(f"{field}: range {base!r} runs backwards")
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
            raise CronError(f"{field}: empty list item in {text!r}")
        values |= _parse_item(item, field, lo, hi, names)
    return values


def _check_possible(spec: CronSpec) -> None:
    """Reject expressions that can never fire, such as Feb 30, instead of searching forever."""
    if spec.dom_any or not spec.dow_any:
        return
    longest = max(calendar.monthrange(2024, m)[1] for m in spec.months)  # 2024: leap year
    if min(spec.doms) > longest:
        raise CronError("day of month: no month in the expression has that many days")


@lru_cache(maxsize=4096)
def parse(expr: str) -> CronSpec:
    """Parse a cron expression or @alias (cached: the same text is parsed once)."""
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    if text.startswith("@"):
        raise CronError(f"unknown alias {expr.strip()!r}; known: {', '.join(ALIASES)}")
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day month weekday), got {len(parts)}")
    sets = [_parse_field(p, i) for i, p in enumerate(parts)]
    dows = frozenset(d % 7 for d in sets[4])
    spec = CronSpec(
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
