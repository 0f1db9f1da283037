"""Fixtures the system tests share: a PostgreSQL database with taskserver's schema, a lab directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def dsn(pg_server: Any) -> str:
    """A new database of the session's server (tests/conftest.py), with taskserver's schema migrated in."""
    from taskserver.runtime import pg_store

    url = str(pg_server.database())
    pg_store.migrate(url)
    return url


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A directory for the daemons of a test, with the ``locks`` directory their configs name."""
    (tmp_path / "locks").mkdir()
    return tmp_path
