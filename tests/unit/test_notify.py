"""The sd_notify client against a real unix datagram socket bound by the test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserver.runtime.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_from_env_without_socket_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier.from_env() is None
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert Notifier.from_env() is None


def test_each_message_arrives(listener: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier.from_env()
    assert n is not None
    n.ready()
    assert _recv(sock) == ["READY=1", f"MAINPID={os.getpid()}"]
    n.status("2 jobs\nrunning")
    assert _recv(sock) == ["STATUS=2 jobs running"]
    n.ping()
    assert _recv(sock) == ["WATCHDOG=1"]
    n.reloading()
    assert _recv(sock) == ["RELOADING=1"]
    n.stopping()
    assert _recv(sock) == ["STOPPING=1"]


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"taskserver-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    n = Notifier.from_env()
    assert n is not None
    n.ping()
    assert sock.recv(100) == b"WATCHDOG=1"
    sock.close()


def test_watchdog_interval_is_half_the_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "x.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    assert n is not None and n.watchdog_interval() == 1.5
    # meant for another process: not ours to ping
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = Notifier.from_env()
    assert n is not None and n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    assert n is not None and n.watchdog_interval() == 1.5


def test_gone_supervisor_does_not_raise(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    n.ready()
    assert n.send("STATUS=x") is False


def test_on_ready_hook_runs_once_without_socket() -> None:
    calls: list[int] = []
    n = Notifier(None, on_ready=lambda: calls.append(1))
    n.ready()
    n.ready()
    assert calls == [1]
