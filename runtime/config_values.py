"""Converters for config values: each returns the value or raises ValueError saying what was expected."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfoNotFoundError, available_timezones

from . import cron as cronexpr
from . import units
from .model import CatchUp, Cron
from .schedule import get_zone

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
CALL = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
NAME_HINT = "names use letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "nothing (null)"), (bool, "a boolean"), ((int, float), "a number"), (list, "a list"),
    (dict, "a mapping"),
)


def kind(value: object) -> str:
    """How a value reads in an error message."""
    if isinstance(value, str):
        return f"the text {value!r}"
    return next((text for types, text in _KINDS if isinstance(value, types)), type(value).__name__)


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {kind(value)}")
    return str(value)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {kind(value)}")
    return value


def whole(minimum: int) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {kind(value)}")
        if value < minimum:
            raise ValueError(f"expected a number of at least {minimum}, got {value}")
        return int(value)

    return conv


def duration(value: object) -> float:
    try:
        return units.parse_duration(value)
    except ValueError:
        raise ValueError(f"expected a duration, got {kind(value)}") from None


def positive_duration(value: object) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("expected a duration above zero")
    return seconds


def size(value: object) -> int:
    try:
        return units.parse_size(value)
    except ValueError:
        raise ValueError(f"expected a size, got {kind(value)}") from None


def abs_path(value: object) -> Path:
    path = Path(text(value))
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path, got {str(value)!r}")
    return path


def pattern(regex: re.Pattern[str], what: str) -> Callable[[object], str]:
    def conv(value: object) -> str:
        got = text(value)
        if not regex.fullmatch(got):
            raise ValueError(f"expected {what}, got {got!r}")
        return got

    return conv


def run_as(value: object) -> str:
    spec = text(value)
    if not all(USER.fullmatch(part) for part in spec.split(":", 1)):
        raise ValueError(f"expected USER or USER:GROUP, got {spec!r}")
    return spec


def zone(value: object) -> str:
    name = text(value)
    try:
        get_zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


def zone_hint(value: object) -> str:
    close = difflib.get_close_matches(str(value), sorted(available_timezones()), n=1)
    extra = f"; did you mean {close[0]!r}?" if close else ""
    return "use an IANA zone name such as Europe/Berlin or UTC" + extra


def cron_expr(value: object) -> Cron:
    expr = text(value)
    try:
        cronexpr.parse(expr)
    except cronexpr.CronError as exc:
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    return Cron(expr)


def catch_up(value: object) -> CatchUp:
    try:
        return CatchUp(text(value))
    except ValueError:
        raise ValueError(f"expected skip, latest or all, got {kind(value)}") from None


HINTS: dict[Callable[..., object], str] = {
    duration: units.DURATION_HINT,
    positive_duration: units.DURATION_HINT,
    size: units.SIZE_HINT,
    run_as: "for example run_as: taskserver or run_as: taskserver:taskserver",
    cron_expr: "5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, "
    "@yearly",
    catch_up: "catch_up: skip | latest | all",
    boolean: "write true or false (yes/no/on/off are plain text in YAML 1.2)",
}
