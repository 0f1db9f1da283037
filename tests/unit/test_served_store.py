"""Whether a live daemon serves a SQLite store (runtime/sqlite_guard.py ``served``), on real lock files.

A command about to write checks the whole store file only while no daemon serves it; the answer comes from
the store's instance lock (``InstanceLock``), here held by a real child process that takes it as a daemon
does. Only a regular file with one link, owned by the store file's owner, locked, and naming this store's
file as the one its holder holds it for, counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserver.runtime import sqlite_guard
from taskserver.runtime.sqlite_base import open_db
from taskserver.runtime.store import Instance, StoreBusy

_HOLDER = """
import fcntl, os, sys
from pathlib import Path
from taskserver.runtime.sqlite_guard import InstanceLock
from taskserver.runtime.store import Instance
how = sys.argv[2]
if how == "daemon":
    InstanceLock(Path(sys.argv[1])).take(Instance("child", "host", os.getpid(), None, None, "cfg", 0, 0, 0))
else:  # "shared": as a command's look holds it for a moment; "bare": held, saying nothing
    fd = os.open(sys.argv[1] + ".lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH if how == "shared" else fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes the pipe
"""


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "t.sqlite"
    open_db(path, tmp_path / ".t.store-id", create=True, verify=True).close()
    return path


def _hold(path: Path, how: str = "daemon") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(30) == 0


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A store whose instance lock a live child process holds, as its daemon would."""
    path = _store(tmp_path)
    proc = _hold(path)
    try:
        yield path
    finally:
        _release(proc)


def _me() -> Instance:
    return Instance("me", "host", os.getpid(), None, None, "cfg", 0, 0, 0)


def test_a_store_is_served_only_while_its_lock_is_held(tmp_path: Path) -> None:
    path = _store(tmp_path)
    assert not sqlite_guard.served(path)  # never held: the lock file does not exist
    assert not (tmp_path / "t.sqlite.lock").exists()  # and the look did not create it
    proc = _hold(path)
    assert sqlite_guard.served(path)
    assert sqlite_guard.served(path)  # the look's shared lock is gone again: nothing changed
    _release(proc)
    assert (tmp_path / "t.sqlite.lock").exists()
    assert not sqlite_guard.served(path)  # its holder died: the kernel dropped the lock


def test_a_daemon_can_take_the_lock_right_after_a_look(held: Path) -> None:
    assert sqlite_guard.served(held)
    with pytest.raises(StoreBusy, match="in use by another taskserver daemon"):
        sqlite_guard.InstanceLock(held).take(_me())  # the holder is a daemon: refused as before


def test_a_daemon_waits_for_a_shared_holder_and_not_for_ever(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _store(tmp_path)
    looker = _hold(path, "shared")
    lock = sqlite_guard.InstanceLock(path)
    with pytest.raises(StoreBusy):  # a shared lock that stays is refused like a daemon's
        lock.take(_me())
    monkeypatch.setattr(sqlite_guard, "SHARED_WAIT", 60.0)  # a loaded machine may be slow to end the look
    taker = threading.Thread(target=lock.take, args=(_me(),))
    taker.start()
    time.sleep(0.2)  # the daemon tries while the look still holds its shared lock
    _release(looker)  # the look ends while the daemon waits: the daemon takes the lock
    taker.join(60)
    assert lock.fd is not None
    assert sqlite_guard.served(path)
    lock.release()


def test_a_symlinked_lock_is_not_followed(held: Path) -> None:
    lock, aside = held.with_name("t.sqlite.lock"), held.with_name("aside")
    lock.rename(aside)
    lock.symlink_to(aside)  # the held lock of this very store, but through a link
    assert not sqlite_guard.served(held)
    lock.unlink()
    aside.rename(lock)
    assert sqlite_guard.served(held)


def test_the_held_lock_of_another_store_moved_into_place_is_not_believed(tmp_path: Path) -> None:
    path = _store(tmp_path)
    other = _store(tmp_path / "other")
    proc = _hold(other)
    try:
        os.rename(tmp_path / "other" / "t.sqlite.lock", tmp_path / "t.sqlite.lock")
        assert not sqlite_guard.served(path)  # its holder wrote which file it holds it for: another one
        os.rename(tmp_path / "t.sqlite.lock", tmp_path / "other" / "t.sqlite.lock")
        assert sqlite_guard.served(other)
    finally:
        _release(proc)


def test_a_lock_held_by_something_that_did_not_say_for_which_store_is_not_believed(tmp_path: Path) -> None:
    path = _store(tmp_path)
    proc = _hold(path, "bare")
    try:
        assert not sqlite_guard.served(path)
    finally:
        _release(proc)


def test_a_hard_link_a_fifo_or_a_directory_is_not_a_lock(held: Path) -> None:
    second = held.with_name("second.sqlite")
    second.write_bytes(held.read_bytes())
    os.link(held.with_name("t.sqlite.lock"), held.with_name("second.sqlite.lock"))
    assert not sqlite_guard.served(held)  # two links: someone linked a held lock under another name
    assert not sqlite_guard.served(second)
    for make in (os.mkfifo, os.mkdir):
        target = held.with_name(f"{make.__name__}.sqlite")
        target.write_bytes(held.read_bytes())
        make(target.with_name(target.name + ".lock"))
        assert not sqlite_guard.served(target)  # a FIFO is not waited for, a directory not locked


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the lock file to another user: needs root")
def test_a_lock_owned_by_another_user_than_the_store_is_not_believed(held: Path) -> None:
    lock = held.with_name("t.sqlite.lock")
    os.chown(lock, 65534, 65534)
    assert not sqlite_guard.served(held)
    os.chown(held, 65534, 65534)
    assert sqlite_guard.served(held)  # the store's owner holds it: believed


def test_a_store_that_is_not_there_is_not_served(held: Path) -> None:
    gone = held.with_name("gone.sqlite")
    os.link(held.with_name("t.sqlite.lock"), gone.with_name("gone.sqlite.lock"))
    held.with_name("t.sqlite.lock").unlink()  # the held lock, under the missing store's name only
    assert not sqlite_guard.served(gone)


def test_a_holder_that_could_not_say_who_it_is_is_named_by_its_pid(tmp_path: Path) -> None:
    """A daemon holding a brand-new lock file on a full disk could not write who it is: the refusal still
    names it, by the pid the kernel gives for the lock (/proc/locks)."""
    path = _store(tmp_path)
    proc = _hold(path, "bare")
    try:
        with pytest.raises(StoreBusy, match=rf"daemon \(pid {proc.pid}; it has not said who it is"):
            sqlite_guard.InstanceLock(path).take(_me())
        assert not sqlite_guard.served(path)
    finally:
        _release(proc)


def test_a_lock_taken_before_the_store_is_opened_vouches_for_no_file_until_then(tmp_path: Path) -> None:
    """A daemon holding a store it could not open yet (a full disk) has not checked the file: commands go
    on checking it whole until the daemon names the file, once it opened it. Taking the lock again (each
    recovery does) is no conflict with itself, and a release leaves the file's room for the next holder."""
    path = _store(tmp_path)
    lock = sqlite_guard.InstanceLock(path)
    lock.take(_me(), checked=False)
    assert not sqlite_guard.served(path)
    lock.take(_me())
    assert sqlite_guard.served(path)
    with pytest.raises(StoreBusy):
        sqlite_guard.InstanceLock(path).take(_me())  # another taker (another open file) is refused
    lock.release()
    room = (tmp_path / "t.sqlite.lock").read_bytes()
    assert len(room) >= 1024 and not room.strip()
    assert not sqlite_guard.served(path)
