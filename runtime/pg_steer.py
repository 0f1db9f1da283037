"""The PostgreSQL store's part of steering from outside the daemons: paused jobs and cancel requests.

A mixin of ``PgStore`` (runtime/pg_store.py wraps each method in its error guard); kept apart so the backend
module stays small. Every daemon of the tenant reads the same rows: a pause made through one host holds on
all, and a cancel request is acted on by the daemon whose instance runs the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .store import Pause, Run, cancelled

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class PgSteer:
    tenant: str

    if TYPE_CHECKING:
        def _x(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def batch(self) -> AbstractContextManager[None]: ...

        def get(self, run_id: int) -> Run | None: ...

    def pause(self, job: str, *, who: str, now: float) -> bool:
        row = self._x("INSERT INTO taskserver_paused (tenant, job, since, who) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT DO NOTHING RETURNING job", (self.tenant, job, now, who)).fetchone()
        return row is not None

    def resume(self, job: str) -> bool:
        row = self._x("DELETE FROM taskserver_paused WHERE tenant=%s AND job=%s RETURNING job",
                      (self.tenant, job)).fetchone()
        return row is not None

    def paused(self) -> dict[str, Pause]:
        rows = self._x("SELECT job, since, who FROM taskserver_paused WHERE tenant=%s ORDER BY job",
                       (self.tenant,)).fetchall()
        return {job: Pause(job, since, who) for job, since, who in rows}

    def cancel(self, run_id: int, *, who: str, now: float) -> Run | None:
        with self.batch():
            self._x("UPDATE taskserver_runs SET state='ERR', reason=%s, finished=%s WHERE tenant=%s "
                    "AND id=%s AND state='QUE'", (cancelled(who), now, self.tenant, run_id))
            self._x("UPDATE taskserver_runs SET cancel=%s WHERE tenant=%s AND id=%s AND state='RUN' "
                    "AND cancel IS NULL", (who, self.tenant, run_id))
        return self.get(run_id)

    def cancelling(self) -> dict[int, str]:
        rows = self._x("SELECT id, cancel FROM taskserver_runs WHERE tenant=%s AND state='RUN' "
                       "AND cancel IS NOT NULL", (self.tenant,)).fetchall()
        return {int(rid): str(who) for rid, who in rows}
