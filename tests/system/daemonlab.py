"""Helpers for the daemon and `jobs` system tests: a real config file, the real `taskserver` command run as
a subprocess, and reads of the real SQLite store.  Waits are for a condition with a generous limit; nothing
here measures time.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import runns

TASKSERVER = str(Path(sys.executable).parent / "taskserver")
WAIT = 60.0


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def write_config(path: Path, jobs: dict[str, Any] | None = None, *, server: dict[str, Any] | None = None,
                 extra_tenants: dict[str, Any] | None = None) -> Path:
    """JSON is YAML: the config file the daemon reads, with tenant `t` (login: the current user)."""
    doc = {
        "task_server": {"run_as": me(), "state_dir": str(path.parent / "state"), **(server or {})},
        "tenants": {"t": {"login": me(), "jobs": jobs or {}}, **(extra_tenants or {})},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.chmod(0o600)
    return path


def sandbox_env(cfg: Path) -> dict[str, str]:
    """The caller's environment without TASKSERVER_*, with any default state dir next to the config; pid
    files go to the session's private /run/taskserver (runns.py): a test never writes the host's
    /run/taskserver or /var/lib/taskserver."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSERVER_")}
    env.update(STATE_DIRECTORY=str(cfg.parent / "state"), XDG_STATE_HOME=str(cfg.parent / "state"))
    return env


def cli(cfg: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = sandbox_env(cfg)
    proc = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"taskserver {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


class Daemon:
    """`taskserver -c CFG run ...` in the background, its log in a file."""

    def __init__(self, cfg: Path, *args: str) -> None:
        self.log = cfg.parent / f"daemon-{time.monotonic_ns()}.log"
        env = sandbox_env(cfg)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([*runns.prefix(), TASKSERVER, "-c", str(cfg), "-v", "run", *args],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def status_text(cfg: Path) -> str:
    """`taskserver status`'s output for polling: while the daemon is still starting (on a loaded machine a
    few seconds after its start) the command says so with exit code 3, which is a wait, not a failure."""
    return cli(cfg, "status", check=False).stdout


def wait_for(cond: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def runs(cfg: Path, tenant: str = "t") -> list[dict[str, Any]]:
    """Every run in the tenant's store, oldest first."""
    db_path = cfg.parent / "state" / f"{tenant}.sqlite"
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # the daemon has created the file but not yet its tables
        raise
    finally:
        db.close()


def status_file(cfg: Path, run_id: int, tenant: str = "t") -> Path:
    return cfg.parent / "state" / "status" / tenant / str(run_id)


def first_line(path: Path) -> str:
    try:
        return path.read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return ""


def kill_group(pid: int | None) -> None:
    """Clean up a job's process group a killed daemon left behind."""
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
