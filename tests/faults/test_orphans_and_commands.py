"""The orphan policy seen from outside, and commands that tell the truth about what they committed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from daemonlab import cli, me, wait_for, write_config
from faultlab import job, job_processes, kill_everything, lab_config, popen, rows

from taskserver.runtime import liveness
from taskserver.runtime.runs import PID_DELAY
from taskserver.runtime.stores import MAX_SLEEP


def test_a_live_orphan_is_stopped_at_the_restart_and_recorded_interrupted(tmp_path: Path) -> None:
    cfg = lab_config(tmp_path, {"long": job(tmp_path, 300, ignore_term=True)})
    rid = int(cli(cfg, "jobs", "run", "long").stdout)
    proc = popen(cfg, "run")
    try:
        run = wait_for(lambda: next((r for r in rows(cfg) if r["id"] == rid and r["pid"]), None), "the run")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert liveness.same_process(run["pid"], run["proc_start"], run["boot_id"])  # it outlived its daemon
        again = popen(cfg, "run", "--once")
        assert again.wait(60) == 0
    finally:
        kill_everything(cfg)
    after = next(r for r in rows(cfg) if r["id"] == rid)
    assert (after["state"], after["reason"]) == ("ERR", "interrupted")
    assert "died while it ran" in after["message"] and str(run["pid"]) in after["message"]
    assert job_processes(cfg) == []  # TERM was ignored: it was KILLed after the grace


def test_two_tenants_orphans_with_the_same_run_ids_are_each_settled_by_their_own_processes(
        tmp_path: Path) -> None:
    """Run ids are per tenant: one dead daemon served tenants t and u, each with runs 1 and 2. In t run 1
    lives on and run 2's process is gone; in u the other way round. Each run must be judged by its own
    tenant's processes: a process of u's run 1 is no evidence about t's run 1 (nor stopped for it)."""
    jobs = {"live": job(tmp_path, 300), "gone": job(tmp_path, 300)}
    (tmp_path / "locks").mkdir()
    cfg = write_config(tmp_path / "cfg.yaml", jobs, extra_tenants={"u": {"login": me(), "jobs": jobs}})
    order = {"t": ("live", "gone"), "u": ("gone", "live")}
    ids = {(t, name): int(cli(cfg, "jobs", "run", "--tenant", t, name).stdout)
           for t, names in order.items() for name in names}
    assert ids == {("t", "live"): 1, ("t", "gone"): 2, ("u", "gone"): 1, ("u", "live"): 2}
    proc = popen(cfg, "run")
    try:
        ran = {t: wait_for(lambda t=t: _started(cfg, t, 2), f"both runs of tenant {t}") for t in order}
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for t in order:
            gone = ran[t][ids[t, "gone"]]["pid"]
            os.killpg(gone, signal.SIGKILL)  # its process group: the shell and its sleep
            wait_for(lambda g=gone: not liveness.alive(g), f"the end of {t}'s run {ids[t, 'gone']}")
        again = popen(cfg, "run", "--once")
        assert again.wait(60) == 0
    finally:
        kill_everything(cfg)
    for t in order:
        got = {r["id"]: (r["state"], r["reason"]) for r in rows(cfg, t)}
        assert got == {ids[t, "live"]: ("ERR", "interrupted"), ids[t, "gone"]: ("ERR", "crashed")}, t


def _started(cfg: Path, tenant: str, count: int) -> dict[int, dict[str, Any]] | None:
    """The tenant's runs by id once ``count`` of them have their process recorded."""
    got = {r["id"]: r for r in rows(cfg, tenant) if r["pid"]}
    return got if len(got) == count else None


def test_a_running_tasks_process_is_written_soon_though_nothing_else_wakes_the_daemon(tmp_path: Path) -> None:
    """The launcher does not wake the loop for a pid that landed; the daemon wakes by itself to write it
    (PID_DELAY), long before its longest sleep (MAX_SLEEP): the orphan rule above needs it."""
    cfg = lab_config(tmp_path, {})
    proc = popen(cfg, "run")
    try:
        rid = int(cli(cfg, "jobs", "enqueue", "--", "sleep", "300").stdout)
        run = wait_for(lambda: next((r for r in rows(cfg) if r["id"] == rid and r["pid"]), None), "the pid",
                       timeout=MAX_SLEEP / 2)
        assert liveness.same_process(run["pid"], run["proc_start"], run["boot_id"])
        assert run["state"] == "RUN"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        kill_everything(cfg)
    assert PID_DELAY < MAX_SLEEP / 10


def test_enqueue_reports_its_committed_id_even_when_the_status_file_fails(tmp_path: Path) -> None:
    cfg = lab_config(tmp_path, {})
    cli(cfg, "jobs", "history")  # creates nothing; the store comes with the first enqueue
    status_dir = tmp_path / "state" / "status"
    status_dir.mkdir(parents=True)
    (status_dir / "t").write_text("a file where the tenant's status directory belongs\n")
    got = cli(cfg, "jobs", "enqueue", "--", "true", check=False)
    assert got.returncode == 0 and got.stdout.strip().isdigit(), got
    assert "is queued, but its status file was not written" in got.stderr
    assert [r["id"] for r in rows(cfg)] == [int(got.stdout)]


def test_enqueue_into_a_broken_store_fails_before_anything_is_committed(tmp_path: Path) -> None:
    cfg = lab_config(tmp_path, {})
    cli(cfg, "jobs", "enqueue", "--", "true")
    store = tmp_path / "state" / "t.sqlite"
    store.write_bytes(b"garbage " * 1000)
    got = cli(cfg, "jobs", "enqueue", "--", "true", check=False)
    assert got.returncode != 0 and got.stdout == "", got
    assert "Traceback" not in got.stderr and "not an SQLite database" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 2  # the error and its hint
    assert store.read_bytes() == b"garbage " * 1000
    assert os.path.getsize(store) == 8000
