"""Notifications by command, against a real daemon (issue 13): the command gets the JSON summary on stdin and
TASKSERVER_* in the job's clean environment; crashed and missed outcomes notify too."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from daemonlab import Daemon, cli, kill_group, runs, status_text, wait_for, write_config
from notifylab import flag_job, run_job

from taskserver.runtime.jobenv import SAFE_PATH

RECORD = 'cat > "$1/$TASKSERVER_EVENT-$$.json" && env > "$1/$TASKSERVER_EVENT-$$.env"'


def recorder(out: Path, **extra: Any) -> dict[str, Any]:
    """A notify entry whose command writes its stdin and environment into ``out``, one pair per call."""
    out.mkdir(exist_ok=True)
    return {"command": ["sh", "-c", RECORD, "sh", str(out)], **extra}


def calls(out: Path) -> list[tuple[dict[str, Any], dict[str, str]]]:
    got = []
    for path in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime_ns):
        env_file = path.with_suffix(".env")
        if not env_file.exists() or not env_file.read_text().endswith("\n"):
            continue  # still being written
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        got.append((json.loads(path.read_text()), env))
    return got


def events(out: Path) -> list[str]:
    return [summary["event"] for summary, _ in calls(out)]


def test_the_command_reads_the_summary_and_sees_only_the_clean_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "daemon-secret")  # in the daemon's own environment only
    out, flag = tmp_path / "out", tmp_path / "flag"
    job = flag_job(flag, environment={"JOB_VAR": "from-the-job"}, notify=recorder(out))
    cfg = write_config(tmp_path / "ts.yaml", {"report": job})
    daemon = Daemon(cfg)
    try:
        ended = run_job(cfg, "report", 9, flag)
        wait_for(lambda: events(out) == ["failure"], "the command's call")
    finally:
        daemon.stop()
    (summary, env), = calls(out)
    assert (summary["event"], summary["tenant"], summary["job"], summary["run_id"]) == (
        "failure", "t", "report", ended["id"])
    assert (summary["state"], summary["reason"], summary["exit_code"]) == ("ERR", "exit code 9", 9)
    own = {k: v for k, v in env.items() if k.startswith("TASKSERVER_")}
    assert own["TASKSERVER_EVENT"] == "failure" and own["TASKSERVER_RUN_ID"] == str(ended["id"])
    assert (own["TASKSERVER_TENANT"], own["TASKSERVER_JOB"]) == ("t", "report")
    assert own["TASKSERVER_STATE"] == "ERR" and own["TASKSERVER_ATTEMPT"] == "0"
    assert (own["TASKSERVER_REASON"], own["TASKSERVER_EXIT_CODE"]) == ("exit code 9", "9")
    assert own["TASKSERVER_STARTED"] == summary["started"]
    assert own["TASKSERVER_FINISHED"] == summary["finished"]
    assert env["PATH"] == SAFE_PATH and env["JOB_VAR"] == "from-the-job"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) - set(own) <= {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "JOB_VAR", "PWD", "SHLVL", "_"}


def test_a_job_process_killed_by_a_signal_notifies_crashed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = {"command": ["sleep", "300"], "notify": recorder(out, on=["crashed"])}
    cfg = write_config(tmp_path / "ts.yaml", {"sleeper": job})
    daemon = Daemon(cfg)
    try:
        rid = int(cli(cfg, "jobs", "run", "sleeper").stdout)
        pid = wait_for(lambda: next((r["pid"] for r in runs(cfg) if r["id"] == rid and r["pid"]), None),
                       "the run's process")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: events(out) == ["crashed"], "the crashed notification")
    finally:
        daemon.stop()
    (summary, _), = calls(out)
    assert (summary["run_id"], summary["reason"], summary["exit_code"]) == (rid, "crashed", -9)


def test_a_run_left_by_a_killed_daemon_notifies_crashed_at_the_restart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = {"command": ["sleep", "300"], "notify": recorder(out)}
    cfg = write_config(tmp_path / "ts.yaml", {"sleeper": job})
    daemon = Daemon(cfg)
    pid = None
    try:
        rid = int(cli(cfg, "jobs", "run", "sleeper").stdout)
        pid = wait_for(lambda: next((r["pid"] for r in runs(cfg) if r["id"] == rid and r["pid"]), None),
                       "the run's process")
        daemon.signal(signal.SIGKILL)
        daemon.wait()
    finally:
        daemon.stop()
        kill_group(pid)  # gone before the restart: its end is unknown, so crashed
    again = Daemon(cfg, "--once")
    assert again.wait() == 0, again.text()
    assert events(out) == ["crashed"]  # the daemon waited for its delivery before it exited
    (summary, _), = calls(out)
    assert summary["run_id"] == rid and summary["reason"] == "crashed"


def test_due_times_missed_in_a_downtime_notify_missed_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = {"every": 600, "command": ["true"], "catch_up": "skip", "notify": recorder(out)}
    cfg = write_config(tmp_path / "ts.yaml", {"hourly": job})
    assert Daemon(cfg, "--once").wait() == 0  # the job is known from now on
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:  # an hour of downtime: its six due times pass unrun
        db.execute("UPDATE jobs SET last_due = ?", (time.time() - 3690,))
    db.close()
    again = Daemon(cfg, "--once")
    assert again.wait() == 0, again.text()
    assert events(out) == ["missed"]  # six records, one streak, one notification
    (summary, env), = calls(out)
    assert summary["missed"] == 6 and summary["reason"] == "missed" and summary["run_id"] is None
    assert "the daemon was stopped" in summary["message"] and env["TASKSERVER_MISSED"] == "6"
    assert sum(r["reason"] == "missed" for r in runs(cfg)) == 6


def test_due_times_past_max_late_notify_missed_and_the_runs_caught_up_recover(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = {"every": 600, "command": ["true"], "catch_up": "all", "max_late": "30m", "notify": recorder(out)}
    cfg = write_config(tmp_path / "ts.yaml", {"sync": job})
    assert Daemon(cfg, "--once").wait() == 0
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:  # six due times passed; the three more than 30 minutes late are missed, three are run late
        db.execute("UPDATE jobs SET last_due = ?", (time.time() - 3690,))
    db.close()
    again = Daemon(cfg, "--once")
    assert again.wait() == 0, again.text()
    assert events(out) == ["missed", "recovered"]
    missed, recovered = (s for s, _ in calls(out))
    assert missed["missed"] == 3 and "later than max_late" in missed["message"]
    assert recovered["state"] == "OK" and recovered["run_id"] is not None
    assert sorted(r["reason"] or r["state"] for r in runs(cfg)) == ["OK"] * 3 + ["missed"] * 3


def test_a_due_time_missed_behind_a_long_run_notifies_missed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = {"every": "1s", "command": ["sleep", "4"], "notify": recorder(out, on=["missed"])}
    cfg = write_config(tmp_path / "ts.yaml", {"slow": job})
    daemon = Daemon(cfg)
    try:
        wait_for(lambda: "missed" in events(out), "a missed notification")
    finally:
        daemon.stop()
    summary = next(s for s, _ in calls(out) if s["event"] == "missed")
    assert "the previous run was still going" in summary["message"]


def test_a_command_past_its_timeout_is_killed_with_its_group_and_counted_failed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hang = ["sh", "-c", f'sleep 300 & echo $! > {pid_file}; wait']  # a child in its group, too
    job = {"command": ["false"], "notify": {"command": {"argv": hang, "timeout": "1s"}}}
    cfg = write_config(tmp_path / "ts.yaml", {"hangs": job})
    daemon = Daemon(cfg)
    try:
        cli(cfg, "jobs", "run", "hangs")
        wait_for(lambda: "1 failed" in status_text(cfg), "the timeout counted")
    finally:
        daemon.stop()
    assert "command notification (failure) failed: sh: timed out after 1 s" in daemon.text(), daemon.text()
    child = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists() or
             Path(f"/proc/{child}/stat").read_text().split()[2] == "Z", "the group's sleep to end")
