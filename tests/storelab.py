"""A SQLite store with a long history and old damage in the middle of it, for the tests of what a command
checks before it writes (tests/faults/test_enqueue_served.py, tests/security/test_enqueue_served_lock.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path


def add_history(path: Path, count: int) -> None:
    """Ten every-minute jobs' finished runs of the last day, as the daemon writes them (plain inserts). The
    file keeps its owner: SQLite writes into it and removes its -wal and -shm files when it closes."""
    now = time.time()
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO runs (job, state, due, created, started, finished, exit_code, output) "
                       "VALUES (?, 'OK', ?, ?, ?, ?, 0, ?)",
                       [(f"hist{i % 10}", due, due, due, due + 0.5, f"run {i} printed this\n")
                        for i in range(count) for due in [now - 86400 + (i // 10) * 60]])
    db.close()


def garble_old_history(path: Path) -> int:
    """Overwrite a leaf page of the runs table in the middle of the file (old runs only, far from the
    pages a new row and its index entries go to); its page number. Proven to be damage a whole-file
    check finds (``whole_check``)."""
    db = _connect(path)
    try:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        leaves = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name='runs' AND pagetype='leaf' "
                                           "ORDER BY pageno")]
    finally:
        db.close()
    page = leaves[len(leaves) // 2]
    with path.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xa5" * size)
    assert whole_check(path) != ["ok"], page
    return int(page)


def whole_check(path: Path) -> list[str]:
    """What `PRAGMA quick_check` finds in the whole file (["ok"] when nothing)."""
    db = _connect(path)
    try:
        return [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        db.close()


def _connect(path: Path) -> sqlite3.Connection:
    """Not read-only: a read-only connection leaves its -wal and -shm files behind (this user's: another
    user's store would then be out of its own reach); the last connection to close removes them."""
    return sqlite3.connect(path, timeout=30)


def state_of(path: Path, run_id: int) -> str | None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
