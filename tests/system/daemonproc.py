"""Helpers for system tests that drive the real installed ``taskserver`` command as subprocesses.

Every test gets its own state dir inside a private temporary directory; pid files go to the session's private
/run/taskserver (see runns.py), so tests never touch the host's /run or /var/lib and can run in parallel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import runns

from taskserver.runtime.config import instance_name

# the console script installed next to the interpreter running the tests (the project's venv)
TASKSERVER = str(Path(sys.executable).parent / "taskserver")
_SUPERVISOR_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "TASKSERVER_CONFIG")


class Sandbox:
    """A place for configs, pid files and state, plus a way to run ``taskserver -c CONFIG ...``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.run_dir = runns.run_dir()
        self.state_dir = base / "state"
        self.state_dir.mkdir(mode=0o755, exist_ok=True)
        self.started: list[Path] = []

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SUPERVISOR_VARS}
        env.update(
            STATE_DIRECTORY=str(self.state_dir),
            XDG_STATE_HOME=str(self.state_dir),
        )
        env.update(extra or {})
        return env

    def ts(
        self, config: Path, *argv: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if argv and argv[0] in ("start", "restart"):
            self.started.append(config)
        return subprocess.run(
            [*runns.prefix(), TASKSERVER, "-c", str(config), *argv],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, config: Path, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*runns.prefix(), TASKSERVER, "-c", str(config), *argv],
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def pidfile(self, config: Path) -> Path:
        """The pid file of this config's daemon (the run dir is shared by the whole session)."""
        return self.run_dir / f"{instance_name(config)}.pid"

    def pid_of(self, config: Path) -> int:
        """The pid `status` reports for a running daemon."""
        out = self.ts(config, "status").stdout
        return int(out.split("pid ", 1)[1].split(",", 1)[0])

    def cleanup(self) -> None:
        """Stop whatever a test left running; kill it if stop fails."""
        for config in self.started:
            if self.ts(config, "status").returncode == 0:
                pid = self.pid_of(config)
                if self.ts(config, "stop", timeout=30).returncode != 0:
                    kill_quietly(pid)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; tests use it to wait, never to measure."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
