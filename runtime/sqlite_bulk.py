"""Many rows of the SQLite store in few statements: a start-up's catch-up after a long downtime records about
ten missed due times per job and claims the run it starts now, 110,000 rows for 10,000 jobs.

A statement per row (``executemany``) cost a third more than the rows themselves; here each statement
inserts up to ``PER_INSERT`` rows from a VALUES list, in the order given (the ids, and so the history's
order, follow the rows). The callers hold the transaction and advance the jobs' last due times.
"""

from __future__ import annotations

import functools
import itertools
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence

# three values per row: under the 999 host parameters that SQLite builds before 3.32 allow
PER_INSERT = 300
Row = tuple[str, float, str | None]  # (job, due, note) of a missed record, (job, due, queue) of a claim

_MISSED = ("INSERT INTO runs (job, state, reason, due, created, finished, message) "
           "SELECT column1, 'ERR', ?1, column2, ?2, ?2, column3 FROM (VALUES {}) WHERE true "
           "ON CONFLICT DO NOTHING")
# a job's last due time only moves forward (as SqliteStore._advance)
_ADVANCE = ("INSERT INTO jobs (name, last_due) SELECT column1, column2 FROM (VALUES {}) WHERE true "
            "ON CONFLICT (name) DO UPDATE SET last_due=MAX(last_due, excluded.last_due)")
_CLAIMS = ("INSERT INTO runs (job, queue, state, due, created, attempt) "
           "SELECT column1, column3, 'QUE', column2, ?1, 0 FROM (VALUES {}) WHERE true "
           "ON CONFLICT DO NOTHING RETURNING id, job, due")


@functools.lru_cache(maxsize=8)  # per statement: the full one and the last, shorter one
def _statement(text: str, count: int, width: int = 3) -> str:
    return text.format(", ".join([f"({', '.join('?' * width)})"] * count))


def _parts(rows: Sequence[Sequence[object]]) -> Iterator[Sequence[Sequence[object]]]:
    return (rows[start:start + PER_INSERT] for start in range(0, len(rows), PER_INSERT))


def missed(db: sqlite3.Connection, rows: Sequence[Row], *, reason: str, now: float) -> None:
    """ERR ``reason`` rows for (job, due, note) each; a due time already recorded or claimed is left."""
    for part in _parts(rows):
        db.execute(_statement(_MISSED, len(part)), (reason, now, *itertools.chain.from_iterable(part)))


def claims(db: sqlite3.Connection, rows: Sequence[Row], *, now: float) -> list[int | None]:
    """QUE rows for (job, due, queue) each, attempt 0: the id of each in order, None where that due time
    was claimed or settled before (or comes twice in ``rows``: the first one claims it)."""
    made: dict[tuple[str, float], int] = {}
    for part in _parts(rows):
        got = db.execute(_statement(_CLAIMS, len(part)), (now, *itertools.chain.from_iterable(part)))
        made.update(((job, due), rid) for rid, job, due in got.fetchall())
    return [made.pop((job, due), None) for job, due, _ in rows]


def advance(db: sqlite3.Connection, newest: dict[str, float]) -> None:
    """Move each job's last due time forward to its value in ``newest`` (never back); a new job gets it.
    One statement per ``PER_INSERT`` jobs: a catch-up advances every job, twice (its missed records, then
    the run it starts), and a statement per job cost two thirds more."""
    for part in _parts(list(newest.items())):
        db.execute(_statement(_ADVANCE, len(part), 2), tuple(itertools.chain.from_iterable(part)))


def newest(rows: Iterable[tuple[str, float, object]]) -> dict[str, float]:
    """Each job's newest due time in ``rows``."""
    out: dict[str, float] = {}
    for job, due, _ in rows:
        if due > out.get(job, -math.inf):
            out[job] = due
    return out
