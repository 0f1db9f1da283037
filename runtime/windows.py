"""Time windows: weekdays and HH:MM-HH:MM ranges, also across midnight, on naive local wall times.

A window "fri 22:00-06:00" opens on Friday at 22:00 and closes on Saturday at 06:00: the day named is the
day the window opens. Days alone ("sat,sun") mean the whole day; a time range alone means every day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from .model import Window

_DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_FULL_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MAX_TEXT = 40  # a value quoted in an error message is cut to this length
WINDOW_HINT = 'write days and/or a time range, e.g. "mon-fri 22:00-06:00", "sat,sun", "09:00-17:00"'


def _window_time(text: str) -> time:
    """HH:MM, with 24:00 allowed (midnight at the end of the day)."""
    hh, sep, mm = text.partition(":")
    digits = (hh + mm).isascii() and hh.isdigit() and mm.isdigit()  # isdigit() alone takes '٣' too
    if not (sep and digits and len(mm) == 2 and 1 <= len(hh) <= 2):
        raise ValueError(f"{_cut(text)} is not HH:MM")
    h, m = int(hh), int(mm)
    if (h, m) == (24, 0):
        return time(0, 0)
    if h > 23 or m > 59:
        raise ValueError(f"{_cut(text)} is not a time of day")
    return time(h, m)


def _cut(text: str) -> str:
    return repr(text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "...")


def _day(name: str) -> int:
    """A weekday by its three-letter or full English name (never by any other prefix: "monkey" is none)."""
    low = name.lower()
    for names in (_DAY_NAMES, _FULL_NAMES):
        if low in names:
            return names.index(low)
    raise ValueError(f"{_cut(name)} is not a weekday (mon..sun)")


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
        raise ValueError(f"{_cut(text)} has {len(parts)} parts")
    days = frozenset(range(7))
    start = end = time(0, 0)
    if ":" not in parts[0]:
        days = _days(parts.pop(0))
    if parts:
        a, dash, b = parts.pop(0).partition("-")
        if not dash:
            raise ValueError(f"{_cut(text)}: expected a range HH:MM-HH:MM")
        start, end = _window_time(a), _window_time(b)
    if parts:
        raise ValueError(f"{_cut(text)}: days must come before the time range")
    return Window(days=days, start=start, end=end)


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


_A_MONDAY = date(2024, 1, 1)


def weekly_meets(windows: tuple[Window, ...], weekdays: frozenset[int], hours: tuple[int, ...],
                 minutes: tuple[int, ...]) -> bool:
    """Whether some wall time on one of ``weekdays`` (Monday 0) at one of hours:minutes lies in a window.

    Windows repeat weekly, so one week decides: this is exact, and at most 7 * 24 * 60 checks.
    """
    for wd in weekdays:
        day = _A_MONDAY + timedelta(days=wd)
        for h in hours:
            if any(in_windows(windows, datetime(day.year, day.month, day.day, h, m)) for m in minutes):
                return True
    return False
