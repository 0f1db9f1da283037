"""A real daemon stalled (SIGSTOP/SIGCONT) and under a stepped wall clock (libfaketime), checked in its store.

- Stall: the due times that passed while the daemon was stopped go through each job's catch_up and max_late
  exactly as after downtime, and each missed record says what happened (the daemon could not act), never
  "the previous run was still going".
- Clock set forward: the same, and the notes say the clock was set forward.
- Clock set back: an interval job keeps running at its interval (no stall for the length of the step), and no
  stored last due time stays in the future.

libfaketime moves only the wall clock (FAKETIME_DONT_FAKE_MONOTONIC=1), as a real clock step does; the
daemon reads the step against CLOCK_BOOTTIME. The offset lives in a file the test rewrites.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clocklab import faketime_env
from daemonlab import TASKSERVER, cli, runs, sandbox_env, wait_for, write_config

STALLED = "could not act between"


def _start(cfg: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**sandbox_env(cfg), **(extra or {})}
    log = (cfg.parent / "daemon.log").open("w")
    return subprocess.Popen([TASKSERVER, "-c", str(cfg), "-v", "run"], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _of(cfg: Path, job: str) -> list[dict[str, Any]]:
    return [r for r in runs(cfg) if r["job"] == job]


def _ok(cfg: Path, job: str) -> int:
    return sum(r["state"] == "OK" for r in _of(cfg, job))


def _last_dues(cfg: Path) -> dict[str, float]:
    path = cfg.parent / "state" / "t.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=30)
    try:
        return dict(db.execute("SELECT name, last_due FROM jobs").fetchall())
    except sqlite3.OperationalError:
        return {}  # the daemon has created the file but not yet its tables
    finally:
        db.close()


POLICIES = {
    "latest": {"catch_up": "latest"},
    "skip": {"catch_up": "skip"},
    "all": {"catch_up": "all"},
    "late": {"catch_up": "latest", "max_late": "2s"},
}


def test_a_stall_is_handled_like_downtime_with_true_notes(tmp_path: Path) -> None:
    jobs = {name: {"every": "1s", "command": ["true"], **extra} for name, extra in POLICIES.items()}
    cfg = write_config(tmp_path / "cfg.yaml", jobs)
    proc = _start(cfg)
    try:
        wait_for(lambda: all(_ok(cfg, j) >= 2 for j in jobs), "two runs of each job")
        proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        time.sleep(6)  # the stall itself: the daemon is stopped; nothing here is timed or asserted on time
        resumed = time.time()
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: all(any((r["due"] or 0) > resumed for r in _of(cfg, j)) for j in jobs),
                 "a run of each job due after the stall")
    finally:
        _stop(proc)
    for name in jobs:
        stalled = [r for r in _of(cfg, name) if stopped < (r["due"] or 0) < resumed]
        assert len(stalled) >= 4, (name, stalled)  # six seconds of every: 1s
        missed = [r for r in stalled if r["reason"] == "missed"]
        ran = [r for r in stalled if r["reason"] != "missed"]
        assert all(STALLED in r["message"] for r in missed), (name, missed)
        assert not any("previous run" in (r["message"] or "") for r in _of(cfg, name))
        if name == "all":
            assert not missed and len(ran) == len(stalled)  # each one runs, late
        elif name == "late":  # max_late 2s: the newest ran; the oldest were too late, the rest not the newest
            notes = [r["message"] for r in missed]
            assert len(ran) == 1 and any("later than max_late (2 s)" in n for n in notes)
            assert all("max_late" in n or "catch_up: latest" in n for n in notes)
        else:  # latest, and skip (the newest is under a minute late): only the newest runs
            assert len(ran) == 1 and ran[0]["due"] == max(r["due"] for r in stalled)
            assert all(f"catch_up: {name}" in r["message"] for r in missed)


def test_a_forward_clock_step_follows_the_catch_up_policy(tmp_path: Path) -> None:
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    jobs = {"tick": {"every": "2s", "command": ["true"], "catch_up": "latest"},
            "minutely": {"cron": "* * * * *", "command": ["true"], "catch_up": "skip"},
            "slow": {"every": "1s", "command": ["sleep", "3"], "timeout": "1m"}}
    cfg = write_config(tmp_path / "cfg.yaml", jobs)
    proc = _start(cfg, faketime_env(rc))
    try:
        wait_for(lambda: _ok(cfg, "tick") >= 1 and any(r["state"] == "RUN" for r in _of(cfg, "slow")),
                 "a first run, and a slow one going")
        stepped = time.time()
        rc.write_text("+7200\n")
        wait_for(lambda: any((r["due"] or 0) > stepped + 7000 and r["state"] == "OK"
                             for r in _of(cfg, "tick")), "a run after the step")
        wait_for(lambda: any(r["reason"] == "missed" for r in _of(cfg, "minutely")), "minutely's records")
    finally:
        _stop(proc)
    for name in ("tick", "minutely"):
        missed = [r for r in _of(cfg, name) if r["reason"] == "missed"]
        assert missed and all("the system clock was set forward by 7200 s" in r["message"] for r in missed)
    tick = _of(cfg, "tick")
    summary = [r for r in tick if "(summarised)" in (r["message"] or "")]
    assert len(summary) == 1 and int(summary[0]["message"].split()[0]) > 3000  # 2 h of every: 2s
    after = [r for r in tick if (r["due"] or 0) > stepped + 7000 and r["reason"] != "missed"]
    assert after, tick  # the newest ran (catch_up: latest)
    slow = _of(cfg, "slow")  # its timeout is elapsed time: the step did not end the run going then
    assert any(r["state"] == "OK" for r in slow) and not any(r["reason"] == "timeout" for r in slow), slow


def test_a_backward_clock_step_does_not_stall_intervals(tmp_path: Path) -> None:
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": "1s", "command": ["true"]}})
    proc = _start(cfg, faketime_env(rc))
    try:
        wait_for(lambda: _ok(cfg, "tick") >= 2, "two runs")
        stepped = time.time()
        rc.write_text("-3600\n")
        wait_for(lambda: sum(r["state"] == "OK" and (r["due"] or 0) < stepped - 3000
                             for r in _of(cfg, "tick")) >= 3, "three runs on the clock set back", timeout=30)
        stored = _last_dues(cfg)["tick"]
        assert stored < time.time() - 3600 + 60  # not an hour in the future of the daemon's clock
    finally:
        _stop(proc)
    # a step back makes nothing late: a missed record may come only from a loaded machine delaying the
    # daemon past a 1 s interval, and then its note says so (never that the clock moved)
    notes = [r["message"] or "" for r in _of(cfg, "tick") if r["reason"] == "missed"]
    assert all("could not act" in n and "clock" not in n for n in notes), notes


def test_a_backward_clock_step_during_the_sleep_before_a_due_time_does_not_stretch_it(tmp_path: Path) -> None:
    """The loop splits the sleep before a job's due time to rehearse its firing (runtime/rehearse.py): the
    clock set back by an hour while it sleeps towards the next run (every: 4s) must not add the hour to the
    sleep's second part; the next run comes at its interval."""
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": "4s", "command": ["true"]}})
    proc = _start(cfg, faketime_env(rc))
    try:
        wait_for(lambda: _ok(cfg, "tick") >= 1, "a first run")
        time.sleep(1.5)  # the daemon is well into its sleep towards the next due time
        rc.write_text("-3600\n")
        wait_for(lambda: _ok(cfg, "tick") >= 2, "the next run, on the clock set back", timeout=15)
    finally:
        _stop(proc)


def test_a_restart_keeps_the_interval_grid(tmp_path: Path) -> None:
    """every: 20s, last due D, the daemon stopped at D+5 and started at D+10: `jobs list` says D+20 and the
    next run is due at D+20 (not D+30, one interval after the start)."""
    cfg = write_config(tmp_path / "cfg.yaml", {"j": {"every": "20s", "command": ["true"]}})
    first = _start(cfg)
    try:
        wait_for(lambda: "j" in _last_dues(cfg), "the job to be known")
    finally:
        _stop(first)
    anchor = time.time() - 10  # D: the daemon "ran" it 10 s ago
    db = sqlite3.connect(cfg.parent / "state" / "t.sqlite")
    with db:
        db.execute("UPDATE jobs SET last_due=?", (anchor,))
    db.close()
    listed = json.loads(cli(cfg, "jobs", "list", "--json").stdout)
    assert [j["next_due"] for j in listed] == [datetime.fromtimestamp(anchor + 20, UTC).isoformat(
        timespec="seconds")]
    proc = _start(cfg)
    try:
        wait_for(lambda: _of(cfg, "j"), "the next run")
    finally:
        _stop(proc)
    assert _of(cfg, "j")[0]["due"] == pytest.approx(anchor + 20, abs=1e-3)


def test_a_backward_clock_step_while_a_task_writes_does_not_stall_intervals(tmp_path: Path) -> None:
    """A task writing without pause keeps the loop in a stretch of output (read, no wake-up's work). When
    the clock is set back within it, the stretch still ends where its sleep was to end, and the wake-up
    then sees the step: a sleep worked out afresh on the stepped clock ran to a minute, with no run due."""
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": "1s", "command": ["true"]}},
                       server={"stop_timeout": "1s"})  # the writer ends at the stop
    proc = _start(cfg, faketime_env(rc))
    try:
        wait_for(lambda: _ok(cfg, "tick") >= 2, "two runs")
        res = cli(cfg, "jobs", "enqueue", "--", "/bin/sh", "-c", "while :; do echo x; sleep 0.01; done")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: any(r["state"] == "RUN" and r["job"] != "tick" for r in runs(cfg)), "the writer")
        time.sleep(0.5)
        stepped = time.time()
        rc.write_text("-3600\n")
        wait_for(lambda: sum(r["state"] == "OK" and (r["due"] or 0) < stepped - 3000
                             for r in _of(cfg, "tick")) >= 3, "three runs on the clock set back", timeout=30)
    finally:
        _stop(proc)


def test_a_clock_set_back_while_the_daemon_was_down_hides_no_later_downtime(tmp_path: Path) -> None:
    """A daemon whose clock ran an hour ahead stored its jobs' last due times an hour in the future; the
    clock was corrected while it was down. The next daemon went on from the future value (it only moves
    forward), so every downtime of the hour after was recorded nowhere: no missed record, no catch-up."""
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": "1s", "command": ["true"]}})
    first = _start(cfg)
    try:
        wait_for(lambda: "tick" in _last_dues(cfg), "the job to be known")
    finally:
        _stop(first)
    db = sqlite3.connect(cfg.parent / "state" / "t.sqlite")
    with db:
        db.execute("UPDATE jobs SET last_due=?", (time.time() + 3600,))
    db.close()
    second = _start(cfg)
    try:
        wait_for(lambda: _ok(cfg, "tick") >= 2, "runs after the start")
    finally:
        _stop(second)
    assert _last_dues(cfg)["tick"] <= time.time()
    down = time.time()
    time.sleep(4)
    third = _start(cfg)
    try:
        wait_for(lambda: any((r["due"] or 0) > down + 4 for r in _of(cfg, "tick")), "a run after the restart")
    finally:
        _stop(third)
    in_gap = [r for r in _of(cfg, "tick") if down < (r["due"] or 0) < down + 3.5]
    assert len(in_gap) >= 2 and all(r["reason"] == "missed" for r in in_gap), in_gap
