"""`taskserver run` under a notify-aware supervisor: a real unix datagram socket bound by the test."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Sandbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.cleanup()


def _messages(sock: socket.socket, until: str, limit: int = 500) -> list[str]:
    """Every KEY=VALUE line received up to and including the first datagram containing ``until``."""
    seen: list[str] = []
    for _ in range(limit):
        lines = sock.recv(4096).decode().split("\n")
        seen.extend(lines)
        if until in lines:
            return seen
    raise AssertionError(f"{until} never came; got {seen}")


def test_ready_status_watchdog_stopping(box: Sandbox) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = box.base / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(30)
    # 0.2 s watchdog timeout: the daemon must ping at least every 0.1 s while it has nothing else to do
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
    proc = box.popen(box.base / "a.yaml", "run", env=env)
    try:
        first = _messages(sock, "READY=1")
        assert f"MAINPID={proc.pid}" in first
        after_ready = _messages(sock, "WATCHDOG=1")
        assert any(m.startswith("STATUS=") for m in first + after_ready)
        # pings keep coming while idle (no job is configured: only the watchdog wakes it)
        for _ in range(3):
            _messages(sock, "WATCHDOG=1")
        # reload (the config is parsed in a child meanwhile): RELOADING=1, then READY=1 again
        proc.send_signal(signal.SIGHUP)
        _messages(sock, "RELOADING=1")
        _messages(sock, "READY=1")
        proc.send_signal(signal.SIGTERM)
        _messages(sock, "STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_no_watchdog_pings_without_watchdog_usec(box: Sandbox) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = box.base / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(30)
    proc = box.popen(box.base / "a.yaml", "run", env={"NOTIFY_SOCKET": str(path)})
    try:
        _messages(sock, "READY=1")
        proc.send_signal(signal.SIGTERM)
        rest = _messages(sock, "STOPPING=1")
        assert "WATCHDOG=1" not in rest
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
