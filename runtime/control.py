"""``taskserver run|start|stop|restart|reload|status``: the daemon's life, LSB init-script style.

Exit codes follow the LSB: ``status`` 0 running, 1 dead with a stale pid file, 3 not running; ``reload``
7 when not running; ``start`` of a running server and ``stop`` of a stopped one are 0.

``start`` daemonizes (fork, setsid, fork; stdin from /dev/null; stdout and stderr appended to
``<state_dir>/<pid file name>.log``) and waits on a pipe until the daemon holds its pid-file lock and its
loop reported ready, or it reports why it failed — so a failed start is seen by the caller, not only in a log.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config, logs, privs
from .cli_enqueue import KEY as ENQUEUE_KEY  # imported before the drop: a reload publishes again
from .cli_enqueue import published
from .cli_status import EXIT_NOT_RUNNING_STATUS, cmd_status
from .cli_status import config_path as _config_path
from .config import InheritedStateDir
from .errors import UserError
from .notify import Notifier
from .pidfile import AlreadyRunning, PidFile, clear_stale, pidfile_path, probe, read_pid
from .pidplace import home_place, open_dir
from .pidsignal import Daemon, signal_daemon

if TYPE_CHECKING:
    from .model import Config

__all__ = ["EXIT_NOT_RUNNING_STATUS", "cmd_status", "pidfile_path_for", "read_pid", "register",
           "signal_daemon"]

log = logging.getLogger(__name__)
EXIT_NOT_RUNNING_RELOAD = 7
READY_TIMEOUT_S = 60.0
# beyond the daemon's stop_timeout and the jobs' grace: time to record them and exit (5 s), and the last
# notifications' grace (6 s at most: runtime/alert_proc.py)
STOP_SLACK_S = 11.0


def pidfile_path_for(cfg: Config) -> Path:
    return Path(pidfile_path(cfg.path))


def _load(args: argparse.Namespace, meanwhile: Callable[[], None] | None = None) -> Config:
    return _load_path(_config_path(args), meanwhile=meanwhile)


def _load_path(path: Path, keepalive: Callable[[], None] | None = None,
               default_state: Path | None = None, meanwhile: Callable[[], None] | None = None) -> Config:
    """The config for the daemon: from the parse it kept of the same text, else parsed in a child, which
    then keeps its parse for the next start or reload (runtime/config_cache.py)."""
    kept = config.load_kept(path, default_state)
    if kept is not None:
        _KEPT[:] = [path]  # said in the daemon's log once it serves (``_serve``), not on `start`'s terminal
        if meanwhile is not None:
            meanwhile()
        return kept
    from . import config_cache  # noqa: PLC0415 - the daemon's start and reload only
    from .isolate import load_in_child  # noqa: PLC0415 - pickle is not needed by status

    made: list[tuple[str, str, str, Config]] = []

    def parsed(where: str, state: str, text: str, cfg: Config) -> None:
        made.append((where, state, text, cfg))

    def keep() -> None:  # in the child, once its answer is sent
        if made:
            config_cache.keep(*made[0])

    return load_in_child(lambda: config.load(path, default_state=default_state, parsed=parsed), keepalive,
                         meanwhile=meanwhile, afterwards=keep)


_KEPT: list[Path] = []  # the config the last ``_load_path`` read from its kept parse, if it did


def _import_daemon() -> None:
    """The daemon's code (the scheduler, the stores and their drivers), imported while the child parses the
    config: on two cores a start-up does both at once."""
    from . import daemon  # noqa: F401, PLC0415


def _become_daemon_user(cfg: Config) -> Callable[..., int]:
    """Everything that needs root, then the privilege drop; the pid file is already held.

    The daemon's code is imported here, before the drop: its modules (and the interpreter's) may live where
    only root can read, and the loop must not meet an ImportError hours later.
    """
    from .alerts import configured  # noqa: PLC0415 - status and stop need not pay for the daemon's imports
    from .daemon import serve  # noqa: PLC0415
    from .httpd import around  # noqa: PLC0415
    from .store import load_backends  # noqa: PLC0415

    # the store backends the config names, before the drop: after it the interpreter's own modules (sqlite3,
    # the PostgreSQL driver) may be out of the dropped user's reach. Only those: the PostgreSQL driver alone
    # is 20 MB of a daemon's memory (a reload that adds the first tenant of another kind may need a restart,
    # and says so)
    load_backends({t.store.kind for t in cfg.tenants})

    spec = privs.daemon_spec(cfg)
    if privs.will_change_uid(spec):
        # reload parses in a child of the dropped daemon, which may not be allowed to read the parser
        from . import config_parse, tenancy  # noqa: F401, PLC0415
    if configured(cfg):  # the delivery process, forked later, may not be allowed to read them either
        from . import alert_proc, alert_send  # noqa: F401, PLC0415

    if cfg.owner != 0:  # a config another user controls: every path it names is touched as that user
        if os.geteuid() == 0:
            _inherit_nothing(cfg)
        privs.drop_privileges(spec)
    os.chdir(cfg.server.install_dir if cfg.server.install_dir is not None else "/")
    privs.prepare_dir(cfg.server.state_dir, spec)
    return around(serve, cfg)  # task_server.http: the web child's tokens, socket and imports, still as root


def _inherit_nothing(cfg: Config) -> None:
    """Root's environment is not for a config another user controls (jobenv.inherit_nothing)."""
    from .jobenv import inherit_nothing  # noqa: PLC0415

    inherit_nothing()
    named = sorted({n for t in cfg.tenants for e in (t.env, *(j.env for j in t.jobs)) for n in e.inherit})
    if named:
        log.warning("config %s belongs to uid %d and root started it: inherit_env passes nothing of root's "
                    "environment (%s)", cfg.path, cfg.owner, ", ".join(named))


def _drop(cfg: Config, keep_caps: bool) -> None:
    """The daemon becomes its user; it keeps CAP_SETUID/SETGID/KILL/CHOWN only if tenants run as others."""
    privs.drop_privileges(privs.daemon_spec(cfg), keep_caps=keep_caps)


def _serve(
    serve: Callable[..., int], cfg: Config, pidfile: PidFile, notifier: Notifier | None,
    default_state: Path | None = None, **kw: Any
) -> int:
    from .plans import restart_settings  # noqa: PLC0415 - status and stop need not import the scheduler

    path, started = cfg.path, time.time()
    if path in _KEPT:
        log.info("config %s: read as parsed before (the same text, code and machine)", path)
    start_only = {"start_only": restart_settings(cfg)}  # what `reload` compares the file with
    published = {**_summary(cfg, started, default_state), **start_only}
    pidfile.write_info(published)

    def reload_config() -> Config:
        watched = notifier is not None and notifier.watchdog_interval() is not None
        # the state dir resolved at start (as root): the dropped daemon must not compute its own default
        new = _load_path(path, notifier.ping if watched and notifier is not None else None,
                         default_state=InheritedStateDir(cfg.server.state_dir))  # (a file may name none)
        privs.check_reload(new)
        published.update(_summary(new, started, default_state))
        pidfile.write_info(published)
        return new

    def status(text: str) -> None:  # the daemon's health, for `taskserver status`
        published["status"] = text
        pidfile.write_info(published)

    def publish(key: str, value: object) -> None:  # the notification counters (docs/notifications.md)
        published[key] = value
        pidfile.write_info(published)

    notifier = notifier or Notifier(None)
    notifier.on_status = status
    notifier.on_publish = publish
    return serve(cfg, notifier=notifier, config_loader=reload_config, **kw)


def _summary(cfg: Config, started: float, default_state: Path | None = None) -> dict[str, Any]:
    tenants = [
        {"name": t.name, "login": t.login, "jobs": sum(j.enabled for j in t.jobs),
         "shared": t.store.kind != "sqlite"} for t in cfg.tenants
    ]
    timeout = cfg.server.stop_timeout
    summary = {"config": str(cfg.path), "started": started, "stop_timeout": timeout, "tenants": tenants}
    summary["outline"] = cfg.outline  # config.load_tenant: where the jobs it may leave unread are
    summary[ENQUEUE_KEY] = published(cfg, default_state)  # what a lean `jobs enqueue` needs (cli_enqueue.py)
    return summary


def _own_default(cfg: Config) -> Path:
    """The state dir this daemon uses when the file sets none: as the parse computed it, before any drop."""
    return config.default_state_dir(cfg.path, cfg.owner)


def _preflight(cfg: Config) -> None:
    if cfg.server.debug:  # task_server.debug: true is --verbose for the daemon
        logging.getLogger().setLevel(logging.DEBUG)
    privs.check_root_policy(cfg)
    privs.check_can_switch(privs.daemon_spec(cfg))
    for tenant in cfg.tenants:
        privs.check_can_switch(tenant.run_as)
    if not cfg.exists:
        log.info("no config file at %s: running the embedded default (its tenant runs nothing)", cfg.path)


# --- run -------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args, meanwhile=_import_daemon)
    _preflight(cfg)
    hold_wakeups()
    pidfile = PidFile.acquire(cfg.path)
    log.debug("holding pid file %s", pidfile.path)
    try:
        keep, default_state = privs.needs_switching(cfg), _own_default(cfg)
        serve = _become_daemon_user(cfg)
        _drop(cfg, keep)
        return _serve(serve, cfg, pidfile, Notifier.from_env(), default_state, once=args.once,
                      time_limit=args.time_limit)
    finally:
        pidfile.release()


# --- start -----------------------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _preflight(cfg)
    running = read_pid(cfg.path)
    if running is not None:
        print(f"taskserver already running (pid {running})")
        return 0
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child:
        os.close(write_fd)
        os.waitpid(child, 0)  # the intermediate process exits as soon as it forked the daemon
        return _await_startup(read_fd, cfg)
    os.close(read_fd)
    code = 1
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        code = _daemon_main(cfg, args, write_fd)
    except BaseException as exc:  # anything that escapes must reach the waiting parent
        _tell(write_fd, f"err 1\n{type(exc).__name__}: {exc}\n")
        log.exception("the daemon failed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _tell(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
        os.close(fd)
    except OSError:
        pass  # already told (and closed), or the parent is gone


def hold_wakeups() -> None:
    """Block the daemon's signals until the loop's handlers are in place (daemon.serve unblocks them).

    Once the pid file is held, `jobs enqueue` may send SIGUSR1 and `stop` SIGTERM; their default action ends
    the process, so a task enqueued while the daemon was still starting killed it, and a stop right after a
    start ended it without its exit path (lease, records). Blocked, a signal waits and is then handled as
    it would be a moment later: a stop arriving during start-up stops the daemon cleanly once it runs.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT})


def _daemon_main(cfg: Config, args: argparse.Namespace, pipe: int) -> int:
    hold_wakeups()
    try:
        pidfile = PidFile.acquire(cfg.path)
    except AlreadyRunning as exc:
        _tell(pipe, f"running {exc.pid}\n")
        return 0
    except UserError as exc:
        _tell(pipe, f"err {exc.exit_code}\n{exc.message}\n{exc.hint or ''}\n")
        return exc.exit_code
    try:
        keep, default_state = privs.needs_switching(cfg), _own_default(cfg)
        serve = _become_daemon_user(cfg)
        _detach(cfg)
        _drop(cfg, keep)
        notifier = Notifier(os.environ.get("NOTIFY_SOCKET") or None, None, lambda: _tell(pipe, "ok\n"))
        log.info("taskserver %d started with %s", os.getpid(), cfg.path)
        log.debug("holding pid file %s; logging to %s", pidfile.path, _log_path(cfg))
        code = _serve(serve, cfg, pidfile, notifier, default_state)
        _tell(pipe, f"err 1\nthe daemon exited with code {code} before it was ready; see {_log_path(cfg)}\n")
        return code
    except UserError as exc:
        _tell(pipe, f"err {exc.exit_code}\n{exc.message}\n{exc.hint or ''}\n")
        log.error("%s", exc.message)
        return exc.exit_code
    finally:
        pidfile.release()


def _log_path(cfg: Config) -> Path:
    return cfg.server.state_dir / (config.instance_name(cfg.path) + ".log")


def _detach(cfg: Config) -> None:
    """stdin from /dev/null, stdout and stderr appended to the log file (opened before dropping root)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        log_fd = os.open(_log_path(cfg), flags, 0o640)
    except OSError as exc:  # (no inode left: a full disk lets the daemon come up, a log it cannot open not)
        raise UserError(f"log file {_log_path(cfg)}: {exc.strerror}",
                        hint="free space on the file system of the state dir, or run `taskserver run` under "
                        "a supervisor that keeps its output") from exc
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    logs.setup(verbose=logging.getLogger().level <= logging.DEBUG)


def _await_startup(fd: int, cfg: Config) -> int:
    """Wait for the daemon's first word: ready, already running, or an error with its reason."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    lines = b"".join(chunks).decode(errors="replace").split("\n")
    head = lines[0].split()
    if head == ["ok"]:
        print(f"taskserver started (pid {read_pid(cfg.path)})")
        _tell_degraded(cfg)
        return 0
    if head[:1] == ["running"] and len(head) == 2 and head[1].isdigit() and int(head[1]) > 0:
        print(f"taskserver already running (pid {head[1]})")
        return 0
    if head[:1] == ["err"]:
        hint = lines[2] if len(lines) > 2 and lines[2] else f"see {_log_path(cfg)}"
        raise UserError(f"start failed: {lines[1]}", hint=hint, exit_code=int(head[1]) or 1)
    raise UserError(
        "start failed: the daemon did not report ready in time or died silently",
        hint=f"see {_log_path(cfg)}",
        exit_code=1,
    )


def _tell_degraded(cfg: Config) -> None:
    """A daemon that came up holding its runs (a full disk at start) says so at once, not only in `status`."""
    info = probe(cfg.path).info() or {}
    health = str(info.get("status") or "")
    if health.startswith("degraded"):
        for line in health.splitlines():  # one per tenant held
            print(f"taskserver: warning: {line}", file=sys.stderr)


# --- stop, restart, reload, status ------------------------------------------------------------------------


def _wait_gone(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while probe(path).running:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def cmd_stop(args: argparse.Namespace) -> int:
    path = _config_path(args)
    state = probe(path)
    daemon = Daemon.verify(path, state) if state.running and state.pid else None
    if daemon is None:
        note = " (removed a stale pid file)" if state.stale and clear_stale(path) else ""
        print(f"taskserver not running{note}")
        return 0
    try:
        _stop(path, daemon, state.info())
    finally:
        daemon.close()
    print(f"taskserver stopped (pid {daemon.pid})")
    return 0


def _stop(path: Path, daemon: Daemon, info: dict[str, Any] | None) -> None:
    """TERM, wait, KILL: both through the same pinned process, so a reused pid is never hit."""
    # the running daemon's own stop_timeout, without parsing the config. The daemon gets its whole
    # stop_timeout, then TERMs its jobs, KILLs them after the executor's grace and records them: only a
    # daemon that did not finish all that is killed (its jobs would be left as orphans).
    from .executor import KILL_GRACE  # noqa: PLC0415 - status and start need not pay for it

    timeout = float(info["stop_timeout"]) if info else _load_path(path).server.stop_timeout
    timeout += KILL_GRACE + STOP_SLACK_S
    if daemon.signal(signal.SIGTERM) and not _wait_gone(path, timeout):
        log.warning("pid %d did not stop within %gs: killing it", daemon.pid, timeout)
        daemon.signal(signal.SIGKILL)
        if not _wait_gone(path, 5.0):
            hint = "look at it with ps; is it stuck in D state?"
            raise UserError(f"pid {daemon.pid} survived SIGKILL", hint=hint, exit_code=1)
        clear_stale(path)


def cmd_restart(args: argparse.Namespace) -> int:
    # everything start checks before it forks, first: a restart that could not start leaves it running
    cfg = _load(args)
    _preflight(cfg)
    _check_pid_place()
    code = cmd_stop(args)
    return code if code else cmd_start(args)


def _check_pid_place() -> None:
    """The directory a new daemon would lock its pid file in is usable (created if need be, and safe)."""
    fd = open_dir(home_place(os.geteuid()), create=True)
    if fd is not None:
        os.close(fd)


def cmd_reload(args: argparse.Namespace) -> int:
    pid = signal_daemon(_config_path(args), signal.SIGHUP)
    if pid is None:
        print("taskserver not running")
        return EXIT_NOT_RUNNING_RELOAD
    print(f"taskserver reloading (pid {pid})")
    _tell_restart_needed(args)
    return 0


def _tell_restart_needed(args: argparse.Namespace) -> None:
    """Name the changed settings a reload cannot apply (and a file the daemon will refuse)."""
    from .plans import restart_needed  # noqa: PLC0415 - see _serve

    info = probe(_config_path(args)).info() or {}
    try:
        pending = restart_needed(info.get("start_only") or {}, _load(args))
    except UserError as exc:
        print(f"taskserver: warning: the daemon keeps its running config: {exc}", file=sys.stderr)
        return
    if pending:
        print(f"taskserver: warning: changed, but applied only by `taskserver restart`: {', '.join(pending)}",
              file=sys.stderr)


# --- parsers ----------------------------------------------------------------------------------------------

_START_MORE = """\
The daemon detaches (double fork, new session, stdin from /dev/null) and appends its output to
<state_dir>/<instance>.log. start returns once the daemon holds its pid file and is ready, or prints why it
failed (exit non-zero). Pid file: /run/taskserver (root); for another user /run/taskserver/u<UID> when root
made it, else /tmp/taskserver-<UID>; never taken from the environment. Named taskserver.pid for the default
config, else after the config path."""
_STOP_MORE = """\
Sends TERM and waits: the daemon lets running jobs finish for task_server.stop_timeout (default 30s), then
TERMs them, KILLs them 5s later and records them ERR interrupted; pending notifications get up to 6s more.
Only a daemon still there 11s after all that is killed."""
_STATUS_MORE = """\
Exit codes as an LSB init script: 0 running, 1 dead but the pid file remains, 3 not running."""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def register(sub: Any) -> None:
    """Add run, start, stop, restart, reload and status to the main parser's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "run",
        help="run in the foreground (for systemd, runit, supervisors)",
        formatter_class=fmt,
        description="Run the server in the foreground, logging to stderr. Holds the same pid-file lock as "
        "`start`, so the two exclude each other.\nUnder systemd (Type=notify) it reports READY, STATUS, "
        "STOPPING and WATCHDOG pings through $NOTIFY_SOCKET.",
    )
    p.add_argument("--once", action="store_true", help="run what is due now, then exit (cron mode)")
    p.add_argument(
        "--time-limit",
        type=_positive_seconds,
        metavar="S",
        help="stop taking new work after S seconds, finish running jobs, exit 0 (default: no limit)",
    )
    p.set_defaults(func=cmd_run)
    for name, func, text, more in (
        (
            "start",
            cmd_start,
            "start the daemon in the background; 0 when ready or already running",
            _START_MORE,
        ),
        ("stop", cmd_stop, "stop the daemon; 0 when it was not running", _STOP_MORE),
        ("restart", cmd_restart, "stop (if running), then start", ""),
        ("reload", cmd_reload, "re-read the configuration (SIGHUP); exit 7 when not running", ""),
        (
            "status",
            cmd_status,
            "one line: pid, uptime, tenants; exit 0 running, 1 dead, 3 stopped",
            _STATUS_MORE,
        ),
    ):
        desc = text[0].upper() + text[1:] + "." + (f"\n\n{more}" if more else "")
        p = sub.add_parser(name, help=text, description=desc, formatter_class=fmt)
        p.set_defaults(func=func)
