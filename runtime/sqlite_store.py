"""The embedded store: one SQLite file per tenant, WAL mode, one connection, few statements per run.

Each public method is one short transaction (autocommit) unless grouped by ``batch``, so the CLI (`jobs
enqueue`, `jobs finish`) and the daemon can write the same file at once; WAL keeps readers from blocking the
writer.  ``synchronous=NORMAL`` is safe in WAL mode (a power cut may lose the last commits, never corrupt
the file) and keeps a run's cost to a few microseconds.  Every SQLite or OS error leaves as ``StoreError``
(one line naming the file), never as a traceback.  Opening checks the file first (sqlite_guard.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from . import sqlite_bulk as bulk
from . import sqlite_guard as guard
from . import sqlite_known as known
from . import sqlite_schema as schema
from .model import State, TenantDef
from .sqlite_base import add_task, open_db
from .sqlite_ckpt import Checkpointer
from .sqlite_history import SqliteHistory
from .sqlite_rows import COLUMNS, LIVE_COLUMNS, instance_of, run_of
from .sqlite_steer import SqliteSteer
from .sqlite_wake import WakeSocket, wake_path
from .store import (
    BACKENDS,
    CLAIMERS,
    MISSED,
    REPORTED,
    Claim,
    Instance,
    Process,
    Run,
    StoreError,
    Verify,
    check_report,
    fault,
)

# One statement per end: the final row comes back with the update (no second read per run)
# (a ``reported`` other than OK or ERR, written past `jobs finish`, counts as no report)
_FINISH = ("UPDATE runs SET state=CASE WHEN reported IN ('OK', 'ERR') THEN reported ELSE ? END, "  # noqa: S608
           "reason=CASE WHEN reported='OK' THEN NULL WHEN reported='ERR' THEN ? ELSE ? END, "
           "exit_code=?, output=?, finished=?, message=COALESCE(message, ?){} WHERE id=? "
           f"AND state IN ('QUE', 'RUN') RETURNING {COLUMNS}")
_FINISH_RUN, _FINISH_PROCESS = _FINISH.format(""), _FINISH.format(", pid=?, proc_start=?, boot_id=?")
# The end of a run this connection acquired, with no report of the task's own: nothing comes back, the final
# row is what acquire returned plus what this end and ``started`` wrote (a third of the statement's time, and
# no row to convert).  Any other row (a report came, the state moved, the run was acquired again since, by
# whoever: its instance and start differ) takes _FINISH.
_QUIET = ("UPDATE runs SET state=?, reason=?, exit_code=?, output=?, finished=?, "
          "message=COALESCE(message, ?){} WHERE id=? AND state='RUN' AND reported IS NULL "
          "AND instance=? AND started=?")
_QUIET_RUN, _QUIET_PROCESS = _QUIET.format(""), _QUIET.format(", pid=?, proc_start=?, boot_id=?")
_INSTANCE_COLUMNS = "id, host, pid, boot_id, proc_start, config, started, heartbeat, expires"
_FAULT_HINT = "check free space and the disk; the daemon starts nothing new and retries until it is writable"
# seconds the daemon's own statements wait for another writer's lock (commands wait 10): a command's write
# takes milliseconds. The loop's wake-ups do not wait at all (their transactions begin under ``no_wait``:
# runtime/stores.py LOCK_WAIT), nor its retries of a failed store (``recover``): this bounds the rest (a
# start's plan of a tenant, the first transaction after a retry, ends recorded outside a wake-up).
DAEMON_LOCK_WAIT = 0.25
_CHECK_EVERY = 1.0  # seconds between two looks at whether the file is still where it was

P = ParamSpec("P")
R = TypeVar("R")


def store_path(tenant: TenantDef, state_dir: Path) -> Path:
    return tenant.store.path or state_dir / f"{tenant.name}.sqlite"


def open_sqlite(tenant: TenantDef, state_dir: Path, create: bool = True, verify: Verify = True,
                claim: Claim | None = None) -> SqliteStore:
    marker = Path(guard.marker_path(state_dir, tenant.name))
    lock = claim if isinstance(claim, guard.InstanceLock) else None
    return SqliteStore(store_path(tenant, state_dir), marker, create=create, verify=verify, lock=lock)


def claim_sqlite(tenant: TenantDef, state_dir: Path, me: Instance) -> guard.InstanceLock:
    """The store's lock, taken before the store is opened (store.claim_store). Its directory is made for
    it, as opening the store would make it; a lock file that cannot be made is no fault to wait out: a
    daemon that cannot hold the lock cannot know the store is its own."""
    path = store_path(tenant, state_dir)
    lock = guard.InstanceLock(path)
    try:
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
        lock.take(me, checked=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot take the store's lock {lock.path}: {exc.strerror}",
                         hint="the daemon serves a store only while it holds that lock: make room for it "
                         "(free space or inodes on its file system) or make it writable, then start "
                         "again") from None
    return lock


def _ended(run: Run, *, state: State, reason: str | None, exit_code: int | None, output: str, now: float,
           note: str | None, proc: Process | None) -> Run:
    """The row _QUIET left: ``run`` as acquired, with what the end and ``started`` wrote."""
    process = dict(zip(("pid", "proc_start", "boot_id"), proc, strict=True)) if proc is not None else {}
    return known.changed(run, state=state, reason=reason, exit_code=exit_code, output=output, finished=now,
                         message=note if run.message is None else run.message, **process)


def _guarded(fn: Callable[Concatenate[SqliteStore, P], R]) -> Callable[Concatenate[SqliteStore, P], R]:
    """SQLite and OS errors become one StoreError naming the file and what failed (a storage fault: the
    file and why it cannot be written, store_errors.fault)."""
    def wrapper(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except StoreError as exc:  # (one it raised itself)
            exc.of(self.where)
            raise
        except (sqlite3.Error, OSError) as exc:
            raise (fault(exc, self.path) or StoreError(f"{self.path}: {fn.__name__} failed: {exc}",
                                                       hint=_FAULT_HINT)).of(self.where) from exc
    functools.update_wrapper(wrapper, fn)
    return wrapper


class SqliteStore(SqliteSteer, SqliteHistory):
    exclusive = True  # one daemon per file: attach takes an exclusive lock
    pause = _guarded(SqliteSteer.pause)
    resume = _guarded(SqliteSteer.resume)
    paused = _guarded(SqliteSteer.paused)
    cancel = _guarded(SqliteSteer.cancel)
    cancelling = _guarded(SqliteSteer.cancelling)
    purge = _guarded(SqliteHistory.purge)
    last_due = _guarded(SqliteHistory.last_due)
    last_dues = _guarded(SqliteHistory.last_dues)
    get = _guarded(SqliteHistory.get)
    history = _guarded(SqliteHistory.history)
    summary = _guarded(SqliteHistory.summary)  # (it was not: a broken table failed /metrics for all)

    def __init__(self, path: Path, marker: Path | None = None, *, create: bool = True,
                 verify: Verify = True, lock: guard.InstanceLock | None = None) -> None:
        self.path = path
        self.where = str(path)  # what its errors name as their store (StoreError.where)
        self.marker = marker or path.with_name(f".{path.stem}.store-id")
        self._depth = 0
        self._me: Instance | None = None
        # a daemon's lock, taken before the store was opened, is the daemon's to release (runtime/stores.py)
        self._lock = lock or guard.InstanceLock(path)
        self._own_lock = lock is None
        self._wake = WakeSocket(wake_path(path))
        self._next_check = 0.0
        self._busy_ms = 10_000  # how long a statement waits for another writer's lock (open_db: 10 s)
        self.db = open_db(path, self.marker, create=create, verify=verify)
        self._ident = os.stat(path)
        self._ckpt: Checkpointer | None = None  # the daemon's: the log is checkpointed off its commits
        # runs acquired here and not ended yet: their row as acquire returned it, and the process ``started``
        # wrote since (see _QUIET); emptied by a rollback, which may have undone an acquire
        self._acquired: dict[int, tuple[Run, Process | None]] = {}
        self._known = known.KnownQueued()  # QUE rows just read: their acquire needs no row back

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the calls inside into one transaction (one commit for several runs under load)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._sql("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self._depth = 0
            self._sql("COMMIT")
            if self._ckpt is not None:
                self._ckpt.committed()
        except BaseException:
            self._depth = 0
            self._acquired.clear()
            self._known.forget()
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise

    _txn = batch

    def _sql(self, statement: str) -> None:
        try:
            self.db.execute(statement)
        except sqlite3.Error as exc:
            what = statement.split(maxsplit=1)[0].lower()
            raise (fault(exc, self.path) or StoreError(f"{self.path}: {what} failed: {exc}",
                                                       hint=_FAULT_HINT)).of(self.where) from exc

    # -- claims ----------------------------------------------------------------------------------------
    @_guarded
    def claim(self, job: str, due: float | None, *, attempt: int = 0, queue: str | None = None,
              not_before: float | None = None, now: float) -> int | None:
        with self._txn():  # the claim and the job's last due move together
            cur = self.db.execute(
                "INSERT INTO runs (job, queue, state, due, created, attempt, not_before) "
                "VALUES (?, ?, 'QUE', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (job, queue, due, now, attempt, not_before))
            if cur.rowcount != 1:
                return None
            if due is not None:
                self._advance(job, due)
        return int(cur.lastrowid or 0)

    @_guarded
    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        self._missed([(job, due, note) for due in dues], now=now)

    @_guarded
    def missed_many(self, rows: Sequence[tuple[str, float, str | None]], *, now: float) -> None:
        self._missed(rows, now=now)

    def _missed(self, rows: Sequence[tuple[str, float, str | None]], *, now: float) -> None:
        if rows:
            with self._txn():
                bulk.missed(self.db, rows, reason=MISSED, now=now)
                bulk.advance(self.db, bulk.newest(rows))

    @_guarded
    def claim_many(self, claims: Sequence[tuple[str, float, str | None]], *, now: float) -> list[int | None]:
        if not claims:
            return []
        with self._txn():  # the claims and the jobs' last dues move together
            version = self._data_version()
            made = bulk.claims(self.db, claims, now=now)
            taken = [(c, rid) for c, rid in zip(claims, made, strict=True) if rid is not None]
            bulk.advance(self.db, bulk.newest(c for c, _ in taken))
        self._known.claimed(version, {rid: (job, due, queue, now) for (job, due, queue), rid in taken})
        return made

    @_guarded
    def waiting(self) -> list[Run]:
        return self._select_known("waiting", "state='QUE' AND queued=0 ORDER BY due, id")

    # -- queued tasks ----------------------------------------------------------------------------------
    @_guarded
    def add(self, job: str, *, queue: str | None = None, argv: Sequence[str] | None = None,
            due: float | None = None, attempt: int = 0, now: float) -> int:
        return add_task(self.db, job, queue=queue, argv=argv, due=due, attempt=attempt, now=now)

    @_guarded
    def queued(self) -> list[Run]:
        return self._select_known("queued", "state='QUE' AND queued=1 ORDER BY id")

    def _select_known(self, kind: str, where: str) -> list[Run]:
        version = self._data_version()  # before the rows: a commit between makes them look older
        runs = self._select(where, columns=LIVE_COLUMNS)
        self._known.remember(kind, version, runs)
        return runs

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def notify(self) -> bool:
        return self._wake.notify()

    # -- running ---------------------------------------------------------------------------------------
    @_guarded
    def acquire(self, *, instance: str, now: float, ids: Sequence[int] | None = None,
                limit: int = 1) -> list[Run]:
        if ids is not None:
            picked = list(ids)[:limit]
            if kept := self._known.take(picked, self._data_version):
                return self._acquire_known(kept, instance=instance, now=now)
            where = f"id IN ({','.join('?' * len(picked))})"
        else:
            picked = [limit]
            where = "id IN (SELECT id FROM runs WHERE state='QUE' AND queued=1 ORDER BY id LIMIT ?)"
        if not picked:
            return []
        rows = self.db.execute(
            f"UPDATE runs SET state='RUN', started=?, instance=?, pid=NULL, output='' WHERE {where} "  # noqa: S608
            "AND state='QUE' "
            f"RETURNING {LIVE_COLUMNS}", (now, instance, *picked)).fetchall()
        runs = sorted((run_of(r) for r in rows), key=lambda r: r.id)
        for run in runs:
            self._acquired[run.id] = (run, None)
        return runs

    def _acquire_known(self, rows: list[Run], *, instance: str, now: float) -> list[Run]:
        runs = []
        for row in sorted(rows, key=lambda r: r.id):
            if self.db.execute(known.ACQUIRE_ONE, (now, instance, row.id)).rowcount == 1:
                run = known.acquired(row, instance=instance, now=now)
                self._acquired[run.id] = (run, None)
                runs.append(run)
        return runs

    @_guarded
    def started(self, run_id: int, *, pid: int, proc_start: int | None, boot_id: str | None) -> None:
        self.db.execute("UPDATE runs SET pid=?, proc_start=?, boot_id=? WHERE id=?",
                        (pid, proc_start, boot_id, run_id))
        acquired = self._acquired.get(run_id)
        if acquired is not None:
            self._acquired[run_id] = (acquired[0], (pid, proc_start, boot_id))

    @_guarded
    def finish(self, run_id: int, state: State, reason: str | None, *, exit_code: int | None, output: str,
               now: float, note: str | None = None, process: Process | None = None) -> Run | None:
        acquired = self._acquired.pop(run_id, None)
        if acquired is not None:
            run, proc = acquired
            proc = process or proc
            quiet = (state.value, reason, exit_code, output, now, note)
            mine = (run_id, run.instance, run.started)
            cur = (self.db.execute(_QUIET_RUN, (*quiet, *mine)) if process is None
                   else self.db.execute(_QUIET_PROCESS, (*quiet, *process, *mine)))
            if cur.rowcount == 1:
                return _ended(run, state=state, reason=reason, exit_code=exit_code, output=output, now=now,
                              note=note, proc=proc)
        # A report the task made itself (`jobs finish`) wins over what its exit code says.
        params = (state.value, REPORTED, reason, exit_code, output, now, note)
        if process is None:
            row = self.db.execute(_FINISH_RUN, (*params, run_id)).fetchone()
        else:
            row = self.db.execute(_FINISH_PROCESS, (*params, *process, run_id)).fetchone()
        if row is not None:
            return run_of(row)
        if self.db.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
            raise StoreError(f"{self.path}: run {run_id} vanished before its end was recorded")
        return None  # ended already: its record stays

    @_guarded
    def report(self, run_id: int, ok: bool, message: str | None, *, now: float) -> Run:
        state = "OK" if ok else "ERR"
        with self._txn():
            row = self.db.execute("SELECT state, reason FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run {run_id} in {self.path}", hint="see `taskserver jobs history`",
                                 exit_code=2)
            check_report(run_id, row[0], row[1])
            self.db.execute("UPDATE runs SET reported=?, message=? WHERE id=?", (state, message, run_id))
            # Already ended (the task reported after exiting, or it never ran): the report decides now.
            self.db.execute(
                "UPDATE runs SET state=?, reason=? WHERE id=? AND state IN ('OK', 'ERR', 'QUE')",
                (state, None if ok else REPORTED, run_id))
            self.db.execute("UPDATE runs SET finished=? WHERE id=? AND finished IS NULL AND state != 'RUN'",
                            (now, run_id))
        run = self.get(run_id)
        assert run is not None
        return run

    @_guarded
    def running(self, *, exclude: str) -> list[Run]:
        return self._select("state='RUN' AND (instance IS NULL OR instance != ?) ORDER BY id", exclude,
                            columns=LIVE_COLUMNS)

    # -- leases ----------------------------------------------------------------------------------------
    @_guarded
    def attach(self, me: Instance) -> None:
        self._lock.take(me)  # StoreBusy while another daemon lives: one daemon per SQLite store
        self._me = me
        # the daemon waits less than a command for a lock: a store held locked is a fault to report and
        # retry, and the loop must go on (watchdog pings, child exits) meanwhile
        self._busy_ms = int(DAEMON_LOCK_WAIT * 1000)
        self.db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        self._lease(me)
        self._wake.listen()
        if self._ckpt is None:
            self._ckpt = Checkpointer.start(self.path, self._ident, self.db)

    @_guarded
    def heartbeat(self, instance: str, *, now: float, expires: float) -> bool:
        cur = self.db.execute("UPDATE instances SET heartbeat=?, expires=? WHERE id=?",
                              (now, expires, instance))
        if cur.rowcount == 1 or self._me is None or self._me.id != instance:
            return cur.rowcount == 1
        self._lease(dataclasses.replace(self._me, heartbeat=now, expires=expires))  # its row was removed
        return False

    def _lease(self, me: Instance) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS}) "  # noqa: S608
                        "VALUES (?,?,?,?,?,?,?,?,?)",
                        (me.id, me.host, me.pid, me.boot_id, me.proc_start, me.config, me.started,
                         me.heartbeat, me.expires))

    @_guarded
    def instances(self) -> list[Instance]:
        rows = self.db.execute(f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY started")  # noqa: S608
        return [got for r in rows if (got := instance_of(r)) is not None]  # (no daemon wrote another)

    @_guarded
    def detach(self, instance: str) -> None:
        self.db.execute("DELETE FROM instances WHERE id=?", (instance,))
        if self._me is not None and instance == self._me.id:
            self._stop_checkpoints(self.db)
            self._wake.close()
            self._release()
            self._me = None

    def wakeup_fd(self) -> int | None:
        return self._wake.fileno()

    def drain_wakeups(self) -> None:
        self._wake.drain()

    # -- faults ----------------------------------------------------------------------------------------
    def check(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (self._ident.st_dev, self._ident.st_ino):
            what = "was deleted" if st is None else "was replaced by another file"
            raise StoreError(f"{self.path}: the run store {what} while the daemon used it",
                             hint="restore the state directory; the daemon starts nothing new until then",
                             where=self.where)
        if self._me is not None and not self._lock.holds():  # a second daemon could take a new one
            raise StoreError(f"{self.path}: its lock file {self._lock.path} was deleted or replaced while "
                             "the daemon held it", hint="the daemon takes it again, or starts nothing new "
                             "while another daemon holds the new one", where=self.where)

    def recover(self) -> str | None:
        """A store deleted under us (the whole state dir, say) is written back from the open connection,
        so no record is lost; a replaced file is left alone (someone put it there).  On a full disk the
        write-ahead log is checkpointed and truncated: on a small file system the log itself (which grows
        to about 4 MiB between automatic checkpoints) may be what filled it.  The lock comes first: one
        deleted (with the store, or alone) is taken again before anything is written back, and while another
        daemon holds the new one nothing is (StoreBusy: the store stays failed).  Nothing here waits for a
        lock: the daemon tries a failed store again and again while the loop serves every other tenant, and
        a store another writer keeps locked (its tenant's user, say) fails the try at once (``_writable``).
        """
        relocked = self._relock()
        if self.path.exists():
            with self.no_wait():
                self._writable()
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return relocked
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600))
            # (as long a wait for a lock as the connection it replaces: a daemon's is DAEMON_LOCK_WAIT)
            new = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=self._busy_ms / 1000)
            self.db.backup(new)
            new.execute("PRAGMA journal_mode=WAL")
            new.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error):
            return None
        self._stop_checkpoints(None)  # its connection holds the deleted file: the new one checkpoints itself
        self.db.close()
        self.db, self._ident = new, os.stat(self.path)
        self._known.forget()  # a new connection counts data versions anew
        with contextlib.suppress(OSError):
            guard.write_marker(self.marker, schema.store_id(new), self.path)
        if self._me is not None:
            self._lock.take(self._me)  # held (``_relock``): it names the new file now
            with contextlib.suppress(OSError):
                self._wake.listen()
        count = new.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return f"wrote the store back to {self.path} from the daemon's open copy ({count} runs kept)"

    @contextlib.contextmanager
    def no_wait(self) -> Iterator[None]:
        """Statements inside fail at once on another connection's lock (StoreLocked) instead of waiting."""
        self.db.execute("PRAGMA busy_timeout = 0")  # (every wake-up: what it was is ``_busy_ms``, not read)
        try:
            yield
        finally:
            self.db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def _writable(self) -> None:
        """StoreFault (locked) while another writer holds the store's write lock; its lock is free now."""
        self._sql("BEGIN IMMEDIATE")
        self._sql("ROLLBACK")

    def _relock(self) -> str | None:
        """Take the lock again if its file was deleted or replaced while this daemon held it (``check``);
        a note when it was."""
        if self._me is None or self._lock.holds():
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock.take(self._me, checked=self._in_place())
        except OSError as exc:
            raise (fault(exc, self.path) or StoreError(f"{self.path}: cannot take its lock again: {exc}",
                                                       hint=_FAULT_HINT)).of(self.where) from exc
        return f"took the store's lock {self._lock.path} again (its file was deleted or replaced)"

    def _in_place(self) -> bool:
        """Whether the file at the store's path is the one this connection has open."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self._ident.st_dev, self._ident.st_ino)

    # -- bookkeeping and reading -----------------------------------------------------------------------
    @_guarded
    def remember_jobs(self, jobs: Iterable[str], *, now: float) -> None:
        with self._txn():
            self.db.executemany("INSERT OR IGNORE INTO jobs (name, last_due) VALUES (?, ?)",
                                [(j, now) for j in jobs])

    @_guarded
    def rewind(self, now: float) -> None:
        with self._txn():
            self.db.execute("UPDATE jobs SET last_due=? WHERE last_due > ?", (now, now))

    def _advance(self, job: str, due: float) -> None:
        self.db.execute(
            "INSERT INTO jobs (name, last_due) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_due=MAX(last_due, excluded.last_due)", (job, due))

    def _stop_checkpoints(self, db: sqlite3.Connection | None) -> None:
        ckpt, self._ckpt = self._ckpt, None
        if ckpt is not None:
            ckpt.stop(db)

    def close(self) -> None:
        self._stop_checkpoints(None)
        self._wake.close()
        self._release()
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def _release(self) -> None:
        if self._own_lock:
            self._lock.release()


BACKENDS["sqlite"] = open_sqlite
CLAIMERS["sqlite"] = claim_sqlite
