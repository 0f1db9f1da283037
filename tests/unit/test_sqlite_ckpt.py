"""The daemon's SQLite store checkpoints its write-ahead log from a thread of its own
(runtime/sqlite_ckpt.py), never inside a commit: on real files, the daemon's connection has SQLite's
automatic checkpoint off, the log's pages still reach the store file, a replaced file or a store written
back after a deletion keeps the automatic checkpoint, and detaching or closing ends the thread."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from taskserver.runtime.sqlite_ckpt import PERIOD
from taskserver.runtime.sqlite_store import SqliteStore
from taskserver.runtime.store import Instance

NAME = "taskserver-checkpoint"


def attached(path: Path) -> SqliteStore:
    s = SqliteStore(path)
    now = time.time()
    s.attach(Instance(id="me", host="h", pid=os.getpid(), boot_id=None, proc_start=None, config="c",
                      started=now, heartbeat=now, expires=now + 60))
    return s


def autocheckpoint(s: SqliteStore) -> int:
    return int(s.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def threads(before: set[threading.Thread] | None = None) -> int:
    """Checkpoint threads alive now, other than those in ``before`` (other tests' stores in this process)."""
    return len({t for t in threading.enumerate() if t.name == NAME} - (before or set()))


def baseline() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == NAME}


def rows_in_the_file_alone(path: Path, scratch: Path) -> int:
    """The runs the store file itself holds, its log left aside: what checkpoints have copied so far (-1
    when the copy was taken while a checkpoint was writing the file: a torn copy, to be taken again)."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "alone.sqlite"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    try:
        return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    except sqlite3.DatabaseError:
        return -1
    finally:
        db.close()


def test_the_daemons_commits_leave_the_log_to_the_thread_which_copies_it_to_the_file(tmp_path: Path) -> None:
    before, path = baseline(), tmp_path / "state" / "t.sqlite"
    s = attached(path)
    assert autocheckpoint(s) == 0 and threads(before) == 1
    for i in range(400):  # 400 commits of about 2 KiB each: past the 1,000 pages SQLite checkpoints at
        with s.batch():
            s.add("", argv=["echo", "x" * 2000], now=float(i))
    copied = 0
    for _ in range(200):  # the thread checkpoints at most every half second
        copied = rows_in_the_file_alone(path, tmp_path / "scratch")
        if copied == 400:
            break
        time.sleep(0.05)
    assert copied == 400
    # the thread may still take a last look (a checkpoint with nothing left to copy, which holds a read
    # lock while it runs and so keeps a writer from starting the log over): let it go idle first
    time.sleep(2 * PERIOD + 0.5)
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size
    for i in range(20):  # all of it was copied: later commits write the log from its start again
        with s.batch():
            s.add("", argv=["echo", "x" * 2000], now=float(i))
    assert wal.stat().st_size == size
    s.close()
    assert threads(before) == 0


def test_detach_ends_the_thread_and_gives_the_automatic_checkpoint_back(tmp_path: Path) -> None:
    before, s = baseline(), attached(tmp_path / "t.sqlite")
    assert threads(before) == 1
    s.detach("me")
    assert threads(before) == 0 and autocheckpoint(s) == 1000
    s.add("", argv=["t"], now=1.0)  # a command's use of the same file goes on as before
    s.close()


def test_a_file_replaced_before_attach_keeps_the_automatic_checkpoint(tmp_path: Path) -> None:
    before, path = baseline(), tmp_path / "t.sqlite"
    s = SqliteStore(path)
    other = SqliteStore(tmp_path / "other" / "t.sqlite")
    other.close()
    os.replace(tmp_path / "other" / "t.sqlite", path)  # the second connection would reach another file
    now = time.time()
    s.attach(Instance(id="me", host="h", pid=os.getpid(), boot_id=None, proc_start=None, config="c",
                      started=now, heartbeat=now, expires=now + 60))
    assert threads(before) == 0 and autocheckpoint(s) == 1000
    s.close()


def test_a_store_written_back_after_a_deletion_checkpoints_itself(tmp_path: Path) -> None:
    before, path = baseline(), tmp_path / "state" / "t.sqlite"
    s = attached(path)
    s.add("", argv=["t"], now=1.0)
    shutil.rmtree(path.parent)  # the whole state dir, its lock file with it
    assert s.recover() is not None  # written back from the open connection, as a new file
    assert threads(before) == 0 and autocheckpoint(s) == 1000
    s.add("", argv=["t"], now=2.0)
    assert len(s.history()) == 2
    s.close()
