"""The configuration subcommands: ``check``, ``init-config [PATH]``, ``tenants list|enable|disable``."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import config, config_edit, conftrust, limits, privs, schedule
from .config_values import NAME, NAME_HINT, USER
from .errors import UserError, one_line
from .limits import shown
from .model import Config, TenantDef

EXIT_INVALID = 2


def _path(args: argparse.Namespace) -> Path:
    given: Path | None = args.config
    return given if given is not None else config.default_config_path()


def _check(args: argparse.Namespace) -> int:
    path = _path(args)
    if args.config is not None and not path.exists():
        raise UserError(f"{path} does not exist", hint=f"create one with `taskserver init-config {path}`")
    try:
        cfg = config.load(path)
    except config.ConfigInvalid as exc:
        for err in exc.errors:
            print(f"taskserver: error: {one_line(str(err))}", file=sys.stderr)
            if err.hint:
                print(f"taskserver: hint: {one_line(err.hint)}", file=sys.stderr)
        if exc.more:
            print(f"taskserver: error: {path}: {exc.more} more errors not listed "
                  f"(at most {limits.MAX_ERRORS} are)", file=sys.stderr)
        return EXIT_INVALID
    if not cfg.exists:
        print(f"{path}: no such file; `taskserver run` would use the embedded default (nothing to check)")
        return 0
    if not _stores_available(cfg):
        return EXIT_INVALID
    jobs = sum(len(t.jobs) for t in cfg.tenants)
    print(f"{path}: OK ({len(cfg.tenants)} tenant(s), {jobs} job(s))")
    if args.verbose:
        from . import callprobe  # noqa: PLC0415 - only -v starts the probe's child processes

        _print_schedule(cfg)
        privs.become_owner(cfg)  # the probe runs code of the file's install_dir
        for line in callprobe.report(cfg):
            print(line)
    return 0


def _stores_available(cfg: Config) -> bool:
    """A store kind the file may name but this build cannot open: the daemon would refuse to start."""
    from .store import BACKENDS, load_backends  # noqa: PLC0415

    load_backends()

    good = True
    for t in cfg.tenants:
        if t.store.kind not in BACKENDS:
            where = f"{t.loc}: " if t.loc else f"{cfg.path}: "
            print(f"taskserver: error: {where}tenants.{t.name}.store: the {t.store.kind} store is not "
                  "available in this version", file=sys.stderr)
            print("taskserver: hint: remove store: to use the default SQLite file, or store: {sqlite: PATH}",
                  file=sys.stderr)
            good = False
    return good


def _print_schedule(cfg: Config) -> None:
    """Each job's next due time, so an operator can see what the cron and window lines mean, and whom its
    notifications go to (after inheritance)."""
    from .alerts import targets  # noqa: PLC0415 - only for -v
    from .config_notify import describe  # noqa: PLC0415

    now = datetime.now(UTC)
    for t in cfg.tenants:
        for job in t.jobs:
            nxt = schedule.next_fire(job, t.timezone, now)
            zone = schedule.zone_of(job, t.timezone)
            when = nxt.astimezone(zone).isoformat(sep=" ", timespec="minutes") if nxt else "when enqueued"
            note = "" if job.enabled and t.login else " (not run: " + (
                "job disabled)" if not job.enabled else "tenant has no login or is disabled)")
            told = describe(targets(cfg, t, job))
            print(f"  {t.name}/{job.name}: next {when}{note}" + (f"; notifies {told}" if told else ""))


def _init_config(args: argparse.Namespace) -> int:
    path: Path = args.path if args.path is not None else _path(args)
    if os.geteuid() == 0 and (owner := conftrust.directory_owner(path)):
        privs.drop_privileges(str(owner))  # a user's directory: the file is theirs, made as them
    try:
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} already exists; not overwriting it", hint="edit it, or remove it first")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        # 0644: the daemon re-reads the file on reload after dropping privileges to run_as
        config_edit.write_atomic(path, config.EXAMPLE_CONFIG, mode=0o644, exclusive=True)
    except OSError as exc:
        raise UserError(f"cannot write {shown(str(path), 200)}: {exc.strerror or exc}",
                        hint="choose a directory you can write, or create it first") from None
    print(f"wrote {path}; check it with `taskserver -c {path} check`")
    default = config.default_config_path()
    if args.config is None and os.path.abspath(path) != os.path.abspath(default):
        # as root the default is /etc/...: `taskserver check` alone would check another file than this one
        print(f"note: without -c, taskserver commands read {default}; pass `-c {path}` or set "
              f"TASKSERVER_CONFIG={path}")
    return 0


NO_LOGIN = "no login (runs nothing)"


def _tenant_state(t: TenantDef) -> str:
    if not t.enabled:
        return "disabled"
    return "enabled" if t.login is not None else NO_LOGIN


def _store(cfg: Config, t: TenantDef) -> str:
    if t.store.kind == "postgresql":
        return "postgresql"  # the DSN may hold a password: not shown
    return str(t.store.path or cfg.tenant_dir(t.name) / f"{t.name}.sqlite")


def _list(args: argparse.Namespace) -> int:
    cfg = config.load(_path(args))
    if not cfg.exists:
        print(f"# {cfg.path} does not exist: embedded default")
    rows = [("TENANT", "LOGIN", "STATE", "JOBS", "STORE")]
    for t in cfg.tenants:
        login = t.login or t.disabled_login or "-"
        rows.append((t.name, login, _tenant_state(t), str(len(t.jobs)), _store(cfg, t)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


def _edit(args: argparse.Namespace, change: config_edit.Change, expect: str) -> int:
    path = _path(args)
    current = config.load(path)  # refuses an invalid or unsafe file before touching it
    if not current.exists:
        raise UserError(f"{path} does not exist", hint=f"create it with `taskserver init-config {path}`")
    privs.become_owner(current)  # the file is replaced through its directory, which that user may swap
    name: str = args.name

    def validate(text: str) -> None:
        cfg = config.parse_text(text, path)
        tenant = cfg.tenant(name)
        if tenant is None or _tenant_state(tenant) != expect:
            raise UserError(f"editing {path} went wrong; nothing was written", hint="please report this")

    changed = config_edit.edit_file(path, lambda text: change(text, str(path)), validate)
    note = "" if changed else " (already so; file unchanged)"
    if expect == NO_LOGIN:  # enabled, yet it runs nothing: saying just "enabled" would mislead
        print(f"tenant {name}: enabled{note} in {path}, but it has no login, so it runs nothing; give it one "
              f"with `taskserver tenants enable {name} --login USER`")
    else:
        print(f"tenant {name}: {expect}{note} in {path}; apply it with `taskserver reload`")
    return 0


def _enable(args: argparse.Namespace) -> int:
    login: str | None = args.login
    if login is not None and not USER.fullmatch(login):
        raise UserError(f"--login {shown(login)} is not a user name", hint="letters, digits, '_', '.', '-'")

    def change(text: str, file: str) -> str:
        return config_edit.enable_tenant(text, file, args.name, login)

    tenant = config.load(_path(args)).tenant(args.name)
    has_login = login is not None or (tenant is not None and (tenant.login or tenant.disabled_login))
    return _edit(args, change, "enabled" if has_login else NO_LOGIN)


def _disable(args: argparse.Namespace) -> int:
    def change(text: str, file: str) -> str:
        return config_edit.disable_tenant(text, file, args.name)

    return _edit(args, change, "disabled")


def _tenant_name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a tenant name ({NAME_HINT})")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add check, init-config and tenants to the main parser's subcommands."""
    p = sub.add_parser("check", help="validate the configuration file (exit 0 valid, 2 invalid)",
                       description="Validate the configuration file: every error with file:line:column, "
                       "exit 0 when valid, 2 when not. With -v, each job's next due time and why a job "
                       "would not run.")
    p.set_defaults(func=_check)
    p = sub.add_parser("init-config", help="write a commented example configuration (never overwrites)")
    p.add_argument("path", nargs="?", type=Path, metavar="PATH", help="default: the -c / default config path")
    p.set_defaults(func=_init_config)
    tenants = sub.add_parser("tenants", help="list, enable or disable tenants (edits the file in place)")
    tsub = tenants.add_subparsers(title="tenant commands", dest="tenants_command", metavar="ACTION")
    tsub.required = True
    p = tsub.add_parser("list", help="show the tenants, their logins and state")
    p.set_defaults(func=_list)
    p = tsub.add_parser("enable", help="enable a tenant (adding it, or setting its login)")
    p.add_argument("name", metavar="NAME", type=_tenant_name,
                   help="the tenant, as in `taskserver tenants list`")
    p.add_argument("--login", metavar="USER",
                   help="the login the tenant's jobs act for, given to each run as $TASKSERVER_LOGIN "
                   "(needed for a new tenant); jobs run as task_server.run_as")
    p.set_defaults(func=_enable)
    p = tsub.add_parser("disable", help="disable a tenant: it keeps its login and jobs but runs nothing")
    p.add_argument("name", metavar="NAME", type=_tenant_name,
                   help="the tenant, as in `taskserver tenants list`")
    p.set_defaults(func=_disable)

