"""`taskserver jobs list|show|history`: what the configured jobs and the stored runs say, as a table or JSON.

Read-only: each command opens a tenant's store as the tenant's user (``cli_jobs._as_tenant``: root, the
tenant's and the daemon's user may; ``list`` shows a tenant it may not read from the config alone), never
creates one, and prints. What writes runs (enqueue, run, finish) is runtime/cli_jobs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from typing import Any

from . import limits, statusfile
from .cli_jobs import _as_tenant, _denied, _load, _next_due, _run_dict, _stamp, _store, _tenant
from .errors import UserError
from .limits import shown
from .model import Config, TenantDef
from .store import Run, Store


def _row(run: Run, hosts: bool = False) -> tuple[str, ...]:
    state = run.state.value + (f" {run.reason}" if run.reason else "")
    what = run.job or ("task " + shlex.join(run.argv or ()))
    return (str(run.id), _stamp(run.created) or "-", state, *((run.host or "-",) if hosts else ()), what)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Aligned columns (a header first); a value's control characters are escaped, long ones cut, so a
    stored value can neither break the layout nor write to the terminal."""
    cells = [[limits.clip(limits.printable(c), 100) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _list(args: argparse.Namespace) -> int:
    return _list_as(_load(args, every_tenant=not args.tenant), args)


def _rows(tenant: TenantDef, store: Store | None, now: datetime,
          note: str | None = None) -> list[dict[str, Any]]:
    rows = []
    pauses = store.paused() if store else {}
    for job in tenant.jobs:
        last = store.history(job.name, limit=1) if store else []
        nxt = _next_due(job, tenant, store, now) if job.enabled and tenant.login else None
        why = note or (None if tenant.login else "tenant has no login: runs nothing")
        why = why or (None if job.enabled else "disabled")
        pause = pauses.get(job.name)
        why = why or (f"paused by {pause.who} since {_stamp(pause.since)}" if pause else None)
        rows.append({"tenant": tenant.name, "job": job.name, "trigger": job.trigger_text(),
                     "enabled": job.enabled, "runs": tenant.login is not None and job.enabled,
                     "paused": pause is not None,
                     "note": why, "next_due": _stamp(nxt.timestamp()) if nxt else None,
                     "last": _run_dict(last[0], output=False) if last else None})
    return rows


def _list_as(cfg: Config, args: argparse.Namespace) -> int:
    tenants = [_tenant(cfg, args.tenant)] if args.tenant else list(cfg.tenants)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for tenant in tenants:
        denied = _denied(cfg, tenant)
        if denied is not None:  # listed from the config, without its runs
            rows += _rows(tenant, None, now, note="permission denied")
            continue
        with _as_tenant(cfg, tenant):
            store = _store(cfg, tenant, create=False)
            try:
                rows += _rows(tenant, store, now)
            finally:
                if store:
                    store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table: list[tuple[str, ...]] = [("TENANT", "JOB", "TRIGGER", "NEXT DUE (UTC)", "LAST RUN", "NOTE")]
    for r in rows:
        rec: dict[str, Any] | None = r["last"]
        state = f"{rec['state']} {rec['reason'] or ''}".strip() if rec else "-"
        table.append((r["tenant"], r["job"], r["trigger"], r["next_due"] or "-", state, r["note"] or ""))
    _print_table(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg = _load(args, jobs=False)
    with _as_tenant(cfg, _tenant(cfg, args.tenant)):
        return _show_as(cfg, args)


def _show_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    store = _store(cfg, tenant, create=False)
    run = store.get(args.id) if store else None
    if store:
        store.close()
    if run is None:
        raise UserError(f"tenant {tenant.name!r} has no run {args.id}", hint="see `taskserver jobs history`")
    d = _run_dict(run, output=True)
    d["tenant"] = tenant.name
    status = statusfile.path_of(cfg.tenant_dir(tenant.name), tenant.name, run)
    d["status_file"] = status if os.path.exists(status) else None
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        if k != "output" and v is not None:
            print(f"{k}: {limits.printable(shlex.join(v) if isinstance(v, list) else str(v))}")
    if run.output:
        print("output:")
        sys.stdout.write(run.output if run.output.endswith("\n") else run.output + "\n")
    return 0


def _history(args: argparse.Namespace) -> int:
    cfg = _load(args, jobs=bool(args.job))
    with _as_tenant(cfg, _tenant(cfg, args.tenant)):
        return _history_as(cfg, args)


def _history_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    store = _store(cfg, tenant, create=False)
    runs = store.history(args.job, limit=args.limit) if store else []
    if store:
        store.close()
    if args.job and not runs and all(j.name != args.job for j in tenant.jobs):
        # a job removed from the config keeps its history; a name that never existed is a typo
        names = ", ".join(j.name for j in tenant.jobs) or "none"
        raise UserError(f"tenant {tenant.name!r} has no job {shown(args.job)} "
                        f"(jobs: {limits.clip(names, 200)})",
                        hint="see `taskserver jobs list`")
    if args.json:
        print(json.dumps([_run_dict(r, output=False) for r in runs], indent=2))
        return 0
    hosts = any(run.host is not None for run in runs)  # a shared store: which host's daemon ran each
    header: list[tuple[str, ...]] = [("ID", "CREATED (UTC)", "STATE", *(("HOST",) if hosts else ()), "RUN")]
    _print_table(header + [_row(run, hosts) for run in runs])
    return 0
