"""The shared store: PostgreSQL, for several hosts serving one tenant (extra ``taskserver[postgresql]``).

Same contract as the SQLite store (runtime/store.py), proven by the same suite (tests/contract). What makes it
safe for several daemons at once:

- a scheduled due time is claimed by ``INSERT .. ON CONFLICT DO NOTHING`` on a unique key (tenant, job, due,
  attempt): the due time comes from the schedule, not from a clock, so clock skew between hosts cannot make
  two claims of one due time;
- ``acquire`` runs under a per-tenant advisory lock, takes rows with ``FOR UPDATE SKIP LOCKED`` and skips a
  row whose job or queue already has a RUN row anywhere: a job never overlaps itself and a queue runs one
  task at a time across all hosts;
- leases (instance rows with an expiry) are renewed by each daemon and kept on the server's clock, so clock
  skew between hosts cannot make a live lease look expired (see the lease section below);
- ``notify`` is ``NOTIFY``; each daemon LISTENs on its own connection, whose socket it selects on.

Connection loss and every other database error leave as ``StoreError`` (one line, no traceback); the daemon
starts nothing new and calls ``recover`` (reconnect) with backoff.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import pg_schema as schema
from .errors import UserError
from .model import State, TenantDef
from .pg_settle import PgSettle
from .pg_steer import PgSteer
from .pgdsn import redact, scrub
from .store import (
    BACKENDS,
    MISSED,
    REPORTED,
    Claim,
    Instance,
    JobSummary,
    Process,
    Purged,
    Run,
    StoreError,
    Verify,
    check_report,
    summary_row,
)

try:
    import psycopg
    from psycopg.types.json import Jsonb
except ImportError:  # the optional extra is not installed
    psycopg = None  # type: ignore[assignment]

COLUMNS = ("id, job, queue, state, reason, due, created, started, finished, pid, instance, exit_code, "
           "attempt, argv, output, message, queued, proc_start, boot_id, not_before, host")
_FAULT_HINT = "check the PostgreSQL server and the network; the daemon starts nothing new and reconnects"
_CHECK_EVERY = 2.0
P = ParamSpec("P")
R = TypeVar("R")


def _require_driver() -> None:
    if psycopg is None:
        raise UserError("the postgresql store needs the psycopg driver, which is not installed",
                        hint="pip install 'taskserver[postgresql]'")


def open_pg(tenant: TenantDef, state_dir: Path, create: bool = True, verify: Verify = False,
            claim: Claim | None = None) -> PgStore:
    """``create`` and ``verify`` concern files: the server creates nothing but through `store migrate`, and
    checks its own pages. ``claim`` is always None: a shared store has no lock of one daemon."""
    _require_driver()
    if not tenant.store.dsn:
        raise UserError(f"tenant {tenant.name!r}: store postgresql needs a DSN",
                        hint="store: {postgresql: DSN}")
    return PgStore(tenant.name, tenant.store.dsn)


def migrate(dsn: str) -> tuple[int, int]:
    """`taskserver store migrate`: create or migrate the schema; (version found, version now)."""
    _require_driver()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return schema.migrate(conn)
    except ValueError as exc:
        raise UserError(f"{redact(dsn)}: schema version {exc.args[0]} is newer than this taskserver knows "
                        f"({schema.LATEST})", hint="upgrade taskserver on every host") from None
    except psycopg.Error as exc:
        raise UserError(f"{redact(dsn)}: {_one_line(exc, dsn)}",
                        hint="check the DSN and the server") from None


def _one_line(exc: BaseException, dsn: str) -> str:
    """The driver's error for a message: one line, no part of the password (it may quote the DSN)."""
    return scrub(" ".join(str(exc).split()), dsn)[:300]


def _run(row: tuple[Any, ...]) -> Run:
    (rid, job, queue, state, reason, due, created, started, finished, pid, instance, exit_code, attempt,
     argv, output, message, queued, proc_start, boot_id, not_before, host) = row
    return Run(id=rid, job=job, queue=queue, state=State(state), reason=reason, due=due, created=created,
               started=started, finished=finished, pid=pid, instance=instance, exit_code=exit_code,
               attempt=attempt, argv=_argv(argv), output=output,
               message=message, queued=bool(queued), proc_start=proc_start, boot_id=boot_id,
               not_before=not_before, host=host)


def _argv(value: object) -> tuple[str, ...] | None:
    """A stored task's argv (JSONB: any JSON): a value that is not a list comes back empty, as on SQLite,
    and the daemon then ends the run ERR (limits.argv_problem also refuses a list of other than text)."""
    if value is None:
        return None
    return tuple(value) if isinstance(value, list) else ()


def _instance(row: tuple[Any, ...], here: float) -> Instance:
    """A lease row whose heartbeat and end are seconds from the server's now, on this host's clock."""
    iid, host, pid, boot_id, proc_start, config, started, beat, end = row
    return Instance(id=iid, host=host, pid=pid, boot_id=boot_id, proc_start=proc_start, config=config,
                    started=started, heartbeat=here + beat, expires=here + end)


def _guarded(fn: Callable[Concatenate[PgStore, P], R]) -> Callable[Concatenate[PgStore, P], R]:
    """Database and connection errors become one StoreError naming the server and what failed."""
    def wrapper(self: PgStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except StoreError as exc:  # (one it raised itself)
            exc.of(self.where)
            raise
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {fn.__name__} failed: {_one_line(exc, self.dsn)}",
                             hint=_FAULT_HINT, where=self.where) from exc
    functools.update_wrapper(wrapper, fn)
    return wrapper


class PgStore(PgSettle, PgSteer):
    exclusive = False  # several daemons share it through claims and leases
    pause = _guarded(PgSteer.pause)
    resume = _guarded(PgSteer.resume)
    paused = _guarded(PgSteer.paused)
    cancel = _guarded(PgSteer.cancel)
    cancelling = _guarded(PgSteer.cancelling)

    def __init__(self, tenant: str, dsn: str) -> None:
        self.tenant, self.dsn, self.where = tenant, dsn, f"postgresql store of tenant {tenant!r}"
        self.channel = "taskserver_" + hashlib.sha256(tenant.encode()).hexdigest()[:16]
        self._lock_key = int.from_bytes(hashlib.sha256(b"taskserver:" + tenant.encode()).digest()[:8],
                                        "big", signed=True)
        self._me: Instance | None = None
        self._listener: Any = None
        self._next_check = 0.0
        self._taken: list[tuple[int, str]] = []
        self._unsure: set[tuple[int, str]] = set()
        self.conn = self._connect()

    def _connect(self) -> Any:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            # A host that hangs or is cut off inside a transaction held its locks (the tenant's acquire
            # lock, claimed keys) until TCP gave up on it, hours later, and every other host waited on
            # them: the server ends such a session after a lease's time (15 s), which frees them. No
            # transaction of ours waits longer between two statements (settling stops processes in 10 s).
            conn.execute("SET idle_in_transaction_session_timeout = '15s'")
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect ({redact(self.dsn)}): {_one_line(exc, self.dsn)}",
                             hint="check the DSN, the server and ~/.pgpass") from None
        with conn.cursor() as cur:
            found = schema.version(cur)
        if found != schema.LATEST:
            conn.close()
            what = "has no taskserver schema" if found == 0 else f"has schema version {found}"
            raise StoreError(f"{self.where}: the database {what}; this taskserver needs {schema.LATEST}",
                             hint="run `taskserver store migrate` (newer schema: upgrade taskserver)",
                             exit_code=2)
        return conn

    def _x(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params)

    def _fault(self, what: str, exc: psycopg.Error) -> StoreError:
        return StoreError(f"{self.where}: {what} failed: {_one_line(exc, self.dsn)}", hint=_FAULT_HINT,
                          where=self.where)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                yield
        except psycopg.Error as exc:
            raise self._fault("commit", exc) from exc
        finally:
            self._tx_over()  # a commit not acknowledged: what it acquired is re-read at ``recover``

    # -- claims ----------------------------------------------------------------------------------------
    @_guarded
    def claim(self, job: str, due: float | None, *, attempt: int = 0, queue: str | None = None,
              not_before: float | None = None, now: float) -> int | None:
        with self.conn.transaction():
            row = self._x(
                "INSERT INTO taskserver_runs (tenant, job, queue, state, due, created, attempt, not_before) "
                "VALUES (%s, %s, %s, 'QUE', %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (self.tenant, job, queue, due, now, attempt, not_before)).fetchone()
            if row is None:
                return None
            if due is not None:
                self._advance(job, due)
        return int(row[0])

    @_guarded
    def claim_many(self, claims: Sequence[tuple[str, float, str | None]], *, now: float) -> list[int | None]:
        with self.conn.transaction():  # one commit; a shared store's other daemons claim row by row anyway
            return [self.claim(job, due, queue=queue, now=now) for job, due, queue in claims]

    @_guarded
    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        dues = list(dues)
        if not dues:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO taskserver_runs (tenant, job, state, reason, due, created, finished, message) "
                "VALUES (%s, %s, 'ERR', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.tenant, job, MISSED, d, now, now, note) for d in dues])
            self._advance(job, max(dues))

    @_guarded
    def missed_many(self, rows: Sequence[tuple[str, float, str | None]], *, now: float) -> None:
        if not rows:
            return
        newest: dict[str, float] = {}
        for job, due, _ in rows:
            newest[job] = max(due, newest.get(job, due))
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO taskserver_runs (tenant, job, state, reason, due, created, finished, message) "
                "VALUES (%s, %s, 'ERR', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.tenant, job, MISSED, due, now, now, note) for job, due, note in rows])
            cur.executemany(
                "INSERT INTO taskserver_jobs (tenant, name, last_due) VALUES (%s, %s, %s) ON CONFLICT "
                "(tenant, name) DO UPDATE SET "
                "last_due = GREATEST(taskserver_jobs.last_due, excluded.last_due)",
                [(self.tenant, job, due) for job, due in newest.items()])

    @_guarded
    def waiting(self) -> list[Run]:
        return self._select("state='QUE' AND NOT queued ORDER BY due, id")

    # -- queued tasks ----------------------------------------------------------------------------------
    @_guarded
    def add(self, job: str, *, queue: str | None = None, argv: Sequence[str] | None = None,
            due: float | None = None, attempt: int = 0, now: float) -> int:
        row = self._x(
            "INSERT INTO taskserver_runs (tenant, job, queue, state, due, created, attempt, argv, queued) "
            "VALUES (%s, %s, %s, 'QUE', %s, %s, %s, %s, TRUE) RETURNING id",
            (self.tenant, job, queue, due, now, attempt, Jsonb(list(argv)) if argv is not None else None)
        ).fetchone()
        return int(row[0])

    @_guarded
    def queued(self) -> list[Run]:
        return self._select("state='QUE' AND queued ORDER BY id")

    def notify(self) -> bool:
        """NOTIFY the daemons of this tenant; False when none holds a lease (nobody listens)."""
        try:
            row = self._x("SELECT pg_notify(%s, ''), EXISTS (SELECT 1 FROM taskserver_instances WHERE "
                          "tenant=%s)", (self.channel, self.tenant)).fetchone()
        except psycopg.Error:
            return False
        return bool(row[1])

    # -- running ---------------------------------------------------------------------------------------
    @_guarded
    def acquire(self, *, instance: str, now: float, ids: Sequence[int] | None = None,
                limit: int = 1) -> list[Run]:
        if limit <= 0 or (ids is not None and not ids):
            return []
        try:
            return self._acquire(instance, now, ids, limit)
        finally:
            self._tx_over()

    def _acquire(self, instance: str, now: float, ids: Sequence[int] | None, limit: int) -> list[Run]:
        with self.conn.transaction():
            self._x("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            if ids is not None:
                rows = self._x("SELECT id, job, queue FROM taskserver_runs WHERE tenant=%s AND id = ANY(%s) "
                               "AND state='QUE' ORDER BY id FOR UPDATE SKIP LOCKED", (self.tenant, list(ids)))
            else:
                rows = self._x("SELECT id, job, queue FROM taskserver_runs WHERE tenant=%s AND state='QUE' "
                               "AND queued ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                               (self.tenant, max(limit * 20, 200)))
            picked = self._free(rows.fetchall(), limit)
            if not picked:
                return []
            done = self._x(
                f"UPDATE taskserver_runs SET state='RUN', started=%s, instance=%s, pid=NULL, "  # noqa: S608
                f"host=(SELECT host FROM taskserver_instances WHERE tenant=%s AND id=%s) "
                f"WHERE tenant=%s AND id = ANY(%s) RETURNING {COLUMNS}",
                (now, instance, self.tenant, instance, self.tenant, picked)).fetchall()
            self._took(done, instance)
        return sorted((_run(r) for r in done), key=lambda r: r.id)

    def _free(self, candidates: list[tuple[int, str, str | None]], limit: int) -> list[int]:
        """Candidates whose job and queue run nowhere, queue order kept (a blocked head blocks its queue)."""
        busy = self._x("SELECT DISTINCT job, queue FROM taskserver_runs WHERE tenant=%s AND state='RUN'",
                       (self.tenant,)).fetchall()
        jobs = {j for j, _ in busy if j}
        queues = {q for _, q in busy if q is not None}
        picked: list[int] = []
        for rid, job, queue in candidates:
            if len(picked) >= limit:
                break
            if (job and job in jobs) or (queue is not None and queue in queues):
                if queue is not None:
                    queues.add(queue)
                continue
            picked.append(rid)
            if job:
                jobs.add(job)
            if queue is not None:
                queues.add(queue)
        return picked

    @_guarded
    def started(self, run_id: int, *, pid: int, proc_start: int | None, boot_id: str | None) -> None:
        self._x("UPDATE taskserver_runs SET pid=%s, proc_start=%s, boot_id=%s WHERE tenant=%s AND id=%s",
                (pid, proc_start, boot_id, self.tenant, run_id))

    @_guarded
    def finish(self, run_id: int, state: State, reason: str | None, *, exit_code: int | None, output: str,
               now: float, note: str | None = None, process: Process | None = None) -> Run | None:
        proc = ", pid=%s, proc_start=%s, boot_id=%s" if process is not None else ""
        # (a ``reported`` other than OK or ERR, written past `jobs finish`, counts as no report: it would
        # break the state's CHECK, and the end would never be recorded)
        sql = ("UPDATE taskserver_runs SET state=CASE WHEN reported IN ('OK', 'ERR') THEN reported "  # noqa: S608
               "ELSE %s END, "
               "reason=CASE WHEN reported='OK' THEN NULL WHEN reported='ERR' THEN %s ELSE %s END, "
               f"exit_code=%s, output=%s, finished=%s, message=COALESCE(message, %s){proc} "
               "WHERE tenant=%s AND id=%s AND state IN ('QUE', 'RUN') RETURNING " + COLUMNS)
        row = self._x(
            sql,
            (state.value, REPORTED, reason, exit_code, output.replace("\0", "\ufffd"), now, note,
             *(process or ()), self.tenant, run_id)).fetchone()
        if row is not None:
            return _run(row)
        if (run := self.get(run_id)) is None:
            raise StoreError(f"{self.where}: run {run_id} vanished before its end was recorded")
        if self._own_end(run, exit_code, now):
            return run  # written by a commit whose acknowledgement was lost
        return None  # ended already (settled by another daemon, cancelled): its record stays

    @_guarded
    def report(self, run_id: int, ok: bool, message: str | None, *, now: float) -> Run:
        state = "OK" if ok else "ERR"
        with self.conn.transaction():
            row = self._x("SELECT state, reason FROM taskserver_runs WHERE tenant=%s AND id=%s FOR UPDATE",
                          (self.tenant, run_id)).fetchone()
            if row is None:
                raise StoreError(f"no run {run_id} in the {self.where}", hint="see `taskserver jobs history`",
                                 exit_code=2)
            check_report(run_id, row[0], row[1])
            self._x("UPDATE taskserver_runs SET reported=%s, message=%s WHERE tenant=%s AND id=%s",
                    (state, message, self.tenant, run_id))
            self._x("UPDATE taskserver_runs SET state=%s, reason=%s WHERE tenant=%s AND id=%s "
                    "AND state IN ('OK', 'ERR', 'QUE')",
                    (state, None if ok else REPORTED, self.tenant, run_id))
            self._x("UPDATE taskserver_runs SET finished=%s WHERE tenant=%s AND id=%s AND finished IS NULL "
                    "AND state != 'RUN'", (now, self.tenant, run_id))
        run = self.get(run_id)
        assert run is not None
        return run

    @_guarded
    def running(self, *, exclude: str) -> list[Run]:
        return self._select("state='RUN' AND (instance IS NULL OR instance != %s) ORDER BY id", exclude)

    # -- leases -------------------------------------------------------------------------------------------
    # A lease is kept on the server's clock: its length (expires - now of the daemon that takes or renews
    # it) is added to the server's time, and ``instances`` gives each lease's heartbeat and end on the
    # clock of the daemon that reads them. Hosts whose clocks differ judge a lease alike: a lease lasts
    # seconds, and a host a few seconds behind had its live leases settled as lost by the others.
    # Claims do not depend on clocks at all (the due time comes from the schedule).
    @_guarded
    def attach(self, me: Instance) -> None:
        self._lease(me)
        self._me = me
        self._listen()

    def _lease(self, me: Instance) -> None:
        self._x("INSERT INTO taskserver_instances (tenant, id, host, pid, boot_id, proc_start, config, "
                "started, heartbeat, expires) SELECT %s,%s,%s,%s,%s,%s,%s,%s, now, now + %s "
                "FROM (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now) AS server "
                "ON CONFLICT (tenant, id) DO UPDATE SET heartbeat = excluded.heartbeat, "
                "expires = excluded.expires",
                (self.tenant, me.id, me.host, me.pid, me.boot_id, me.proc_start, me.config, me.started,
                 me.expires - me.heartbeat))

    @_guarded
    def heartbeat(self, instance: str, *, now: float, expires: float) -> bool:
        row = self._x("UPDATE taskserver_instances SET heartbeat=server.now, expires=server.now + %s "
                      "FROM (SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now) AS server "
                      "WHERE tenant=%s AND id=%s RETURNING id", (expires - now, self.tenant, instance)
                      ).fetchone()
        if row is not None or self._me is None or self._me.id != instance:
            return row is not None
        self._lease(dataclasses.replace(self._me, heartbeat=now, expires=expires))  # settled as dead
        return False

    @_guarded
    def instances(self) -> list[Instance]:
        rows = self._x("SELECT id, host, pid, boot_id, proc_start, config, started, heartbeat - server.now, "
                       "expires - server.now FROM taskserver_instances, "
                       "(SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now) AS server "
                       "WHERE tenant=%s ORDER BY started", (self.tenant,)).fetchall()
        here = time.time()  # the server's times, moved to this host's clock
        return [_instance(r, here) for r in rows]

    @_guarded
    def detach(self, instance: str) -> None:
        self._x("DELETE FROM taskserver_instances WHERE tenant=%s AND id=%s", (self.tenant, instance))
        if self._me is not None and instance == self._me.id:
            self._unlisten()
            self._me = None

    def wakeup_fd(self) -> int | None:
        return self._listener.fileno() if self._listener is not None else None

    def drain_wakeups(self) -> None:
        if self._listener is None:
            return
        with contextlib.suppress(psycopg.Error):
            for _ in self._listener.notifies(timeout=0):
                pass

    def _listen(self) -> None:
        self._unlisten()
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        conn.execute(f'LISTEN "{self.channel}"')  # a fixed hex name: nothing to quote
        self._listener = conn

    def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    # -- faults ----------------------------------------------------------------------------------------
    def no_wait(self) -> contextlib.AbstractContextManager[None]:
        """(Row locks are skipped or waited for by the statements themselves: nothing to change.)"""
        return contextlib.nullcontext()

    def check(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY
        try:
            self._x("SELECT 1")
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: the connection is lost: {_one_line(exc, self.dsn)}",
                             hint=_FAULT_HINT, where=self.where) from exc

    def recover(self) -> str | None:
        """Reconnect (and LISTEN again) after a lost connection; None when nothing was done (healthy, or
        the server is not back yet)."""
        with contextlib.suppress(psycopg.Error):
            self._x("SELECT 1")
            return None
        try:
            new = self._connect()
        except StoreError:
            return None
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.conn = new
        if self._me is not None:
            try:
                self._listen()
            except psycopg.Error:
                return None
        settled = self._settle_unsure()  # before anything is planned again from the store
        return f"reconnected to the {self.where}" + (f"; {settled}" if settled else "")

    # -- bookkeeping and reading -----------------------------------------------------------------------
    @_guarded
    def remember_jobs(self, jobs: Iterable[str], *, now: float) -> None:
        with self.conn.cursor() as cur:
            cur.executemany("INSERT INTO taskserver_jobs (tenant, name, last_due) VALUES (%s, %s, %s) "
                            "ON CONFLICT DO NOTHING", [(self.tenant, j, now) for j in jobs])

    @_guarded
    def rewind(self, now: float) -> None:
        self._x("UPDATE taskserver_jobs SET last_due=%s WHERE tenant=%s AND last_due > %s",
                (now, self.tenant, now))

    def _advance(self, job: str, due: float) -> None:
        self._x("INSERT INTO taskserver_jobs (tenant, name, last_due) VALUES (%s, %s, %s) ON CONFLICT "
                "(tenant, name) DO UPDATE SET "
                "last_due = GREATEST(taskserver_jobs.last_due, excluded.last_due)",
                (self.tenant, job, due))

    @_guarded
    def purge(self, *, ok_before: float, err_before: float) -> Purged:
        rows = self._x("DELETE FROM taskserver_runs WHERE tenant=%s AND ((state='OK' AND finished < %s) OR "
                       "(state='ERR' AND finished < %s)) RETURNING id, queued",
                       (self.tenant, ok_before, err_before)).fetchall()
        return Purged(count=len(rows), queued_ids=[int(r[0]) for r in rows if r[1]])

    @_guarded
    def last_due(self, job: str) -> float | None:
        row = self._x("SELECT last_due FROM taskserver_jobs WHERE tenant=%s AND name=%s",
                      (self.tenant, job)).fetchone()
        return float(row[0]) if row else None

    @_guarded
    def last_dues(self) -> dict[str, float]:
        rows = self._x("SELECT name, last_due FROM taskserver_jobs WHERE tenant=%s",
                       (self.tenant,)).fetchall()
        return {str(name): float(due) for name, due in rows}

    @_guarded
    def get(self, run_id: int) -> Run | None:
        found = self._select("id=%s", run_id)
        return found[0] if found else None

    @_guarded
    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        if job is None:
            return self._select("TRUE ORDER BY id DESC LIMIT %s", limit)
        return self._select("job=%s ORDER BY id DESC LIMIT %s", job, limit)

    @_guarded
    def summary(self, buckets: Sequence[float]) -> list[JobSummary]:
        ended, due = "finished IS NOT NULL AND started IS NOT NULL", "due IS NOT NULL AND started IS NOT NULL"
        dur, late = "(finished - started)", "(started - due)"
        le = [f"COUNT(*) FILTER (WHERE {ended} AND {dur} <= %s)" for _ in buckets]
        le += [f"COUNT(*) FILTER (WHERE {due} AND {late} <= %s)" for _ in buckets]
        sql = ", ".join([  # noqa: S608 - only constant text and placeholders
            "SELECT job, state, COUNT(*)", f"COUNT(*) FILTER (WHERE {ended})",
            f"COALESCE(SUM({dur}) FILTER (WHERE {ended}), 0)", f"COUNT(*) FILTER (WHERE {due})",
            f"COALESCE(SUM({late}) FILTER (WHERE {due}), 0)", "MAX(finished) FILTER (WHERE state='OK')",
            *le]) + " FROM taskserver_runs WHERE tenant=%s GROUP BY job, state"
        rows = self._x(sql, (*buckets, *buckets, self.tenant)).fetchall()
        return [got for r in rows if (got := summary_row(r, len(buckets))) is not None]

    def _select(self, where: str, *params: object) -> list[Run]:
        sql = f"SELECT {COLUMNS} FROM taskserver_runs WHERE tenant=%s AND {where}"  # noqa: S608
        return [_run(r) for r in self._x(sql, (self.tenant, *params)).fetchall()]

    def close(self) -> None:
        self._unlisten()
        with contextlib.suppress(Exception):
            self.conn.close()


BACKENDS["postgresql"] = open_pg
