"""The PostgreSQL store after a commit whose acknowledgement was lost: the connection broke after COMMIT was
sent and before the server's reply came, so the daemon cannot know whether the transaction committed.

A mixin of ``PgStore`` (runtime/pg_store.py). The daemon treats every failed commit as undone: nothing it
acquired there is spawned, its ends are kept to be written again, its claims are read back from the store
(runtime/daemon.py ``_step``). Most of what a transaction writes settles itself from there whichever way
it went: a claim and a missed record are unique per due time (``ON CONFLICT DO NOTHING``), an end is
written only over QUE or RUN, a lease renewal is a renewal. One write does not: a run acquired QUE -> RUN
by a commit that did happen is RUN under this daemon's live lease, with no process, and no daemon would
ever settle it; its job (or queue) counted as running on every host for as long as this daemon lived.

So the runs each transaction acquired are noted until it ends. When it ends on a broken connection, they
are uncertain; after reconnecting, before anything is planned again, they are re-read: those still RUN
under this instance with no process recorded (the commit was done, and nothing was spawned for them) go
back to QUE and wait to start again, as they would have had the commit not been done. And an end written
again finds itself written (``_own_end``) rather than another daemon's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .model import State
from .store import Run, StoreError

try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:  # the optional extra is not installed (the store refuses to open then)
    psycopg = None  # type: ignore[assignment]


class PgSettle:
    tenant: str
    where: str
    conn: Any
    # (run id, instance) acquired in the open transaction; and those of transactions that ended on a broken
    # connection, to re-read once connected again
    _taken: list[tuple[int, str]]
    _unsure: set[tuple[int, str]]

    if TYPE_CHECKING:
        def _x(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

        def _fault(self, what: str, exc: psycopg.Error) -> StoreError: ...

    def _took(self, rows: Sequence[tuple[Any, ...]], instance: str) -> None:
        """Inside a transaction: these rows (id first) were acquired by ``instance``."""
        self._taken += [(int(row[0]), instance) for row in rows]

    def _tx_over(self) -> None:
        """A transaction (or a savepoint in one) ended: on a broken connection whatever it acquired is
        uncertain; on a sound one it committed or rolled back as the caller was told."""
        if self.conn.broken or self.conn.closed:
            self._unsure.update(self._taken)
        elif self.conn.info.transaction_status != TransactionStatus.IDLE:
            return  # a savepoint: the outer transaction decides
        self._taken = []

    @staticmethod
    def _own_end(run: Run, exit_code: int | None, now: float) -> bool:
        """An end found written already is this very end when it has the same end time, to the
        microsecond, and exit code: a commit whose acknowledgement was lost had written it, and the daemon,
        which kept the end to write it again, is told so (it tells the end's notifications, which that
        transaction's failure dropped, and logs nothing false). Another daemon's record of the run (it
        found this daemon's lease run out) has an end time of its own."""
        return run.state in (State.OK, State.ERR) and run.finished == now and run.exit_code == exit_code

    def _settle_unsure(self) -> str | None:
        """Connected again: the runs acquired by a transaction whose end was not acknowledged that are RUN
        under their instance with no process go back to QUE (none was spawned); a note for the log."""
        if not self._unsure:
            return None
        ids = sorted(self._unsure)
        try:
            rows = self._x("UPDATE taskserver_runs SET state='QUE', started=NULL, instance=NULL, host=NULL "
                           "FROM unnest(%s::bigint[], %s::text[]) AS unsure(id, instance) "
                           "WHERE tenant=%s AND taskserver_runs.id = unsure.id "
                           "AND taskserver_runs.instance = unsure.instance AND state='RUN' AND pid IS NULL "
                           "RETURNING taskserver_runs.id",
                           ([i for i, _ in ids], [inst for _, inst in ids], self.tenant)).fetchall()
        except psycopg.Error as exc:
            raise self._fault("settling runs whose start was not acknowledged", exc) from exc
        self._unsure.clear()
        back = sorted(int(r[0]) for r in rows)
        if not back:
            return (f"the connection broke at the commit that was to start runs {_ids(i for i, _ in ids)}; "
                    "the server had not committed it: they wait to start")
        return (f"the connection broke at the commit that started runs {_ids(back)}, after the server had "
                "committed it: none of them was spawned, and they wait to start again")


def _ids(ids: Any) -> str:
    shown = sorted(ids)
    return ", ".join(map(str, shown[:10])) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
