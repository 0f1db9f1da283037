"""Task rows that `jobs enqueue` would refuse, already in a real SQLite store (written there by an older
version, by hand, or by anything else with the file), must not take the daemon down nor forge status lines.

A real `taskserver run` daemon is woken (SIGUSR1) to start them: each hostile task ends ERR with a reason,
a good task queued behind them still runs OK, the daemon is still running afterwards, each status file has
exactly its own lines, and a restart (`run --once`) over the same store goes through as well.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from taskserver.runtime.model import TenantDef
from taskserver.runtime.sqlite_store import open_sqlite

BIN = Path(sys.executable).parent
WAIT = 60.0
STATUS_KEYS = ["id", "tenant", "job", "queue", "argv", "reason", "exit_code", "message", "created", "started",
               "finished"]

# (argv column as stored, queue, message)
HOSTILE: list[tuple[str | None, str | None, str | None]] = [
    ('[""]', None, None),
    ('["", "x"]', "q1", None),
    (json.dumps(["/bin/true\0x"]), None, None),
    ("[]", None, None),
    ("not json at all", None, None),
    ('"/bin/true"', None, None),
    ("[1, 2]", None, None),
    ("null", None, None),
    ('{"a": 1}', None, None),
    (None, None, None),  # neither argv nor job: no such job
    (json.dumps(["x" * 300_000]), None, None),
    (json.dumps(["/bin/true"] * 5000), None, None),
    (json.dumps(["/nonexistent/program"]), "x\nstate=OK", "m\nstate=OK"),
    (json.dumps(["/nonexistent/other"]), "a/b", "m" * 1_000_000),
]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSERVER_")}
    env.update(RUNTIME_DIRECTORY=str(tmp / "run"), XDG_RUNTIME_DIR=str(tmp / "run"),
               STATE_DIRECTORY=str(tmp / "state"), XDG_STATE_HOME=str(tmp / "state"))
    return env


def _config(tmp: Path) -> Path:
    me = pwd.getpwuid(os.getuid()).pw_name
    path = tmp / "c.yaml"
    path.write_text(json.dumps({"task_server": {"run_as": me, "state_dir": str(tmp / "state")},
                                "tenants": {"t": {"login": me}}}))
    path.chmod(0o600)
    return path


def _insert(db: Path, rows: list[tuple[str | None, str | None, str | None]]) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [int(conn.execute(
            "INSERT INTO runs (job, queue, state, created, argv, queued, message) "
            "VALUES ('', ?, 'QUE', ?, ?, 1, ?)",
            (queue, time.time(), argv, message)).lastrowid or 0) for argv, queue, message in rows]


def _states(db: Path) -> dict[int, tuple[str, str | None, str]]:
    with sqlite3.connect(db) as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, state, reason, output FROM runs")}


def _wait_settled(db: Path, ids: list[int]) -> dict[int, tuple[str, str | None, str]]:
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        states = _states(db)
        if all(states[i][0] in ("OK", "ERR") for i in ids):
            return states
        time.sleep(0.1)
    raise AssertionError(f"runs not settled: {_states(db)}")


def _check_status_files(state: Path, ids: list[int]) -> None:
    """Each status file ends as its run did. It is rewritten just after the end's commit, so a file read the
    moment the store says ERR may still say RUN (the window is widest for a 1 MB message on a busy
    machine): each gets until WAIT to say so."""
    end = time.monotonic() + WAIT
    for run_id in ids:
        path = state / "status" / "t" / str(run_id)
        while (lines := path.read_text().splitlines())[:1] == ["RUN"] and time.monotonic() < end:
            time.sleep(0.05)
        assert lines[0] in ("OK", "ERR"), lines[:3]
        assert [ln.split("=", 1)[0] for ln in lines[1:]] == STATUS_KEYS, [ln[:80] for ln in lines]


def test_hostile_stored_tasks_end_err_and_the_daemon_goes_on(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    db = tmp_path / "state" / "t.sqlite"
    open_sqlite(TenantDef(name="t", login="x"), tmp_path / "state").close()  # the schema, as the daemon's
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(BIN / "taskserver"), "-c", str(cfg), "-v", "run"], stdout=log,
                              stderr=subprocess.STDOUT, env=_env(tmp_path))
    try:
        hostile = _insert(db, HOSTILE)
        good = _insert(db, [(json.dumps(["/bin/echo", "fine"]), "q1", None)])
        time.sleep(1.0)  # let it come up; SIGUSR1 before its handler is set would end it
        daemon.send_signal(signal.SIGUSR1)
        states = _wait_settled(db, hostile + good)
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
        for run_id in hostile:
            assert states[run_id][0] == "ERR" and states[run_id][1] in ("spawn failed", "no such job"), states
        assert states[good[0]][:2] == ("OK", None) and "fine" in states[good[0]][2]
        _check_status_files(tmp_path / "state", hostile + good)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(WAIT)
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    # and once more with the same hostile rows waiting from the start, as after a restart
    again = _insert(db, HOSTILE)
    proc = subprocess.run([str(BIN / "taskserver"), "-c", str(cfg), "run", "--once", "--time-limit", "30"],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=WAIT * 2, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(_states(db)[i][0] == "ERR" for i in again)
