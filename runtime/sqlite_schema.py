"""The SQLite store's schema as data: the DDL of every version and the ordered migrations between them.

The version is ``PRAGMA user_version``.  Version 1 is the schema shipped before versions were recorded (its
``user_version`` is 0, told from an empty file by its ``runs`` table).  A fresh file gets ``LATEST``
directly; an older one is migrated step by step inside one transaction; a newer one is refused (a downgrade
must not write into a schema it does not know).  tests/unit/test_store_schema.py builds a store of every
earlier version from ``SCHEMAS``, migrates it and compares the result with a fresh ``LATEST`` store.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    queue TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    due REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    instance TEXT,
    exit_code INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    argv TEXT,
    output TEXT NOT NULL DEFAULT '',
    message TEXT,
    queued INTEGER NOT NULL DEFAULT 0,
    reported TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, id);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, id);
CREATE INDEX IF NOT EXISTS runs_by_end ON runs (finished);
CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, last_due REAL NOT NULL);
"""

# Version 2: claims (one row per job, due time and attempt, enforced by a unique index), the process
# identity of a run (pid reuse), retries waiting in the store (not_before), daemon leases, the store's id.
# ``dup_of`` marks rows a version-1 daemon wrote twice for one due time (the bug the unique key ends):
# history keeps them, the key ignores them.
_V2_RUN_COLUMNS = """
ALTER TABLE runs ADD COLUMN proc_start INTEGER;
ALTER TABLE runs ADD COLUMN boot_id TEXT;
ALTER TABLE runs ADD COLUMN not_before REAL;
ALTER TABLE runs ADD COLUMN dup_of INTEGER;
"""
_V2_TABLES = """
CREATE UNIQUE INDEX runs_claim ON runs (job, due, attempt) WHERE due IS NOT NULL AND queued = 0
    AND dup_of IS NULL;
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    boot_id TEXT,
    proc_start INTEGER,
    config TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# a version-1 daemon could record one due time twice: all but the first row of each are marked
_V2_MARK_DUPLICATES = """
UPDATE runs SET dup_of = (SELECT MIN(o.id) FROM runs o WHERE o.job = runs.job AND o.due = runs.due
                          AND o.attempt = runs.attempt AND o.queued = 0)
WHERE due IS NOT NULL AND queued = 0 AND id > (SELECT MIN(o.id) FROM runs o WHERE o.job = runs.job
                                              AND o.due = runs.due AND o.attempt = runs.attempt
                                              AND o.queued = 0);
"""

# Version 3: steering from outside the daemon. ``paused`` holds the jobs whose schedule is paused (who, since
# when): kept across restarts, read by the daemon. ``runs.cancel`` names who asked a running run to stop;
# the daemon that runs it signals its process group and records it ``ERR cancelled by NAME``.
_V3 = """
ALTER TABLE runs ADD COLUMN cancel TEXT;
CREATE TABLE paused (job TEXT PRIMARY KEY, since REAL NOT NULL, who TEXT NOT NULL);
"""

# Version 4: fewer index entries per row (a catch-up after a long downtime writes ten rows per job, and
# maintaining the indexes was most of its cost). The state is looked up only for waiting (QUE) and running
# (RUN) rows: a partial index of each serves those queries, so a finished or missed row (nearly every row)
# enters none. ``runs_by_end`` served no query (purge's OR of state and end time was planned on the state
# index). tests/unit/test_store.py checks the plan of every statement the store runs.
_V4 = """
DROP INDEX runs_by_state;
DROP INDEX runs_by_end;
CREATE INDEX runs_queued ON runs (id) WHERE state = 'QUE';
CREATE INDEX runs_running ON runs (id) WHERE state = 'RUN';
"""

_V2 = V1 + _V2_RUN_COLUMNS + _V2_TABLES
SCHEMAS = {1: V1, 2: _V2, 3: _V2 + _V3, 4: _V2 + _V3 + _V4}
LATEST = 4


def _v1_to_v2(db: sqlite3.Connection) -> None:
    for statement in (_V2_RUN_COLUMNS + _V2_MARK_DUPLICATES + _V2_TABLES).split(";"):
        if statement.strip():
            db.execute(statement)


def _v2_to_v3(db: sqlite3.Connection) -> None:
    for statement in _V3.split(";"):
        if statement.strip():
            db.execute(statement)


def _v3_to_v4(db: sqlite3.Connection) -> None:
    for statement in _V4.split(";"):
        if statement.strip():
            db.execute(statement)


# from version N to N + 1
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


class NewerSchema(Exception):
    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def version(db: sqlite3.Connection) -> int:
    """The file's schema version; 0 for a file with no tables yet."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found:
        return found
    has_runs = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
    return 1 if has_runs else 0


def prepare(db: sqlite3.Connection) -> None:
    """Create or migrate the schema to ``LATEST`` in one transaction; raises NewerSchema.  A store that is
    already current is only read (a reader must not write into a file it has not checked)."""
    if version(db) == LATEST:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        found = version(db)
        if found > LATEST:
            raise NewerSchema(found)
        if found == 0:
            for statement in SCHEMAS[LATEST].split(";"):
                if statement.strip():
                    db.execute(statement)
        for step in range(found or LATEST, LATEST):
            MIGRATIONS[step](db)
        # random, as uuid4().hex was; not uuid: it loads `platform`, a twentieth of `jobs enqueue`
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('id', ?)", (os.urandom(16).hex(),))
        db.execute(f"PRAGMA user_version = {LATEST}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def store_id(db: sqlite3.Connection) -> str:
    return str(db.execute("SELECT value FROM meta WHERE key='id'").fetchone()[0])
