"""`taskserver run` serving the web side (``task_server: http:``) from a child process of its own.

What needs root happens before the daemon's privilege drop (``around``, called by runtime/control.py): the
tokens file is read and checked (it is root's: the daemon's user may not read it later), the web extra is
checked, and the listening socket is bound (so a port below 1024 works). The child is a new interpreter
(``python -m taskserver.runtime.web.child``), never a bare fork: SQLite's per-process state about the
daemon's open stores (locks, shared memory) must not be inherited. It gets the config and the tokens on
stdin and the socket's fd, in its own session, as the identity below; it then drops every capability, sets
no_new_privs, asks the kernel for a TERM when the daemon ends, and refuses to serve as uid 0
(runtime/web/child.py). Like a `call:` job, it needs an interpreter its user can execute.

Who the child is: the daemon's ``run_as`` user when that is not root (it may use every tenant's store, as
`taskserver jobs` run by that user may); for a daemon that stays root, ``nobody`` with the daemon's group
(tenant directories and stores are shared with that group), whose actions the jobs commands' rules refuse.
A user's own daemon (not root) serves as that user.

The scheduler's loop never waits on a client: it only learns through the child's pidfd that the child
ended, and restarts it with backoff (1 s doubling to 60 s; a child that served a minute starts over at 1 s).
A listening address that cannot be bound, or a child that cannot be started, is one error in the log (the
same failure again only at debug level), retried on the same backoff; the daemon runs its jobs meanwhile.
After a reload the child is replaced at once, serving the new config (``http:`` itself and the tokens file
are read at start: `taskserver restart` applies changes to them). `run --once` serves nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import pickle
import pwd
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import privs, tenancy
from .config_http import tokens_path
from .errors import UserError
from .jobenv import SAFE_PATH
from .model import Config, HttpSettings

if TYPE_CHECKING:
    from .web.tokens import Token

log = logging.getLogger(__name__)
FIRST_DELAY, MAX_DELAY, STEADY = 1.0, 60.0, 60.0  # seconds
STOP_WAIT = 5.0  # seconds the child gets to end on TERM when the daemon exits, then KILL
NOBODY = "nobody"
CHILD = "taskserver.runtime.web.child"
WEB_MODULES = ("uvicorn", "starlette", "prometheus_client", "jinja2")


def around(serve: Callable[..., int], cfg: Config) -> Callable[..., int]:
    """``serve`` with the web child prepared, when the config asks for one (before the privilege drop)."""
    if cfg.server.http is None:
        return serve
    return functools.partial(serve, web=WebChild.prepare(cfg))


def child_identity(cfg: Config) -> privs.Identity | None:
    """Whom the web server becomes (the daemon's child, and `taskserver web`); None: stay who we are (not
    root: a user's own daemon or command, or root acting as the owner of a user's config already)."""
    if os.geteuid() != 0:
        return None
    spec = privs.daemon_spec(cfg)
    if spec is not None and (ident := privs.resolve(spec)).uid != 0:
        return ident
    try:
        pw = pwd.getpwnam(NOBODY)
    except KeyError:
        raise UserError(f"{cfg.path}: no task_server.run_as other than root, and there is no user "
                        f"{NOBODY!r} to serve the web side as (it never serves as root)",
                        hint="set task_server.run_as: USER (the web side runs as it)") from None
    groups = tuple(sorted({pw.pw_gid, tenancy.daemon_gid(cfg)}))
    return privs.Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, "/", groups)


def listening(host: str, port: int) -> socket.socket:
    """A socket bound and listening (before any privilege drop: a port below 1024 works)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # clients wait in the backlog while a child restarts
    except BaseException:
        sock.close()
        raise
    return sock


class WebChild:
    def __init__(self, http: HttpSettings, tokens: list[Token], ident: privs.Identity | None) -> None:
        self.http, self.tokens, self.ident = http, tokens, ident
        self.sock: socket.socket | None = None
        self.bind_error: str | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.sel: selectors.BaseSelector | None = None
        self.config: Config | None = None  # the config the running child serves
        self.started = 0.0
        self.delay = FIRST_DELAY
        self.restart_at: float | None = None
        self.stopping = False
        self.replacing = False  # we TERMed it to serve a reloaded config
        self.failure: str | None = None  # the last start or bind failure (logged once)

    @classmethod
    def prepare(cls, cfg: Config) -> WebChild:
        http = cfg.server.http
        assert http is not None
        missing = [m for m in WEB_MODULES if importlib.util.find_spec(m) is None]  # found, not loaded: the
        if missing:  # child is a new interpreter, the daemon need not carry the web stack
            raise UserError(f"task_server.http needs the optional extra: {missing[0]} is not installed",
                            hint="pip install 'taskserver[web]', or remove task_server.http")
        from .web import tokens as tokens_file  # noqa: PLC0415 - only for a config that serves the web side

        tokens = tokens_file.load(tokens_path(cfg.path, http.tokens))
        web = cls(http, tokens, child_identity(cfg))
        web.bind()
        return web

    @property
    def where(self) -> str:
        host = f"[{self.http.host}]" if ":" in self.http.host else self.http.host
        return f"{host}:{self.http.port}"

    def bind(self) -> bool:
        try:
            sock = listening(self.http.host, self.http.port)
        except OSError as exc:
            self.bind_error = f"cannot listen on {self.where}: {exc.strerror or exc}"
            return False
        self.sock, self.bind_error = sock, None
        return True

    # -- the daemon's loop calls these -----------------------------------------------------------------
    def start(self, sel: selectors.BaseSelector, config: Config, now: float) -> None:
        self.sel = sel
        if self.sock is None:
            self._failed(f"{self.bind_error} (task_server.http.listen at {self.http.loc}); the daemon runs "
                         "its jobs without it", now)
            return
        self._spawn(config, now)

    def wake_at(self) -> float | None:
        return self.restart_at if self.pid is None and not self.stopping else None

    def tick(self, config: Config, now: float, *, stopping: bool = False) -> None:
        """Restart a child that ended once its backoff passed; after a reload, serve the new config. While
        the daemon stops, the child serves on (the dashboard shows the last runs end) but is not restarted:
        a supervisor stopping the whole service may have ended it."""
        self.stopping = self.stopping or stopping
        if self.stopping:
            return
        if self.pid is not None:
            if config is not self.config and not self.replacing:  # reloaded: replace the child at once
                self.replacing = True
                self._signal(signal.SIGTERM)
            return
        if self.restart_at is None or now < self.restart_at:
            return
        if self.sock is None:
            if not self.bind():
                self._failed(f"{self.bind_error} (task_server.http.listen at {self.http.loc}); the daemon "
                             "runs its jobs without it", now)
                return
            log.info("http: listening on %s now", self.where)
        self._spawn(config, now)

    def exited(self) -> None:
        """The child's pidfd became readable: it ended. Reap it (the executor's reaping of any child may
        have done so already) and set its restart."""
        code = self._reap()
        now = time.time()
        up = now - self.started
        if up >= STEADY:
            self.delay = FIRST_DELAY
        if self.replacing:  # our own TERM after a reload: the new config is served at once
            self.replacing, self.pid, self.restart_at = False, None, now
            return
        if not self.stopping:
            log.warning("http: the web server (pid %s) ended%s after %.0f s; restarting it in %.0f s",
                        self.pid, f" with code {code}" if code is not None else "", up, self.delay)
        else:
            log.info("http: the web server (pid %s) ended while the daemon stops", self.pid)
        self.pid = None
        self._later(now)

    def stop(self) -> None:
        """The daemon exits: TERM the child, KILL it after STOP_WAIT, close the socket."""
        self.stopping = True
        if self.pid is not None:
            self._signal(signal.SIGTERM)
            if not self._wait(STOP_WAIT):
                self._signal(signal.SIGKILL)
                self._wait(STOP_WAIT)
            self._reap()
            self.pid = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- inside ------------------------------------------------------------------------------------------
    def _failed(self, why: str, now: float) -> None:
        """One error line for a failure; the same failure again (each retry) only at debug level."""
        log.log(logging.DEBUG if why == self.failure else logging.ERROR, "http: %s; trying again in %.0f s",
                why, self.delay)
        self.failure = why
        self._later(now)

    def _later(self, now: float) -> None:
        self.restart_at = now + self.delay
        self.delay = min(max(self.delay * 2, FIRST_DELAY), MAX_DELAY)

    def _spawn(self, config: Config, now: float) -> None:
        """A new interpreter (``python -m taskserver.runtime.web.child``), not a bare fork: the daemon's
        SQLite state (open files, locks, shared memory) must not be inherited. It gets the config and the
        tokens through a memory file on stdin and the socket's fd, as its own user, in its own session."""
        assert self.sock is not None and self.sel is not None
        payload = os.memfd_create("taskserver-web", os.MFD_CLOEXEC)
        try:
            handed = (config, self.http, self.tokens, os.getpid(), self.sock.fileno())
            os.write(payload, pickle.dumps(handed, protocol=pickle.HIGHEST_PROTOCOL))
            os.lseek(payload, 0, os.SEEK_SET)
            ident = self.ident if self.ident is not None and not self.ident.is_self else None
            proc = subprocess.Popen(  # our own interpreter and module, no shell
                [sys.executable, "-P", "-s", "-m", CHILD], stdin=payload, stdout=None, stderr=None,
                pass_fds=(self.sock.fileno(),), close_fds=True, start_new_session=True, cwd="/",
                env=self._env(), user=ident.uid if ident else None, group=ident.gid if ident else None,
                extra_groups=list(ident.groups) if ident else None)
        except OSError as exc:
            self._failed(f"cannot start the web server: {exc}", now)
            return
        finally:
            os.close(payload)
        proc.returncode = 0  # reaped through its pidfd (or by the executor's reaping of any child)
        self.pid, self.started, self.config, self.restart_at, self.failure = proc.pid, now, config, None, None
        self.pidfd = os.pidfd_open(proc.pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, self)
        log.info("http: serving http://%s/ from pid %d", self.where, proc.pid)

    def _env(self) -> dict[str, str]:
        """A clean environment: what finds this installation's modules, and the child's own user."""
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        env.update({k: os.environ[k] for k in ("PYTHONPATH", "TZ") if k in os.environ})
        if self.ident is not None:
            env.update(HOME=self.ident.home, USER=self.ident.user, LOGNAME=self.ident.user)
        return env

    def _signal(self, sig: signal.Signals) -> None:
        if self.pidfd is not None:  # through the pidfd: never a reused pid
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def _wait(self, timeout: float) -> bool:
        if self.pidfd is None:
            return True
        with selectors.DefaultSelector() as sel:
            sel.register(self.pidfd, selectors.EVENT_READ)
            return bool(sel.select(timeout))

    def _reap(self) -> int | None:
        code = None
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                got, status = os.waitpid(self.pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if got else None
        if self.pidfd is not None:
            if self.sel is not None and self.pidfd in self.sel.get_map():
                self.sel.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        return code
