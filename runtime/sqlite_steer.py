"""The SQLite store's part of steering from outside the daemon: paused jobs and cancel requests.

A mixin of ``SqliteStore`` (runtime/sqlite_store.py wraps each method in its error guard); kept apart so the
backend module stays small. The contract is in runtime/store.py.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from .sqlite_rows import text, when
from .store import Pause, Run, cancelled

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class SqliteSteer:
    db: sqlite3.Connection

    if TYPE_CHECKING:
        def batch(self) -> AbstractContextManager[None]: ...

        def get(self, run_id: int) -> Run | None: ...

    def pause(self, job: str, *, who: str, now: float) -> bool:
        cur = self.db.execute("INSERT INTO paused (job, since, who) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                              (job, now, who))
        return cur.rowcount == 1

    def resume(self, job: str) -> bool:
        return self.db.execute("DELETE FROM paused WHERE job=?", (job,)).rowcount == 1

    def paused(self) -> dict[str, Pause]:
        rows = self.db.execute("SELECT job, since, who FROM paused ORDER BY job")
        # (values written past taskserver are shown as they can be: the pause itself holds)
        return {text(job): Pause(text(job), when(since) or 0.0, text(who)) for job, since, who in rows}

    def cancel(self, run_id: int, *, who: str, now: float) -> Run | None:
        with self.batch():  # a QUE row acquired meanwhile is RUN by the second statement: one of them holds
            self.db.execute("UPDATE runs SET state='ERR', reason=?, finished=? WHERE id=? AND state='QUE'",
                            (cancelled(who), now, run_id))
            self.db.execute("UPDATE runs SET cancel=? WHERE id=? AND state='RUN' AND cancel IS NULL",
                            (who, run_id))
        return self.get(run_id)

    def cancelling(self) -> dict[int, str]:
        rows = self.db.execute("SELECT id, cancel FROM runs WHERE state='RUN' AND cancel IS NOT NULL")
        return {int(rid): text(who) for rid, who in rows}
