"""`taskserver jobs enqueue` without the configuration's parser, when the running daemon vouches for it.

An application's shell loop pays an interpreter start per task; the full path (runtime/cli_jobs.py) adds
the YAML parser, the config's dataclasses, the scheduler's and the store contract's modules to it. Here a
plain `[-c PATH] jobs enqueue [--tenant T] [--queue Q] [--json] -- CMD...` (``plain``) writes its row with
only the pid file's code, the privilege helpers and sqlite3, from the few settings the running daemon of
this config published in its ``.info`` (``published``: each tenant's login, run_as and store, the state
dir, the server's run_as) for the file it read.

What it trusts and why (docs/security.md):
- the settings only from the ``.info`` of the daemon holding this config's lock, in root's place
  (/run/taskserver, root's and not writable by others; the file root's, a regular file, not writable by
  group or others, opened without following links: runtime/pidfile.py), written by that daemon (its pid
  and start time). A user's own place, or a user's config, is never trusted here: the full path runs;
- only for the file the daemon read: a root-owned config (the trust checks of a full load pass) with the
  same device, inode, size, mtime and ctime, unchanged for 2 s before the daemon read it, at the same path;
- nothing else: the tenant and queue names, the argv, who may act for the tenant (root, the tenant's or the
  daemon's user, as ``denied`` says) and whose identity root takes are decided as the full path decides
  them, by the same functions. The argv is stored as given, as a JSON list; no shell sees it.

Anything doubtful (no daemon, another file, another backend, a tenant with env files or mail, a user or a
group that no longer resolves, any error before the row is committed) runs the full path instead, which
words every error itself; after the commit the run id is the truth, as on the full path.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from types import SimpleNamespace

from . import confpath, conftrust, limits, privs
from .committed import after_commit, print_id
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any

    from .confpath import StrPath
    from .model import Config, TenantDef

KEY = "enqueue"  # the key of the daemon's .info that holds the settings
DEFAULT_QUEUE = "default"


# -- what the daemon publishes ------------------------------------------------------------------------------
def published(cfg: Config, default_state: Path | None) -> dict[str, Any] | None:
    """The settings a lean `jobs enqueue` needs, for the file ``cfg`` was read from; None when there are
    none to give: no file, a file changed just before it was read (no identity in ``cfg.outline``), a file
    another user controls, or ``default_state`` (the state dir this daemon would use without one set in the
    file, computed before any privilege drop) missing."""
    from .config import InheritedStateDir  # noqa: PLC0415 - the daemon's side, which has loaded config

    if not cfg.exists or cfg.outline is None or cfg.owner != 0 or default_state is None:
        return None
    server = cfg.server
    plain_server = server.install_dir is None and not _mails(server.notify)
    return {
        "config": str(cfg.path), "identity": list(cfg.outline[0]), "state_dir": str(server.state_dir),
        "state_default": server.state_dir == default_state or isinstance(server.state_dir, InheritedStateDir),
        "run_as": server.run_as,
        "tenants": [{"name": t.name, "login": t.login, "run_as": t.run_as,
                     "store": str(t.store.path) if t.store.path is not None else None,
                     "lean": plain_server and _plain(t)} for t in cfg.tenants],
    }


def _mails(notify: Sequence[Any]) -> bool:
    return any(n.email is not None for n in notify)


def _plain(tenant: TenantDef) -> bool:
    """A tenant whose load checks nothing on the host but its users: a SQLite store, no env_file (read at
    every load), no mail (its sendmail is looked for at every load)."""
    return tenant.store.kind == "sqlite" and tenant.env.env_file is None and not _mails(tenant.notify)


# -- the command line ----------------------------------------------------------------------------------------
def plain(args: SimpleNamespace, rest: list[str]) -> SimpleNamespace | None:
    """The rest of a plain `jobs enqueue` after the global options (``args``: runtime/cli.py), as the
    namespace argparse would make; None for any other form (argparse reads it, and words every mistake):
    options only before ``--``, each once, spelt out, with a valid name; a command after ``--``."""
    if rest[:2] != ["jobs", "enqueue"]:
        return None
    args.__dict__.update(command="jobs", jobs_command="enqueue", tenant=None, json=False, queue=DEFAULT_QUEUE,
                         func=enqueue, lean=True)
    words, seen = rest[2:], set()
    while words and words[0] != "--":
        word = words.pop(0)
        if word in seen:
            return None
        seen.add(word)
        if word == "--json":
            args.json = True
        elif word in ("--tenant", "--queue") and words and limits.NAME.fullmatch(words[0]):
            setattr(args, word[2:], words.pop(0))
        else:
            return None
    if len(words) < 2 or "--" in words[1:]:  # argparse's reading of a second `--` is its own
        return None
    args.argv = words[1:]
    return args


# -- the lean path ------------------------------------------------------------------------------------------
class _Server:
    __slots__ = ("run_as", "state_dir")

    def __init__(self, run_as: str | None, state_dir: str) -> None:
        self.run_as, self.state_dir = run_as, state_dir


class _Store:
    __slots__ = ("kind", "path")

    def __init__(self, kind: str, path: str | None) -> None:
        self.kind, self.path = kind, path


class _Tenant:
    __slots__ = ("login", "name", "run_as", "store")

    def __init__(self, name: str, login: str | None, run_as: str | None, store: _Store) -> None:
        self.name, self.login, self.run_as, self.store = name, login, run_as, store


class _Config:
    """The part of model.Config that privs and tenancy read, as the daemon published it (plain classes:
    a NamedTuple or a dataclass costs a code generation per class at every start)."""

    __slots__ = ("owner", "path", "server", "tenants")

    def __init__(self, path: str, owner: int, server: _Server, tenants: tuple[_Tenant, ...]) -> None:
        self.path, self.owner, self.server, self.tenants = path, owner, server, tenants

    def tenant(self, name: str) -> _Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def tenant_dir(self, tenant: str) -> str:  # model.Config.tenant_dir, as text
        t = self.tenant(tenant)
        if t is None or t.run_as is None:
            return self.server.state_dir
        return os.path.join(self.server.state_dir, "tenants", tenant)


class _Queued:
    """The row just written, as a status file shows it (statusfile.RunView)."""

    job, state, queued = "", "QUE", True
    reason = started = finished = exit_code = message = None

    def __init__(self, run_id: int, argv: tuple[str, ...], queue: str | None, created: float) -> None:
        self.id, self.argv, self.queue, self.created = run_id, argv, queue, created


class Doubt(Exception):
    """The lean path cannot vouch for this: the full path runs."""


def enqueue(args: argparse.Namespace) -> int:
    """`jobs enqueue` through the daemon's settings, else through the full path."""
    try:
        cfg, tenant = _settings(args)
        spec = privs.tenant_spec(_cast(cfg), _cast(tenant))
        # whose ids root takes (as cli_jobs._as_tenant); another user acts as itself
        ident = privs.resolve(spec) if spec is not None and os.geteuid() == 0 else None
        if denied(_cast(cfg), _cast(tenant)) is not None:
            raise Doubt("denied")  # the full path says so, in its words
    except (Doubt, UserError, OSError, ValueError, KeyError, TypeError) as exc:
        return _full(args, exc)
    return _write(args, cfg, tenant, ident)


def _full(args: argparse.Namespace, why: BaseException) -> int:
    import logging  # noqa: PLC0415 - the lean path logs nothing

    from . import cli_jobs, logs  # noqa: PLC0415 - the parser, the dataclasses: only when the lean path cannot

    args.lean = False  # the full path's exit is the interpreter's own (runtime/cli.py console)
    if isinstance(args.config, str):  # as argparse gives it to the full path (runtime/cli.py _plain_globals)
        from pathlib import Path  # noqa: PLC0415 - not on the lean path (runtime/confpath.py)

        args.config = Path(args.config)
    if not logging.getLogger().handlers:  # runtime/cli.py set it up only with -v or --debug
        logs.setup(verbose=args.verbose, debug=args.debug)
    logging.getLogger(__name__).debug("jobs enqueue: the full path (%s)", limits.clip(str(why), 200))
    return cli_jobs._enqueue(args)


def _cast(value: object) -> Any:
    """privs and tenancy read only the attributes _Config and _Tenant have (model.Config, TenantDef)."""
    return value


def _settings(args: argparse.Namespace) -> tuple[_Config, _Tenant]:
    """The config and tenant the daemon vouches for (see the module docstring), or Doubt."""
    from .pidfile import probe  # noqa: PLC0415 - the pid file's modules: not for the daemon's own imports

    path = args.config if args.config is not None else confpath.default_config_path()
    st = _stat(path)
    if conftrust.check_trust(path, st) != 0:
        raise Doubt("a config another user controls")
    state = probe(os.path.abspath(path))
    info = state.info() if state.running and state.owner == 0 else None
    got = info.get(KEY) if info is not None else None
    if not isinstance(got, dict) or os.path.abspath(str(got["config"])) != os.path.abspath(path):
        raise Doubt("no settings from a daemon of this config in root's place")
    if list(got["identity"]) != list(conftrust.file_identity(st)):
        raise Doubt("the file changed since the daemon read it")
    cfg = _Config(confpath.pure(path), 0, _Server(_text(got["run_as"]), _state_dir(path, got)), _tenants(got))
    tenant = _chosen(cfg, args.tenant or os.environ.get("TASKSERVER_TENANT") or None)
    if tenant.login is None:
        raise Doubt("a tenant without a login")
    return cfg, tenant


def _stat(path: StrPath) -> os.stat_result:
    """The config's stat as config._read takes it (a FIFO in its place is not waited for)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Doubt("not a regular file")
    return st


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Doubt(f"not a text: {limits.shown(value)}")
    return value


def _state_dir(path: StrPath, got: dict[str, Any]) -> str:
    """The state dir the full path would use: the file's, or this command's default (confpath.py), which may
    differ from the daemon's ($STATE_DIRECTORY, another user's home): then only an equal one is certain.
    Both are texts as pathlib writes a path (confpath.pure), so equal paths are equal texts."""
    published_dir = confpath.pure(str(got["state_dir"]))
    if got["state_default"] is not False and confpath.default_state_dir(path, 0) != published_dir:
        raise Doubt("this command's default state dir is not the daemon's")
    return published_dir


def _tenants(got: dict[str, Any]) -> tuple[_Tenant, ...]:
    tenants = []
    for t in got["tenants"]:
        if t["lean"] is not True:
            raise Doubt(f"tenant {limits.shown(t['name'])} needs the full load")
        store = _text(t["store"])
        tenants.append(_Tenant(str(t["name"]), _text(t["login"]), _text(t["run_as"]),
                               _Store("sqlite", confpath.pure(store) if store is not None else None)))
    return tuple(tenants)


def _chosen(cfg: _Config, name: str | None) -> _Tenant:
    """config.load_tenant's choice; its host checks (the users named exist) as config_values makes them."""
    every = name is None  # without a name, every tenant's settings are read, and checked
    name = name or (cfg.tenants[0].name if len(cfg.tenants) == 1 else "default")
    tenant = cfg.tenant(name)
    if tenant is None:
        raise Doubt("no such tenant")
    specs = [cfg.server.run_as, *(t.run_as for t in (cfg.tenants if every else (tenant,)))]
    for spec in filter(None, specs):
        _exists(spec)
    return tenant


def _exists(spec: str) -> None:
    """config_values.existing_user's check (a full load makes it for each run_as): KeyError when not."""
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    user, _, group = spec.partition(":")
    pwd.getpwnam(user)
    if group:
        grp.getgrnam(group)


def _write(args: argparse.Namespace, cfg: _Config, tenant: _Tenant, ident: privs.Identity | None) -> int:
    argv = list(args.argv)
    if limits.argv_problem(argv) is not None:
        return _full(args, Doubt("the command"))  # refused there, in its words
    tenant_dir = cfg.tenant_dir(tenant.name)
    # imported now: acting as the tenant's user, the interpreter's own modules may be out of reach
    from . import sqlite_base, sqlite_wake  # noqa: F401, PLC0415 - sqlite3 once the settings are known

    if ident is not None:  # (the daemon's signal, when its wake-up socket is not there, only then)
        from . import pidsignal  # noqa: F401, PLC0415

    done: list[int] = []
    try:
        with _as_tenant(cfg, tenant, ident):
            _queue(cfg, tenant, args.queue, argv, done)
    except (UserError, OSError) as exc:
        if not done:  # nothing was queued
            return _full(args, exc)
        raise
    print_id(args.json, tenant_dir, tenant.name, done[0])
    return 0


@contextmanager
def _as_tenant(cfg: _Config, tenant: _Tenant, ident: privs.Identity | None) -> Iterator[None]:
    """cli_jobs._as_tenant, after its check (``denied``): as root, the state dir and the tenant's directory
    as the daemon makes them, then the tenant's user's ids and groups."""
    if os.geteuid() != 0 or ident is None:
        yield
        return
    privs.prepare_dir(cfg.server.state_dir, privs.daemon_spec(_cast(cfg)))
    if tenant.run_as is not None:  # tenancy.prepare does nothing for a tenant without its own user
        from . import tenancy  # noqa: PLC0415 - as root, for such a tenant only

        tenancy.prepare(_cast(cfg), _cast(tenant))
    with privs.acting_as(ident):
        yield


def _queue(cfg: _Config, tenant: _Tenant, queue: str, argv: list[str], done: list[int]) -> None:
    """The row, as sqlite_store's open_sqlite (created, checked, verified) and add write it; its run id goes
    into ``done`` once committed. Any failure before that is an OSError (the full path words it)."""
    import sqlite3  # noqa: PLC0415 - imported by _write, as root

    from . import sqlite_base, sqlite_guard, sqlite_wake  # noqa: PLC0415
    from .store_errors import UNSERVED  # noqa: PLC0415

    tenant_dir = cfg.tenant_dir(tenant.name)
    path = tenant.store.path or os.path.join(tenant_dir, f"{tenant.name}.sqlite")  # sqlite_store.store_path
    marker = sqlite_guard.marker_path(tenant_dir, tenant.name)
    # the whole file's check as on the full path: only while no daemon serves the store (sqlite_guard.served)
    db = sqlite_base.open_db(path, marker, create=True, verify=UNSERVED)
    try:
        now = time.time()
        try:
            run_id = sqlite_base.add_task(db, "", queue=queue, argv=argv, due=None, attempt=0, now=now)
        except sqlite3.Error as exc:
            raise OSError(str(exc)) from exc
        done.append(run_id)
        wake = sqlite_wake.WakeSocket(sqlite_wake.wake_path(path))
        row = _Queued(run_id, tuple(argv), queue, now)
        after_commit(cfg.path, (tenant_dir, tenant.name), run_id, lambda: row, wake.notify)
    finally:
        with suppress(sqlite3.Error):  # as SqliteStore.close
            db.close()


# -- shared with the full path (runtime/cli_jobs.py; after a commit: runtime/committed.py) ----------------
def denied(cfg: Config, tenant: TenantDef) -> UserError | None:
    """Root, the tenant's user and the daemon's user may use a tenant's runs; anyone else is refused."""
    me = os.geteuid()
    specs = {privs.tenant_spec(cfg, tenant), privs.daemon_spec(cfg)} - {None}
    if me == 0 or not specs:  # no run_as at all: the files' own permissions decide
        return None
    idents = [privs.resolve(spec) for spec in specs if spec is not None]  # each user's groups: one lookup
    owners = {ident.user: ident.uid for ident in idents}
    if me in owners.values():
        return None
    who = " or ".join(sorted(owners))
    return UserError(f"permission denied: tenant {tenant.name!r} belongs to {who}, not to uid {me}",
                     hint=f"run this as {who} or as root", exit_code=4)
