"""The SQLite store's rows as ``Run`` values: the columns read, in order, and how a row becomes a run.

Kept apart from runtime/sqlite_store.py so the backend module stays small (the contract: runtime/store.py).
"""

from __future__ import annotations

import json
from typing import Any

from . import limits
from .model import State
from .store import Instance, Run

_FIELDS = ("id", "job", "queue", "state", "reason", "due", "created", "started", "finished", "pid",
           "instance", "exit_code", "attempt", "argv", "output", "message", "queued", "proc_start", "boot_id",
           "not_before")
# Text read back is cut at what taskserver itself writes at most (a tenant's user may write their own store:
# one row of a gigabyte took the daemon serving every tenant past its memory limit)
_CAPS = {"job": limits.MAX_VALUE_CHARS, "queue": limits.MAX_VALUE_CHARS, "state": 16,
         "reason": limits.MAX_VALUE_CHARS, "instance": limits.MAX_PATH_CHARS, "argv": 1 << 20,  # (JSON)
         "output": limits.MAX_OUTPUT_TAIL, "message": 4 * limits.MAX_VALUE_CHARS,
         "boot_id": limits.MAX_PATH_CHARS}


def _columns(output: str) -> str:
    return ", ".join(output if f == "output" else f"substr({f}, 1, {_CAPS[f]})" if f in _CAPS else f
                     for f in _FIELDS)


COLUMNS = _columns(f"substr(output, 1, {limits.MAX_OUTPUT_TAIL})")  # a run as shown (output kept this long)
# a waiting or running run, as the daemon reads it to start or settle it: it has no output yet, and what a row
# not written by taskserver holds there is never read (SQLite loads a whole value to cut it: not at all)
LIVE_COLUMNS = _columns("''")
_STATES = {state.value: state for state in State}


def run_of(row: tuple[Any, ...]) -> Run:
    """A row as a ``Run``.  Three per run in a burst (queued, acquired, finished), so built without the
    frozen dataclass's ``__init__``, which sets each of its 21 fields through ``object.__setattr__``: the
    same fields, the same values (the state as its enum, the argv decoded, queued a bool), a third of the
    time.  A row is its file's owner's say (a tenant's user may write their own store), and SQLite keeps
    any value in any column: a row whose values are not those of their columns is ``_repaired``."""
    state = _STATES.get(row[3])
    if state is None or tuple(map(type, row)) not in _SOUND or not _sane(row):
        return _repaired(row)
    fields = dict(zip(_FIELDS, row, strict=True))
    fields["state"], fields["argv"], fields["queued"] = state, argv_of(row[13]), bool(row[16])
    fields["host"] = None
    run: Run = object.__new__(Run)
    run.__dict__.update(fields)
    return run


# What each column may hold, by index in COLUMNS (SQLite's affinities turn a number into text in a text
# column and an integral real into an integer in an integer one; a real column reads back as a float).
_NUMBER = (float, int)
_KINDS: tuple[tuple[type, ...], ...] = (
    (int,), (str,), (str, type(None)), (str,), (str, type(None)), (*_NUMBER, type(None)), _NUMBER,
    (*_NUMBER, type(None)), (*_NUMBER, type(None)), (int, type(None)), (str, type(None)), (int, type(None)),
    (int,), (str, type(None)), (str,), (str, type(None)), (int,), (int, type(None)), (str, type(None)),
    (*_NUMBER, type(None)))
_TIMES = (5, 6, 7, 8, 19)  # due, created, started, finished, not_before
_MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last second a date (and a status file) can show
_SOUND: set[tuple[type, ...]] = set()  # the type signatures of rows found sound (a few: which are NULL)


def _sane(row: tuple[Any, ...]) -> bool:
    """The values of a row of sound types: times a date can show, a count of attempts (``_fits`` for each
    column alone; this is its hot path, for every row read)."""
    for i in _TIMES:
        t = row[i]
        if t is not None and not 0.0 <= t <= _MAX_TIME:  # (NaN compares false)
            return False
    return bool(row[12] >= 0)


def _repaired(row: tuple[Any, ...]) -> Run:
    """A row with values not of their columns, as a run with safe values in their place and ``bad`` naming
    what was wrong: shown as it can be, and never started (runtime/runs.py ends it ERR)."""
    if len(row) != len(_FIELDS):
        raise ValueError(f"a row of {len(row)} columns")
    fields: dict[str, Any] = {}
    wrong: list[str] = []
    for i, (name, value) in enumerate(zip(_FIELDS, row, strict=True)):
        good = _fits(i, value)
        if not good:
            wrong.append(f"{name} is {value!r:.60}")
        fields[name] = value if good else _SAFE.get(name) if type(None) not in _KINDS[i] else None
    state = _STATES.get(fields["state"])
    if state is None:
        wrong.append(f"state is {fields['state']!r:.60}")
        state = State.ERR  # settled: the daemon acts on no row it cannot read
    if not wrong and len(_SOUND) < 256:
        _SOUND.add(tuple(map(type, row)))
    fields["state"], fields["argv"], fields["queued"] = state, argv_of(fields["argv"]), bool(fields["queued"])
    fields["host"] = None
    if wrong:
        fields["bad"] = "; ".join(wrong)
    run: Run = object.__new__(Run)
    run.__dict__.update(fields)
    return run


def _fits(i: int, value: Any) -> bool:
    """Whether ``value`` is one column ``i`` may hold: of its kind, a time a date shows, no count below 0."""
    return type(value) in _KINDS[i] and (value is None or i not in _TIMES or _a_time(value)) \
        and (i != 12 or value >= 0)


def _a_time(value: float) -> bool:
    return 0.0 <= value <= _MAX_TIME  # (NaN compares false)


# the value a NOT NULL column that held something else is shown with
_SAFE: dict[str, Any] = {"id": 0, "job": "", "state": "ERR", "created": 0.0, "attempt": 0, "output": "",
                         "queued": 0}


_ARGVS: dict[str, tuple[str, ...]] = {}  # stored argv texts seen: the same commands come back run after run


def argv_of(text: str | None) -> tuple[str, ...] | None:
    """A stored task's argv; a value that is not a JSON list comes back empty, and the daemon then ends the
    run ERR instead of failing on it (the row may have been written by anything with the file)."""
    if not text:
        return None
    got = _ARGVS.get(text)
    if got is None:
        got = _decode_argv(text)
        if len(_ARGVS) < 4096:
            _ARGVS[text] = got
    return got


def _decode_argv(text: str) -> tuple[str, ...]:
    try:
        got = json.loads(text)
    except (ValueError, RecursionError):  # (a list nested a million deep)
        return ()
    return tuple(got) if isinstance(got, list) else ()


def when(value: object) -> float | None:
    """A stored time (a job's last due time, a pause's start) as a number a date can show, else None."""
    if isinstance(value, float | int) and _a_time(value):
        return float(value)
    return None


def text(value: object) -> str:
    """A stored name or note as text: a BLOB (SQLite keeps one in any column) decoded, any other value
    spelled out."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def instance_of(row: tuple[Any, ...]) -> Instance | None:
    """A lease row as an ``Instance``; None for one whose values are not a lease's (no daemon wrote it)."""
    iid, host, pid, boot, start, config, started, beat, expires = row
    if not (isinstance(iid, str) and isinstance(host, str) and type(pid) is int and isinstance(config, str)
            and (boot is None or isinstance(boot, str)) and (start is None or type(start) is int)):
        return None
    times = (when(started), when(beat), when(expires))
    if None in times:
        return None
    return Instance(iid, host, pid, boot, start, config, *times)  # type: ignore[arg-type]
