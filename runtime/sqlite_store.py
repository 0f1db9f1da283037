"""The embedded store: one SQLite file per tenant, WAL mode, one connection, few statements per run.

Each public method is one short transaction (autocommit), so the CLI (`jobs enqueue`, `jobs finish`) and the
daemon can write the same file at once; WAL keeps readers from blocking the writer.  ``synchronous=NORMAL``
is safe in WAL mode (a power cut may lose the last commits, never corrupt the file) and keeps a run's cost
to a few microseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import UserError
from .model import State, TenantDef
from .store import BACKENDS, CRASHED, MISSED, REPORTED, JobSummary, Purged, Run

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    queue TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    due REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    instance TEXT,
    exit_code INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    argv TEXT,
    output TEXT NOT NULL DEFAULT '',
    message TEXT,
    queued INTEGER NOT NULL DEFAULT 0,
    reported TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, id);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, id);
CREATE INDEX IF NOT EXISTS runs_by_end ON runs (finished);
CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, last_due REAL NOT NULL);
"""

COLUMNS = ("id, job, queue, state, reason, due, created, started, finished, pid, instance, exit_code, "
           "attempt, argv, output, message, queued")


def store_path(tenant: TenantDef, state_dir: Path) -> Path:
    if tenant.store.kind != "sqlite":
        raise UserError(f"tenant {tenant.name!r}: store kind {tenant.store.kind!r} is not available yet",
                        hint="use the default SQLite store (remove `store: kind:`)")
    return tenant.store.path or state_dir / f"{tenant.name}.sqlite"


def open_sqlite(tenant: TenantDef, state_dir: Path) -> SqliteStore:
    return SqliteStore(store_path(tenant, state_dir))


def _run(row: tuple[Any, ...]) -> Run:
    (rid, job, queue, state, reason, due, created, started, finished, pid, instance, exit_code, attempt,
     argv, output, message, queued) = row
    return Run(id=rid, job=job, queue=queue, state=State(state), reason=reason, due=due, created=created,
               started=started, finished=finished, pid=pid, instance=instance, exit_code=exit_code,
               attempt=attempt, argv=_argv(argv), output=output,
               message=message, queued=bool(queued))


def _argv(text: str | None) -> tuple[str, ...] | None:
    """A stored task's argv; a value that is not a JSON list comes back empty, and the daemon then ends the
    run ERR instead of failing on it (the row may have been written by anything with the file)."""
    if not text:
        return None
    try:
        got = json.loads(text)
    except ValueError:
        return ()
    return tuple(got) if isinstance(got, list) else ()


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._depth = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 before SQLite opens it: run history may hold secrets printed by jobs.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"{path}: cannot open the run store: {exc}",
                            hint="check the state directory's owner and permissions") from exc

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the calls inside into one transaction (one commit for several runs under load)."""
        if self._depth:
            self._depth += 1
        else:
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if not self._depth:
                self.db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if not self._depth:
            self.db.execute("COMMIT")

    _txn = batch

    # -- writing -------------------------------------------------------------------------------------
    def add(self, job: str, *, queue: str | None = None, argv: Sequence[str] | None = None,
            due: float | None = None, attempt: int = 0, now: float) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (job, queue, state, due, created, attempt, argv, queued) "
            "VALUES (?, ?, 'QUE', ?, ?, ?, ?, 1)",
            (job, queue, due, now, attempt, json.dumps(list(argv)) if argv is not None else None))
        return int(cur.lastrowid or 0)

    def start(self, job: str, *, due: float | None, attempt: int, pid: int, instance: str,
              queue: str | None, now: float) -> int:
        with self._txn():  # one transaction: the run and the job's last due move together
            cur = self.db.execute(
                "INSERT INTO runs (job, queue, state, due, created, started, pid, instance, attempt) "
                "VALUES (?, ?, 'RUN', ?, ?, ?, ?, ?, ?)", (job, queue, due, now, now, pid, instance, attempt))
            if due is not None:
                self._advance(job, due)
        return int(cur.lastrowid or 0)

    def claim(self, run_id: int, *, pid: int, instance: str, now: float) -> bool:
        cur = self.db.execute(
            "UPDATE runs SET state='RUN', started=?, pid=?, instance=? WHERE id=? AND state='QUE'",
            (now, pid, instance, run_id))
        return cur.rowcount == 1

    def set_pid(self, run_id: int, pid: int) -> None:
        self.db.execute("UPDATE runs SET pid=? WHERE id=?", (pid, run_id))

    def finish(self, run_id: int, state: State, reason: str | None, *, exit_code: int | None,
               output: str, now: float) -> Run:
        # A report the task made itself (`jobs finish`) wins over what its exit code says.
        self.db.execute(
            "UPDATE runs SET state=COALESCE(reported, ?), "
            "reason=CASE WHEN reported IS NULL THEN ? WHEN reported='ERR' THEN ? ELSE NULL END, "
            "exit_code=?, output=?, finished=? WHERE id=?",
            (state.value, reason, REPORTED, exit_code, output, now, run_id))
        run = self.get(run_id)
        assert run is not None
        return run

    def report(self, run_id: int, ok: bool, message: str | None, *, now: float) -> Run:
        state = "OK" if ok else "ERR"
        with self._txn():
            row = self.db.execute("SELECT state, reason FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise UserError(f"no run {run_id} in {self.path}", hint="see `taskserver jobs history`")
            if row[0] == "ERR" and row[1] not in (None, REPORTED) and not str(row[1]).startswith("exit code"):
                # a report overrides an exit code, never what the server saw: timeout, crash, missed...
                raise UserError(f"run {run_id} already ended ERR {row[1]}; a report cannot change that",
                                hint="report from inside the task, before it exits")
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

    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        rows = [(job, MISSED, due, now, now, note) for due in dues]
        if not rows:
            return
        with self._txn():
            self.db.executemany(
                "INSERT INTO runs (job, state, reason, due, created, finished, message) "
                "VALUES (?, 'ERR', ?, ?, ?, ?, ?)", rows)
            self._advance(job, max(float(r[2]) for r in rows))

    def crash_orphans(self, instance: str, *, now: float) -> list[int]:
        with self._txn():
            ids = [int(r[0]) for r in self.db.execute(
                "SELECT id FROM runs WHERE state='RUN' AND (instance IS NULL OR instance != ?)", (instance,))]
            self.db.executemany(
                "UPDATE runs SET state='ERR', reason=?, finished=? WHERE id=?",
                [(CRASHED, now, i) for i in ids])
        return ids

    def remember_jobs(self, jobs: Iterable[str], *, now: float) -> None:
        with self._txn():
            self.db.executemany("INSERT OR IGNORE INTO jobs (name, last_due) VALUES (?, ?)",
                                [(j, now) for j in jobs])

    def rewind(self, now: float) -> None:
        with self._txn():
            self.db.execute("UPDATE jobs SET last_due=? WHERE last_due > ?", (now, now))

    def _advance(self, job: str, due: float) -> None:
        self.db.execute(
            "INSERT INTO jobs (name, last_due) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_due=MAX(last_due, excluded.last_due)", (job, due))

    def purge(self, *, ok_before: float, err_before: float) -> Purged:
        where = ("(state='OK' AND finished < ?) OR (state='ERR' AND finished < ?)")
        with self._txn():
            queued = [int(r[0]) for r in self.db.execute(
                f"SELECT id FROM runs WHERE queued=1 AND ({where})", (ok_before, err_before))]  # noqa: S608
            cur = self.db.execute(f"DELETE FROM runs WHERE {where}", (ok_before, err_before))  # noqa: S608
        return Purged(count=cur.rowcount, queued_ids=queued)

    # -- reading -------------------------------------------------------------------------------------
    def last_due(self, job: str) -> float | None:
        row = self.db.execute("SELECT last_due FROM jobs WHERE name=?", (job,)).fetchone()
        return float(row[0]) if row else None

    def queued(self) -> list[Run]:
        return [_run(r) for r in self.db.execute(
            f"SELECT {COLUMNS} FROM runs WHERE state='QUE' ORDER BY id")]  # noqa: S608

    def get(self, run_id: int) -> Run | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()  # noqa: S608
        return _run(row) if row else None

    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        if job is None:
            rows = self.db.execute(f"SELECT {COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,))  # noqa: S608
        else:
            rows = self.db.execute(
                f"SELECT {COLUMNS} FROM runs WHERE job=? ORDER BY id DESC LIMIT ?", (job, limit))  # noqa: S608
        return [_run(r) for r in rows]

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
        n = len(buckets)
        out = []
        for row in self.db.execute(sql, [*buckets, *buckets]):
            out.append(JobSummary(job=row[0], state=State(row[1]), count=row[2], duration_count=row[3] or 0,
                                  duration_sum=row[4], lateness_count=row[5] or 0, lateness_sum=row[6],
                                  last_ok=row[7], duration_le=tuple(int(v or 0) for v in row[8:8 + n]),
                                  lateness_le=tuple(int(v or 0) for v in row[8 + n:8 + 2 * n])))
        return out

    def close(self) -> None:
        self.db.close()


BACKENDS["sqlite"] = open_sqlite
