"""What only the SQLite backend does, on real files: privacy and WAL, schema versions and migrations, and the
refusals that keep a corrupt, emptied, replaced or vanished store from being used silently.  The store
contract itself is proven in tests/contract/ for every backend."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from taskserver.runtime import sqlite_schema
from taskserver.runtime.model import State
from taskserver.runtime.sqlite_store import SqliteStore
from taskserver.runtime.store import StoreError


def path_of(tmp_path: Path) -> Path:
    return tmp_path / "state" / "t.sqlite"


def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(path_of(tmp_path))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    s = store(tmp_path)
    mode = stat.S_IMODE(os.stat(s.path).st_mode)
    assert mode & 0o077 == 0
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.LATEST


# -- schema versions ---------------------------------------------------------------------------------------
def shape(db: sqlite3.Connection) -> dict[str, object]:
    """Tables with their columns and indexes with their definitions: what a migration must reproduce."""
    out: dict[str, object] = {}
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
        out[name] = sorted(tuple(r[1:]) for r in db.execute(f"PRAGMA table_info({name})"))
    for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"):
        out[name] = " ".join(sql.split())
    return out


def build(path: Path, version: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(sqlite_schema.SCHEMAS[version])
    if version > 1:
        db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", sorted(v for v in sqlite_schema.SCHEMAS if v < sqlite_schema.LATEST))
def test_every_earlier_version_migrates_to_the_latest_schema(tmp_path: Path, version: int) -> None:
    fresh = store(tmp_path / "fresh")
    old = path_of(tmp_path / "old")
    build(old, version)
    migrated = SqliteStore(old)
    assert shape(migrated.db) == shape(fresh.db)
    assert migrated.db.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.LATEST


def _every_call(s: SqliteStore) -> None:
    """Each method of the store, on rows of every state (what the plans below are taken from)."""
    s.remember_jobs(["j", "k"], now=1.0)
    s.missed("j", [2.0], now=3.0, note="down")
    s.missed_many([("j", 4.0, "down"), ("k", 4.0, None)], now=5.0)
    rid = s.claim("j", 6.0, now=6.0)
    task = s.add("", queue="q", argv=["t"], now=7.0)
    assert rid is not None and s.waiting() and s.queued()
    s.acquire(instance="i", now=8.0, ids=[rid])
    s.acquire(instance="i", now=8.0)
    s.started(rid, pid=1, proc_start=2, boot_id="b")
    s.cancel(task, who="me", now=8.5)
    s.cancelling()
    s.running(exclude="other")
    s.finish(rid, State.OK, None, exit_code=0, output="", now=9.0)
    s.report(task, ok=True, message="done", now=9.5)
    s.pause("k", who="me", now=10.0)
    s.paused()
    s.resume("k")
    s.last_due("j")
    s.last_dues()
    s.rewind(100.0)
    s.get(rid)
    s.history()
    s.history("j")
    s.summary([1.0])
    s.purge(ok_before=9.5, err_before=9.5)


def test_every_statement_finds_its_rows_through_an_index(tmp_path: Path) -> None:
    """The plan SQLite makes for each statement the store runs: a look-up by state goes through the partial
    index of that state; only purge (which reads every finished row anyway) and the newest rows of all
    jobs read the table itself. No plan uses a state index for finished rows or an index of end times:
    there are none (schema version 4)."""
    s = store(tmp_path)
    seen: list[str] = []
    s.db.set_trace_callback(seen.append)
    _every_call(s)
    s.db.set_trace_callback(None)
    plans: dict[str, list[str]] = {}  # statement (with its values) -> the lines of its plan
    for sql in dict.fromkeys(seen):
        if " runs" in sql and sql.split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE"):
            plans[sql] = [str(r[3]) for r in s.db.execute("EXPLAIN QUERY PLAN " + sql)]
    scans = {sql for sql, plan in plans.items() if "SCAN runs" in plan}
    assert scans and all("finished <" in sql or "ORDER BY id DESC LIMIT" in sql for sql in scans), scans
    states = ("state='QUE' AND", "state='RUN' AND")
    by_state = {sql: plan for sql, plan in plans.items() if any(x in sql for x in states)}
    for sql, plan in by_state.items():  # by id (the primary key), else through the state's own index
        wanted = "runs_queued" if "state='QUE' AND" in sql else "runs_running"
        assert all("PRIMARY KEY" in line or wanted in line for line in plan if " runs " in line), (sql, plan)
    assert sum(any("runs_queued" in line or "runs_running" in line for line in plan)
               for plan in by_state.values()) >= 5
    named = "SELECT name FROM sqlite_master WHERE type='index' AND sql NOT NULL"  # not the automatic ones
    indexes = {r[0] for r in s.db.execute(named)}
    assert indexes == {"runs_by_job", "runs_claim", "runs_queued", "runs_running"}
    s.close()


def test_version_1_history_survives_and_its_duplicates_stay_visible(tmp_path: Path) -> None:
    path = path_of(tmp_path)
    build(path, 1)
    db = sqlite3.connect(path)
    with db:  # what a version-1 daemon wrote: one due time run twice, a task, the job's last due
        for state in ("OK", "ERR"):
            db.execute("INSERT INTO runs (job, state, due, created) VALUES ('j', ?, 60.0, 61.0)", (state,))
        db.execute("INSERT INTO runs (job, state, created, queued, argv) "
                   "VALUES ('', 'QUE', 1.0, 1, '[\"t\"]')")
        db.execute("INSERT INTO jobs (name, last_due) VALUES ('j', 60.0)")
    db.close()
    s = SqliteStore(path)
    assert [(r.job, r.state, r.due) for r in s.history()] == [
        ("", State.QUE, None), ("j", State.ERR, 60.0), ("j", State.OK, 60.0)]
    assert s.last_due("j") == 60.0 and [r.argv for r in s.queued()] == [("t",)]
    assert s.claim("j", 60.0, now=70.0) is None  # the due time already has its record
    assert s.db.execute("SELECT dup_of FROM runs ORDER BY id").fetchall() == [(None,), (1,), (None,)]


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = path_of(tmp_path)
    store(tmp_path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {sqlite_schema.LATEST + 1}")
    db.close()
    before = digest(path)
    with pytest.raises(StoreError, match=rf"schema version {sqlite_schema.LATEST + 1} is newer"):
        SqliteStore(path)
    assert digest(path) == before


# -- refusals ----------------------------------------------------------------------------------------------
def with_history(tmp_path: Path, runs: int = 50) -> Path:
    s = store(tmp_path)
    with s.batch():
        for i in range(runs):
            s.add("", argv=["echo", "x" * 500], now=float(i))
    s.close()
    return path_of(tmp_path)


def test_garbage_in_the_middle_is_refused_and_never_written_into(tmp_path: Path) -> None:
    path = with_history(tmp_path, 200)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(8192))
    before = digest(path)
    with pytest.raises(StoreError, match="corrupt") as err:
        SqliteStore(path)
    assert "quick_check" in (err.value.hint or "")
    assert digest(path) == before


def test_an_overwritten_file_is_refused(tmp_path: Path) -> None:
    path = with_history(tmp_path)
    path.write_bytes(b"not a database at all\n" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        SqliteStore(path)


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_a_store_with_history_that_vanished_is_refused_not_recreated(tmp_path: Path, how: str) -> None:
    path = with_history(tmp_path)
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")
    with pytest.raises(StoreError, match=r"is gone|is empty") as err:
        SqliteStore(path)
    assert "store-id" in (err.value.hint or "")
    assert not path.exists() or path.stat().st_size == 0  # nothing created in its place
    (path.parent / ".t.store-id").unlink()  # the documented way to start afresh
    assert SqliteStore(path).history() == []


def test_another_store_in_its_place_is_refused(tmp_path: Path) -> None:
    path = with_history(tmp_path)
    other = with_history(tmp_path / "other")
    os.replace(other, path)
    with pytest.raises(StoreError, match="not the run store the state dir knew"):
        SqliteStore(path)


def test_a_store_deleted_under_an_open_connection_is_detected_and_written_back(tmp_path: Path) -> None:
    s = SqliteStore(with_history(tmp_path, 7))
    s.check()
    path_of(tmp_path).unlink()
    s._next_check = 0.0
    with pytest.raises(StoreError, match="was deleted"):
        s.check()
    s.add("", argv=["t"], now=1.0)  # the open copy still takes writes (the daemon keeps its records there)
    note = s.recover()
    assert note is not None and "8 runs kept" in note
    s.check()
    s.add("", argv=["t"], now=1.0)
    assert len(SqliteStore(path_of(tmp_path)).history()) == 9


def test_a_read_only_store_fails_as_one_store_error(tmp_path: Path) -> None:
    path = with_history(tmp_path, 1)
    ro = SqliteStore(path)
    ro.db.execute("PRAGMA query_only = ON")  # as a store that cannot be written (read-only disk)
    with pytest.raises(StoreError, match=r"t\.sqlite: add failed: attempt to write a readonly database"):
        ro.add("", argv=["t"], now=1.0)


def test_housekeeping_purges_history_and_status_files(tmp_path: Path) -> None:
    from taskserver.runtime import housekeeping, statusfile
    from taskserver.runtime.model import Config, ServerSettings, TenantDef

    server = ServerSettings(state_dir=tmp_path / "state", keep_ok_days=1, keep_err_days=2)
    s = store(tmp_path)
    day = housekeeping.DAY
    now = 100 * day
    old = s.add("", queue="q", argv=["x"], now=now - 5 * day)
    s.acquire(instance="i", now=now - 5 * day, ids=[old])
    done = s.finish(old, State.OK, None, exit_code=0, output="", now=now - 1.5 * day)
    failed = s.add("", queue="q", argv=["y"], now=now - 5 * day)
    s.acquire(instance="i", now=now - 5 * day, ids=[failed])
    kept = s.finish(failed, State.ERR, "exit code 1", exit_code=1, output="", now=now - 1.5 * day)
    paths = [Path(statusfile.update(server.state_dir, "t", r)) for r in (done, kept)]
    config = Config(path=tmp_path / "c.yaml", exists=True, server=server, tenants=(TenantDef("t", "t"),))
    assert housekeeping.purge({"t": s}, config, now) == 1
    assert not paths[0].exists() and paths[1].exists()
    assert s.get(old) is None and s.get(failed) is not None


def test_an_acquire_after_another_writer_changed_a_queued_row_returns_the_row_as_changed(
        tmp_path: Path) -> None:
    """The store acquires a row it has just read without reading it back (runtime/sqlite_known.py), unless
    another connection committed since: here a raw write to the file changes a queued task's command and
    queue after the read; the acquire returns what the file holds, not what was read."""
    s = store(tmp_path)
    first = s.add("", queue="q", argv=["/bin/echo", "one"], now=1.0)
    second = s.add("", queue="q2", argv=["/bin/echo", "two"], now=1.0)
    assert [r.argv for r in s.queued()] == [("/bin/echo", "one"), ("/bin/echo", "two")]
    raw = sqlite3.connect(s.path, isolation_level=None)
    raw.execute("UPDATE runs SET argv=?, queue='other' WHERE id=?", ('["/bin/echo", "changed"]', first))
    raw.close()
    (got,) = s.acquire(instance="i", now=2.0, ids=[first])
    assert (got.argv, got.queue, got.state) == (("/bin/echo", "changed"), "other", State.RUN)
    assert got == s.get(first)
    s.queued()  # read again: now the acquire needs no row back, and still returns the stored row
    (got,) = s.acquire(instance="i", now=2.5, ids=[second])
    assert got == s.get(second)
    s.close()
