"""The store's errors, apart from its contract (runtime/store.py): the lean `jobs enqueue`
(runtime/cli_enqueue.py) checks and writes a SQLite store without the contract's dataclasses."""

from __future__ import annotations

from .errors import UserError


class StoreError(UserError):
    """The store cannot be used now (a storage fault) or at all (corrupt, newer schema, in use)."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code)


class StoreBusy(StoreError):
    """Another live daemon uses this store (SQLite allows one)."""


class NoStore(StoreError):
    """Opened without ``create`` and the tenant has no store yet."""
