"""Ways `taskserver run` ends by itself with exit 0: --time-limit, --once, and the memory limit."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Sandbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.cleanup()


def _config(box: Sandbox, memory_limit: str, output: int = 0) -> Path:
    """One job every second; ``output``: bytes it writes to stdout, each kept (output_tail) by the daemon."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    cfg = box.base / "taskserver.yaml"
    cfg.write_text(
        "task_server:\n"
        f"  run_as: {me}\n"
        f"  state_dir: {box.base / 'srv-state'}\n"
        f"  memory_limit: {memory_limit}\n"
        "  output_tail: 64M\n"
        "tenants:\n"
        "  acme:\n"
        f"    login: {me}\n"
        "    jobs:\n"
        "      tick:\n"
        "        every: 1s\n"
        f'        command: ["/bin/sh", "-c", "echo run >> {box.base}/ticks; head -c {output} /dev/zero"]\n'
    )
    cfg.chmod(0o644)
    return cfg


def test_memory_limit_ends_the_daemon_with_exit_0(box: Sandbox) -> None:
    cfg = _config(box, "32M", 48 << 20)  # the smallest limit; the output the daemon holds takes it over
    res = box.ts(cfg, "run", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "memory limit" in res.stderr
    assert box.ts(cfg, "status").returncode == 3  # the pid file was released


def test_generous_memory_limit_keeps_running_until_the_time_limit(box: Sandbox) -> None:
    cfg = _config(box, "1G")
    res = box.ts(cfg, "run", "--time-limit", "2.5", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "memory limit" not in res.stderr
    assert "time limit" in res.stderr
    assert (box.base / "ticks").read_text().count("run") >= 1  # it did work before the limit


def test_once_runs_and_exits(box: Sandbox) -> None:
    res = box.ts(box.base / "none.yaml", "run", "--once", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "no config file at" in res.stderr
