"""`taskserver store migrate`: create or upgrade the schema of each tenant's shared (PostgreSQL) store.

SQLite stores migrate themselves when the daemon opens them (one host, one file); a shared store is
migrated by this command once, before daemons of the new version start, and a daemon refuses a store whose
schema is not the one it knows.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import config
from .errors import UserError


def register(sub: Any) -> None:
    store = sub.add_parser("store", help="manage the tenants' run stores (schema of shared stores)",
                           description="Manage the run stores named in the configuration.")
    ssub = store.add_subparsers(title="store commands", dest="store_command", metavar="COMMAND",
                                required=True)
    mig = ssub.add_parser("migrate", help="create or upgrade the schema of PostgreSQL stores",
                          description="Create the taskserver tables in each tenant's PostgreSQL store, or "
                          "upgrade them to this version's schema. Safe to run on several hosts at once.")
    mig.add_argument("--tenant", metavar="NAME", help="only this tenant (default: every PostgreSQL tenant)")
    mig.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from . import pg_store  # noqa: PLC0415 - only this command needs the driver

    cfg = config.load(args.config)
    tenants = [t for t in cfg.tenants if t.store.kind == "postgresql" and t.store.dsn
               and (args.tenant is None or t.name == args.tenant)]
    if not tenants:
        raise UserError(f"{cfg.path}: no tenant{' ' + repr(args.tenant) if args.tenant else ''} with a "
                        "postgresql store", hint="store: {postgresql: DSN} under a tenant")
    done: set[str] = set()
    for t in tenants:
        assert t.store.dsn is not None
        if t.store.dsn in done:
            print(f"tenant {t.name}: schema current (shared database)")
            continue
        found, now = pg_store.migrate(t.store.dsn)
        done.add(t.store.dsn)
        what = "created" if found == 0 else ("current" if found == now else f"migrated from version {found}")
        print(f"tenant {t.name}: schema version {now} {what}")
    return 0
