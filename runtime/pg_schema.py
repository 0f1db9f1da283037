"""The PostgreSQL store's schema as data: the DDL of every version and the ordered migrations.

One database (or one schema, by the DSN's search_path) may hold several tenants: every table has a
``tenant`` column and every statement names it. The version lives in ``taskserver_meta``; `taskserver store
migrate` creates or migrates it (a daemon checks it at start and refuses an older or newer one), inside one
transaction under an advisory lock, so two hosts migrating at once do it once.
"""

from __future__ import annotations

from typing import Any

V1 = """
CREATE TABLE taskserver_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE taskserver_runs (
    tenant TEXT NOT NULL,
    id BIGSERIAL PRIMARY KEY,
    job TEXT NOT NULL,
    queue TEXT,
    state TEXT NOT NULL CHECK (state IN ('QUE', 'RUN', 'OK', 'ERR')),
    reason TEXT,
    due DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    pid INTEGER,
    instance TEXT,
    host TEXT,
    exit_code INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    argv JSONB,
    output TEXT NOT NULL DEFAULT '',
    message TEXT,
    queued BOOLEAN NOT NULL DEFAULT FALSE,
    reported TEXT,
    proc_start BIGINT,
    boot_id TEXT,
    not_before DOUBLE PRECISION
);
CREATE UNIQUE INDEX taskserver_runs_claim ON taskserver_runs (tenant, job, due, attempt)
    WHERE due IS NOT NULL AND NOT queued;
CREATE INDEX taskserver_runs_by_state ON taskserver_runs (tenant, state, id);
CREATE INDEX taskserver_runs_by_job ON taskserver_runs (tenant, job, id);
CREATE INDEX taskserver_runs_by_end ON taskserver_runs (tenant, finished);
CREATE TABLE taskserver_jobs (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    last_due DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE taskserver_instances (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    boot_id TEXT,
    proc_start BIGINT,
    config TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, id)
);
"""

# Version 2: steering from outside the daemons (see sqlite_schema's version 3): paused jobs per tenant, and
# who asked a running run to stop. Every daemon of the tenant reads both: a pause made on one host holds
# on all.
_V2 = """
ALTER TABLE taskserver_runs ADD COLUMN cancel TEXT;
CREATE TABLE taskserver_paused (
    tenant TEXT NOT NULL,
    job TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    who TEXT NOT NULL,
    PRIMARY KEY (tenant, job)
);
"""

SCHEMAS = {1: V1, 2: V1 + _V2}
LATEST = 2
MIGRATIONS: dict[int, str] = {1: _V2}  # from version N to N + 1, as SQL
LOCK_KEY = 0x7461736B  # pg_advisory_xact_lock key while creating or migrating ("task")


def version(cur: Any) -> int:
    cur.execute("SELECT to_regclass('taskserver_meta') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT value FROM taskserver_meta WHERE key = 'schema_version'")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Any) -> tuple[int, int]:
    """Create or migrate to LATEST; returns (found, now). Raises ValueError for a newer schema."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        found = version(cur)
        if found > LATEST:
            raise ValueError(found)
        if found == 0:
            cur.execute(SCHEMAS[LATEST])
        for step in range(found or LATEST, LATEST):
            cur.execute(MIGRATIONS[step])
        cur.execute("INSERT INTO taskserver_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(LATEST),))
    return found, LATEST
