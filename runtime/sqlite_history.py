"""The SQLite store's history side: reading runs and jobs' last due times, the summary the web side and
`/metrics` show, and the purge of old runs.

A mixin of ``SqliteStore`` (runtime/sqlite_store.py wraps each public method in its error guard); kept
apart so the backend module stays small.  The contract is in runtime/store.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .sqlite_rows import COLUMNS, run_of, text, when
from .store import JobSummary, Purged, Run, summary_row

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class SqliteHistory:
    db: sqlite3.Connection

    if TYPE_CHECKING:
        def _txn(self) -> AbstractContextManager[None]: ...

    def purge(self, *, ok_before: float, err_before: float) -> Purged:
        where = ("(state='OK' AND finished < ?) OR (state='ERR' AND finished < ?)")
        with self._txn():
            queued = [int(r[0]) for r in self.db.execute(
                f"SELECT id FROM runs WHERE queued=1 AND ({where})", (ok_before, err_before))]  # noqa: S608
            cur = self.db.execute(f"DELETE FROM runs WHERE {where}", (ok_before, err_before))  # noqa: S608
        return Purged(count=cur.rowcount, queued_ids=queued)

    def last_due(self, job: str) -> float | None:
        """(A value that is no time, written past taskserver, counts as none: the job starts over.)"""
        row = self.db.execute("SELECT last_due FROM jobs WHERE name=?", (job,)).fetchone()
        return when(row[0]) if row else None

    def last_dues(self) -> dict[str, float]:
        rows = self.db.execute("SELECT name, last_due FROM jobs")
        return {name: due for name, due in ((text(n), when(d)) for n, d in rows) if due is not None}

    def get(self, run_id: int) -> Run | None:
        found = self._select("id=?", run_id)
        return found[0] if found else None

    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        if job is None:
            return self._select("1 ORDER BY id DESC LIMIT ?", limit)
        return self._select("job=? ORDER BY id DESC LIMIT ?", job, limit)

    def _select(self, where: str, *params: object, columns: str = COLUMNS) -> list[Run]:
        return [run_of(r) for r in self.db.execute(f"SELECT {columns} FROM runs WHERE {where}", params)]  # noqa: S608

    def summary(self, buckets: Sequence[float]) -> list[JobSummary]:
        # One aggregate query: a store may hold a million rows of an every-second job within retention.
        ended, due = "finished IS NOT NULL AND started IS NOT NULL", "due IS NOT NULL AND started IS NOT NULL"
        dur, late = "(finished - started)", "(started - due)"
        le = [f"SUM(CASE WHEN {ended} AND {dur} <= ? THEN 1 ELSE 0 END)" for _ in buckets]
        le += [f"SUM(CASE WHEN {due} AND {late} <= ? THEN 1 ELSE 0 END)" for _ in buckets]
        sql = ", ".join([  # noqa: S608 - only constant text and placeholders
            "SELECT job, state, COUNT(*)", f"SUM(CASE WHEN {ended} THEN 1 ELSE 0 END)",
            f"COALESCE(SUM(CASE WHEN {ended} THEN {dur} END), 0)", f"SUM(CASE WHEN {due} THEN 1 ELSE 0 END)",
            f"COALESCE(SUM(CASE WHEN {due} THEN {late} END), 0)",
            "MAX(CASE WHEN state='OK' THEN finished END)", *le]) + " FROM runs GROUP BY job, state"
        rows = self.db.execute(sql, [*buckets, *buckets])
        return [got for row in rows if (got := summary_row(row, len(buckets))) is not None]
