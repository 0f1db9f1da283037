"""The daemon's write-ahead log is copied into the store file by a thread of its own, never by a commit.

SQLite's automatic checkpoint runs inside the commit that crosses 1,000 log pages: that commit then copies
the pages and waits for two fsyncs, a few milliseconds at best and a few hundred on a busy disk, while the
loop holds its next due run.  The daemon's connection therefore has it off (``wal_autocheckpoint=0``), and
this thread checkpoints (PASSIVE: it never waits for a lock, never blocks a writer) through a second
connection to the same file, at most every ``PERIOD`` seconds and only after commits; SQLite lets go of the
interpreter's lock for the whole call.  The log stays bounded by what the daemon commits in one period.

The second connection is opened where the store's own was, with the same filesystem ids (inside ``attach``,
which the daemon calls with the ids of a tenant with run_as), and must reach the same file
(device and inode, before and after the open).  Where it cannot be opened the store keeps SQLite's automatic
checkpoint, as before.  Commands (`jobs enqueue`, ...) keep the automatic one on their own connections.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PERIOD = 0.5  # seconds: at most one checkpoint per period, and the log holds at most a period's commits
DEFAULT_AUTOCHECKPOINT = 1000  # SQLite's own default, given back when the thread stops


class Checkpointer:
    def __init__(self, path: Path, ident: os.stat_result) -> None:
        self.path = path
        self._db = _connect(path, ident)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="taskserver-checkpoint", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, path: Path, ident: os.stat_result, db: sqlite3.Connection) -> Checkpointer | None:
        """A checkpointer for ``db`` (the daemon's connection, whose automatic checkpoint is then off), or
        None where a second connection to the same file cannot be had (the automatic one stays)."""
        try:
            ckpt = cls(path, ident)
        except (OSError, sqlite3.Error) as exc:
            log.debug("%s: checkpoints stay in the commits: %s", path, exc)
            return None
        db.execute("PRAGMA wal_autocheckpoint=0")
        return ckpt

    def committed(self) -> None:
        """The daemon's connection committed: the log has pages to copy."""
        if not self._dirty.is_set():
            self._dirty.set()

    def stop(self, db: sqlite3.Connection | None) -> None:
        """End the thread; ``db`` (the daemon's connection, when still open) gets the automatic one back."""
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute(f"PRAGMA wal_autocheckpoint={DEFAULT_AUTOCHECKPOINT}")

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())  # signals are the main thread's
        while not self._stop.is_set():
            self._dirty.wait()
            self._dirty.clear()
            if self._stop.is_set():
                return
            self._checkpoint()
            self._stop.wait(PERIOD)  # commits meanwhile set ``_dirty`` again: one checkpoint per period

    def _checkpoint(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # a full disk, say: the daemon's own commits report it; tried again
            level = logging.DEBUG if self._failed else logging.WARNING
            log.log(level, "%s: checkpoint of the write-ahead log failed (tried again after the next "
                    "commit): %s", self.path, exc)
            self._failed = True
            return
        self._failed = False


def _connect(path: Path, ident: os.stat_result) -> sqlite3.Connection:
    """A connection to the very file ``ident`` describes, with its log and shared-memory index open."""
    _same(path, ident)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the log and its index now
        _same(path, ident)
    except BaseException:
        db.close()
        raise
    return db


def _same(path: Path, ident: os.stat_result) -> None:
    st = os.stat(path, follow_symlinks=False)
    if (st.st_dev, st.st_ino) != (ident.st_dev, ident.st_ino):
        raise OSError(f"{path} is no longer the file the store opened")
