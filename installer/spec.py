"""The one immutable description of the service to install, validated when it is built.

Everything the backends render comes from a ``ServiceSpec``; ``build_spec`` rejects bad input (unknown user,
a value that cannot be quoted for a boot file, a relative path) with a ``UserError`` before anything is
written, so a backend never has to decide what to do with a value it cannot represent.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.errors import UserError
from ..runtime.model import Config

SYSTEM = "system"
USER = "user"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Characters no boot-file syntax here can carry safely (newline ends a setting, NUL ends a C string, the
# others are refused or mangled by unit/crontab parsers); every other byte is quoted by the template filters.
FORBIDDEN = tuple(chr(c) for c in [*range(32), 127])


@dataclass(frozen=True)
class RunAs:
    user: str
    group: str | None
    uid: int
    gid: int
    home: Path


@dataclass(frozen=True)
class ServiceSpec:
    """What to install. Paths are as the target system sees them (never prefixed by ``root``).

    ``root`` is where the target system's ``/`` is (``Path("/")`` for the running system, an image or chroot
    directory for ``--root``); use ``target(path)`` to get the place to write on this machine.
    """

    name: str
    executable: Path  # absolute path of the `taskserver` script of the installation that runs the installer
    config: Path
    scope: str = SYSTEM  # SYSTEM or USER
    run_as: RunAs | None = None
    working_dir: Path | None = None
    env_file: Path | None = None
    writable_paths: tuple[Path, ...] = ()
    root: Path = Path("/")
    home: Path = field(default_factory=Path.home)  # the installing user's home (user scope)
    watchdog: int | None = (
        None  # systemd WatchdogSec= in seconds (the daemon pings when WATCHDOG_USEC is set)
    )
    description: str = "taskserver background job server"

    @property
    def user_scope(self) -> bool:
        return self.scope == USER

    @property
    def offline_root(self) -> bool:
        """True when installing into another tree (``--root``): nothing can be started there."""
        return self.root.resolve() != Path("/")

    def target(self, path: Path) -> Path:
        """Where ``path`` of the target system lies on this machine."""
        return self.root / path.relative_to("/")

    @property
    def template_override_dir(self) -> Path:
        """An admin's own templates: ``templates/`` next to the configuration file."""
        return self.target(self.config.parent / "templates")

    @property
    def state_dir(self) -> Path:
        if self.user_scope:
            return self.home / ".local" / "state" / self.name
        return Path("/var/lib") / self.name

    @property
    def runtime_dir(self) -> Path:
        return Path("/run") / self.name


def check_value(what: str, value: str) -> str:
    """Refuse a value that no target syntax can carry (newline, carriage return, NUL), and one that is not
    UTF-8: the command line hands such bytes over as lone surrogates, which no boot file, manifest or line of
    output (all UTF-8) can hold, so the install would fail half-way with an encoding error."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"{what} is not UTF-8 text: {_as_bytes(value)}",
            hint="boot files and the manifest are UTF-8: rename it to a UTF-8 name, or give another",
        ) from None
    for ch in FORBIDDEN:
        if ch in value:
            raise UserError(
                f"{what} contains the control character {ch!r}, which cannot be written safely into a"
                f" boot file: {value!r}",
                hint="use a path or name without control characters",
            )
    return value


def _as_bytes(value: str) -> str:
    """The bytes the command line gave (``b'/srv/\\xff'``), for a message about a value that is not UTF-8."""
    try:
        return repr(os.fsencode(value))
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return ascii(value)


def check_abs(what: str, path: Path | str) -> Path:
    text = check_value(what, os.fspath(path))
    p = Path(text)
    if not p.is_absolute():
        raise UserError(f"{what} must be an absolute path: {text}", hint=f"e.g. /{text.lstrip('./')}")
    return Path(os.path.normpath(text))


def resolve_executable() -> Path:
    """The `taskserver` script of the installation running this installer, resolved once (never PATH)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "taskserver",
        Path(sys.executable).parent / "taskserver",
    ]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return Path(os.path.abspath(cand))
    raise UserError(
        "cannot find the taskserver executable of this installation: "
        + ", ".join(str(c) for c in candidates),
        hint="reinstall the package (pip install taskserver) so that its scripts exist",
        exit_code=1,
    )


def _db_rows(root: Path, name: str) -> list[list[str]]:
    """The colon-separated rows of the target's etc/passwd or etc/group (so --root trees work), read inside
    the tree (safefs: a symlink to the host's file is taken as the tree's own boot would take it) and only
    from a regular file (a FIFO put there would block)."""
    from .safefs import Tree  # noqa: PLC0415 - ctypes and openat2 only where a user is looked up

    try:
        data = Tree(root).read(Path("/etc") / name)
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace") if data is not None else ""
    return [line.split(":") for line in text.splitlines()]


def _passwd(root: Path) -> dict[str, tuple[int, int, str]]:
    """user -> (uid, gid, home), read from the target's /etc/passwd."""
    return {
        f[0]: (int(f[2]), int(f[3]), f[5])
        for f in _db_rows(root, "passwd")
        if len(f) >= 7 and f[2].isdigit() and f[3].isdigit()
    }


def _group_gid(root: Path, group: str) -> int | None:
    return next(
        (int(f[2]) for f in _db_rows(root, "group") if len(f) >= 3 and f[0] == group and f[2].isdigit()),
        None,
    )


def parse_run_as(text: str, root: Path = Path("/")) -> RunAs:
    """``USER[:GROUP]`` -> RunAs, looked up in the target's /etc/passwd and /etc/group."""
    check_value("--run-as", text)
    user, _, group = text.partition(":")
    ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
    if not ident.match(user) or (group and not ident.match(group)):
        raise UserError(
            f"--run-as {text!r} is not USER or USER:GROUP", hint="e.g. --run-as taskserver:taskserver"
        )
    entry = _passwd(root).get(user)
    if entry is None:
        raise UserError(
            f"--run-as: no such user {user!r} in {root / 'etc/passwd'}",
            hint=f"create it first (useradd --system {user}) or pick an existing user",
        )
    gid = entry[1]
    if group:
        found = _group_gid(root, group)
        if found is None:
            raise UserError(
                f"--run-as: no such group {group!r} in {root / 'etc/group'}", hint="create it first"
            )
        gid = found
    return RunAs(user, group or None, entry[0], gid, Path(entry[2]))


def build_spec(
    *,
    name: str = "taskserver",
    config: Path | str | None = None,
    scope: str = SYSTEM,
    run_as: str | None = None,
    root: Path | str = "/",
    executable: Path | str | None = None,
    working_dir: Path | str | None = None,
    env_file: Path | str | None = None,
    writable_paths: tuple[Path | str, ...] = (),
    home: Path | str | None = None,
    watchdog: int | None = None,
) -> ServiceSpec:
    """Validate every input and return the spec; raise ``UserError`` (exit 2) for anything unusable."""
    check_value("--name", name)
    if not NAME_RE.match(name):
        raise UserError(
            f"--name {name!r} is not a valid service name",
            hint="use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)",
        )
    if name.endswith(".service"):
        # the unit would be NAME.service.service, and `systemctl stop NAME` would name another unit
        raise UserError(
            f"--name {name!r} ends in .service",
            hint=f"give the bare name: --name {name.removesuffix('.service')}",
        )
    if scope not in (SYSTEM, USER):
        raise UserError(f"unknown scope {scope!r}", hint="system or user")
    root_p = Path(os.path.abspath(check_value("--root", os.fspath(root))))
    home_p = check_abs("home directory", home if home is not None else Path.home())
    if config is None:
        config = (
            home_p / ".config" / "taskserver" / "taskserver.yaml"
            if scope == USER
            else Path("/etc/taskserver/taskserver.yaml")
        )
    exe = check_abs("taskserver executable", executable) if executable is not None else resolve_executable()
    if watchdog is not None and not 1 <= watchdog <= 86400:
        raise UserError(f"--watchdog {watchdog}: must be 1..86400 seconds", hint="e.g. --watchdog 60")
    return ServiceSpec(
        name=name,
        executable=exe,
        config=check_abs("--config", config),
        scope=scope,
        run_as=parse_run_as(run_as, root_p) if run_as else None,
        working_dir=check_abs("--workdir", working_dir) if working_dir else None,
        env_file=_root_env_file(check_abs("--env-file", env_file), scope, root_p) if env_file else None,
        writable_paths=tuple(check_writable(p) for p in writable_paths),
        root=root_p,
        home=home_p,
        watchdog=watchdog,
    )


def _root_env_file(path: Path, scope: str, root: Path) -> Path:
    """A system service's environment file is read by root at every start (SysV, OpenRC and runit source it
    as shell; systemd takes LD_PRELOAD and the like from it): only root may be able to change it, the file
    and every directory above it, as for a config root runs (runtime/conftrust.py). A tree (--root) is its
    owner's to decide; a user unit's file is that user's."""
    if scope != SYSTEM or root != Path("/"):
        return path
    from ..runtime.conftrust import check_trust, directory_owner  # noqa: PLC0415

    hint = f"keep it where only root can write: chown root {path}, chmod go-w (and its directories)"
    try:
        st = os.stat(path)
        owner = check_trust(path, st)
    except FileNotFoundError:
        owner = directory_owner(path)  # made later, where only root can make it
    except OSError as exc:
        raise UserError(f"--env-file {path}: {exc.strerror}", hint="name a readable file") from None
    except UserError as exc:  # writable by others, or below two users' directories
        raise UserError(f"--env-file: {exc.message}", hint=hint) from None
    if owner != 0:
        raise UserError(f"--env-file {path}: uid {owner} can change it, and root reads it at every start",
                        hint=hint)
    return path


def parsed_config(spec: ServiceSpec) -> Config | None:
    """The service's configuration as the daemon will read it, or None when the file does not exist yet."""
    from ..runtime import config as runtime_config  # noqa: PLC0415 - the YAML parser loads only when needed
    from .manifest import fs  # noqa: PLC0415 - manifest builds on this module

    path = spec.target(spec.config)
    try:  # inside a --root tree; in another user's home with that user's rights
        data = fs(spec).read(spec.config)
        text = None if data is None else data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"cannot read the config {path}: {why}", hint="check --config") from exc
    return None if text is None else runtime_config.parse_text(text, spec.config)


def check_writable(path: Path | str) -> Path:
    p = check_abs("--writable", path)
    if p == Path("/"):
        # ReadWritePaths=/ silently undoes ProtectSystem=strict: the unit would be hardened in name only
        raise UserError(
            "--writable /: would make the whole file system writable to the service and its jobs",
            hint="list the directories jobs write, e.g. --writable /srv/app --writable /var/spool/app",
        )
    return p


def config_writable(spec: ServiceSpec) -> tuple[Path, ...]:
    """Paths the service's configuration makes the daemon and its jobs write: ``install_dir`` (the jobs'
    working directory) and a ``state_dir`` set away from the default. The hardened systemd unit must list
    them in ReadWritePaths=. No config file yet: nothing (the embedded default writes only its state)."""
    from ..runtime.config import default_state_dir  # noqa: PLC0415

    cfg = parsed_config(spec)
    if cfg is None:
        return ()
    out: list[Path] = []
    if cfg.server.install_dir is not None:
        out.append(cfg.server.install_dir)
    if cfg.server.state_dir != default_state_dir(spec.config):
        out.append(cfg.server.state_dir)
    return tuple(p for p in out if p not in spec.writable_paths)


LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def local_database(spec: ServiceSpec) -> bool:
    """A tenant's store is a PostgreSQL server on this machine (a unix socket, or a loopback host): boot
    files then start the daemon after that server, so a boot does not begin with a lost connection."""
    cfg = parsed_config(spec)
    if cfg is None:
        return False
    return any(t.store.kind == "postgresql" and any(_local(h) for h in dsn_hosts(t.store.dsn or ""))
               for t in cfg.tenants)


def _local(host: str) -> bool:
    return host.startswith("/") or host.strip("[]") in LOCAL_HOSTS


def dsn_hosts(dsn: str) -> list[str]:
    """The hosts a libpq DSN names (URL or keyword form; none named: the local socket, ``""``). Read here
    without the driver: the installer runs where psycopg may not be installed."""
    if dsn.startswith(("postgresql://", "postgres://")):
        url = urllib.parse.urlsplit(dsn)
        named = [_no_port(h) for h in url.netloc.rpartition("@")[2].split(",")]
        named += [h for q in urllib.parse.parse_qs(url.query).get("host", []) for h in q.split(",")]
        return [h for h in named if h] or [""]
    m = re.search(r"(?:^|\s)host\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", dsn)
    if m is None:
        return [""]
    return (m.group(1) if m.group(1) is not None else m.group(2)).split(",")


def _no_port(host: str) -> str:
    if host.startswith("["):  # [::1]:5432
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_run_as(spec: ServiceSpec, init: str, by_daemon: bool) -> None:
    """``--run-as`` and the config's ``run_as`` must describe the same user.

    ``by_daemon``: the init starts the daemon as root and the daemon drops to the config's ``run_as`` itself
    (SysV, upstart), so the config must name that user; when no config exists yet the installer writes one
    that does (``installed_config``). Otherwise the init starts the daemon as the user (User=, command_user,
    chpst -u), and a config naming another user (root too) would make every start fail: a non-root process
    cannot switch users."""
    if spec.run_as is None:
        return
    cfg = parsed_config(spec)
    configured = cfg.server.run_as if cfg is not None else None
    wanted = spec.run_as.user + (f":{spec.run_as.group}" if spec.run_as.group else "")
    if cfg is None or (configured is None and not by_daemon):
        return
    if configured is not None and configured.split(":")[0] == spec.run_as.user:
        return
    how = "starts the daemon as root, which then runs as" if by_daemon else "starts the daemon as"
    raise UserError(
        f"--run-as {wanted}: {init} {how} the config's run_as ({configured or 'not set'} in {spec.config})",
        hint=f"set `task_server: {{run_as: {wanted}}}` in {spec.config}, then re-run",
    )


def installed_config(spec: ServiceSpec) -> str:
    """The config the installer writes when none exists and the daemon itself must switch to ``run_as``."""
    assert spec.run_as is not None
    wanted = spec.run_as.user + (f":{spec.run_as.group}" if spec.run_as.group else "")
    return (
        f"# Written by taskserver-install for the service {spec.name} (--run-as {wanted}): the init system\n"
        "# starts the daemon as root and it switches to run_as. Add tenants and jobs here; the commented\n"
        "# example with every key: taskserver init-config FILE. `taskserver-install --uninstall --purge`\n"
        "# removes this file only while it is unchanged.\n"
        f"task_server:\n  run_as: {wanted}\ntenants: {{}}\n"
    )
