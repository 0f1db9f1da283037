"""Converters for config values: each returns the value or raises ValueError saying what was expected."""

from __future__ import annotations

import contextlib
import datetime
import difflib
import grp
import math
import os
import pwd
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfoNotFoundError, available_timezones

from . import cron as cronexpr
from . import limits, units
from .limits import NAME, NAME_HINT, shown

__all__ = ["NAME", "NAME_HINT"]  # in limits (for cli_enqueue), named here for the config's users
from .model import CatchUp, Cron, Loc, ServerSettings, TenantDef
from .schedule import get_zone

if TYPE_CHECKING:
    from .privs import Identity

USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
CALL = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "nothing (null)"), (bool, "a boolean"), ((int, float), "a number"), (list, "a list"),
    (dict, "a mapping"), (datetime.date, "a date"),
)


def read_as(value: object) -> str:
    """What YAML made of a plain value that is not text: a number, a boolean, a date..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return next((text for types, text in _KINDS if isinstance(value, types)), type(value).__name__)


def kind(value: object) -> str:
    """How a value reads in an error message."""
    if isinstance(value, str):
        return f"the text {shown(value)}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"the number {shown(value, 30)}"
    return next((text for types, text in _KINDS if isinstance(value, types)), type(value).__name__)


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {kind(value)}")
    if "\0" in value:
        raise ValueError(f"a NUL character is not allowed, got {kind(value)}")
    return str(value)


def ascii_text(value: object) -> str:
    """Text of ASCII letters, digits and punctuation only: cron fields, windows. (Python's isdigit() and
    int() take any script's digits, so a value like '٢' would otherwise pass as 2.)"""
    got = text(value)
    if not got.isascii() or limits.has_control(got.replace("\t", " ")):
        raise ValueError(f"only ASCII letters, digits and punctuation are allowed, got {kind(value)}")
    return got


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {kind(value)}")
    return value


def whole(minimum: int, maximum: int = limits.MAX_COUNT) -> Callable[[object], int]:
    def conv(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {kind(value)}")
        if value < minimum:
            raise ValueError(f"expected a number of at least {minimum}, got {shown(value)}")
        if value > maximum:
            raise ValueError(f"expected a number of at most {maximum}, got {shown(value)}")
        return int(value)

    return conv


def duration(value: object) -> float:
    try:
        seconds = units.parse_duration(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a duration, got {kind(value)}") from None
    if not math.isfinite(seconds) or seconds > limits.MAX_DURATION:
        raise ValueError(f"expected a finite duration of at most 10 years, got {kind(value)}")
    if 0 < seconds < limits.MIN_DURATION:
        # below a millisecond a duration is a rounding error: 5e-324 is 0 as a timedelta (every: spun on
        # it), 1e-300 divided the time since a due time into infinity, and no wait is that short
        raise ValueError(f"expected 0 or a duration of at least 1ms, got {kind(value)}")
    return seconds


def positive_duration(value: object) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("expected a duration above zero (at least 1ms)")
    return seconds


def size(value: object, maximum: int = limits.MAX_SIZE) -> int:
    try:
        got = units.parse_size(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a size, got {kind(value)}") from None
    if got > maximum:
        most = f"{maximum >> 40}T" if maximum >= 1 << 40 else f"{maximum >> 20}M"
        raise ValueError(f"expected a size of at most {most}, got {kind(value)}")
    return got


def memory_limit(value: object) -> int:
    got = size(value)
    if got < limits.MIN_MEMORY_LIMIT:
        raise ValueError(f"expected a size of at least {limits.MIN_MEMORY_LIMIT >> 20}M (the daemon alone "
                         f"takes about 22M), got {kind(value)}")
    return got


def output_tail(value: object) -> int:
    return size(value, limits.MAX_OUTPUT_TAIL)


def _path_text(value: object) -> str:
    got = text(value)
    if len(got) > limits.MAX_PATH_CHARS or limits.has_control(got):
        raise ValueError(f"expected a path of at most {limits.MAX_PATH_CHARS} characters without control "
                         f"characters, got {kind(value)}")
    return got


def abs_path(value: object) -> Path:
    path = Path(_path_text(value))
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path, got {shown(str(value))}")
    return path


def store_file(value: object) -> str:
    """An SQLite file inside the state dir: relative, no '..' (the store must not land on /etc/passwd)."""
    got = _path_text(value)
    parts = PurePosixPath(got).parts
    if got.startswith("/") or ".." in parts or not parts or got.endswith("/"):
        raise ValueError(f"expected a file name inside state_dir (relative, no '..'), got {kind(value)}")
    return got


# The user whose rights the parse's looks at the machine take (root parsing a config another user controls:
# config.py sets it through looking_as), so whether a path it names exists is not told from root's view.
LOOK_AS: list[Identity] = []


@contextlib.contextmanager
def looking_as(ident: Identity) -> Iterator[None]:
    LOOK_AS.append(ident)
    try:
        yield
    finally:
        LOOK_AS.pop()


def _looking() -> contextlib.AbstractContextManager[None]:
    if not LOOK_AS:
        return contextlib.nullcontext()
    from . import privs  # noqa: PLC0415 - imported before by the loader that set LOOK_AS

    return privs.acting_as(LOOK_AS[-1])


def existing_dir(value: object) -> Path:
    path = Path(str(value))
    with _looking():
        try:
            found = path.is_dir()
        except OSError as exc:  # a directory on the way this user may not enter
            raise ValueError(f"{shown(str(path), 200)} cannot be reached here: {exc.strerror}") from None
    if not found:
        raise ValueError(f"{shown(str(path), 200)} is not a directory here")
    return path


def executable_file(path: Path) -> bool:
    """A sendmail (or other program) the daemon could run: a regular file with an execute bit it may use."""
    with _looking():
        try:
            return path.is_file() and os.access(path, os.X_OK, effective_ids=bool(LOOK_AS))
        except OSError:  # a directory on the way this user may not enter
            return False


def sendmails(server: ServerSettings, tenants: Sequence[TenantDef]) -> list[tuple[Loc, Path]]:
    """Each sendmail the config's mail notifications name (server, tenants, jobs), with where it is named:
    what the parse checks on this machine (config_notify) and a kept parse checks again (config_cache)."""
    levels = [server.notify, *(t.notify for t in tenants), *(j.notify for t in tenants for j in t.jobs)]
    return [(n.loc, n.email.sendmail) for level in levels for n in level if n.email and n.loc]


def existing_user(value: object) -> str:
    user, _, group = str(value).partition(":")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no user {shown(user)} on this machine") from None
    if group:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ValueError(f"no group {shown(group)} on this machine") from None
    return str(value)


def pattern(regex: re.Pattern[str], what: str) -> Callable[[object], str]:
    def conv(value: object) -> str:
        got = text(value)
        if not regex.fullmatch(got):
            raise ValueError(f"expected {what}, got {shown(got)}")
        return got

    return conv


def run_as(value: object) -> str:
    spec = text(value)
    if not all(USER.fullmatch(part) for part in spec.split(":", 1)):
        raise ValueError(f"expected USER or USER:GROUP, got {shown(spec)}")
    return spec


def zone(value: object) -> str:
    name = text(value)
    try:
        get_zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {shown(name)}") from None
    return name


def zone_hint(value: object) -> str:
    close = difflib.get_close_matches(str(value)[:100], sorted(available_timezones()), n=1)
    extra = f"; did you mean {close[0]!r}?" if close else ""
    return "use an IANA zone name such as Europe/Berlin or UTC" + extra


def cron_expr(value: object) -> Cron:
    expr = ascii_text(value)
    try:
        cronexpr.parse(expr)
    except cronexpr.CronError as exc:
        raise ValueError(f"bad cron expression {shown(expr)}: {limits.clip(str(exc), 120)}") from None
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
    existing_user: "create the user first (useradd), or name one that exists",
    existing_dir: "create the directory first, or correct the path",
    output_tail: units.SIZE_HINT,
    memory_limit: "write a size like 256M or 1G, well above the daemon's own (about 22M, plus about 1K a "
    "job)",
    store_file: "store: {sqlite: NAME.sqlite} puts the file in state_dir; move state_dir to change the place",
    cron_expr: "5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, "
    "@yearly",
    catch_up: "catch_up: skip | latest | all",
    boolean: "write true or false (yes/no/on/off are plain text in YAML 1.2)",
}
