"""The pid file: holding it locked, asking who holds it, and signalling only a verified daemon.

Three files per server, in the place ``pidplace`` picks: ``NAME.lock`` (mode 0600), ``NAME.pid`` and
``NAME.info`` (0644, for people and for `status`). A daemon holds a POSIX record lock (``lockf``) on the lock
file for its whole life, so "running" means "the lock is held", and the kernel names the holder (``F_GETLK``):
the pid written in a file is never what gets signalled. Nobody but the owner can open the lock file, so
nobody else can take, fake or block the lock. A clean exit empties the pid file (and removes the files when
still allowed: after dropping privileges the daemon may no longer write the directory); a pid in the pid
file with no lock held means the daemon died ("stale", LSB status 1).

Signals go only through ``pidsignal.Daemon``, which verifies the holder this module names.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import os
import stat
import struct
import time

from .confpath import instance_name
from .errors import UserError
from .pidplace import Place, home_place, lookup_places, open_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from .confpath import StrPath

_FLOCK = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MAX_INFO = 1 << 20


def pidfile_name(config_path: StrPath) -> str:
    """``taskserver.pid`` for the default config; else a name unique to the config's absolute path."""
    return instance_name(config_path) + ".pid"


def pidfile_path(config_path: StrPath) -> str:
    """Where a daemon of this config started by this user keeps its pid file."""
    return f"{home_place(os.geteuid()).dir}/{pidfile_name(config_path)}"


def _names(config_path: StrPath) -> tuple[str, str, str]:
    stem = instance_name(config_path)
    return stem + ".pid", stem + ".lock", stem + ".info"


def _sibling(path: str, suffix: str) -> str:
    """``path`` with its suffix (.pid) swapped for ``suffix`` (pathlib's ``with_suffix``; names made by _names
    have one dot)."""
    return os.path.splitext(path)[0] + suffix


# typing.NamedTuple at run time is collections.namedtuple plus the typing module: the fields for mypy, the
# same class at run time (equality, unpacking, repr, _replace) without typing (runtime/cli_enqueue.py: lean)
if TYPE_CHECKING:
    class _Probe(NamedTuple):
        path: str  # the pid file
        pid: int | None
        running: bool
        owner: int = 0  # uid owning the place
else:
    _Probe = collections.namedtuple("Probe", "path pid running owner", defaults=(0,))


class Probe(_Probe):
    """What the files say: ``running`` with the lock holder's pid, or ``stale`` with a dead daemon's pid."""

    __slots__ = ()

    @property
    def stale(self) -> bool:
        return not self.running and self.pid is not None

    def info(self) -> dict[str, Any] | None:
        """What the running daemon published about itself, if it is this pid's."""
        data = _read_info(_sibling(self.path, ".info"), self.owner)
        return data if data is not None and data.get("pid") == self.pid else None

    def age(self) -> float | None:
        """Seconds since the daemon wrote its pid (its uptime while running)."""
        try:
            return time.time() - os.stat(self.path, follow_symlinks=False).st_mtime
        except OSError:
            return None


def probe(config_path: StrPath) -> Probe:
    """Look for this config's daemon in every place this user looks, without disturbing it."""
    names = _names(config_path)
    stale = None
    for place in lookup_places(os.geteuid()):
        found = _probe_place(place, names)
        if found is not None and found.running:
            return found
        stale = stale or (found if found is not None and found.stale else None)
    return stale or Probe(pidfile_path(config_path), None, False)


def read_pid(config_path: StrPath) -> int | None:
    """Pid of the live daemon holding the lock, else None."""
    p = probe(config_path)
    return p.pid if p.running else None


def _probe_place(place: Place, names: tuple[str, str, str]) -> Probe | None:
    try:
        dir_fd = open_dir(place, create=False)
    except UserError:
        if place.optional:
            return None
        raise
    if dir_fd is None:
        return None
    pid_name = names[0]
    try:
        written = _read_pid_file(dir_fd, pid_name, place.owner)
        holder = _holder(dir_fd, names, place.owner)
    finally:
        os.close(dir_fd)
    path = f"{place.dir}/{pid_name}"
    if holder is not None:
        return Probe(path, holder, True, place.owner)
    return Probe(path, written, False, place.owner) if written is not None else None


def _open_checked(dir_fd: int, name: str, owner: int, flags: int, mode: int = 0o600) -> int:
    """Open ``name`` without following links; it must be a regular file of ``owner`` only it can write."""
    try:
        fd = os.open(name, flags | _OPEN, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise UserError(f"unsafe pid file {name}: not a regular file (a symlink?)",
                            hint="remove it; taskserver creates it itself") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UserError(
            f"unsafe pid file {name}: owned by uid {st.st_uid}, mode {stat.filemode(st.st_mode)}",
            hint=f"it must be a regular file of uid {owner} that nobody else can write; remove it",
        )
    return fd


def _read_pid_file(dir_fd: int, name: str, owner: int) -> int | None:
    try:
        fd = _open_checked(dir_fd, name, owner, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, 64, 0).strip()
    finally:
        os.close(fd)
    return int(data) if data.isdigit() and 0 < int(data) < 1 << 22 else None


def _holder(dir_fd: int, names: tuple[str, str, str], owner: int) -> int | None:
    """The pid the kernel says holds the lock, or None when nobody does."""
    try:
        fd = _open_checked(dir_fd, names[1], owner, os.O_RDWR)
    except FileNotFoundError:
        return None
    except PermissionError:
        return _holder_by_identity(dir_fd, names, owner)  # someone who may not open the lock file
    try:
        return _getlk(fd)
    finally:
        os.close(fd)


def _getlk(fd: int) -> int | None:
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    l_type, _, _, _, l_pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    if l_type == fcntl.F_UNLCK:
        return None
    if l_pid <= 0:
        raise UserError("the pid file's lock is held by a process that cannot be identified",
                        hint="an open file description lock or another pid namespace; find it in /proc/locks",
                        exit_code=1)
    return int(l_pid)


def _holder_by_identity(dir_fd: int, names: tuple[str, str, str], owner: int) -> int | None:
    """Without access to the lock: the written pid, if its process started when the daemon said it did."""
    pid = _read_pid_file(dir_fd, names[0], owner)
    info = _read_info_at(dir_fd, names[2], owner)
    if pid is None or info is None or info.get("pid") != pid:
        return None
    return pid if starttime(pid) == info.get("starttime") else None


def _read_info(path: str, owner: int) -> dict[str, Any] | None:
    try:
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_info_at(dir_fd, os.path.basename(path), owner)
    finally:
        os.close(dir_fd)


def _read_info_at(dir_fd: int, name: str, owner: int) -> dict[str, Any] | None:
    try:
        fd = _open_checked(dir_fd, name, owner, os.O_RDONLY)
    except (OSError, UserError):
        return None
    try:
        data = json.loads(os.read(fd, _MAX_INFO) or b"null")
    except ValueError:
        return None  # being rewritten this very moment
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def starttime(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


class AlreadyRunning(UserError):
    def __init__(self, path: str, pid: int) -> None:
        super().__init__(
            f"already running as pid {pid} (its lock {_sibling(path, '.lock')} is held)",
            hint="stop it first (`taskserver stop`), or give this server its own config file with -c",
            exit_code=1,
        )
        self.pid = pid


class PidFile:
    """The locked pid file of this process; keep the object alive as long as the daemon runs.

    Every fd is opened now, while we may still be root: after the drop the directory is no longer ours."""

    def __init__(self, path: str, dir_fd: int, lock_fd: int) -> None:
        self.path = path
        self._dir_fd = dir_fd
        self._lock_fd = lock_fd
        name = os.path.basename(path)
        self._names = (name, _sibling(name, ".lock"), _sibling(name, ".info"))
        owner = os.geteuid()
        self._fd = _open_checked(dir_fd, self._names[0], owner, os.O_RDWR | os.O_CREAT, 0o644)
        self._info_fd = _open_checked(dir_fd, self._names[2], owner, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(self._info_fd, 0)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def write_info(self, info: dict[str, Any]) -> None:
        """Publish what `status` shows (tenants...), so status need not parse the config."""
        data = json.dumps({"pid": os.getpid(), "starttime": starttime(os.getpid()), **info}).encode()
        os.ftruncate(self._info_fd, 0)
        os.pwrite(self._info_fd, data, 0)

    @classmethod
    def acquire(cls, config_path: StrPath) -> PidFile:
        """Lock and write the files, or raise AlreadyRunning naming the real holder."""
        names = _names(config_path)
        for place in lookup_places(os.geteuid()):  # the same config's daemon anywhere we would look
            found = _probe_place(place, names)
            if found is not None and found.running and found.pid:
                raise AlreadyRunning(found.path, found.pid)
        place = home_place(os.geteuid())
        dir_fd = open_dir(place, create=True)
        if dir_fd is None:
            raise UserError(f"no pid file directory {place.dir}", hint="create it")
        lock_fd = None
        try:
            lock_fd = _lock(dir_fd, place, names)
            return cls(f"{place.dir}/{names[0]}", dir_fd, lock_fd)
        except BaseException:
            for fd in (lock_fd, dir_fd):
                if fd is not None:
                    os.close(fd)
            raise

    def release(self) -> None:
        """Empty (and if possible remove) the files, then drop the lock by closing its fd last."""
        for fd, name in ((self._info_fd, self._names[2]), (self._fd, self._names[0]), (None, self._names[1])):
            with contextlib.suppress(OSError):  # without write access to the directory, empty files say
                if fd is not None:              # "not running" just as well
                    os.ftruncate(fd, 0)
                os.unlink(name, dir_fd=self._dir_fd)
        for fd in (self._info_fd, self._fd, self._lock_fd, self._dir_fd):
            os.close(fd)


def _lock(dir_fd: int, place: Place, names: tuple[str, str, str]) -> int:
    for _ in range(100):
        fd = _open_checked(dir_fd, names[1], place.owner, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _getlk(fd)
            os.close(fd)
            if holder is not None:
                raise AlreadyRunning(f"{place.dir}/{names[0]}", holder) from None
            continue  # released between our two calls: try again
        # the previous holder may have unlinked the file between our open and our lock: lock the new one
        if _same_file(fd, names[1], dir_fd):
            return fd
        os.close(fd)
    raise UserError(f"could not lock {place.dir}/{names[1]}", hint="another start is racing this one")


def _same_file(fd: int, name: str, dir_fd: int) -> bool:
    try:
        on_disk = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def clear_stale(config_path: StrPath) -> bool:
    """Remove the files a dead daemon left in this user's own place; True when that worked."""
    if os.path.dirname(probe(config_path).path) != home_place(os.geteuid()).dir:
        return False  # somebody else's place: theirs to clean
    try:
        pidfile = PidFile.acquire(config_path)
    except (OSError, UserError):
        return False
    pidfile.release()
    return True
