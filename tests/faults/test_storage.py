"""Storage faults: a full disk (a real 2 MiB tmpfs as the state dir), the state dir deleted under a running
daemon, and store files truncated, overwritten, garbled or deleted while the daemon was down."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import runns
from daemonlab import cli, wait_for
from faultlab import (
    audit,
    fill,
    in_namespace,
    job,
    kill_everything,
    lab_config,
    popen,
    rows,
    seen,
    stop_foreground,
)

from taskserver.runtime.model import TenantDef
from taskserver.runtime.sqlite_store import open_sqlite


def log_of(cfg: Path) -> str:
    return (cfg.parent / "daemon.log").read_text(errors="replace")


@pytest.fixture
def tmpfs(tmp_path: Path) -> object:
    """A 2 MiB tmpfs as the state dir, mounted where the daemons run (their mount namespace); the test
    reaches it through seen()."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    state = tmp_path / "state"
    state.mkdir()
    in_namespace("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(state))
    yield seen(state)
    subprocess.run([*runns.prefix(), "umount", "-l", str(state)], check=False)


@pytest.mark.root
def test_a_full_disk_degrades_the_daemon_and_loses_nothing(tmp_path: Path, tmpfs: Path,
                                                           figures: list[str]) -> None:
    cfg = lab_config(tmp_path, {"tick": job(tmp_path, 0.05, every=0.3)})
    proc = popen(cfg, "run")
    try:
        wait_for(lambda: len(rows(cfg)) >= 3, "a few runs")
        fill(tmpfs / "filler")
        wait_for(lambda: "storage fault" in log_of(cfg), "the daemon to notice the full disk")
        assert proc.poll() is None  # degraded, not dead
        assert "degraded: tenant t: storage fault" in cli(cfg, "status").stdout
        # a task that logs like the jobs: if it is taken and runs, the audit holds its record to it too
        queued = cli(cfg, "jobs", "enqueue", "--", *job(tmp_path, 0.05)["command"], check=False)
        assert "Traceback" not in queued.stderr  # it either failed before its commit, or says its id
        assert (queued.returncode == 0) == queued.stdout.strip().isdigit(), queued
        time.sleep(1.5)  # runs keep ending while the disk is full: their ends wait in memory
        (tmpfs / "filler").unlink()
        wait_for(lambda: "writable again" in log_of(cfg), "the daemon to resume")
        done = len(rows(cfg))
        wait_for(lambda: len(rows(cfg)) >= done + 3, "runs after the disk has room again")
        assert "degraded" not in cli(cfg, "status").stdout
        assert stop_foreground(proc) == 0
    finally:
        kill_everything(cfg)
        if proc.poll() is None:
            proc.kill()
    assert log_of(cfg).count("ERROR") <= 3, log_of(cfg)  # one clear error, not one per wake-up
    assert "Traceback" not in log_of(cfg)
    if queued.returncode == 0:
        assert any(r["id"] == int(queued.stdout) for r in rows(cfg))  # the id it reported is real
    fig = audit(cfg, "full disk (2 MiB tmpfs)", 1, {"tick": 0.3})
    figures.append(fig.line())
    fig.assert_clean()


def test_the_state_dir_deleted_under_a_running_daemon_is_detected_and_written_back(
        tmp_path: Path, figures: list[str]) -> None:
    cfg = lab_config(tmp_path, {"tick": job(tmp_path, 0.05, every=0.3)})
    proc = popen(cfg, "run")
    try:
        wait_for(lambda: len(rows(cfg)) >= 3, "a few runs")
        shutil.rmtree(seen(tmp_path / "state"))
        wait_for(lambda: "was deleted while the daemon used it" in log_of(cfg), "the deletion to be seen")
        wait_for(lambda: "wrote the store back" in log_of(cfg), "the store to be written back")
        done = len(rows(cfg))
        wait_for(lambda: len(rows(cfg)) >= done + 3, "runs after the write-back")
        assert stop_foreground(proc) == 0
    finally:
        kill_everything(cfg)
        if proc.poll() is None:
            proc.kill()
    fig = audit(cfg, "state dir deleted while running", 1, {"tick": 0.3})
    figures.append(fig.line())
    fig.assert_clean()


def test_a_store_held_locked_pauses_new_work_and_loses_nothing(tmp_path: Path, figures: list[str]) -> None:
    cfg = lab_config(tmp_path, {"tick": job(tmp_path, 0.05, every=0.3)})
    proc = popen(cfg, "run")
    try:
        wait_for(lambda: len(rows(cfg)) >= 3, "a few runs")
        other = sqlite3.connect(seen(tmp_path / "state" / "t.sqlite"), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another writer that does not let go
        wait_for(lambda: "database is locked" in log_of(cfg), "the daemon to report the locked store")
        assert proc.poll() is None and "degraded" in cli(cfg, "status").stdout
        other.execute("ROLLBACK")
        other.close()
        wait_for(lambda: "writable again" in log_of(cfg), "the daemon to resume")
        done = len(rows(cfg))
        wait_for(lambda: len(rows(cfg)) >= done + 3, "runs after the lock was released")
        assert stop_foreground(proc) == 0
    finally:
        kill_everything(cfg)
        if proc.poll() is None:
            proc.kill()
    fig = audit(cfg, "store held locked by another writer", 1, {"tick": 0.3})
    figures.append(fig.line())
    fig.assert_clean()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def _truncate(p: Path) -> None:
    p.write_bytes(b"")


def _garble(p: Path) -> None:
    with p.open("r+b") as f:
        f.seek(p.stat().st_size // 2)
        f.write(os.urandom(8192))


def _overwrite(p: Path) -> None:
    p.write_bytes(b"#!/bin/sh\necho this is not a database\n" * 300)


BREAKS = {"truncated to 0 bytes": _truncate, "8 KiB of garbage in the middle": _garble,
          "overwritten": _overwrite, "deleted": Path.unlink}


def test_broken_stores_are_refused_at_start_and_never_written_into(tmp_path: Path,
                                                                   figures: list[str]) -> None:
    cfg = lab_config(tmp_path, {"tick": job(tmp_path, 0.01, every=3600)})
    store = open_sqlite(TenantDef(name="t", login="x"), tmp_path / "state")
    with store.batch():
        for i in range(300):
            store.add("", argv=["echo", "x" * 300], now=float(i))
    store.close()
    path = tmp_path / "state" / "t.sqlite"
    good = path.read_bytes()
    for what, breaker in BREAKS.items():
        breaker(path)
        before = digest(path)
        started = cli(cfg, "start", check=False)
        assert started.returncode != 0, (what, started.stdout)
        assert "Traceback" not in started.stderr and "hint:" in started.stderr, (what, started.stderr)
        history = cli(cfg, "jobs", "history", check=False)
        assert "Traceback" not in history.stderr, (what, history.stderr)
        assert digest(path) == before, what  # never written into, never recreated
        path.write_bytes(good)  # restored from the backup
    assert len(rows(cfg)) == 300
    figures.append(f"broken stores: {len(BREAKS)} kinds refused at start, none written into, 300 of 300 "
                   "runs kept")
