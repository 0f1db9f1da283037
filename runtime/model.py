"""The configuration as immutable values.

``config.load()`` turns the YAML file into these frozen dataclasses and rejects bad values there, naming
file:line:column; everything after loading (schedule, executor, daemon) reads only these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a value stands in the config file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class CatchUp(StrEnum):
    SKIP = "skip"  # runs missed during downtime are recorded as missed, none is run
    LATEST = "latest"  # the most recent missed run is run once, the others recorded as missed
    ALL = "all"  # every missed run is run, oldest first (bounded by max_late)


class State(StrEnum):
    QUE = "QUE"
    RUN = "RUN"
    OK = "OK"
    ERR = "ERR"


@dataclass(frozen=True, slots=True)
class Cron:
    """A 5-field cron expression or an @-alias (already validated)."""

    expr: str


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval, in seconds."""

    seconds: float


Trigger = Cron | Every


@dataclass(frozen=True, slots=True)
class Window:
    """Runs may start only on ``days`` (0 = Monday) between ``start`` and ``end`` local time.

    ``end <= start`` means the window crosses midnight; the day named is the day the window opens.
    """

    days: frozenset[int]
    start: time
    end: time


MAX_DOUBLED = 86_400.0  # doubling a retry's backoff stops at a day (a longer configured backoff stays)


@dataclass(frozen=True, slots=True)
class Retry:
    count: int = 0
    backoff: float = 60.0  # seconds before the first retry; doubled for each further retry

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt + 1``: the backoff doubled per earlier retry, up to MAX_DOUBLED
        (or the backoff itself, when that is longer). A million retries must not overflow a float."""
        return min(self.backoff * 2.0 ** min(attempt, 64), max(self.backoff, MAX_DOUBLED))


@dataclass(frozen=True, slots=True)
class EnvDef:
    """What a tenant or a job adds to the clean environment of its runs (see runtime/jobenv.py)."""

    environment: tuple[tuple[str, str], ...] = ()  # environment: NAME: value
    env_file: Path | None = None  # env_file: read when the config is loaded, into file_vars
    file_vars: tuple[tuple[str, str], ...] = ()
    inherit: tuple[str, ...] = ()  # inherit_env: names passed through from the daemon's own environment
    loc: Loc | None = None  # where env_file: is written


class Event(StrEnum):
    """What a notification is about (docs/notifications.md)."""

    FAILURE = "failure"  # a run ended ERR (exit code, timeout, spawn failed, ...) with no retry left
    CRASHED = "crashed"  # a run's process died of a signal nobody here sent, or with its daemon
    MISSED = "missed"  # a due time was recorded missed
    RECOVERED = "recovered"  # the first OK run after a failing streak


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str  # http or https, checked when the config is loaded
    timeout: float = 10.0  # seconds per attempt
    retries: int = 3  # further attempts after a failed one
    backoff: float = 2.0  # seconds before the first retry; doubled for each further one
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Email:
    to: tuple[str, ...]
    sender: str | None = None  # the From: header; None: the local sendmail decides
    sendmail: Path = Path("/usr/sbin/sendmail")
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class NotifyDef:
    """One ``notify:`` entry: which events, and where they go (any of command, webhook, email)."""

    on: frozenset[Event] = frozenset(Event)
    command: tuple[str, ...] | None = None  # argv, run as the tenant's user (never a shell)
    command_timeout: float = 30.0
    webhook: Webhook | None = None
    email: Email | None = None
    inherit: bool = True  # False: the entries of the levels above (server, tenant) do not apply
    loc: Loc | None = field(default=None, compare=False)  # moving it in the file changes no job (a reload)


@dataclass(frozen=True, slots=True)
class JobDef:
    name: str
    tenant: str
    trigger: Trigger | None  # None: a one-off job that runs only when enqueued or run by hand
    command: tuple[str, ...] | None = None  # argv; with shell=True a single string run by /bin/sh -c
    call: str | None = None  # "module:function"
    shell: bool = False
    timeout: float | None = None
    windows: tuple[Window, ...] = ()
    catch_up: CatchUp = CatchUp.LATEST
    max_late: float | None = None  # seconds; a run later than this is recorded missed instead
    retry: Retry = field(default_factory=Retry)
    queue: str | None = None
    enabled: bool = True
    timezone: str | None = None  # None: the tenant's
    loc: Loc | None = None
    env: EnvDef = field(default_factory=EnvDef)
    notify: tuple[NotifyDef, ...] = ()

    def trigger_text(self) -> str:
        """When the job runs, as `jobs list` and the web API show it: ``cron EXPR``, ``every Ns``,
        ``on demand``."""
        if isinstance(self.trigger, Cron):
            return f"cron {self.trigger.expr}"
        if isinstance(self.trigger, Every):
            return f"every {self.trigger.seconds:g}s"
        return "on demand"


@dataclass(frozen=True, slots=True)
class StoreDef:
    kind: str = "sqlite"  # "sqlite" | "postgresql"
    path: Path | None = None  # sqlite file; None: <state_dir>/<tenant>.sqlite
    dsn: str | None = None  # postgresql


@dataclass(frozen=True, slots=True)
class TenantDef:
    name: str
    login: str | None  # None: this tenant runs nothing, and `status` says so
    store: StoreDef = field(default_factory=StoreDef)
    timezone: str = "UTC"
    jobs: tuple[JobDef, ...] = ()
    loc: Loc | None = None
    # False after `taskserver tenants disable`: ``login`` is then None, so every part that checks the login
    # runs nothing for this tenant; the login written in the file is kept in ``disabled_login``
    enabled: bool = True
    disabled_login: str | None = None
    env: EnvDef = field(default_factory=EnvDef)
    # user or user:group this tenant's jobs run as (default: task_server.run_as); such a tenant keeps its
    # store and status files in a directory of its own that belongs to that user (``Config.tenant_dir``)
    run_as: str | None = None
    notify: tuple[NotifyDef, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``task_server: http:``: `taskserver run` serves the web side from an unprivileged child process."""

    host: str = "127.0.0.1"
    port: int = 8181
    tokens: Path | None = None  # None: `tokens` next to the config file
    anonymous_read: bool = False
    loc: Loc | None = None  # of the listen: value (else of http:), for the error when it cannot be bound
    # slow clients (runtime/web/guard.py): connections open at once, the time a request head may take to
    # arrive, the time a body may take or a response may wait for the client, a keep-alive's idle time
    max_connections: int = 256
    header_timeout: float = 10.0
    client_timeout: float = 30.0
    idle_timeout: float = 5.0
    # how long one reading of every tenant's store answers /healthz and /metrics (runtime/web/sweep.py)
    sweep_max_age: float = 5.0

    def __str__(self) -> str:  # what `reload` compares (a restart applies a change)
        return (f"{self.host}:{self.port} tokens={self.tokens} anonymous_read={self.anonymous_read} "
                f"max_connections={self.max_connections} header_timeout={self.header_timeout:g} "
                f"client_timeout={self.client_timeout:g} idle_timeout={self.idle_timeout:g} "
                f"sweep_max_age={self.sweep_max_age:g}")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    run_as: str | None = None  # user or user:group
    debug: bool = False
    state_dir: Path = Path("/var/lib/taskserver")
    install_dir: Path | None = None
    memory_limit: int | None = None  # bytes of RSS
    max_parallel: int = 4
    stop_timeout: float = 30.0
    keep_ok_days: float = 14.0
    keep_err_days: float = 90.0
    output_tail: int = 4096  # bytes of stdout/stderr kept per run
    http: HttpSettings | None = None  # serve the web side from `taskserver run` (runtime/httpd.py)
    notify: tuple[NotifyDef, ...] = ()


# the file read (device, inode, size, mtime and ctime in ns: no digest of its text, which the world-readable
# .info would publish), and for each tenant whose jobs the libyaml path built: the name, the first character
# of its jobs: value and the one after its last
Outline = tuple[tuple[int, ...], tuple[tuple[str, int, int], ...]]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path  # the file read, or the file that would be read (see ``exists``)
    exists: bool  # False: the embedded default was used
    server: ServerSettings
    tenants: tuple[TenantDef, ...]
    # the uid that controls what this file says: 0 when root alone can change the file and every directory
    # above it, else that one user (config.check_trust); root then does for this file only what it could do
    owner: int = 0
    # where each tenant's jobs are in the file read, published by the daemon so a `jobs` command need not
    # read another tenant's jobs (config.load_tenant); None when the checked loader built the tree
    outline: Outline | None = field(default=None, compare=False)

    def tenant(self, name: str) -> TenantDef | None:
        return next((t for t in self.tenants if t.name == name), None)

    def tenant_dir(self, tenant: str) -> Path:
        """Where a tenant's default store and status files live: its own directory when it has run_as."""
        t = self.tenant(tenant)
        if t is None or t.run_as is None:
            return self.server.state_dir
        return self.server.state_dir / "tenants" / tenant


def storable(text: str) -> str:
    """``text`` as the store, a status file and a log can hold it: an argv's bytes that are not UTF-8 come
    back from the OS as lone surrogates (a spawn failure's message names the program), which no UTF-8
    encoder takes; they are written as backslash escapes instead."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text
