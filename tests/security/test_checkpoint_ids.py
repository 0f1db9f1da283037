"""The daemon's checkpoint connection (runtime/sqlite_ckpt.py) opens a second connection to a store that may
lie in a tenant's own directory (a tenant with run_as). A throwaway tenant who swaps its store for a link
to a store it cannot read, between the daemon's open and its attach, gets no connection to that store:
the identity check refuses the link, and the connection is opened with the tenant's filesystem ids, so
even the right identity cannot open a file the tenant could not open itself."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest
from secusers import lab, needs_root

from taskserver.runtime import privs
from taskserver.runtime.sqlite_ckpt import Checkpointer
from taskserver.runtime.sqlite_store import SqliteStore
from taskserver.runtime.store import Instance

pytestmark = needs_root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _victim(base: Path) -> Path:
    """A store the tenant may not read: root's, 0600 in a root-only directory."""
    victim = base / "root-only" / "v.sqlite"
    SqliteStore(victim).close()
    victim.parent.chmod(0o700)
    return victim


def test_a_tenants_store_swapped_for_a_link_to_a_store_it_cannot_read_gets_no_checkpoint_connection() -> None:
    with lab() as world:
        tenant = world.user("tenant")
        ident = privs.Identity(tenant.name, tenant.uid, tenant.gid, str(tenant.home))
        victim = _victim(world.base)
        before = _digest(victim)
        own = tenant.home / "state" / "t.sqlite"
        with privs.fs_identity(ident):  # as the daemon opens a run_as tenant's store (tenancy.open_as)
            store = SqliteStore(own)
        own.unlink()
        own.symlink_to(victim)  # what the tenant can do in its own directory, before the daemon attaches
        now = time.time()
        with privs.fs_identity(ident):  # TenantStore calls attach with the tenant's ids too
            store.attach(Instance(id="me", host="h", pid=os.getpid(), boot_id=None, proc_start=None,
                                  config="c", started=now, heartbeat=now, expires=now + 60))
        try:
            assert store._ckpt is None  # no second connection: the path is not the file the store opened
            assert int(store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 1000  # kept
        finally:
            store.close()
        assert _digest(victim) == before


def test_the_checkpoint_connection_has_only_the_tenants_rights() -> None:
    with lab() as world:
        tenant = world.user("tenant")
        ident = privs.Identity(tenant.name, tenant.uid, tenant.gid, str(tenant.home))
        victim = _victim(world.base)
        ident_of_file = os.stat(victim)
        with privs.fs_identity(ident), pytest.raises((OSError, sqlite3.Error)):
            Checkpointer(victim, ident_of_file)  # the right identity, but not the tenant's to open
        ckpt = Checkpointer(victim, ident_of_file)  # the daemon's own ids open it: the refusal was the ids
        ckpt.stop(None)
