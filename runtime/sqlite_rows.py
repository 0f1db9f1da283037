"""The SQLite store's rows as ``Run`` values: the columns read, in order, and how a row becomes a run.

Kept apart from runtime/sqlite_store.py so the backend module stays small (the contract: runtime/store.py).
"""

from __future__ import annotations

import json
from typing import Any

from .model import State
from .store import Run

COLUMNS = ("id, job, queue, state, reason, due, created, started, finished, pid, instance, exit_code, "
           "attempt, argv, output, message, queued, proc_start, boot_id, not_before")
_FIELDS = tuple(COLUMNS.split(", "))  # Run's fields, in the order of COLUMNS
_STATES = {state.value: state for state in State}


def run_of(row: tuple[Any, ...]) -> Run:
    """A row as a ``Run``.  Three per run in a burst (queued, acquired, finished), so built without the
    frozen dataclass's ``__init__``, which sets each of its 21 fields through ``object.__setattr__``: the
    same fields, the same values (the state as its enum, the argv decoded, queued a bool), a third of the
    time."""
    fields = dict(zip(_FIELDS, row, strict=True))
    fields["state"], fields["argv"], fields["queued"] = _STATES[row[3]], argv_of(row[13]), bool(row[16])
    fields["host"] = None
    run: Run = object.__new__(Run)
    run.__dict__.update(fields)
    return run


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
    except ValueError:
        return ()
    return tuple(got) if isinstance(got, list) else ()
