"""Finding, checking and loading the configuration file.

One file describes one independent server (its tenants, its state dir, its pid file): run several servers by
giving each its own file with -c. With no file at all the embedded default is used: one ``default`` tenant
without a login (so it runs nothing but the built-in housekeeping), state under the default state dir.

State dir: ``task_server.state_dir`` when set. Otherwise $STATE_DIRECTORY (systemd's StateDirectory=), else
/var/lib/taskserver as root, else $XDG_STATE_HOME/taskserver; a config file other than the default one gets
its own subdirectory there (``instance_name()``), so two servers never share state by accident.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path, PosixPath

from . import confpath, limits
from .conftrust import check_trust, file_identity
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .config_yaml import ConfigError, ConfigInvalid
    from .model import Config
    from .yaml_fast import Prune, Pruned

    Parsed = Callable[[str, str, str, Config], None]  # see _load

__all__ = ["EXAMPLE_CONFIG", "ConfigError", "ConfigInvalid", "check_trust", "default_config_path",
           "file_identity", "load", "parse_text"]

SYSTEM_CONFIG = Path(confpath.SYSTEM_CONFIG)
SETTLED_NS = 2_000_000_000  # a config changed less recently than this is not outlined (load_tenant)


class InheritedStateDir(PosixPath):
    """The state dir a reload hands down to a file that may name none (control.py): one that comes back as
    this type was not set in the file, so a command would use its own default there."""


def default_config_path() -> Path:
    """$TASKSERVER_CONFIG, else the system file when root, else the per-user file (runtime/confpath.py)."""
    return Path(confpath.default_config_path())


instance_name = confpath.instance_name


def default_state_dir(path: Path | None = None, owner: int | None = None) -> Path:
    """The state dir used when the config does not set one (see the module docstring; runtime/confpath.py).

    ``owner``: root reading a config another user controls uses that user's default, as that user would.
    """
    return Path(confpath.default_state_dir(path, owner))


def embedded_default(path: Path) -> Config:
    # model (a dozen dataclasses) is imported on use: `status` and the pid file need only the paths here
    from .model import Config, ServerSettings, TenantDef  # noqa: PLC0415

    """The configuration used when ``path`` does not exist."""
    server = ServerSettings(state_dir=default_state_dir(path))
    return Config(path=path, exists=False, server=server, tenants=(TenantDef(name="default", login=None),))


def parse_text(text: str, path: Path, default_state: Path | None = None, *, host: bool = False,
               prune: Prune | None = None, pruned: Pruned | None = None) -> Config:
    """Validate config text as if read from ``path``; raises ConfigInvalid. ``host``: also check what the
    file names on this machine (users, directories); without it no file is touched. ``prune``, ``pruned``:
    see config_parse.parse."""
    # imported on first use: `status`, `stop` and the pid file need only the paths above, and the parser
    # (ruamel.yaml) is most of the command's start-up time
    from . import config_parse  # noqa: PLC0415

    return config_parse.parse(text, path, default_state or default_state_dir(path), host=host, prune=prune,
                              pruned=pruned)


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "ConfigInvalid"):
        from . import config_yaml  # noqa: PLC0415

        return getattr(config_yaml, name)
    raise AttributeError(name)


def _read(path: Path) -> tuple[str, os.stat_result] | None:
    """Text and stat of ``path``, None when it does not exist; other failures are UserErrors."""
    try:
        # O_NONBLOCK: a FIFO put in the config's place must not hang the daemon in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{path}: not a regular file", hint="point -c (--config) at a YAML file")
            data = f.read(limits.MAX_FILE_BYTES + 1)  # a bigger file is refused, not read to its end
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise UserError(f"{path}: not a regular file", hint="point -c (--config) at a YAML file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config: {exc.strerror}",
                        hint="check the path and its permissions") from None
    except ValueError:  # a NUL in the path
        raise UserError(f"{limits.printable(str(path))}: a path cannot hold a NUL character",
                        hint="check the -c argument") from None
    if len(data) > limits.MAX_FILE_BYTES:
        raise UserError(f"{path}:1:1: the file is larger than {limits.MAX_FILE_BYTES >> 20} MiB, the limit",
                        hint="split the servers into several files (one per -c)")
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError as exc:
        line, col = data.count(b"\n", 0, exc.start) + 1, exc.start - data.rfind(b"\n", 0, exc.start)
        raise UserError(f"{path}:{line}:{col}: not UTF-8 text (byte {exc.start})",
                        hint="save the file as UTF-8") from None


def read_text(path: Path) -> str | None:
    """The config file's text as ``load`` reads it (regular files only, size-limited, never blocking on a
    FIFO), or None when it does not exist: for tools that parse a config for another root."""
    got = _read(path)
    return got[0] if got is not None else None


def load(path: Path | None = None, *, check_owner: bool = True, default_state: Path | None = None,
         parsed: Parsed | None = None) -> Config:
    """Read and validate the config at ``path`` (default: ``default_config_path()``).

    A missing file gives the embedded default (``Config.exists`` False). A bad file raises ConfigInvalid (a
    UserError naming FILE:LINE:COL of the first mistake; ``.errors`` has them all). With ``check_owner`` an
    unsafe file is refused (see ``check_trust``), and a file another user controls may name only that user
    as run_as (``Config.owner``). ``default_state``: the state dir when the file sets none (a reload passes
    the running one: the dropped daemon must not compute its own user's default instead).
    """
    return _load(path, check_owner, default_state, parsed=parsed)


def load_tenant(path: Path | None, name: str | None, *, jobs: bool) -> Config:
    """``load`` for a command that acts on one tenant: the server section and that tenant (``name``; None:
    the only tenant, else ``default``), its jobs only with ``jobs``. The other tenants and jobs are read
    only as far as the YAML's syntax and the input limits go (a 10,000-job file must not cost every
    `jobs enqueue` a second): the daemon and `taskserver check` validate them. The file's trust is checked
    as by ``load``. With a running daemon of this config, the jobs it says are where (its ``.info``: the
    file's identity and each tenant's jobs' span, model.Config.outline) are not even read. The Config holds
    just that tenant; when there is no such tenant, the whole file is loaded, so the caller words that
    error with every tenant's name."""
    want = name

    def prune(key_path: tuple[Any, ...]) -> bool:
        if len(key_path) < 2 or key_path[0] != "tenants":
            return False
        if len(key_path) == 2:
            return want is not None and key_path[1] != want
        return key_path[2] == "jobs" and not (jobs and want is not None)

    outline = _published_outline(path if path is not None else default_config_path())
    cfg = _load(path, True, None, prune, outline=outline, keep=want if jobs else None)
    if want is None:  # the first pass read every tenant's settings, none of their jobs
        want = cfg.tenants[0].name if len(cfg.tenants) == 1 else "default"
        if jobs:
            cfg = _load(path, True, None, prune, outline=outline, keep=want)
    if not cfg.exists:
        return cfg
    chosen = cfg.tenant(want)
    if chosen is None:
        return load(path)
    import dataclasses  # noqa: PLC0415 - with inspect and ast, most of `status`'s imports otherwise

    return dataclasses.replace(cfg, tenants=(chosen,))


def _published_outline(path: Path) -> Any:
    """Where the jobs are in the file, as the running daemon of this config published it (its pid file's
    ``.info``, which pidfile reads only from a place and a file of root or of this user), else None."""
    from .pidfile import probe  # noqa: PLC0415 - it imports this module

    try:
        info = probe(Path(os.path.abspath(path))).info()
    except (UserError, OSError):
        return None
    return info.get("outline") if info is not None else None


def _blank_jobs(text: str, st: os.stat_result, outline: Any, keep: str | None) -> str | None:
    """``text`` with the jobs: value of every tenant but ``keep`` blanked out, its line breaks kept (every
    other value keeps its FILE:LINE:COL), when ``outline`` (model.Config.outline) was made from this file
    as it is now (the same identity, spans in order within the text). Else None: the file is read in full."""
    try:
        identity, spans = outline
        if list(identity) != list(file_identity(st)):
            return None
        pieces, at = [], 0
        for name, start, end in spans:
            if not (isinstance(start, int) and isinstance(end, int) and at <= start < end <= len(text)):
                return None
            if name != keep:
                chunk = text[start:end]
                tail = len(chunk) - chunk.rfind("\n") - 1  # the last line: spaces, to keep columns
                pieces += [text[at:start], "\n" * chunk.count("\n"), " " * tail]
                at = end
    except (TypeError, ValueError):  # not an outline this code wrote
        return None
    return "".join([*pieces, text[at:]])


def load_kept(path: Path | None, default_state: Path | None = None) -> Config | None:
    """``load`` for the daemon, from the parse it kept of this very text (runtime/config_cache.py); None when
    there is none to believe: then ``load`` it, with ``parsed``, in a child (runtime/control.py). The file's
    trust, its owner's identities and its env files are checked and read as by ``load``."""
    got = _opened(path, True, default_state)
    if got is None:
        return None
    p, text, st, owner, state = got
    if not _keeps(owner):
        return None
    from . import config_cache  # noqa: PLC0415 - the daemon's start and reload only

    config = config_cache.fetch(str(p), str(state), text)
    return _finish(config, st, owner) if config is not None else None


def _opened(path: Path | None, check_owner: bool,
            default_state: Path | None) -> tuple[Path, str, os.stat_result, int, Path] | None:
    """What both loads start from: the file's path, text and stat, who controls it (0: unchecked) and the
    state dir its parse defaults to; None when it does not exist."""
    p = path if path is not None else default_config_path()
    got = _read(p)
    if got is None:
        return None
    text, st = got
    owner = check_trust(p, st) if check_owner else 0
    return p, text, st, owner, default_state or default_state_dir(p, owner)


def _keeps(owner: int) -> bool:
    """Whether a file of ``owner`` has a kept parse: one of root's or of the effective user's own. Root
    running a user's file keeps none: that file names the state dir, which could be any of root's."""
    return owner in (0, os.geteuid())


def _load(path: Path | None, check_owner: bool, default_state: Path | None, prune: Prune | None = None, *,
          outline: Any = None, keep: str | None = None, parsed: Parsed | None = None) -> Config:
    """``load``; with ``outline`` (see load_tenant) the jobs of every tenant but ``keep`` are left unread.
    ``parsed``: given the path, default state dir, text and the parse of a whole file (for ``load_kept``)."""
    got = _opened(path, check_owner, default_state)
    if got is None:
        return embedded_default(path if path is not None else default_config_path())
    p, text, st, owner, state = got
    with _looking_as(p, owner):
        config = _parse(p, text, st, state, prune=prune, outline=outline, keep=keep)
    if parsed is not None and prune is None and _keeps(owner) and config[1]:
        parsed(str(p), str(state), text, config[0])
    return _finish(config[0], st, owner)


def _looking_as(path: Path, owner: int) -> contextlib.AbstractContextManager[None]:
    """Root parsing a config another user controls: the parse's looks at the machine (is install_dir a
    directory, can sendmail be run) take that user's rights (config_values.looking_as), so the answer tells
    nothing about what only root may see."""
    if not _switches(owner):
        return contextlib.nullcontext()
    from . import config_values, privs  # noqa: PLC0415 - imported as root, before any switch

    try:
        ident = privs.owner_identity(path, owner)
    except UserError:  # a uid without a user entry: that uid, the kernel's overflow group, no other group
        ident = privs.Identity(str(owner), owner, 65534, "/", ())
    return config_values.looking_as(ident)


def _switches(owner: int) -> bool:
    """Whether root reads a file of ``owner`` as that user: a config another user controls."""
    return owner not in (0, os.geteuid()) and os.geteuid() == 0


def _parse(p: Path, text: str, st: os.stat_result, state: Path, *, prune: Prune | None, outline: Any,
           keep: str | None) -> tuple[Config, bool]:
    """The parse of the text, jobs blanked out where the outline allows; True when it is the whole text's."""
    blanked = _blank_jobs(text, st, outline, keep) if outline is not None else None
    config = None
    if blanked is not None:
        from .config_yaml import ConfigInvalid  # noqa: PLC0415 - with the parser

        # an error of the text without those jobs (an alias into them): the whole text's own words it
        with contextlib.suppress(ConfigInvalid):
            config = parse_text(blanked, p, state, host=True, prune=prune)
    if config is not None:
        return config, False
    return parse_text(text, p, state, host=True, prune=prune), True


def _finish(config: Config, st: os.stat_result, owner: int) -> Config:
    """What every load does after the parse: the jobs' outline, the owner's identities, the env files."""
    import dataclasses  # noqa: PLC0415 - see load_tenant

    # a file changed just before it was read could change again within the same tick of its clock (coarse:
    # milliseconds, seconds on some file systems) and keep its identity: no outline then. A file without
    # jobs has one too (no spans): the daemon's settings for `jobs enqueue` are for this identity
    settled = st.st_ctime_ns < time.time_ns() - SETTLED_NS
    outline = (file_identity(st), config.outline[1] if config.outline else ()) if settled else None
    config = dataclasses.replace(config, outline=outline)
    if owner:
        from . import privs  # noqa: PLC0415 - pwd/grp lookups only for a user's config

        config = dataclasses.replace(config, owner=owner)
        privs.check_owner_identities(config)
    from .config_env import names_files, read_files  # noqa: PLC0415 - only a file that exists names them

    if not names_files(config):
        return config
    with _as_owner(config.path, owner):
        return read_files(config, st.st_uid)


def _as_owner(path: Path, owner: int) -> contextlib.AbstractContextManager[None]:
    """Root reading the env files of a config another user controls reads them as that user (effective ids
    and that user's own groups, privs.acting_as): a file only root may read stays unread. Anyone else, or
    a file of root's or of our own, reads as itself."""
    if not _switches(owner):
        return contextlib.nullcontext()
    from . import config_yaml, privs  # noqa: F401, PLC0415 - imported as root: the package may be out of reach

    return privs.acting_as(privs.owner_identity(path, owner))


EXAMPLE_CONFIG = """\
# taskserver configuration (YAML). Check it with: taskserver -c THIS_FILE check
# Durations: 90s, 5m, 1h30m, 2d (plain numbers are seconds). Sizes: 100K, 512M, 1G (1024-based).

task_server:
  # run_as: taskserver          # user (or user:group) the daemon and, by default, the jobs run as
  debug: false
  # state_dir: /var/lib/taskserver   # default: $STATE_DIRECTORY, /var/lib/taskserver, or ~/.local/state
  # install_dir: /srv/app       # the daemon changes into this directory at start
  memory_limit: 512M            # the daemon ends cleanly between jobs above this; the supervisor restarts it
  max_parallel: 4               # runs at the same time, all tenants together
  stop_timeout: 30s             # on stop: wait this long for running jobs, then kill them
  keep_ok: 14d                  # history kept for successful runs
  keep_err: 90d                 # ... and for failed or missed runs
  # http:                       # the dashboard, JSON API and /metrics, from an unprivileged child process
  #   listen: 127.0.0.1:8181    # (needs taskserver[web]; tokens: `taskserver web token-add NAME`)

tenants:
  # One entry per tenant. Without a login a tenant runs nothing
  # (enable it with: taskserver tenants enable example --login USER).
  example:
    # login: example            # the login its jobs act for, in their $TASKSERVER_LOGIN (not a Unix user)
    # run_as: example           # the Unix user its jobs run as (default: task_server.run_as)
    timezone: UTC               # IANA zone for cron times and windows, e.g. Europe/Berlin
    # store: {sqlite: example.sqlite}   # default: <state_dir>/<tenant>.sqlite
    jobs:
      nightly-report:
        cron: "30 2 * * *"      # minute hour day-of-month month day-of-week, or @daily, @hourly, ...
        command: ["/usr/local/bin/report", "--yesterday"]   # an argv list, never run through a shell
        timeout: 1h
        catch_up: latest        # after downtime: skip | latest | all
        max_late: 6h            # runs later than this are recorded as missed instead
        retries: {count: 2, backoff: 5m}
        # notify: {on: [failure, recovered], email: ops@example.com}   # or webhook:, command: (see
        #                                 # docs/notifications.md); also for a whole tenant or task_server
      poll-queue:
        every: 90s
        call: "myapp.jobs:poll" # a Python callable, module:function
        window: "mon-fri 07:00-19:00"   # or a list; "fri 22:00-06:00" runs Friday night into Saturday
        enabled: false
      rebuild-index:            # no cron/every: runs only when enqueued (taskserver jobs enqueue ...)
        command: ["/usr/local/bin/rebuild-index"]
"""
