"""Each tenant's files belong to that tenant's user: its directory, store and status files.

A tenant with ``run_as`` keeps its default store and status files in ``<state_dir>/tenants/<name>/``, mode
0770, owned by its user and the daemon's group: the tenant's user and the daemon's user may use them, nobody
else. What the daemon makes there gets the daemon's group (its fsgid); no set-gid bit, so the unit can keep
systemd's RestrictSUIDSGID=.

The daemon reaches these files with the tenant's filesystem uid (``TenantStore``, ``privs.fs_identity``):
the kernel checks each access against the tenant's rights, so a store path the config names outside that
directory can be used only if the tenant's user could use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator

from . import privs, statusfile
from .confpath import parent
from .errors import UserError
from .store_errors import fault

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from .model import Config, TenantDef
    from .store import Store

    T = TypeVar("T")

TENANT_DIR_MODE = 0o770


def daemon_gid(config: Config) -> int:
    spec = privs.daemon_spec(config)
    return privs.resolve_for(config, spec).gid if spec is not None else os.getegid()


def file_identity(config: Config, tenant: TenantDef) -> privs.Identity | None:
    """Whom the daemon acts as for this tenant's files: its run_as user, with the daemon's own group."""
    if tenant.run_as is None:
        return None
    return privs.resolve_for(config, tenant.run_as)._replace(gid=daemon_gid(config))


def run_uid(config: Config, tenant: TenantDef) -> int | None:
    """The uid this tenant's runs run as: the only user whose processes a record in its store may name (the
    store is that user's file). None for root's runs (a root-owned store), which may be anyone's."""
    try:
        ident = privs.run_identity(config, tenant)
    except UserError:  # its runs are refused (the root rule): then its store is its run_as user's, or ours
        ident = privs.resolve_for(config, tenant.run_as) if tenant.run_as is not None else None
    uid = ident.uid if ident is not None else os.geteuid()
    return None if uid == 0 else uid


def ensure_dir(config: Config, tenant: TenantDef) -> None:
    """Create the tenant's own directory if it has run_as (the daemon, or root, creates it: never a user).

    Only a directory created here is chowned (through its fd, see ``privs.make_dir``); one that exists must
    already belong to the tenant's user, or it is refused.
    """
    if tenant.run_as is None:
        return
    path = config.tenant_dir(tenant.name)
    ident = privs.resolve(tenant.run_as)._replace(gid=daemon_gid(config))
    spec = privs.daemon_spec(config)
    try:  # <state_dir>/tenants is the daemon's, so that it can add a tenant's directory after a reload
        privs.make_dir(parent(path), privs.resolve(spec) if spec is not None else None, 0o711)
        privs.make_dir(path, ident, TENANT_DIR_MODE)
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:  # a full disk is waited out (store_errors.fault), anything else refused
        raise fault(exc, path, f"tenant {tenant.name!r} directory") or UserError(
            f"tenant {tenant.name!r}: {path}: {exc.strerror or exc}",
            hint="the daemon (or root) creates this directory; check the state dir") from exc
    if st.st_uid != ident.uid:
        raise UserError(f"tenant {tenant.name!r}: {path} belongs to uid {st.st_uid}, not to {ident.user}",
                        hint=f"remove it or chown {ident.user} {path}; taskserver never chowns what it finds")


def prepare(config: Config, tenant: TenantDef) -> privs.Identity | None:
    """The tenant's directory, its status directories and its empty default SQLite file, 0660 in the
    daemon's group, so that group shares it (SQLite gives -wal and -shm the database's mode). Returns the
    identity for its files."""
    ident = file_identity(config, tenant)
    if ident is None:
        return None
    ensure_dir(config, tenant)
    status_dirs(config, tenant, ident)
    if tenant.store.kind == "sqlite" and tenant.store.path is None:
        path = os.path.join(config.tenant_dir(tenant.name), f"{tenant.name}.sqlite")
        try:
            with privs.fs_identity(ident), contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o660)
                os.fchmod(fd, 0o660)
                os.close(fd)
        except OSError as exc:
            hint = "check the tenant directory's owner and permissions"
            raise fault(exc, path) or UserError(f"tenant {tenant.name!r}: {path}: {exc.strerror or exc}",
                                                hint=hint) from exc
    return ident


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def status_dirs(config: Config, tenant: TenantDef, ident: privs.Identity) -> None:
    """The tenant's status directories (statusfile.status_dir), like its own directory: its user's, in the
    daemon's group, 0770. Both users write status files there (the daemon acting as the tenant's user, and
    `jobs` commands as whoever runs them: the tenant's user or the daemon's), so neither may own it in a group
    of its own, which shut the other out ("status file was not written"). Made here, by root or the daemon,
    and mended when a `jobs` command of either user made it so before. Reached one directory at a time
    without following a link, and only a directory of the tenant's or the daemon's user is changed.
    A failure is left to the status file's own write to report: it never keeps the store from opening."""
    top = config.tenant_dir(tenant.name)
    spec = privs.daemon_spec(config)
    owners = {ident.uid, privs.resolve(spec).uid if spec is not None else os.geteuid()}
    names = ("status", os.path.basename(statusfile.status_dir(top, tenant.name)))
    try:
        fd = os.open(top, _DIR)
        for name in names:
            fd = _status_dir(fd, name, ident, owners)  # (closes the one above, whatever happens)
    except OSError:
        return
    os.close(fd)


def _status_dir(parent_fd: int, name: str, ident: privs.Identity, owners: set[int]) -> int:
    """Make or mend one status directory below ``parent_fd`` (closed here); its fd."""
    try:
        with privs.fs_identity(ident):  # (as the tenant's user: one the other user made may be closed to it)
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, TENANT_DIR_MODE, dir_fd=parent_fd)  # the tenant's, in the daemon's group
            fd = os.open(name, _DIR, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    try:
        st = os.fstat(fd)
        if st.st_uid in owners and (st.st_uid, st.st_gid) != (ident.uid, ident.gid):
            os.fchown(fd, ident.uid, ident.gid)  # root's right, or the daemon's CAP_CHOWN (not as the tenant)
            st = os.fstat(fd)
        if (st.st_uid, st.st_gid) == (ident.uid, ident.gid) and stat.S_IMODE(st.st_mode) != TENANT_DIR_MODE:
            with privs.fs_identity(ident):  # as its owner (mkdir took the umask off)
                os.fchmod(fd, TENANT_DIR_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


class TenantStore:
    """A store whose every call (and every transaction's begin and end) runs with the tenant's fs ids."""

    def __init__(self, store: Store, ident: privs.Identity) -> None:
        self._store = store
        self._ident = ident

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            with privs.fs_identity(self._ident):
                result = attr(*args, **kw)
            if hasattr(result, "__enter__") and hasattr(result, "__exit__"):
                return self._wrapped(result)
            return result

        return call

    @contextlib.contextmanager
    def _wrapped(self, cm: Any) -> Iterator[Any]:
        with privs.fs_identity(self._ident):
            value = cm.__enter__()
        try:
            yield value
        except BaseException as exc:
            with privs.fs_identity(self._ident):
                if not cm.__exit__(type(exc), exc, exc.__traceback__):
                    raise
        else:
            with privs.fs_identity(self._ident):
                cm.__exit__(None, None, None)


def as_tenant(config: Config, tenant: TenantDef, fn: Callable[[], T]) -> T:
    """``fn()`` run with the tenant's fs ids, as ``open_as`` opens its store (the store's lock, taken
    before it: the lock file is the tenant's, as the store is)."""
    ident = prepare(config, tenant)
    if ident is None:
        return fn()
    with privs.fs_identity(ident):
        return fn()


def open_as(config: Config, tenant: TenantDef, opener: Callable[[], Store]) -> Store:
    """``opener()`` run with the tenant's fs ids; the store keeps using them (see ``TenantStore``)."""
    ident = prepare(config, tenant)
    if ident is None:
        return opener()
    with privs.fs_identity(ident):
        store = opener()
    from typing import cast  # noqa: PLC0415 - prepare() is on the lean `jobs enqueue` path, this is not

    return cast("Store", TenantStore(store, ident))
