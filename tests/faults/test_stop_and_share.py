"""`taskserver stop` with jobs that ignore TERM, and two daemons whose configs name one store."""

from __future__ import annotations

import socket
from pathlib import Path

from daemonlab import cli, wait_for
from faultlab import audit, job, job_processes, kill_everything, lab_config, rows

STOPS = 2


def test_stop_waits_for_term_ignoring_jobs_to_be_killed_and_recorded(tmp_path: Path,
                                                                     figures: list[str]) -> None:
    cfg = lab_config(tmp_path, {"stubborn": job(tmp_path, 300, ignore_term=True)}, stop_timeout=0.5)
    try:
        for i in range(STOPS):
            assert "started" in cli(cfg, "start").stdout
            rid = int(cli(cfg, "jobs", "run", "stubborn").stdout)
            wait_for(lambda rid=rid: any(r["id"] == rid and r["pid"] for r in rows(cfg)), f"run {i} to start")
            stop = cli(cfg, "stop", check=False)
            assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
            assert "killing it" not in stop.stderr  # the daemon itself was never SIGKILLed
            run = next(r for r in rows(cfg) if r["id"] == rid)
            assert (run["state"], run["reason"]) == ("ERR", "interrupted")
            assert job_processes(cfg) == []
    finally:
        kill_everything(cfg)
    fig = audit(cfg, "stop with TERM-ignoring jobs", STOPS, {})
    figures.append(fig.line())
    fig.assert_clean()


def test_a_second_daemon_on_the_same_store_refuses_naming_the_first(tmp_path: Path,
                                                                   figures: list[str]) -> None:
    jobs = {"tick": job(tmp_path, 0.05, every=0.3)}
    first = lab_config(tmp_path, jobs, name="a.yaml")
    second = lab_config(tmp_path, jobs, name="b.yaml")  # another config, the same state dir and tenant
    try:
        cli(first, "start")
        pid = cli(first, "status").stdout.split("pid ", 1)[1].split(",", 1)[0]
        wait_for(lambda: len(rows(first)) >= 2, "the first daemon to run the job")
        for args in (("start",), ("run", "--once")):
            refused = cli(second, *args, check=False)
            assert refused.returncode != 0, refused.stdout
            assert "Traceback" not in refused.stderr
            assert (f"in use by another taskserver daemon (pid {pid} on host {socket.gethostname()}, "
                    f"config {first}") in refused.stderr
        assert cli(first, "status").returncode == 0
        cli(first, "stop")
        cli(second, "start")  # free once the first stopped
        before = len(rows(second))
        wait_for(lambda: len(rows(second)) > before, "the second daemon to run the job")
        cli(second, "stop")
    finally:
        kill_everything(first)
    fig = audit(first, "two daemons, one store", 1, {})
    figures.append(fig.line())
    fig.assert_clean()
