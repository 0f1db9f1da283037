"""The pid file: where it lives, holding it locked, and asking who holds it.

A daemon holds an exclusive ``flock`` on its pid file for its whole life, so "running" means "the lock is
held" — never "a pid is written and that pid exists" (pids are reused). The file's content is only the pid,
for people and for signals. A clean exit empties the file (and removes it when allowed: after dropping
privileges the daemon may no longer write the directory), so an empty or missing file means "not running";
a pid in an unlocked file means the daemon died ("stale", LSB status 1).

The directory and file are opened without following symlinks, and the directory must be ours and not
writable by group or others: the pid file is read by root to send signals.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, NamedTuple

from .config import instance_name
from .errors import UserError

# a status/read_pid probe holds a shared lock for microseconds; an acquirer retries past that window
_ACQUIRE_RETRY_S = 0.2


def runtime_dir() -> Path:
    """$RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), else /run/taskserver (root) or $XDG_RUNTIME_DIR."""
    env = os.environ.get("RUNTIME_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/taskserver")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if not xdg:
        raise UserError(
            "XDG_RUNTIME_DIR is not set, so there is no place for the pid file",
            hint="log in through a session that sets it, or set RUNTIME_DIRECTORY to a private directory",
        )
    return Path(xdg) / "taskserver"


def pidfile_name(config_path: Path) -> str:
    """``taskserver.pid`` for the default config; else a name unique to the config's absolute path."""
    return instance_name(config_path) + ".pid"


def pidfile_path(config_path: Path) -> Path:
    return runtime_dir() / pidfile_name(config_path)


def _open_dir(path: Path, create: bool) -> int:
    """An fd on the runtime directory, refusing symlinks and directories others could write."""
    if create:
        try:
            os.mkdir(path, 0o755 if os.geteuid() == 0 else 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError as exc:
            msg = f"cannot create {path}: {exc.strerror}"
            raise UserError(msg, hint="create its parent directory") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            msg = f"{path} is not a directory (a symlink?)"
            raise UserError(msg, hint="remove it; it is created on start") from exc
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UserError(
            f"unsafe pid file directory {path}: owned by uid {st.st_uid}, mode {stat.filemode(st.st_mode)}",
            hint=f"it must belong to uid {os.geteuid()} and not be writable by group or others",
        )
    return fd


def _read_content(fd: int) -> int | None:
    data = os.pread(fd, 64, 0).strip()
    return int(data) if data.isdigit() else None


class Probe(NamedTuple):
    """What the pid file says: ``running`` with the holder's pid, or ``stale`` with a dead daemon's pid."""

    path: Path
    pid: int | None
    running: bool

    @property
    def stale(self) -> bool:
        return not self.running and self.pid is not None

    def info(self) -> dict[str, Any] | None:
        """What the running daemon published about itself, if it is this pid's."""
        try:
            fd = os.open(self.path.parent / _info_name(self.path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = json.loads(os.read(fd, 1 << 20) or b"null")
        except ValueError:
            return None  # being rewritten this very moment
        finally:
            os.close(fd)
        return data if isinstance(data, dict) and data.get("pid") == self.pid else None

    def age(self) -> float | None:
        """Seconds since the daemon wrote its pid (its uptime while running)."""
        try:
            return time.time() - os.stat(self.path, follow_symlinks=False).st_mtime
        except OSError:
            return None


def probe(config_path: Path) -> Probe:
    """Look at the pid file without disturbing a daemon that is starting."""
    path = pidfile_path(config_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Probe(path, None, False)
    except OSError as exc:
        raise UserError(f"cannot read pid file {path}: {exc.strerror}", hint="is it a symlink?") from exc
    try:
        pid = _read_content(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Probe(path, pid, True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return Probe(path, pid, False)
    finally:
        os.close(fd)


def read_pid(config_path: Path) -> int | None:
    """Pid of the live daemon holding the pid file's lock, else None."""
    p = probe(config_path)
    return p.pid if p.running else None


class AlreadyRunning(UserError):
    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"already running as {who} (pid file {path} is locked)",
            hint="stop it first (`taskserver stop`), or give this server its own config file with -c",
            exit_code=1,
        )
        self.pid = pid


class PidFile:
    """The locked pid file of this process; keep the object alive as long as the daemon runs."""

    def __init__(self, path: Path, dir_fd: int, fd: int) -> None:
        self.path = path
        self._dir_fd = dir_fd
        self._fd = fd
        # opened now, while we may still be root: after the drop the directory is no longer ours to write
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._info_fd = os.open(_info_name(path), flags, 0o644, dir_fd=dir_fd)
        os.ftruncate(self._info_fd, 0)

    def write_info(self, info: dict[str, Any]) -> None:
        """Publish what `status` shows (tenants...), so status need not parse the config."""
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.ftruncate(self._info_fd, 0)
        os.pwrite(self._info_fd, data, 0)

    @classmethod
    def acquire(cls, config_path: Path) -> PidFile:
        """Create the directory, lock the file and write our pid, or raise AlreadyRunning."""
        path = pidfile_path(config_path)
        dir_fd = _open_dir(path.parent, create=True)
        deadline = time.monotonic() + _ACQUIRE_RETRY_S
        while True:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path.name, flags, 0o644, dir_fd=dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_content(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                os.close(dir_fd)
                raise AlreadyRunning(path, pid) from None
            # the previous holder may have unlinked the file between our open and our lock: lock the new one
            if _same_file(fd, path.name, dir_fd):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, dir_fd, fd)

    def release(self) -> None:
        """Empty (and if possible remove) the file, then drop the lock."""
        for fd, name in ((self._info_fd, _info_name(self.path)), (self._fd, self.path.name)):
            try:
                os.ftruncate(fd, 0)
                os.unlink(name, dir_fd=self._dir_fd)
            except OSError:
                pass  # without write access to the directory, an empty file says "not running" just as well
        os.close(self._info_fd)
        os.close(self._fd)
        os.close(self._dir_fd)


def _info_name(pid_path: Path) -> str:
    return pid_path.stem + ".info"


def _same_file(fd: int, name: str, dir_fd: int) -> bool:
    try:
        on_disk = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def clear_stale(config_path: Path) -> bool:
    """Remove a pid file left by a dead daemon; True when one was removed."""
    try:
        pidfile = PidFile.acquire(config_path)
    except (AlreadyRunning, OSError, UserError):
        return False
    pidfile.release()
    return True
