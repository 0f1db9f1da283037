"""`taskserver jobs pause|resume JOB` and `jobs cancel ID`: steering a running server through the store.

The same functions serve the web side (runtime/web/reader.py), so both go one path: as the tenant's user
(``cli_jobs._as_tenant``: root, the tenant's and the daemon's user may; anyone else is refused), into the
tenant's store, then the store's wake-up (else a signal to the verified daemon). The daemon does the rest
(runtime/steering.py): a paused job's due times are recorded missed with a note, a cancelled running run's
process group is stopped and the run recorded ``ERR cancelled by NAME``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from collections.abc import Callable
from typing import Any

from . import limits
from .cli_jobs import _as_tenant, _config_name, _load, _run_dict, _run_id, _stamp, _store, _tenant, _wake
from .committed import update_after_commit
from .errors import UserError
from .limits import shown
from .model import Config, State, TenantDef
from .store import Run


def register(cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """Add pause, resume and cancel through cli_jobs.register's ``cmd`` helper."""
    for name, text in (("pause", "pause a job's schedule (kept across restarts); due times are recorded "
                        "missed until `resume`"), ("resume", "resume a paused job's schedule")):
        p = cmd(name, text, _pause if name == "pause" else _resume)
        p.add_argument("job", metavar="JOB", type=_config_name, help="a job of the tenant")
    p = cmd("cancel", "cancel a queued run, or stop a running one (TERM, then KILL after the grace)", _cancel)
    p.add_argument("id", type=_run_id, metavar="ID", help="the run id")


def caller() -> str:
    """Who asks, as the history names it: the real user's name."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def set_paused(cfg: Config, tenant: TenantDef, job: str, who: str, paused: bool) -> dict[str, Any]:
    """Pause or resume ``job``; returns its pause state after the change."""
    if all(j.name != job for j in tenant.jobs):
        names = ", ".join(j.name for j in tenant.jobs) or "none"
        raise UserError(f"tenant {tenant.name!r} has no job {shown(job)} (jobs: {limits.clip(names, 200)})",
                        hint="see `taskserver jobs list`")
    with _as_tenant(cfg, tenant):
        store = _store(cfg, tenant, create=True)
        assert store is not None
        try:
            changed = store.pause(job, who=who, now=time.time()) if paused else store.resume(job)
            now = store.paused().get(job)
            if changed:
                _wake(cfg, store)
        finally:
            store.close()
    return {"tenant": tenant.name, "job": job, "paused": now is not None, "changed": changed,
            "paused_by": now.who if now else None, "paused_since": _stamp(now.since) if now else None}


def cancel_run(cfg: Config, tenant: TenantDef, run_id: int, who: str) -> tuple[Run, str | None]:
    """Cancel a QUE run at once, or ask the daemon running a RUN run to stop it; an ended run is returned
    as it is, with the warning that the cancelled run's status file was not written, if it was not. Raises
    UserError when the tenant has no such run."""
    warning = None
    with _as_tenant(cfg, tenant):
        store = _store(cfg, tenant, create=False)
        run = store.cancel(run_id, who=who, now=time.time()) if store is not None else None
        try:
            if run is not None and run.state is State.ERR and run.queued:
                warning = update_after_commit((cfg.tenant_dir(tenant.name), tenant.name), run,
                                              f"ERR {run.reason or ''}".rstrip())
            if run is not None and run.state is State.RUN and store is not None and not _wake(cfg, store):
                print(f"taskserver: note: no daemon is running; the next one to start stops run {run.id} "
                      "and records it cancelled", file=sys.stderr)
        finally:
            if store is not None:
                store.close()
    if run is None:
        raise UserError(f"tenant {tenant.name!r} has no run {run_id}", hint="see `taskserver jobs history`")
    return run, warning


def _pause(args: argparse.Namespace) -> int:
    return _set(args, True)


def _resume(args: argparse.Namespace) -> int:
    return _set(args, False)


def _set(args: argparse.Namespace, paused: bool) -> int:
    cfg = _load(args)
    got = set_paused(cfg, _tenant(cfg, args.tenant), args.job, caller(), paused)
    if args.json:
        print(json.dumps(got))
    elif paused:
        print(f"{got['job']}: paused by {got['paused_by']} since {got['paused_since']}"
              + ("" if got["changed"] else " (already)"))
    else:
        print(f"{got['job']}: resumed" if got["changed"] else f"{got['job']}: was not paused")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    cfg = _load(args, jobs=False)
    run, _warned = cancel_run(cfg, _tenant(cfg, args.tenant), args.id, caller())  # said on stderr
    if args.json:
        print(json.dumps(_run_dict(run, output=False)))
    elif run.state is State.RUN:
        print(f"run {run.id}: stopping (the daemon TERMs it, then KILLs it after the grace)")
    elif run.reason and run.reason.startswith("cancelled"):
        print(f"run {run.id}: ERR {run.reason}")
    else:
        print(f"run {run.id} had ended already: {run.state.value} {run.reason or ''}".rstrip())
    return 0
