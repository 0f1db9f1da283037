"""The store's errors and how a store is checked when opened, apart from its contract (runtime/store.py):
the lean `jobs enqueue` (runtime/cli_enqueue.py) checks and writes a SQLite store without the contract's
dataclasses."""

from __future__ import annotations

import errno
import os

from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import Final

    from .confpath import StrPath

UNSERVED: Final = "unserved"
# How a store is checked when it is opened (store.open_store's ``verify``, typed store.Verify): False not
# at all (a reader), True the whole file (a daemon), UNSERVED the whole file only while no live daemon
# serves the store (a command about to write: the daemon checked it when it opened it;
# runtime/sqlite_guard.py ``served``).


class StoreError(UserError):
    """The store cannot be used now (a storage fault) or at all (corrupt, newer schema, in use). ``where``:
    the store it came from (its ``where``), set by the store that raised it: the daemon holds the tenants
    of that store, and only those, for it."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int = 1,
                 where: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.where = where

    def of(self, where: str) -> StoreError:
        """This error as raised by the store at ``where`` (unless it already names where it came from)."""
        if self.where is None:
            self.where = where
        return self


class StoreFault(StoreError):
    """The store cannot be written (or read) now, though nothing says it is damaged: a full disk or quota,
    an I/O error, a read-only file system, another writer's lock. The daemon holds its runs (starts nothing
    it could not record) and tries again, at start as while it runs; a command fails before its commit."""


class StoreLocked(StoreFault):
    """Another writer holds the store's write lock: a command writing for a moment, or someone keeping it."""


NOSPACE = "no space left on device"
# what the kernel and SQLite say, as a person reads it; SQLite's primary result codes (the low byte)
_ERRNOS = {errno.ENOSPC: NOSPACE, errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error",
           errno.EROFS: "read-only file system"}
_LOCKED = "locked by another writer"
_SQLITE = {13: NOSPACE, 10: "I/O error", 5: _LOCKED, 6: _LOCKED}
_GOES_ON = "the daemon starts nothing it could not record and goes on by itself once it can write"
_HINTS = {_LOCKED: f"another process keeps a write transaction open on it; {_GOES_ON}",
          NOSPACE: f"free space on the file system that holds it; {_GOES_ON}"}


def fault(exc: BaseException, path: StrPath, what: str = "store") -> StoreFault | None:
    """``exc`` (or what caused it) as the StoreFault of the store at ``path`` (or of ``what`` there, the
    directory that holds it); None when it is no such
    fault (a corrupt file, a permission denied: those are refused, not waited out). SQLite says "disk I/O
    error" when the file system is full (its shared memory file cannot grow): a full one is named so."""
    why = _why(exc)
    if why is None:
        return None
    if why == "I/O error" and _full(path):
        why = NOSPACE
    kind = StoreLocked if why == _LOCKED else StoreFault
    return kind(f"{what} {os.fspath(path)}: {why}", hint=_HINTS.get(why, f"check the disk; {_GOES_ON}"))


def _why(exc: BaseException | None) -> str | None:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return _ERRNOS[exc.errno]
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return _SQLITE.get(code & 0xFF)
        exc = exc.__cause__
    return None


def _full(path: StrPath) -> bool:
    """Whether the file system of the store at ``path`` has no block or no inode left for this process."""
    try:
        st = os.statvfs(os.path.dirname(os.fspath(path)) or ".")
    except OSError:
        return False
    # (a file system without a block or inode count says 0 of both)
    return bool(st.f_blocks and st.f_bavail == 0) or bool(st.f_files and st.f_favail == 0)


class StoreBusy(StoreError):
    """Another live daemon uses this store (SQLite allows one)."""


class NoStore(StoreError):
    """Opened without ``create`` and the tenant has no store yet."""
