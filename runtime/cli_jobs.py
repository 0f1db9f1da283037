"""`taskserver jobs ...`: enqueue long tasks, report their outcome; the helpers every `jobs` command shares.

Run ids are per tenant; ``--tenant`` picks the tenant (default: $TASKSERVER_TENANT inside a run, else the
only tenant, else ``default``).  ``enqueue`` and ``run`` add a QUE run to the tenant's store and wake a
running daemon with SIGUSR1; with no daemon the run waits until the next ``taskserver run`` (or ``--once``).
Reading runs (list, show, history) is runtime/cli_read.py; pause, resume, cancel runtime/cli_steer.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import cli_enqueue, committed, config, limits, privs, schedule, statusfile, tenancy
from .config_values import NAME, NAME_HINT
from .errors import UserError
from .limits import shown
from .model import Config, JobDef, State, TenantDef, storable
from .store import UNSERVED, NoStore, Run, Store, Verify, load_backends, open_store

DEFAULT_QUEUE = cli_enqueue.DEFAULT_QUEUE


def register(sub: Any) -> None:
    """Add the `jobs` command group to ``sub`` (an argparse subparsers action)."""
    jobs = sub.add_parser("jobs", help="list, run and enqueue jobs; show runs and history",
                          description="Jobs and runs of one configuration's tenants. Run ids are per tenant; "
                          "inside a run, $TASKSERVER_TENANT and $TASKSERVER_RUN_ID name the run.")
    jsub = jobs.add_subparsers(title="jobs commands", dest="jobs_command", metavar="COMMAND", required=True)

    def cmd(name: str, help_text: str, func: Any, json_opt: bool = True,
            **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = jsub.add_parser(name, help=help_text, **kw)
        p.add_argument("--tenant", metavar="NAME", type=_config_name,
                       help="the tenant (default: the only one, or `default`)")
        if json_opt:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    p = cmd("enqueue", "queue a long task; prints its run id", _enqueue,
            usage="taskserver jobs enqueue [--tenant NAME] [--queue QUEUE] [--json] -- CMD [ARGS...]")
    p.add_argument("--queue", default=DEFAULT_QUEUE, type=_queue_name,
                   help="tasks of one queue run one at a time, in order (default: %(default)s)")
    p.add_argument("argv", nargs="+", metavar="CMD", help="the command and its arguments (no shell)")
    p = cmd("finish", "report a task's own outcome (wins over its exit code)", _finish, json_opt=False)
    p.add_argument("id", type=_run_id, metavar="ID", nargs="?",
                   help="the run id (default: $TASKSERVER_RUN_ID, set inside a run)")
    p.add_argument("--status", choices=("ok", "err"), required=True, help="the outcome the task reports")
    p.add_argument("--message", metavar="TEXT", type=_message,
                   help=f"a note kept in the run's history (at most {limits.MAX_MESSAGE_CHARS} characters)")
    from . import cli_read, cli_steer  # noqa: PLC0415 - they import this module

    cmd("list", "the configured jobs, their next due time and last run", cli_read._list)
    p = cmd("show", "one run in full, with its output tail", cli_read._show)
    p.add_argument("id", type=_run_id, metavar="ID", help="the run id")
    p = cmd("history", "recent runs, newest first", cli_read._history)
    p.add_argument("job", nargs="?", metavar="JOB", type=_config_name,
                   help="only this job's runs (default: all runs)")
    p.add_argument("--limit", type=_positive, default=50,
                   help=f"at most this many runs (default: 50, at most {limits.MAX_HISTORY})")
    p = cmd("run", "run a job now, ignoring its schedule; prints the run id", _run_now)
    p.add_argument("name", metavar="NAME", type=_config_name,
                   help="a job of the tenant, as in `taskserver jobs list`")
    cli_steer.register(cmd)


def _whole(text: str, what: str, maximum: int) -> int:
    # ASCII digits only: isdigit() and int() also take other scripts' digits
    if not (text.isascii() and text.isdigit() and len(text) <= 20) or not 1 <= int(text) <= maximum:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not {what} (a whole number from 1 to {maximum})")
    return int(text)


def _positive(text: str) -> int:
    return _whole(text, "a count", limits.MAX_HISTORY)


def _run_id(text: str) -> int:
    return _whole(text, "a run id", limits.MAX_RUN_ID)


def _queue_name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a queue name ({NAME_HINT})")
    return text


def _config_name(text: str) -> str:
    """A tenant or job name as the config allows them (nothing else can name one)."""
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a tenant or job name ({NAME_HINT})")
    return text


def _message(text: str) -> str:
    if len(text) > limits.MAX_MESSAGE_CHARS or "\0" in text:
        raise argparse.ArgumentTypeError(f"a message of at most {limits.MAX_MESSAGE_CHARS} characters, "
                                         f"without NUL, got {len(text)} characters")
    return storable(text)  # bytes that are not UTF-8 (a lone surrogate here) as backslash escapes


# -- helpers ---------------------------------------------------------------------------------------------
def _tenant(cfg: Config, name: str | None) -> TenantDef:
    name = name or os.environ.get("TASKSERVER_TENANT") or None
    if name is None:
        name = cfg.tenants[0].name if len(cfg.tenants) == 1 else "default"
    tenant = cfg.tenant(name)
    if tenant is None:
        known = ", ".join(t.name for t in cfg.tenants) or "none"
        raise UserError(f"{cfg.path}: no tenant {shown(name)} (tenants: {limits.clip(known, 200)})",
                        hint="choose one with --tenant")
    return tenant


def _runnable(cfg: Config, tenant: TenantDef) -> None:
    if tenant.login is None:
        raise UserError(f"tenant {tenant.name!r} has no login, so it runs nothing",
                        hint=f"taskserver tenants enable {tenant.name} --login USER")


def _store(cfg: Config, tenant: TenantDef, *, create: bool) -> Store | None:
    """The tenant's store through the backend registry; None when it has none yet and ``create`` is off."""
    # a command that may create the store writes into it: check it first (the whole file only while no
    # daemon serves it: store_errors.UNSERVED)
    verify: Verify = UNSERVED if create else False
    try:
        return open_store(tenant, cfg.tenant_dir(tenant.name), create=create, verify=verify)
    except NoStore:
        return None


def _load(args: argparse.Namespace, *, jobs: bool = True, every_tenant: bool = False) -> Config:
    """The config: the server section and the tenant the command acts on (with its jobs when ``jobs``),
    all of it with ``every_tenant`` (config.load_tenant). As root, one another user controls is acted on
    as that user from here on (initgroups, setgid, setuid): it names paths and tenants that user chose, so
    root does only what that user could."""
    name = getattr(args, "tenant", None) or os.environ.get("TASKSERVER_TENANT") or None
    cfg = config.load(args.config) if every_tenant else config.load_tenant(args.config, name, jobs=jobs)
    # before any drop: the interpreter's own modules may be out of the user's reach
    load_backends({t.store.kind for t in cfg.tenants})
    privs.become_owner(cfg)
    return cfg


def _denied(cfg: Config, tenant: TenantDef) -> UserError | None:
    """Root, the tenant's user and the daemon's user may use a tenant's runs; anyone else is refused."""
    return cli_enqueue.denied(cfg, tenant)


@contextlib.contextmanager
def _as_tenant(cfg: Config, tenant: TenantDef) -> Iterator[None]:
    """Touch a tenant's store and status files as the user its jobs run as, with that user's groups.

    As root: the state dir and the tenant's own directory are made as the daemon would make them, then only
    the effective ids and groups change (and change back). Root's supplementary groups are never kept:
    they would open files (a `store:` in a root:root 0660 file) the tenant's user could not.
    """
    load_backends([tenant.store.kind])  # imported as root: the interpreter's own modules may be out of reach
    denied = _denied(cfg, tenant)
    if denied is not None:
        raise denied
    spec = privs.tenant_spec(cfg, tenant)
    if os.geteuid() != 0 or spec is None:
        yield
        return
    privs.prepare_dir(cfg.server.state_dir, privs.daemon_spec(cfg))
    tenancy.prepare(cfg, tenant)
    with privs.acting_as(privs.resolve(spec)):
        yield


def _wake(cfg: Config, store: Store) -> bool:
    """Wake the daemon serving the store so it picks up new QUE runs at once (committed.wake)."""
    return committed.wake(cfg.path, store.notify)


def _queued(cfg: Config, tenant: TenantDef, job: str, queue: str | None,
            argv: list[str] | None) -> tuple[int, str | None]:
    """Add the QUE run.  A failure before its commit raises (nothing was queued); after the commit, the run
    id is the truth and is returned, whatever else fails (a caller that retried would queue it twice), with
    the warning that its status file was not written, if it was not."""
    with _as_tenant(cfg, tenant):
        store = _store(cfg, tenant, create=True)
        assert store is not None
        try:
            run_id = store.add(job, queue=queue, argv=argv, now=time.time())
            warning = _after_commit(cfg, tenant, store, run_id)
        finally:
            store.close()
    return run_id, warning


def _after_commit(cfg: Config, tenant: TenantDef, store: Store, run_id: int) -> str | None:
    return committed.after_commit(cfg.path, (cfg.tenant_dir(tenant.name), tenant.name), run_id,
                                  lambda: store.get(run_id), store.notify)


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
    if run.host is not None:  # a shared store: the host whose daemon ran it
        d["host"] = run.host
    if run.bad is not None:  # written past taskserver's checks: shown with safe values (sqlite_rows.py)
        d["malformed"] = run.bad
    if output:
        d["output"] = run.output
    return d


def _next_due(job: JobDef, tenant: TenantDef, store: Store | None, now: datetime) -> datetime | None:
    """As the daemon counts it (schedule.next_due): an interval goes on on its grid from the last due time."""
    last = store.last_due(job.name) if store else None
    since = datetime.fromtimestamp(last, UTC) if last is not None else None
    return schedule.next_due(job, tenant.timezone, since, now)


# -- commands --------------------------------------------------------------------------------------------
def _enqueue(args: argparse.Namespace) -> int:
    cfg = _load(args, jobs=False)
    return _enqueue_as(cfg, args)


def _enqueue_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    _runnable(cfg, tenant)
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UserError("no command given to enqueue", hint="taskserver jobs enqueue -- CMD [ARGS...]")
    problem = limits.argv_problem(argv)
    if problem is not None:  # the daemon checks again before it starts a stored task
        raise UserError(f"cannot enqueue this: {problem}", hint="taskserver jobs enqueue -- CMD [ARGS...]")
    _print_id(cfg, args, tenant, _queued(cfg, tenant, "", args.queue, argv)[0])
    return 0


def _print_id(cfg: Config, args: argparse.Namespace, tenant: TenantDef, run_id: int) -> None:
    committed.print_id(args.json, cfg.tenant_dir(tenant.name), tenant.name, run_id)


def _run_now(args: argparse.Namespace) -> int:
    cfg = _load(args)
    return _run_now_as(cfg, args)


def _run_now_as(cfg: Config, args: argparse.Namespace) -> int:
    tenant = _tenant(cfg, args.tenant)
    _runnable(cfg, tenant)
    job = next((j for j in tenant.jobs if j.name == args.name), None)
    if job is None:
        names = ", ".join(j.name for j in tenant.jobs) or "none"
        raise UserError(f"tenant {tenant.name!r} has no job {shown(args.name)} "
                        f"(jobs: {limits.clip(names, 200)})",
                        hint="see `taskserver jobs list`")
    _print_id(cfg, args, tenant, _queued(cfg, tenant, job.name, job.queue, None)[0])
    return 0


def _finish(args: argparse.Namespace) -> int:
    cfg = _load(args, jobs=False)
    with _as_tenant(cfg, _tenant(cfg, args.tenant)):
        return _finish_as(cfg, args)


def _finish_as(cfg: Config, args: argparse.Namespace) -> int:
    if args.id is None:
        env_id = os.environ.get("TASKSERVER_RUN_ID", "")
        try:
            args.id = _run_id(env_id)
        except argparse.ArgumentTypeError:
            raise UserError("no run id given and $TASKSERVER_RUN_ID is not set to one",
                            hint="taskserver jobs finish ID --status ok|err (inside a run, ID is optional)",
                            ) from None
    tenant = _tenant(cfg, args.tenant)
    store = _store(cfg, tenant, create=False)
    if store is None:
        raise UserError(f"tenant {tenant.name!r} has no runs yet", hint="check the run id and --tenant")
    try:
        ended = store.get(args.id)
        if ended is None:
            raise UserError(f"tenant {tenant.name!r} has no run {args.id}",
                            hint="see `taskserver jobs history`")
        _refuse_late_success(ended, args.status == "ok")
        run = store.report(args.id, args.status == "ok", args.message, now=time.time())
    finally:
        store.close()
    if run.queued and os.path.exists(statusfile.path_of(cfg.tenant_dir(tenant.name), tenant.name, run)):
        # (a scheduled job's file is the daemon's to write)
        committed.update_after_commit((cfg.tenant_dir(tenant.name), tenant.name), run,
                                        f"{run.state.value} {run.reason or ''}".rstrip())
    return 0


def _refuse_late_success(run: Run, ok: bool) -> None:
    """A run that has ended ERR stays ERR: an "ok" reported after its end would silently hide the failure
    (a late "err" on an OK run is kept: it shows as ERR reported, with its message)."""
    if ok and run.state is State.ERR and run.finished is not None:
        raise UserError(f"run {run.id} already ended ERR {run.reason or ''}".rstrip()
                        + "; a report after its end cannot turn it into OK",
                        hint="report from inside the task before it exits (jobs finish --status ok); "
                        f"the run stays as `taskserver jobs show {run.id}` shows it")
