"""The SQLite run store on real files: transitions, reports, crashes, history, retention, queue."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from taskserver.runtime.errors import UserError
from taskserver.runtime.model import State
from taskserver.runtime.sqlite_store import SqliteStore


def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state" / "t.sqlite")


def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    s = store(tmp_path)
    mode = stat.S_IMODE(os.stat(s.path).st_mode)
    assert mode & 0o077 == 0
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queued_run_moves_que_run_ok(tmp_path: Path) -> None:
    s = store(tmp_path)
    rid = s.add("", queue="q", argv=["echo", "hi there"], now=100.0)
    run = s.get(rid)
    assert run is not None and run.state is State.QUE and run.argv == ("echo", "hi there")
    assert s.claim(rid, pid=42, instance="i1", now=101.0)
    assert not s.claim(rid, pid=43, instance="i1", now=101.0)  # only once
    run = s.get(rid)
    assert run is not None and (run.state, run.pid, run.instance) == (State.RUN, 42, "i1")
    done = s.finish(rid, State.OK, None, exit_code=0, output="hi there\n", now=102.0)
    assert (done.state, done.reason, done.output, done.finished) == (State.OK, None, "hi there\n", 102.0)


def test_scheduled_start_advances_last_due_and_err_keeps_reason(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert s.last_due("j") is None
    rid = s.start("j", due=500.0, attempt=0, pid=7, instance="i", queue=None, now=501.0)
    assert s.last_due("j") == 500.0
    s.start("j", due=400.0, attempt=1, pid=8, instance="i", queue=None, now=502.0)
    assert s.last_due("j") == 500.0  # never moves back
    done = s.finish(rid, State.ERR, "exit code 3", exit_code=3, output="", now=503.0)
    assert (done.state, done.reason, done.exit_code) == (State.ERR, "exit code 3", 3)


def test_task_report_wins_over_exit_code(tmp_path: Path) -> None:
    s = store(tmp_path)
    a = s.add("", queue="q", argv=["x"], now=1.0)
    s.claim(a, pid=1, instance="i", now=2.0)
    s.report(a, False, "disk full", now=3.0)
    assert s.get(a).state is State.RUN  # type: ignore[union-attr]  # still running: the report waits
    done = s.finish(a, State.OK, None, exit_code=0, output="", now=4.0)
    assert (done.state, done.reason, done.message) == (State.ERR, "reported", "disk full")
    b = s.add("", queue="q", argv=["x"], now=1.0)
    s.claim(b, pid=1, instance="i", now=2.0)
    s.finish(b, State.ERR, "exit code 1", exit_code=1, output="", now=3.0)
    late = s.report(b, True, None, now=5.0)  # reported after it exited: applied at once
    assert (late.state, late.reason) == (State.OK, None)
    # what the server itself recorded (timeout, crash, interrupt, missed) is not the task's to overrule
    c = s.add("", queue="q", argv=["x"], now=1.0)
    s.claim(c, pid=1, instance="i", now=2.0)
    s.finish(c, State.ERR, "timeout", exit_code=None, output="", now=3.0)
    s.missed("j", [4.0], now=5.0)
    missed = max(r.id for r in s.history("j", limit=1))
    for run_id, reason in ((c, "timeout"), (missed, "missed")):
        with pytest.raises(UserError, match=f"already ended ERR {reason}"):
            s.report(run_id, True, "all fine", now=6.0)
        got = s.get(run_id)
        assert got is not None and (got.state, got.reason, got.message) == (State.ERR, reason, None)


def test_crash_orphans_marks_other_instances_runs(tmp_path: Path) -> None:
    s = store(tmp_path)
    old = s.start("j", due=1.0, attempt=0, pid=10, instance="dead", queue=None, now=1.0)
    mine = s.start("k", due=1.0, attempt=0, pid=11, instance="me", queue=None, now=1.0)
    s.close()
    s = store(tmp_path)  # as after a daemon restart: a new connection to the same file
    assert s.crash_orphans("me", now=9.0) == [old]
    run = s.get(old)
    assert run is not None and (run.state, run.reason, run.finished) == (State.ERR, "crashed", 9.0)
    assert s.get(mine).state is State.RUN  # type: ignore[union-attr]


def test_missed_runs_are_recorded_and_advance_last_due(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.remember_jobs(["j"], now=10.0)
    s.remember_jobs(["j"], now=99.0)  # first sighting only
    assert s.last_due("j") == 10.0
    s.missed("j", [20.0, 30.0], now=40.0)
    assert s.last_due("j") == 30.0
    hist = s.history("j")
    assert [(r.state, r.reason, r.due) for r in hist] == [
        (State.ERR, "missed", 30.0), (State.ERR, "missed", 20.0)]


def test_history_newest_first_and_per_job(tmp_path: Path) -> None:
    s = store(tmp_path)
    ids = [s.add(j, now=float(i)) for i, j in enumerate(["a", "b", "a"])]
    assert [r.id for r in s.history()] == ids[::-1]
    assert [r.id for r in s.history("a")] == [ids[2], ids[0]]
    assert [r.id for r in s.history(limit=1)] == [ids[2]]


def test_queue_order_is_insertion_order(tmp_path: Path) -> None:
    s = store(tmp_path)
    ids = [s.add("", queue=q, argv=["t"], now=50.0 - i) for i, q in enumerate(["q1", "q2", "q1"])]
    assert [r.id for r in s.queued()] == ids
    s.claim(ids[0], pid=1, instance="i", now=60.0)
    assert [r.id for r in s.queued()] == ids[1:]


def test_purge_keeps_recent_and_running(tmp_path: Path) -> None:
    s = store(tmp_path)
    ok_old = s.start("j", due=None, attempt=0, pid=1, instance="i", queue=None, now=1.0)
    s.finish(ok_old, State.OK, None, exit_code=0, output="", now=10.0)
    err_old = s.add("", queue="q", argv=["t"], now=1.0)
    s.claim(err_old, pid=1, instance="i", now=2.0)
    s.finish(err_old, State.ERR, "timeout", exit_code=-15, output="", now=10.0)
    ok_new = s.start("j", due=None, attempt=0, pid=1, instance="i", queue=None, now=1.0)
    s.finish(ok_new, State.OK, None, exit_code=0, output="", now=100.0)
    running = s.start("j", due=None, attempt=0, pid=1, instance="i", queue=None, now=1.0)
    # OK runs older than 50 go; ERR runs are kept down to 5 only.
    purged = s.purge(ok_before=50.0, err_before=5.0)
    assert (purged.count, purged.queued_ids) == (1, [])
    assert s.get(ok_old) is None and s.get(err_old) is not None
    purged = s.purge(ok_before=50.0, err_before=50.0)
    assert (purged.count, purged.queued_ids) == (1, [err_old])
    assert {r.id for r in s.history()} == {ok_new, running}


def test_batch_groups_writes_and_rolls_back_on_error(tmp_path: Path) -> None:
    s = store(tmp_path)
    other = SqliteStore(s.path)  # another process's view (the CLI)
    with s.batch():
        a = s.add("", queue="q", argv=["a"], now=1.0)
        with s.batch():  # nested: still one transaction
            s.claim(a, pid=5, instance="i", now=2.0)
        assert other.get(a) is None  # nothing committed yet
    assert other.get(a).state is State.RUN  # type: ignore[union-attr]
    try:
        with s.batch():
            s.add("", queue="q", argv=["b"], now=3.0)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [r.id for r in other.history()] == [a]


def test_housekeeping_purges_history_and_status_files(tmp_path: Path) -> None:
    from taskserver.runtime import housekeeping, statusfile
    from taskserver.runtime.model import Config, ServerSettings, TenantDef

    server = ServerSettings(state_dir=tmp_path / "state", keep_ok_days=1, keep_err_days=2)
    s = store(tmp_path)
    day = housekeeping.DAY
    now = 100 * day
    old = s.add("", queue="q", argv=["x"], now=now - 5 * day)
    s.claim(old, pid=1, instance="i", now=now - 5 * day)
    done = s.finish(old, State.OK, None, exit_code=0, output="", now=now - 1.5 * day)
    failed = s.add("", queue="q", argv=["y"], now=now - 5 * day)
    s.claim(failed, pid=1, instance="i", now=now - 5 * day)
    kept = s.finish(failed, State.ERR, "exit code 1", exit_code=1, output="", now=now - 1.5 * day)
    paths = [statusfile.update(server.state_dir, "t", r) for r in (done, kept)]
    config = Config(path=tmp_path / "c.yaml", exists=True, server=server, tenants=(TenantDef("t", "t"),))
    assert housekeeping.purge({"t": s}, config, now) == 1
    assert not paths[0].exists() and paths[1].exists()
    assert s.get(old) is None and s.get(failed) is not None
