"""A store whose tables were taken away under an open connection (by whoever owns the file or the database:
a tenant's own SQLite file, an admin's migration gone wrong) fails every call with ``StoreError``, the one
error the daemon, the commands and the web side expect from a store (a storage fault of that tenant only),
never with the driver's own exception, which escaped them: /metrics then failed for every tenant."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from taskserver.runtime.model import State
from taskserver.runtime.store import Store, StoreError

SQLITE_TABLES = ("runs", "jobs", "instances", "paused")
PG_TABLES = ("taskserver_runs", "taskserver_jobs", "taskserver_instances", "taskserver_paused")

CALLS: dict[str, Callable[[Store], Any]] = {
    "claim": lambda s: s.claim("j", 60.0, now=61.0),
    "claim_many": lambda s: s.claim_many([("j", 60.0, None)], now=61.0),
    "missed": lambda s: s.missed("j", [60.0], now=61.0),
    "missed_many": lambda s: s.missed_many([("j", 60.0, "note")], now=61.0),
    "waiting": lambda s: s.waiting(),
    "add": lambda s: s.add("", argv=["/bin/true"], now=61.0),
    "queued": lambda s: s.queued(),
    "acquire": lambda s: s.acquire(instance="i1", now=61.0),
    "started": lambda s: s.started(1, pid=1, proc_start=None, boot_id=None),
    "finish": lambda s: s.finish(1, State.OK, None, exit_code=0, output="", now=61.0),
    "report": lambda s: s.report(1, True, None, now=61.0),
    "running": lambda s: s.running(exclude="i1"),
    "pause": lambda s: s.pause("j", who="root", now=61.0),
    "resume": lambda s: s.resume("j"),
    "paused": lambda s: s.paused(),
    "cancel": lambda s: s.cancel(1, who="root", now=61.0),
    "cancelling": lambda s: s.cancelling(),
    "heartbeat": lambda s: s.heartbeat("i1", now=61.0, expires=90.0),
    "instances": lambda s: s.instances(),
    "last_due": lambda s: s.last_due("j"),
    "last_dues": lambda s: s.last_dues(),
    "rewind": lambda s: s.rewind(61.0),
    "remember_jobs": lambda s: s.remember_jobs(["j"], now=61.0),
    "get": lambda s: s.get(1),
    "history": lambda s: s.history(),
    "purge": lambda s: s.purge(ok_before=61.0, err_before=61.0),
    "summary": lambda s: s.summary([1.0, 10.0]),
}


def take_the_tables_away(store: Store) -> None:
    """Rename every table of the store through a connection of its own, as its owner could."""
    path = getattr(store, "path", None)
    if path is not None:
        db = sqlite3.connect(path)
        for table in SQLITE_TABLES:
            db.execute(f"ALTER TABLE {table} RENAME TO gone_{table}")
        db.commit()
        db.close()
        return
    import psycopg

    with psycopg.connect(store.dsn, autocommit=True) as conn:  # type: ignore[attr-defined]
        for table in PG_TABLES:
            conn.execute(f"ALTER TABLE {table} RENAME TO gone_{table}")


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_call_on_a_store_whose_tables_are_gone_fails_as_a_store_error(store: Store, call: str) -> None:
    store.add("", argv=["/bin/true"], now=50.0)  # run 1, so a call by run id reaches its statement
    take_the_tables_away(store)
    with pytest.raises(StoreError) as err:
        CALLS[call](store)
    assert "\n" not in err.value.message and err.value.hint, err.value
