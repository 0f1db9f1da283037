"""One fixture per store backend; every test in tests/contract runs once for each.

A backend fixture hands out ``open()``: a new, independent connection to one and the same empty store (as
another process, the CLI or a second daemon, would have).  Adding a backend (PostgreSQL) is one more
entry in ``BACKENDS`` and its ``open``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskserver.runtime.model import StoreDef, TenantDef
from taskserver.runtime.store import Store, open_store

Opener = Callable[[], Store]
BACKENDS = ["sqlite", "postgresql"]


def _sqlite(tmp_path: Path) -> Opener:
    tenant = TenantDef(name="t", login="someone")
    return lambda: open_store(tenant, tmp_path / "state")


def _postgresql(request: pytest.FixtureRequest) -> Opener:
    from taskserver.runtime import pg_store

    dsn = request.getfixturevalue("pg_server").database()
    pg_store.migrate(dsn)
    tenant = TenantDef(name="t", login="someone", store=StoreDef(kind="postgresql", dsn=dsn))
    return lambda: open_store(tenant, Path("/nonexistent"))


@pytest.fixture(params=BACKENDS)
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    make = _sqlite(tmp_path) if request.param == "sqlite" else _postgresql(request)
    opened: list[Store] = []

    def opener() -> Store:
        store = make()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(connect: Opener) -> Store:
    return connect()
