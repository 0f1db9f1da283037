"""The PostgreSQL schema's migrations, proven on a real server (tests/pglab.py): a database of every earlier
version, with a run in it, migrated by `store migrate`'s own code, has exactly the shape of a fresh one and
keeps its history."""

from __future__ import annotations

from typing import Any

import pytest

from taskserver.runtime import pg_schema

psycopg = pytest.importorskip("psycopg")


def shape(dsn: str) -> dict[str, object]:
    """Columns (name, type, nullability, default) per table and index definitions: what a migration must
    reproduce."""
    with psycopg.connect(dsn) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM "
            "information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2").fetchall()
        idx = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                           "ORDER BY 1").fetchall()
    return {"columns": cols, "indexes": idx}


def build(dsn: str, version: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(pg_schema.SCHEMAS[version])
        conn.execute("INSERT INTO taskserver_meta (key, value) VALUES ('schema_version', %s)",
                     (str(version),))
        conn.execute("INSERT INTO taskserver_runs (tenant, job, state, created) VALUES ('t', 'old', 'OK', 1)")


@pytest.mark.parametrize("version", sorted(v for v in pg_schema.SCHEMAS if v < pg_schema.LATEST))
def test_every_earlier_version_migrates_to_the_latest_schema(pg_server: Any, version: int) -> None:
    fresh, old = pg_server.database(), pg_server.database()
    with psycopg.connect(fresh, autocommit=True) as conn:
        assert pg_schema.migrate(conn) == (0, pg_schema.LATEST)
    build(old, version)
    with psycopg.connect(old, autocommit=True) as conn:
        assert pg_schema.migrate(conn) == (version, pg_schema.LATEST)
        assert pg_schema.migrate(conn) == (pg_schema.LATEST, pg_schema.LATEST)  # idempotent
        assert conn.execute("SELECT job, state FROM taskserver_runs").fetchall() == [("old", "OK")]
    assert shape(old) == shape(fresh)
