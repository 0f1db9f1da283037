"""`taskserver jobs ...`: enqueue long tasks and report their outcome, list jobs, show runs and history.

Run ids are per tenant; ``--tenant`` picks the tenant (default: $TASKSERVER_TENANT inside a run, else the
only tenant, else ``default``).  ``enqueue`` and ``run`` add a QUE run to the tenant's store and wake a
running daemon with SIGUSR1; with no daemon the run waits until the next ``taskserver run`` (or ``--once``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import config, control, privs, schedule, statusfile
from .errors import UserError
from .model import Config, Cron, Every, JobDef, TenantDef
from .sqlite_store import SqliteStore, store_path
from .store import Run

DEFAULT_QUEUE = "default"


def register(sub: Any) -> None:
    """Add the `jobs` command group to ``sub`` (an argparse subparsers action)."""
    jobs = sub.add_parser("jobs", help="list, run and enqueue jobs; show runs and history",
                          description="Jobs and runs of one configuration's tenants. Run ids are per tenant; "
                          "inside a run, $TASKSERVER_TENANT and $TASKSERVER_RUN_ID name the run.")
    jsub = jobs.add_subparsers(title="jobs commands", dest="jobs_command", metavar="COMMAND", required=True)

    def cmd(name: str, help_text: str, func: Any, json_opt: bool = True,
            **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = jsub.add_parser(name, help=help_text, **kw)
        p.add_argument("--tenant", metavar="NAME", help="the tenant (default: the only one, or `default`)")
        if json_opt:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    p = cmd("enqueue", "queue a long task; prints its run id", _enqueue,
            usage="taskserver jobs enqueue [--tenant NAME] [--queue QUEUE] [--json] -- CMD [ARGS...]")
    p.add_argument("--queue", default=DEFAULT_QUEUE, type=_name,
                   help="tasks of one queue run one at a time, in order (default: %(default)s)")
    p.add_argument("argv", nargs="+", metavar="CMD", help="the command and its arguments (no shell)")
    p = cmd("finish", "report a task's own outcome (wins over its exit code)", _finish, json_opt=False)
    p.add_argument("id", type=int, metavar="ID", nargs="?",
                   help="the run id (default: $TASKSERVER_RUN_ID, set inside a run)")
    p.add_argument("--status", choices=("ok", "err"), required=True, help="the outcome the task reports")
    p.add_argument("--message", metavar="TEXT", help="a note kept in the run's history")
    cmd("list", "the configured jobs, their next due time and last run", _list)
    p = cmd("show", "one run in full, with its output tail", _show)
    p.add_argument("id", type=int, metavar="ID", help="the run id")
    p = cmd("history", "recent runs, newest first", _history)
    p.add_argument("job", nargs="?", metavar="JOB", help="only this job's runs (default: all runs)")
    p.add_argument("--limit", type=_positive, default=50, help="at most this many runs (default: 50)")
    p = cmd("run", "run a job now, ignoring its schedule; prints the run id", _run_now)
    p.add_argument("name", metavar="NAME", help="a job of the tenant, as in `taskserver jobs list`")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a queue needs a name")
    return text


# -- helpers ---------------------------------------------------------------------------------------------
def _tenant(cfg: Config, name: str | None) -> TenantDef:
    name = name or os.environ.get("TASKSERVER_TENANT") or None
    if name is None:
        name = cfg.tenants[0].name if len(cfg.tenants) == 1 else "default"
    tenant = cfg.tenant(name)
    if tenant is None:
        known = ", ".join(t.name for t in cfg.tenants) or "none"
        raise UserError(f"{cfg.path}: no tenant {name!r} (tenants: {known})", hint="choose one with --tenant")
    return tenant


def _runnable(cfg: Config, tenant: TenantDef) -> None:
    if tenant.login is None:
        raise UserError(f"tenant {tenant.name!r} has no login, so it runs nothing",
                        hint=f"taskserver tenants enable {tenant.name} --login USER")


def _store(cfg: Config, tenant: TenantDef, *, create: bool) -> SqliteStore | None:
    path = store_path(tenant, cfg.server.state_dir)
    if not create and not path.exists():
        return None
    return SqliteStore(path)


@contextlib.contextmanager
def _as_daemon_user(cfg: Config) -> Iterator[None]:
    """As root, touch the store and status files as the run_as user, so the daemon can use what we create.

    Only the effective ids change (and change back): root-owned files in the state dir would lock the
    dropped daemon out of its own store.
    """
    spec = cfg.server.run_as
    ident = privs.resolve(spec) if spec and os.geteuid() == 0 else None
    if ident is None or ident.uid == 0:
        yield
        return
    privs.prepare_dir(cfg.server.state_dir, spec)  # as the daemon does: the state dir belongs to run_as
    egid = os.getegid()
    os.setegid(ident.gid)
    os.seteuid(ident.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)


def _wake(cfg: Config) -> bool:
    """SIGUSR1 to a running daemon so it picks up new QUE runs at once (only to a verified daemon)."""
    try:
        return control.signal_daemon(cfg.path, signal.SIGUSR1) is not None
    except UserError as exc:  # the task is stored either way; it waits for the daemon's next wake-up
        print(f"taskserver: warning: not waking the daemon: {exc.message}", file=sys.stderr)
        return True


def _queued(cfg: Config, tenant: TenantDef, job: str, queue: str | None, argv: list[str] | None) -> int:
    with _as_daemon_user(cfg):
        store = _store(cfg, tenant, create=True)
        assert store is not None
        try:
            run_id = store.add(job, queue=queue, argv=argv, now=time.time())
            run = store.get(run_id)
            assert run is not None
            statusfile.update(cfg.server.state_dir, tenant.name, run)
        finally:
            store.close()
    if not _wake(cfg):
        print(f"taskserver: note: no daemon is running; run {run_id} waits for `taskserver run`",
              file=sys.stderr)
    return run_id


def _stamp(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _run_dict(run: Run, *, output: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": run.id, "job": run.job or None, "queue": run.queue, "state": run.state.value,
        "reason": run.reason, "due": _stamp(run.due), "created": _stamp(run.created),
        "started": _stamp(run.started), "finished": _stamp(run.finished), "exit_code": run.exit_code,
        "attempt": run.attempt, "argv": list(run.argv) if run.argv is not None else None,
        "message": run.message, "pid": run.pid,
    }
    if output:
        d["output"] = run.output
    return d


def _next_due(job: JobDef, tenant: TenantDef, store: SqliteStore | None, now: datetime) -> datetime | None:
    """As the daemon counts it: from the last due time it accounted for (an interval runs on from there)."""
    last = store.last_due(job.name) if store else None
    after = datetime.fromtimestamp(last, UTC) if last is not None else now
    nxt = schedule.next_fire(job, tenant.timezone, after)
    if nxt is not None and nxt < now:  # the daemon is behind or down: the next one from now on
        nxt = schedule.next_fire(job, tenant.timezone, now)
    return nxt


def _trigger(job: JobDef) -> str:
    if isinstance(job.trigger, Cron):
        return f"cron {job.trigger.expr}"
    if isinstance(job.trigger, Every):
        return f"every {job.trigger.seconds:g}s"
    return "on demand"


def _line(run: Run) -> str:
    state = run.state.value + (f" {run.reason}" if run.reason else "")
    what = run.job or ("task " + " ".join(run.argv or ()))
    return f"{run.id:>6}  {_stamp(run.created) or '':25}  {state:22}  {what}"


# -- commands --------------------------------------------------------------------------------------------
def _enqueue(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    return _enqueue_as(cfg, args)


def _enqueue_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    _runnable(cfg, tenant)
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UserError("no command given to enqueue", hint="taskserver jobs enqueue -- CMD [ARGS...]")
    _print_id(cfg, args, tenant, _queued(cfg, tenant, "", args.queue, argv))
    return 0


def _print_id(cfg: Config, args: argparse.Namespace, tenant: TenantDef, run_id: int) -> None:
    if args.json:  # a queued run's status file is its own (a scheduled run writes its job's)
        status = statusfile.status_path(cfg.server.state_dir, tenant.name, run_id)
        print(json.dumps({"id": run_id, "tenant": tenant.name, "status_file": str(status)}))
    else:
        print(run_id)


def _run_now(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    return _run_now_as(cfg, args)


def _run_now_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    _runnable(cfg, tenant)
    job = next((j for j in tenant.jobs if j.name == args.name), None)
    if job is None:
        names = ", ".join(j.name for j in tenant.jobs) or "none"
        raise UserError(f"tenant {tenant.name!r} has no job {args.name!r} (jobs: {names})",
                        hint="see `taskserver jobs list`")
    _print_id(cfg, args, tenant, _queued(cfg, tenant, job.name, job.queue, None))
    return 0


def _finish(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _as_daemon_user(cfg):
        return _finish_as(cfg, args)


def _finish_as(cfg: Config, args: argparse.Namespace) -> int:
    if args.id is None:
        env_id = os.environ.get("TASKSERVER_RUN_ID", "")
        if not env_id.isdigit():
            raise UserError("no run id given and $TASKSERVER_RUN_ID is not set",
                            hint="taskserver jobs finish ID --status ok|err (inside a run, ID is optional)")
        args.id = int(env_id)
    tenant = _tenant(cfg, args.tenant)
    store = _store(cfg, tenant, create=False)
    if store is None:
        raise UserError(f"tenant {tenant.name!r} has no runs yet", hint="check the run id and --tenant")
    try:
        if store.get(args.id) is None:
            raise UserError(f"tenant {tenant.name!r} has no run {args.id}",
                            hint="see `taskserver jobs history`")
        run = store.report(args.id, args.status == "ok", args.message, now=time.time())
    finally:
        store.close()
    if run.queued and statusfile.path_of(cfg.server.state_dir, tenant.name, run).exists():
        statusfile.update(cfg.server.state_dir, tenant.name, run)  # a scheduled job's: the daemon's to write
    return 0


def _list(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _as_daemon_user(cfg):
        return _list_as(cfg, args)


def _list_as(cfg: Config, args: argparse.Namespace) -> int:
    tenants = [_tenant(cfg, args.tenant)] if args.tenant else list(cfg.tenants)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for tenant in tenants:
        store = _store(cfg, tenant, create=False)
        for job in tenant.jobs:
            last = store.history(job.name, limit=1) if store else []
            nxt = _next_due(job, tenant, store, now) if job.enabled else None
            note = None if tenant.login else "tenant has no login: runs nothing"
            note = note or (None if job.enabled else "disabled")
            rows.append({"tenant": tenant.name, "job": job.name, "trigger": _trigger(job),
                         "enabled": job.enabled, "runs": tenant.login is not None and job.enabled,
                         "note": note, "next_due": nxt.isoformat(timespec="seconds") if nxt else None,
                         "last": _run_dict(last[0], output=False) if last else None})
        if store:
            store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        rec: dict[str, Any] | None = r["last"]
        state = f"{rec['state']} {rec['reason'] or ''}".strip() if rec else "-"
        print(f"{r['tenant']}/{r['job']:20}  {r['trigger']:18}  next {r['next_due'] or '-':25}  last {state}"
              + (f"  ({r['note']})" if r["note"] else ""))
    return 0


def _show(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _as_daemon_user(cfg):
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
    status = statusfile.path_of(cfg.server.state_dir, tenant.name, run)
    d["status_file"] = str(status) if status.exists() else None
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        if k != "output" and v is not None:
            print(f"{k}: {' '.join(v) if isinstance(v, list) else v}")
    if run.output:
        print("output:")
        sys.stdout.write(run.output if run.output.endswith("\n") else run.output + "\n")
    return 0


def _history(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    with _as_daemon_user(cfg):
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
        raise UserError(f"tenant {tenant.name!r} has no job {args.job!r} (jobs: {names})",
                        hint="see `taskserver jobs list`")
    if args.json:
        print(json.dumps([_run_dict(r, output=False) for r in runs], indent=2))
        return 0
    for run in runs:
        print(_line(run))
    return 0
