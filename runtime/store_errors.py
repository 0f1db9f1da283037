"""The store's errors and how a store is checked when opened, apart from its contract (runtime/store.py):
the lean `jobs enqueue` (runtime/cli_enqueue.py) checks and writes a SQLite store without the contract's
dataclasses."""

from __future__ import annotations

from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import Final

UNSERVED: Final = "unserved"
# How a store is checked when it is opened (store.open_store's ``verify``, typed store.Verify): False not
# at all (a reader), True the whole file (a daemon), UNSERVED the whole file only while no live daemon
# serves the store (a command about to write: the daemon checked it when it opened it;
# runtime/sqlite_guard.py ``served``).


class StoreError(UserError):
    """The store cannot be used now (a storage fault) or at all (corrupt, newer schema, in use)."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code)


class StoreBusy(StoreError):
    """Another live daemon uses this store (SQLite allows one)."""


class NoStore(StoreError):
    """Opened without ``create`` and the tenant has no store yet."""
