"""The store's wake-up socket (runtime/sqlite_wake.py WakeSocket) under a state dir too deep for a socket
address: the daemon still binds it where it belongs and `jobs enqueue` still reaches it."""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

from taskserver.runtime.sqlite_wake import WakeSocket


def _deep(base: Path, length: int) -> Path:
    """A directory whose path is at least ``length`` bytes long."""
    path = base
    while len(os.fsencode(path)) < length:
        path = path / ("d" * 40)
    path.mkdir(parents=True)
    return path


def _woken(listener: WakeSocket, sender: WakeSocket) -> bool:
    fd = listener.fileno()
    assert fd is not None
    assert select.select([fd], [], [], 0)[0] == []
    assert sender.notify()
    return select.select([fd], [], [], 5.0)[0] == [fd]


def test_a_short_path_is_bound_and_reached_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite.wake"
    listener = WakeSocket(path)
    listener.listen()
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert _woken(listener, WakeSocket(path))
    finally:
        listener.close()


def test_a_path_longer_than_a_socket_address_is_bound_in_its_place_and_reached(tmp_path: Path) -> None:
    path = _deep(tmp_path, 300) / "tenant.sqlite.wake"
    sender = WakeSocket(path)
    assert not sender.notify()  # nobody listens yet
    listener = WakeSocket(path)
    listener.listen()
    try:
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert _woken(listener, sender)
        listener.drain()
        assert _woken(listener, WakeSocket(path))
    finally:
        listener.close()
    assert not path.exists()
    assert not sender.notify()


def test_a_name_too_long_even_in_its_directory_gets_no_socket(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 120 + ".wake")
    listener = WakeSocket(path)
    listener.listen()
    assert listener.fileno() is None and not path.exists()
    assert not WakeSocket(path).notify()
