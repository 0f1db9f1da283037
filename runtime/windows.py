"""Time windows: weekdays and HH:MM-HH:MM ranges, also across midnight, on naive local wall times.

A window "fri 22:00-06:00" opens on Friday at 22:00 and closes on Saturday at 06:00: the day named is the
day the window opens. Days alone ("sat,sun") mean the whole day; a time range alone means every day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from .model import Window

_DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WINDOW_HINT = 'write days and/or a time range, e.g. "mon-fri 22:00-06:00", "sat,sun", "09:00-17:00"'


def _window_time(text: str) -> time:
    """HH:MM, with 24:00 allowed (midnight at the end of the day)."""
    hh, sep, mm = text.partition(":")
    if not (sep and text.isascii() and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 1 <= len(hh) <= 2):
        raise ValueError(f"{text!r} is not HH:MM")
    h, m = int(hh), int(mm)
    if (h, m) == (24, 0):
        return time(0, 0)
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(h, m)


_FULL_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _day(name: str) -> int:
    """A weekday by its three-letter or full name; a word that only starts like one ("monkey") is not."""
    low = name.lower()
    for names in (_DAY_NAMES, _FULL_NAMES):
        if low in names:
            return names.index(low)
    raise ValueError(f"{name[:40]!r} is not a weekday (mon..sun or monday..sunday)")


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
