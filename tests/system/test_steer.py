"""`taskserver jobs pause|resume|cancel` against a real daemon: a pause is kept in the store across a
restart and its due times are recorded missed with who paused it; a cancelled running run's process group is
stopped (TERM, or KILL after the grace when it ignores TERM), recorded `ERR cancelled by NAME` and not
retried."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from daemonlab import Daemon, cli, me, runs, wait_for, write_config

TRAP = "trap '' TERM; echo started; sleep 300 & echo $! > {pidfile}; wait"


def listing(cfg: Path) -> dict[str, Any]:
    return {r["job"]: r for r in json.loads(cli(cfg, "jobs", "list", "--json").stdout)}


def missed_paused(cfg: Path) -> list[dict[str, Any]]:
    return [r for r in runs(cfg) if r["job"] == "tick" and r["reason"] == "missed"
            and (r["message"] or "").startswith(f"paused by {me()} since ")]


def test_a_pause_holds_across_a_restart_and_history_says_why(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": "1s", "command": ["/bin/true"]}},
                       server={"stop_timeout": "2s"})
    daemon = Daemon(cfg)
    try:
        wait_for(lambda: any(r["state"] == "OK" for r in runs(cfg)), "a first OK run")
        out = cli(cfg, "jobs", "pause", "tick").stdout
        assert out.startswith(f"tick: paused by {me()} since ")
        assert "(already)" in cli(cfg, "jobs", "pause", "tick").stdout
        assert listing(cfg)["tick"]["paused"] and "paused by" in listing(cfg)["tick"]["note"]
        wait_for(lambda: len(missed_paused(cfg)) >= 2, "due times recorded missed while paused")
        daemon.stop()
        daemon = Daemon(cfg)  # the pause is in the store, not in the daemon's memory
        seen = len(missed_paused(cfg))
        wait_for(lambda: len(missed_paused(cfg)) >= seen + 2, "missed records after the restart")
        last_ok = max(r["id"] for r in runs(cfg) if r["state"] == "OK")
        first_missed = min(x["id"] for x in missed_paused(cfg))
        assert all(r["state"] != "OK" for r in runs(cfg) if r["id"] > first_missed)
        assert cli(cfg, "jobs", "resume", "tick").stdout.strip() == "tick: resumed"
        assert not listing(cfg)["tick"]["paused"]
        wait_for(lambda: any(r["state"] == "OK" and r["id"] > last_ok for r in runs(cfg)), "an OK run again")
        assert "was not paused" in cli(cfg, "jobs", "resume", "tick").stdout
    finally:
        daemon.stop()


def test_cancel_stops_a_running_run_that_ignores_term_and_it_is_not_retried(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    cfg = write_config(tmp_path / "cfg.yaml", {
        "stubborn": {"command": ["/bin/sh", "-c", TRAP.format(pidfile=pidfile)], "retries": 2},
    }, server={"stop_timeout": "2s"})
    daemon = Daemon(cfg)
    try:
        run_id = int(cli(cfg, "jobs", "run", "stubborn").stdout)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the run's grandchild")
        grandchild = int(pidfile.read_text())
        out = cli(cfg, "jobs", "cancel", str(run_id)).stdout
        assert "stopping" in out
        wait_for(lambda: runs(cfg)[0]["state"] == "ERR", "the cancelled run to end")
        run = runs(cfg)[0]
        assert (run["reason"], run["exit_code"]) == (f"cancelled by {me()}", -signal.SIGKILL)
        assert not _alive(grandchild)  # the whole process group was stopped
        assert len(runs(cfg)) == 1  # no retry of a run someone stopped
        again = cli(cfg, "jobs", "cancel", str(run_id)).stdout
        assert again.strip() == f"run {run_id}: ERR cancelled by {me()}"  # nothing more to do
        r = cli(cfg, "jobs", "cancel", "999", check=False)
        assert r.returncode == 2 and "no run 999" in r.stderr and "Traceback" not in r.stderr
    finally:
        daemon.stop()


def test_cancel_while_no_daemon_runs_is_recorded_as_cancelled_by_the_next(tmp_path: Path) -> None:
    """kill -9 of the daemon, then `jobs cancel` of its running run: the command said the daemon would
    stop it though none ran, and the next daemon recorded `ERR interrupted`, not who cancelled it."""
    pidfile = tmp_path / "grandchild.pid"
    cfg = write_config(tmp_path / "cfg.yaml", {
        "stubborn": {"command": ["/bin/sh", "-c", TRAP.format(pidfile=pidfile)], "retries": 2},
    })
    daemon = Daemon(cfg)
    try:
        run_id = int(cli(cfg, "jobs", "run", "stubborn").stdout)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the run's grandchild")
        daemon.signal(signal.SIGKILL)
        daemon.wait()
    finally:
        daemon.stop()
    grandchild = int(pidfile.read_text())
    said = cli(cfg, "jobs", "cancel", str(run_id))
    assert "no daemon is running" in said.stderr, said.stderr
    again = Daemon(cfg, "--once")
    assert again.wait() == 0, again.text()
    run = runs(cfg)[0]
    assert (run["state"], run["reason"]) == ("ERR", f"cancelled by {me()}"), run
    assert not _alive(grandchild)
    assert len(runs(cfg)) == 1  # a run someone stopped is not retried


def test_cancel_of_a_queued_run_and_pause_of_an_unknown_job(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"j": {"command": ["/bin/true"]}})
    run_id = cli(cfg, "jobs", "enqueue", "--", "/bin/true").stdout.strip()  # no daemon: it waits QUE
    got = json.loads(cli(cfg, "jobs", "cancel", run_id, "--json").stdout)
    assert (got["state"], got["reason"]) == ("ERR", f"cancelled by {me()}")
    r = cli(cfg, "jobs", "pause", "nope", check=False)
    assert r.returncode == 2 and "has no job 'nope'" in r.stderr and "Traceback" not in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
