"""Who runs what: the daemon's and each tenant's identity, the privilege drop, and the root rule.

Order matters: supplementary groups (initgroups) and the gid can only be changed while still root, so they
come before setuid. Afterwards we check that root cannot be regained (unless capabilities were kept on
purpose: then only CAP_SETUID/SETGID/KILL/CHOWN remain, see caps.KEEP).

Identities: a tenant's jobs run as its ``run_as``, else ``task_server.run_as``, else as the daemon itself.
"No job runs as root unless the config says run_as: root" is checked before every spawn (``run_identity``).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import grp
import os
import pwd
import stat
from collections.abc import Iterator

from .confpath import parent, pure
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import NamedTuple

    from .confpath import StrPath
    from .model import Config, TenantDef



# typing.NamedTuple at run time is collections.namedtuple plus the typing module: the fields for mypy, the
# same class at run time (equality, unpacking, repr, _replace) without typing (runtime/cli_enqueue.py: lean)
if TYPE_CHECKING:
    class _Identity(NamedTuple):
        user: str
        uid: int
        gid: int
        home: str
        groups: tuple[int, ...] = ()  # supplementary groups, as initgroups would set them
else:
    _Identity = collections.namedtuple("Identity", "user uid gid home groups", defaults=((),))


class Identity(_Identity):
    __slots__ = ()

    @property
    def is_self(self) -> bool:
        """This process already has exactly these ids and groups (so no switch is needed)."""
        same_ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (self.uid,) * 2 + (self.gid,) * 2
        return same_ids and tuple(sorted(set(os.getgroups()))) == self.groups


def resolve(spec: str) -> Identity:
    """``user`` or ``user:group`` (names or numbers) -> the identity to run as."""
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UserError(f"run_as: no such user {user!r}", hint="create the user or fix run_as") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UserError(f"run_as: no such group {group!r}", hint="fix run_as") from None
    groups = tuple(sorted(set(os.getgrouplist(pw.pw_name, gid))))
    return Identity(pw.pw_name, pw.pw_uid, gid, pw.pw_dir, groups)


def owner_identity(path: StrPath, uid: int) -> Identity:
    """The user who controls the config at ``path``, as root acts for it (that user's own groups)."""
    if not _known(uid):
        raise UserError(f"{path}: owned by uid {uid}, which has no user entry; root reads a config another "
                        "user controls as that user", hint=f"chown root {path}, or give uid {uid} a user "
                        "entry")
    return resolve(str(uid))


def member_gids(uid: int) -> set[int]:
    """Every group the user ``uid`` belongs to: its primary group and its supplementary ones."""
    pw = pwd.getpwuid(uid)
    return set(os.getgrouplist(pw.pw_name, pw.pw_gid))


def check_owner_identities(config: Config) -> None:
    """A config controlled by user U (``config.owner``) may only name U, and groups U is in, as run_as.

    Otherwise root would start jobs as someone else, or in a group (shadow, disk) U could not join.
    """
    if config.owner == 0:
        return
    specs = [("task_server.run_as", config.server.run_as)]
    specs += [(f"tenants.{t.name}.run_as", t.run_as) for t in config.tenants]
    owner = pwd.getpwuid(config.owner).pw_name if _known(config.owner) else str(config.owner)
    for where, spec in specs:
        if spec is None:
            continue
        ident = resolve(spec)
        if ident.uid != config.owner:
            raise UserError(f"{config.path}: {where}: {spec} is not allowed in a config {owner} controls",
                            hint=f"a config {owner} can change may only run jobs as {owner}; "
                            "ask root to own the file (and its directories) to run other users' jobs")
        if ident.gid not in member_gids(config.owner):
            group = spec.partition(":")[2]
            raise UserError(f"{config.path}: {where}: {owner} is not a member of group {group}",
                            hint=f"name a group {owner} belongs to (see `id {owner}`), or none")


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def daemon_spec(config: Config) -> str | None:
    """The user the daemon itself becomes when started by root; a user's config runs as that user."""
    if config.server.run_as is None and config.owner != 0 and os.geteuid() == 0:
        return str(config.owner)
    return config.server.run_as


def become_owner(config: Config) -> None:
    """Root acting on a config another user controls does the rest as that user (initgroups, setgid,
    setuid): its paths are that user's to choose, and to swap while root works on them."""
    if config.owner != 0 and os.geteuid() == 0:
        drop_privileges(daemon_spec(config))


def tenant_spec(config: Config, tenant: TenantDef) -> str | None:
    """The run_as of a tenant's jobs: its own, else the server's, else None (the daemon's own identity)."""
    return tenant.run_as or daemon_spec(config)


def needs_switching(config: Config) -> bool:
    """Started by root, does the daemon need to start jobs as users other than the one it becomes?"""
    if os.geteuid() != 0:
        return False
    spec = daemon_spec(config)
    own = resolve(spec).uid if spec else 0
    return any(t.run_as is not None and resolve(t.run_as).uid != own for t in config.tenants)


_known_ids: dict[str, Identity] = {}  # spec -> identity, for the config in _known_config
_known_config: list[int] = [0]


def resolve_for(config: Config, spec: str) -> Identity:
    """``resolve(spec)``, looked up once per config: the daemon asks at every spawn and status write, and a
    reload (a new config) looks the users up again."""
    if _known_config[0] != id(config):
        _known_ids.clear()
        _known_config[0] = id(config)
    ident = _known_ids.get(spec)
    if ident is None:
        ident = _known_ids[spec] = resolve(spec)
    return ident


def run_identity(config: Config, tenant: TenantDef) -> Identity | None:
    """The identity a run of ``tenant`` gets (None: the daemon's own); refuses root unless it was asked for.

    Called before every spawn, not only at start: a task enqueued into a tenant without jobs, or a job a
    reload added, must meet the same rule.
    """
    spec = tenant_spec(config, tenant)
    if spec is None:
        if os.geteuid() == 0:
            raise UserError(f"tenant {tenant.name!r}: refusing to run a job as root: no run_as is configured",
                            hint="set run_as: USER for the tenant or under task_server (or run_as: root)")
        return None
    ident = resolve_for(config, spec)
    from . import caps  # noqa: PLC0415 - ctypes and libc's lookup (it runs ldconfig): not for `status`

    if ident.uid == 0 and os.geteuid() != 0 and not caps.has(caps.CAP_SETUID):
        raise UserError(f"tenant {tenant.name!r}: run_as {spec} is root, and this daemon cannot switch to it",
                        hint="start taskserver as root")
    return ident


def check_reload(config: Config) -> None:
    """A reload may only add tenant users this daemon can switch to (it kept capabilities only if needed)."""
    from . import caps  # noqa: PLC0415 - ctypes and libc's lookup (it runs ldconfig): not for `status`

    if os.geteuid() == 0 or caps.has(caps.CAP_SETUID):
        return
    for tenant in config.tenants:
        if tenant.run_as is not None and resolve(tenant.run_as).uid != os.geteuid():
            raise UserError(f"tenant {tenant.name!r}: run_as {tenant.run_as} needs a daemon that can switch "
                            "users, and this one was started without that",
                            hint="restart the daemon as root (it keeps CAP_SETUID only when a tenant needs)")


def check_root_policy(config: Config) -> None:
    """Refuse to start as root when a tenant's jobs would run as root without ``run_as: root`` saying so."""
    if os.geteuid() != 0 or daemon_spec(config) is not None:
        return
    busy = [t.name for t in config.tenants
            if t.login is not None and t.run_as is None and any(j.enabled for j in t.jobs)]
    if busy:
        raise UserError(
            f"started as root without run_as, and tenant {busy[0]!r} has jobs (they would run as root)",
            hint="set run_as: USER (or run_as: root explicitly) under server: in " + str(config.path),
        )


def check_can_switch(spec: str | None) -> None:
    """A non-root process can only 'switch' to itself; say so before forking rather than after."""
    if spec is None or os.geteuid() == 0:
        return
    ident = resolve(spec)
    if ident.uid != os.geteuid():
        raise UserError(
            f"run_as: {spec} needs root, but this process runs as uid {os.geteuid()}",
            hint="start taskserver as root, or remove run_as to run everything as yourself",
        )


def prepare_dir(path: StrPath, spec: str | None, mode: int = 0o711) -> None:
    """Make sure ``path`` exists for ``spec`` (the state dir); as root, a directory it creates goes to spec.

    A directory that existed before is never chowned (a config could name /etc or another user's home),
    with one exception: the root-owned $STATE_DIRECTORY a supervisor (systemd's StateDirectory=) made for
    this root-started service; root chose it, not a config. One the run_as user cannot write is an error.
    Mode 0711: each tenant's user may pass through to its own directory; nobody else may list anything.
    """
    ident = resolve(spec) if spec is not None and os.geteuid() == 0 else None
    try:
        if not make_dir(path, ident, mode) and ident is not None and _from_supervisor(path):
            _hand_over(path, ident)
        st = os.stat(path)
    except OSError as exc:  # (a store that cannot be written is held; a state dir that cannot be made is not)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise UserError(f"state_dir {path}: {exc.strerror}",
                        hint="free space on the file system that holds it, then start again" if full else
                        "set task_server.state_dir to a directory taskserver may create or use") from exc
    uid = ident.uid if ident is not None else os.geteuid()
    if uid not in (0, st.st_uid):
        who = ident.user if ident is not None else (pwd.getpwuid(uid).pw_name if _known(uid) else str(uid))
        raise UserError(f"state_dir {path}: exists and belongs to uid {st.st_uid}, not to {who}",
                        hint=f"taskserver never chowns a directory it did not create: chown {who} {path} "
                        "yourself, or choose another state_dir")


def _from_supervisor(path: StrPath) -> bool:
    env = os.environ.get("STATE_DIRECTORY", "")
    return bool(env) and pure(env.split(":")[0]) == pure(path)  # the same path, as pathlib compares them


def _hand_over(path: StrPath, ident: Identity) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_uid == 0:
            os.fchown(fd, ident.uid, ident.gid)
    finally:
        os.close(fd)


def make_dir(path: StrPath, ident: Identity | None, mode: int) -> bool:
    """mkdir -p ``path``; the last component, when created here, gets ``mode`` and goes to ``ident``.

    Returns whether it was created. The chown goes through the fd of the directory just made (checked to be
    ours, not a link put in its place); parents created on the way stay the creator's: they hold nothing of
    the user's. A directory that existed before is left as it is.
    """
    try:
        os.mkdir(path, 0o700)
    except FileNotFoundError:
        os.makedirs(parent(path), mode=0o755, exist_ok=True)  # the ones above it with the default mode
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            raise PermissionError(1, "replaced while it was being created")
        # mode first, while we own it (mkdir ignores set-gid and applies the umask); a directory's chown
        # keeps set-gid, and after it only the new owner could chmod
        os.fchmod(fd, mode)
        if ident is not None and (ident.uid, ident.gid) != (st.st_uid, st.st_gid):
            os.fchown(fd, ident.uid, ident.gid)
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def acting_as(ident: Identity | None) -> Iterator[None]:
    """As root: effective uid, gid and supplementary groups of ``ident`` (initgroups'), then back to root.

    For short commands (`jobs ...`) that act for several tenants in turn. The real uid stays 0, so the user
    cannot signal or trace this process meanwhile. Without root, or for our own identity, nothing changes.
    """
    if ident is None or os.geteuid() != 0 or ident.uid == 0:
        yield
        return
    # imported as root: acting as the user, the package may be out of reach (fs_identity needs it)
    from . import caps  # noqa: F401, PLC0415

    groups, egid = os.getgroups(), os.getegid()
    os.setgroups(list(ident.groups))  # the target user's groups, never root's
    os.setegid(ident.gid)
    os.seteuid(ident.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def will_change_uid(spec: str | None) -> bool:
    return spec is not None and os.geteuid() == 0 and resolve(spec).uid != 0


def drop_privileges(spec: str | None, *, keep_caps: bool = False) -> None:
    """Become ``spec`` ("user" or "user:group"): initgroups, setgid, setuid, in that order.

    ``keep_caps``: keep caps.KEEP (and nothing else) across the setuid, to start each tenant's jobs as its
    own user; without it no capability survives and root cannot be regained.
    """
    # imported before the drop: the dropped daemon may not be allowed to read the package any more
    from . import caps  # noqa: PLC0415 - ctypes and libc's lookup (it runs ldconfig): not for `status`

    if os.geteuid() != 0:
        return
    ident = resolve(spec) if spec is not None else None
    if ident is not None:
        os.setgroups(list(ident.groups))
        os.setgid(ident.gid)
        if keep_caps:
            caps.keep_across_setuid(True)
        os.setuid(ident.uid)
        os.environ.update(HOME=ident.home, USER=ident.user, LOGNAME=ident.user)
    if keep_caps:
        caps.keep_across_setuid(False)
        caps.limit_to(caps.KEEP)
    elif ident is not None and ident.uid != 0:
        _verify_dropped()
    import logging  # noqa: PLC0415 - the commands that only act as a tenant (`jobs enqueue`) do not log

    logging.getLogger(__name__).info("running as uid %d, gid %d, groups %s, capabilities %s", os.getuid(),
                                     os.getgid(), os.getgroups(), ", ".join(caps.names(caps.effective()))
                                     or "none")


def become(ident: Identity) -> None:
    """Root becomes ``ident`` for good: its groups, gid and uid, in that order; no capability survives the
    setuid (PR_SET_KEEPCAPS is off), and root cannot be regained."""
    os.setgroups(list(ident.groups))
    os.setgid(ident.gid)
    os.setuid(ident.uid)
    os.environ.update(HOME=ident.home, USER=ident.user, LOGNAME=ident.user)
    _verify_dropped()


def _verify_dropped() -> None:
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("privilege drop failed: setuid(0) succeeded after setuid")


@contextlib.contextmanager
def fs_identity(ident: Identity | None) -> Iterator[None]:
    """Touch files as ``ident`` (setfsuid/setfsgid): what is created belongs to it, what is opened is
    checked against its rights. Nothing changes for our own identity (the fast path)."""
    if ident is None or (ident.uid, ident.gid) == (os.geteuid(), os.getegid()):
        yield
        return
    from . import caps  # noqa: PLC0415 - imported by drop_privileges before any drop

    old = caps.set_fs_ids(ident.uid, ident.gid)
    try:
        yield
    finally:
        caps.set_fs_ids_back(*old)
