"""File operations on a target system that cannot be led outside it by symbolic links.

Every path the installer writes, reads or deletes is a path *as the target system sees it*
(``/etc/systemd/system/x.service``). ``Tree`` resolves it inside the target's root with the kernel's
``openat2(RESOLVE_IN_ROOT)``: an absolute symlink or ``..`` in a ``--root`` tree is taken the way the
tree's own boot would take it (relative to the tree's ``/``), never as a path of the host, and the last
component is never followed when writing or deleting (a temp file + ``renameat`` replaces a symlink
instead of writing through it). On the running system (root ``/``) this is ordinary resolution.

``AsUser`` runs the same operations in a child process that has dropped to a user (supplementary groups,
gid, uid), for work in that user's home: the kernel then refuses whatever the user could not do alone (a
symlinked ``~/.config/systemd/user`` pointing at a root directory), and files are created by their owner, so
nothing is chowned.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pickle
import pwd
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from ..runtime.errors import UserError
from . import outside

T = TypeVar("T")

SYS_OPENAT2 = 437  # the same number on every architecture with the unified syscall table
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# a path that does not exist, or runs through a file where a directory should be
MISSING = (FileNotFoundError, NotADirectoryError)


def gone(exc: OSError) -> bool:
    """Whether a lookup found nothing there: missing, or a link that loops inside the tree (a tree's
    ``etc -> /etc`` is its own ``/etc``, itself), which a read takes as missing and a write refuses."""
    return isinstance(exc, MISSING) or exc.errno == errno.ELOOP


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(2)``; retried on EAGAIN (a concurrent rename seen during an in-root lookup)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    for _ in range(64):
        fd = _libc.syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    if err == errno.ENOSYS:
        raise UserError(
            "this kernel has no openat2(2), needed to resolve paths safely inside a target tree",
            hint="run taskserver-install on Linux 5.6 or later",
            exit_code=1,
        )
    raise OSError(err, os.strerror(err), path)


def _rel(path: Path) -> str:
    if not path.is_absolute():
        raise ValueError(f"not a target path: {path}")
    return os.path.normpath(str(path)).lstrip("/") or "."


class Tree:
    """Operations on target paths, resolved inside ``root``. ``owner``: (uid, gid) that everything this
    tree creates is given (a user unit in a tree's home), by ``fchownat`` on the entry itself."""

    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner

    def where(self, path: Path) -> Path:
        """Where the target's ``path`` lies on this machine (what an error message names)."""
        return self.root / _rel(path)

    @contextlib.contextmanager
    def _naming(self, path: Path) -> Iterator[None]:
        """A call on a descriptor, or on a name relative to one, fails naming no useful path (the fd's
        number, the last component, a temp file): its OSError is raised again naming where ``path`` lies,
        so a message built from it says where (the same subclass, so ``except MISSING`` still holds)."""
        try:
            yield
        except OSError as exc:
            where = str(self.where(path))
            if exc.errno is None or exc.filename == where:
                raise
            raise OSError(exc.errno, exc.strerror, where) from exc

    def _open_present(self, path: Path, flags: int) -> int | None:
        """``_open``, or None when the path (or a directory on its way) does not exist."""
        try:
            return self._open(path, flags)
        except OSError as exc:
            if gone(exc):
                return None
            raise

    def _open(self, path: Path, flags: int) -> int:
        rootfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with self._naming(path):
                return openat2(rootfd, _rel(path), flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            outside.notice(self, path, exc)  # a link leading out of the tree is why: say so (--status)
            raise
        finally:
            os.close(rootfd)

    @contextlib.contextmanager
    def parent(self, path: Path) -> Iterator[tuple[int, str]]:
        """(fd of the directory that holds ``path``, resolved in the root; the last component's name).
        An OSError inside the ``with`` names ``path``."""
        if path.name in ("", ".", ".."):
            raise ValueError(f"not a file path: {path}")
        fd = self._open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            with self._naming(path):
                yield fd, path.name
        finally:
            os.close(fd)

    def read(self, path: Path) -> bytes | None:
        """The file's bytes (a symlink followed, inside the root), or None when it does not exist; an
        OSError when it is not a regular file (a directory, a FIFO that would block)."""
        fd = self._open_present(path, os.O_RDONLY | os.O_NONBLOCK)
        if fd is None:
            return None
        try:
            with self._naming(path):
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):  # checked before reading: os.fdopen of a directory names the fd
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if not stat.S_ISREG(mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                with os.fdopen(fd, "rb", closefd=False) as fh:
                    return fh.read()
        finally:
            os.close(fd)

    def lstat(self, path: Path) -> os.stat_result | None:
        try:
            with self.parent(path) as (d, name):
                return os.stat(name, dir_fd=d, follow_symlinks=False)
        except OSError as exc:
            if gone(exc):
                return None
            raise

    def readlink(self, path: Path) -> str | None:
        """The target of the symlink at ``path`` (the entry itself, not followed), or None when ``path`` is
        missing or not a symlink: what an install replaces there, to judge it and to put it back."""
        try:
            with self.parent(path) as (d, name):
                return os.readlink(name, dir_fd=d)
        except OSError as exc:
            if gone(exc) or exc.errno == errno.EINVAL:  # EINVAL: there, but not a symlink
                return None
            raise

    def stat(self, path: Path) -> os.stat_result | None:
        """``stat`` of what ``path`` names (a symlink followed inside the root), or None when missing."""
        fd = self._open_present(path, os.O_PATH)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def open_dir(self, path: Path) -> int:
        """A read fd of the directory (for listing), resolved inside the root."""
        return self._open(path, os.O_RDONLY | os.O_DIRECTORY)

    def listdir(self, path: Path) -> tuple[os.stat_result, list[str]] | None:
        """The directory's own stat and its entries' names, resolved inside the root; None when missing."""
        fd = self._open_present(path, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            return None
        try:
            with self._naming(path):
                return os.fstat(fd), os.listdir(fd)
        finally:
            os.close(fd)

    def is_dir(self, path: Path) -> bool:
        try:
            os.close(self._open(path, os.O_PATH | os.O_DIRECTORY))
        except OSError as exc:
            if gone(exc):
                return False
            raise
        return True

    def _give(self, d: int, name: str) -> None:
        if self.owner is not None:
            os.chown(name, *self.owner, dir_fd=d, follow_symlinks=False)

    def write(self, path: Path, data: bytes, mode: int) -> None:
        """Atomically replace ``path``: a new file in the resolved directory, fsync, ``renameat`` over it."""
        with self.parent(path) as (d, name):
            tmp = f".{name}.{secrets.token_hex(6)}.tmp"
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d
            )
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fchmod(fh.fileno(), mode)
                    if self.owner is not None:
                        os.fchown(fh.fileno(), *self.owner)
                    os.fsync(fh.fileno())
                os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=d)
                raise

    def makedirs(self, path: Path) -> list[Path]:
        """``mkdir -p`` inside the root; the directories it created, outermost first (when it fails part-way,
        none of them is left)."""
        missing: list[Path] = []
        cur = path
        while cur != cur.parent and not self.is_dir(cur):
            missing.append(cur)
            cur = cur.parent
        made: list[Path] = []
        try:
            for p in reversed(missing):
                with self.parent(p) as (d, name):
                    try:
                        os.mkdir(name, 0o755, dir_fd=d)
                    except FileExistsError as exc:  # a link to nothing (inside the root) or a file
                        raise NotADirectoryError(
                            errno.ENOTDIR, "not a directory (a link or a file)", str(p)
                        ) from exc
                    made.append(p)
                    self._give(d, name)
        except BaseException:
            # a full file system (or a chown refused) part-way: the caller never learns what was made,
            # so nothing of it may stay behind
            for p in reversed(made):
                with contextlib.suppress(OSError):
                    self.rmdir(p)
            raise
        return made

    def unlink(self, path: Path) -> bool:
        """Remove the entry itself (never what a symlink points to); False when it was already gone."""
        try:
            with self.parent(path) as (d, name):
                os.unlink(name, dir_fd=d)
        except OSError as exc:
            if gone(exc):
                return False
            raise
        return True

    def rmdir(self, path: Path) -> None:
        with self.parent(path) as (d, name):
            os.rmdir(name, dir_fd=d)

    def remove_tree(self, path: Path) -> bool:
        """``rm -rf`` of the entry itself (a link is removed, not followed; the walk below it goes by file
        descriptors); False when it was already gone."""
        try:
            with self.parent(path) as (d, name):
                if stat.S_ISDIR(os.stat(name, dir_fd=d, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=d)
                else:
                    os.unlink(name, dir_fd=d)
        except OSError as exc:
            if gone(exc):
                return False
            raise
        return True

    def symlink(self, target: str, path: Path) -> None:
        with self.parent(path) as (d, name):
            os.symlink(target, name, dir_fd=d)
            self._give(d, name)


def _drop(uid: int, gid: int) -> None:
    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)


def as_user(uid: int, gid: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a child that dropped to ``uid``/``gid`` (and the user's groups); return its result or
    raise its OSError here. The child shares nothing writable with this process but the pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        _child(w, uid, gid, fn)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    answer: tuple[str, Any] = pickle.loads(data) if data else ("error", "the child died")  # noqa: S301
    kind, value = answer
    if kind == "ok":
        return cast(T, value)
    if kind == "oserror":
        raise OSError(*value)  # OSError(errno, ...) comes back as its subclass (PermissionError...)
    raise RuntimeError(f"as uid {uid}: {value}")


def _child(w: int, uid: int, gid: int, fn: Callable[[], object]) -> NoReturn:  # pragma: no cover
    try:
        _drop(uid, gid)
        reply: tuple[str, object] = ("ok", fn())
    except OSError as exc:
        reply = ("oserror", (exc.errno, exc.strerror, exc.filename))
    except BaseException as exc:  # reported to the parent, which raises it
        reply = ("error", f"{type(exc).__name__}: {exc}")
    with os.fdopen(w, "wb") as fh:
        fh.write(pickle.dumps(reply))
    os._exit(0)


class AsUser(Tree):
    """A ``Tree`` (the running system) whose every operation runs with a user's privileges."""

    def __init__(self, uid: int, gid: int) -> None:
        super().__init__(Path("/"))
        self.uid, self.gid = uid, gid
        self.plain = Tree(Path("/"))  # what the child runs: its own calls must not fork again

    def _as(self, fn: Callable[[], T]) -> T:
        return as_user(self.uid, self.gid, fn)

    def read(self, path: Path) -> bytes | None:
        return self._as(lambda: self.plain.read(path))

    def lstat(self, path: Path) -> os.stat_result | None:
        return self._as(lambda: self.plain.lstat(path))

    def readlink(self, path: Path) -> str | None:
        return self._as(lambda: self.plain.readlink(path))

    def stat(self, path: Path) -> os.stat_result | None:
        return self._as(lambda: self.plain.stat(path))

    def is_dir(self, path: Path) -> bool:
        return self._as(lambda: self.plain.is_dir(path))

    def listdir(self, path: Path) -> tuple[os.stat_result, list[str]] | None:
        return self._as(lambda: self.plain.listdir(path))

    def write(self, path: Path, data: bytes, mode: int) -> None:
        self._as(lambda: self.plain.write(path, data, mode))

    def makedirs(self, path: Path) -> list[Path]:
        return self._as(lambda: self.plain.makedirs(path))

    def unlink(self, path: Path) -> bool:
        return self._as(lambda: self.plain.unlink(path))

    def rmdir(self, path: Path) -> None:
        self._as(lambda: self.plain.rmdir(path))

    def remove_tree(self, path: Path) -> bool:
        return self._as(lambda: self.plain.remove_tree(path))

    def symlink(self, target: str, path: Path) -> None:
        self._as(lambda: self.plain.symlink(target, path))
