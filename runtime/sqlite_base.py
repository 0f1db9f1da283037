"""Opening a tenant's SQLite store, and queueing a task into it: the part of runtime/sqlite_store.py that the
lean `jobs enqueue` (runtime/cli_enqueue.py) shares, so both check and write the file the same way. It
imports no dataclasses (the store contract's ``Run``, the config's model): only sqlite3 and the guards."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence

from . import sqlite_guard as guard
from . import sqlite_schema as schema
from .confpath import parent
from .store_errors import UNSERVED, NoStore, StoreError, fault

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from .confpath import StrPath
    from .store import Verify

_ADD = ("INSERT INTO runs (job, queue, state, due, created, attempt, argv, queued) "
        "VALUES (?, ?, 'QUE', ?, ?, ?, ?, 1)")


def open_db(path: StrPath, marker: StrPath, *, create: bool, verify: Verify) -> sqlite3.Connection:
    """The store's connection, after the file's checks (sqlite_guard.py); ``verify``: its integrity too
    before anything is written (store_errors.UNSERVED says when). NoStore when it has none and ``create`` is
    off; StoreError otherwise."""
    guard.check_presence(path, marker)
    if not create:
        try:
            os.stat(path)
        except FileNotFoundError:
            hint = "nothing has run or been queued for this tenant"
            raise NoStore(f"{path}: no run store yet", hint=hint) from None
        except OSError as exc:  # not "no store yet": a directory on the way this process may not enter
            raise StoreError(f"{path}: cannot reach the run store: {exc.strerror}",
                             hint="run as a user that may read it (the tenant's or the daemon's)") from None
    guard.check_header(path)
    fresh = not os.path.exists(path) or os.stat(path).st_size == 0
    whole = not fresh and (verify is True or (verify == UNSERVED and not guard.served(path)))
    return _connect(path, marker, whole=whole, strict=verify == UNSERVED)


def _connect(path: StrPath, marker: StrPath, *, whole: bool, strict: bool) -> sqlite3.Connection:
    """``whole``: check the whole file; ``strict``: each page SQLite reads more strictly (a command's writes,
    whose whole-file check a serving daemon makes unneeded)."""
    db: sqlite3.Connection | None = None
    try:
        os.makedirs(parent(path), mode=0o700, exist_ok=True)  # (those above it with the default mode)
        # Created 0600 before SQLite opens it: run history may hold secrets printed by jobs.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        if strict:
            db.execute("PRAGMA cell_size_check=ON")
        if whole:  # before anything is written: a corrupt file is refused, never written into
            guard.check_integrity(db, path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        schema.prepare(db)
        guard.check_identity(schema.store_id(db), marker, path)
    except BaseException as exc:
        if db is not None:  # a daemon holding its runs on a full disk tries again and again: no fd kept
            db.close()
        got = _opening(exc, path)
        if got is exc:
            raise
        raise got from exc
    return db


def _opening(exc: BaseException, path: StrPath) -> BaseException:
    """What a failed open raises: a storage fault (store_errors.fault) is waited out by the daemon; a file
    that is damaged, newer or out of reach is refused."""
    if isinstance(exc, schema.NewerSchema):
        return StoreError(f"{path}: schema version {exc.found} is newer than this taskserver knows "
                          f"({schema.LATEST})",
                          hint="upgrade taskserver; never downgrade over a store a newer version wrote")
    if not isinstance(exc, sqlite3.DatabaseError | OSError):
        return exc  # (a StoreError of the guards, said already)
    hint = (f"check it with: sqlite3 {path} 'PRAGMA quick_check'" if isinstance(exc, sqlite3.DatabaseError)
            else "check the state directory's owner and permissions")
    return fault(exc, path) or StoreError(f"{path}: cannot open the run store: {exc}", hint=hint)


def add_task(db: sqlite3.Connection, job: str, *, queue: str | None, argv: Sequence[str] | None,
             due: float | None, attempt: int, now: float) -> int:
    """Insert one QUE run that came through the queue (a task, or a job run by hand); its run id."""
    text = json.dumps(list(argv)) if argv is not None else None
    cur = db.execute(_ADD, (job, queue, due, now, attempt, text))
    return int(cur.lastrowid or 0)
