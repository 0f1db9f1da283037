"""Finding, checking and loading the configuration file.

One file describes one independent server (its tenants, its state dir, its pid file): run several servers by
giving each its own file with -c. With no file at all the embedded default is used: one ``default`` tenant
without a login (so it runs nothing but the built-in housekeeping), state under the default state dir.

State dir: ``task_server.state_dir`` when set. Otherwise $STATE_DIRECTORY (systemd's StateDirectory=), else
/var/lib/taskserver as root, else $XDG_STATE_HOME/taskserver; a config file other than the default one gets
its own subdirectory there (``instance_name()``), so two servers never share state by accident.
"""

from __future__ import annotations

import os
import pwd
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    from .config_parse import ConfigError, ConfigInvalid
    from .model import Config

__all__ = ["EXAMPLE_CONFIG", "ConfigError", "ConfigInvalid", "default_config_path", "load", "parse_text"]

SYSTEM_CONFIG = Path("/etc/taskserver/taskserver.yaml")


def _user_config() -> Path:
    return Path.home() / ".config" / "taskserver" / "taskserver.yaml"


def default_config_path() -> Path:
    """$TASKSERVER_CONFIG, else the system file when root, else the per-user file."""
    env = os.environ.get("TASKSERVER_CONFIG")
    if env:
        return Path(env)
    return SYSTEM_CONFIG if os.geteuid() == 0 else _user_config()


def instance_name(path: Path) -> str:
    """``taskserver`` for the standard config locations, else a name unique to the file's absolute path."""
    absolute = Path(os.path.abspath(path))
    if absolute in (SYSTEM_CONFIG, _user_config()):
        return "taskserver"
    # crc32, not sha256: hashlib loads OpenSSL, +4 MB of daemon RSS, to name a file (not a security use)
    digest = f"{zlib.crc32(os.fsencode(absolute)):08x}"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in absolute.stem)[:40]
    return f"taskserver-{stem}-{digest}"


def default_state_dir(path: Path | None = None) -> Path:
    """The state dir used when the config does not set one (see the module docstring)."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        base = Path(env.split(":")[0])  # systemd passes several dirs colon-separated; the first is ours
    elif os.geteuid() == 0:
        base = Path("/var/lib/taskserver")
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "taskserver"
    if path is None or instance_name(path) == "taskserver":
        return base
    return base / instance_name(path)


def embedded_default(path: Path) -> Config:
    # model (a dozen dataclasses) is imported on use: `status` and the pid file need only the paths here
    from .model import Config, ServerSettings, TenantDef  # noqa: PLC0415

    """The configuration used when ``path`` does not exist."""
    server = ServerSettings(state_dir=default_state_dir(path))
    return Config(path=path, exists=False, server=server, tenants=(TenantDef(name="default", login=None),))


def parse_text(text: str, path: Path) -> Config:
    """Validate config text as if read from ``path`` (no file access); raises ConfigInvalid."""
    # imported on first use: `status`, `stop` and the pid file need only the paths above, and the parser
    # (ruamel.yaml) is most of the command's start-up time
    from . import config_parse  # noqa: PLC0415

    return config_parse.parse(text, path, default_state_dir(path))


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "ConfigInvalid"):
        from . import config_parse  # noqa: PLC0415

        return getattr(config_parse, name)
    raise AttributeError(name)


def _uid_of(spec: str) -> int | None:
    try:
        return pwd.getpwnam(spec.split(":", 1)[0]).pw_uid
    except KeyError:
        return None


def check_file_safety(path: Path, st: os.stat_result, run_as: str | None) -> None:
    """Refuse a config others could change: writable by group/others, or owned by a stranger.

    Allowed owners: root, the user running taskserver, and the run_as user. The directory holding the file
    must not be writable by group/others either (unless sticky), or the file could be swapped.
    """
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UserError(
            f"{path}: refusing a config writable by group or others (mode {mode:04o})",
            hint=f"chmod go-w {path}",
        )
    allowed = {0, os.geteuid()}
    run_as_uid = _uid_of(run_as) if run_as else None
    if run_as_uid is not None:
        allowed.add(run_as_uid)
    if st.st_uid not in allowed:
        owner = "root" + (f" or {run_as.split(':')[0]}" if run_as else "")
        raise UserError(
            f"{path}: refusing a config owned by uid {st.st_uid}; it must belong to {owner}",
            hint=f"chown root {path} (anyone who can edit it decides what runs)",
        )
    # the link's directory and the target's: from either the file could be swapped
    for directory in dict.fromkeys([path.parent, Path(os.path.realpath(path)).parent]):
        parent = os.stat(directory)
        if stat.S_IMODE(parent.st_mode) & 0o022 and not parent.st_mode & stat.S_ISVTX:
            raise UserError(
                f"{directory}: refusing a config in a directory writable by group or others",
                hint=f"chmod go-w {directory}",
            )


def _read(path: Path) -> tuple[str, os.stat_result] | None:
    """Text and stat of ``path``, None when it does not exist; other failures are UserErrors."""
    try:
        # O_NONBLOCK: a FIFO put in the config's place must not hang the daemon in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UserError(f"{path}: not a regular file", hint="point -c at a YAML file")
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise UserError(f"{path}: not a regular file", hint="point -c at a YAML file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config: {exc.strerror}",
                        hint="check the path and its permissions") from None
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8") from None


def load(path: Path | None = None, *, check_owner: bool = True) -> Config:
    """Read and validate the config at ``path`` (default: ``default_config_path()``).

    A missing file gives the embedded default (``Config.exists`` False). A bad file raises ConfigInvalid (a
    UserError naming FILE:LINE:COL of the first mistake; ``.errors`` has them all). With ``check_owner`` an
    unsafe file (see ``check_file_safety``) is refused.
    """
    p = path if path is not None else default_config_path()
    got = _read(p)
    if got is None:
        return embedded_default(p)
    text, st = got
    config = parse_text(text, p)
    if check_owner:
        check_file_safety(p, st, config.server.run_as)
    from .config_env import read_files  # noqa: PLC0415 - only a file that exists names env files

    return read_files(config, st.st_uid)


EXAMPLE_CONFIG = """\
# taskserver configuration (YAML). Check it with: taskserver -c THIS_FILE check
# Durations: 90s, 5m, 1h30m, 2d (plain numbers are seconds). Sizes: 100K, 512M, 1G (1024-based).

task_server:
  # run_as: taskserver          # user (or user:group) the daemon runs as when started by root
  debug: false
  # state_dir: /var/lib/taskserver   # default: $STATE_DIRECTORY, /var/lib/taskserver, or ~/.local/state
  # install_dir: /srv/app       # the daemon changes into this directory at start
  memory_limit: 512M            # the daemon ends cleanly between jobs above this; the supervisor restarts it
  max_parallel: 4               # runs at the same time, all tenants together
  stop_timeout: 30s             # on stop: wait this long for running jobs, then kill them
  keep_ok: 14d                  # history kept for successful runs
  keep_err: 90d                 # ... and for failed or missed runs

tenants:
  # One entry per tenant. Without a login a tenant runs nothing
  # (enable it with: taskserver tenants enable example --login USER).
  example:
    # login: example            # the login its jobs act for, in their $TASKSERVER_LOGIN (they run as run_as)
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
      poll-queue:
        every: 90s
        call: "myapp.jobs:poll" # a Python callable, module:function
        window: "mon-fri 07:00-19:00"   # or a list; "fri 22:00-06:00" runs Friday night into Saturday
        enabled: false
      rebuild-index:            # no cron/every: runs only when enqueued (taskserver jobs enqueue ...)
        command: ["/usr/local/bin/rebuild-index"]
"""
