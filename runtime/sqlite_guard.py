"""What keeps an SQLite store file honest: it is refused when corrupt, when it vanished or came back empty
although it had history, when it is not the store this state dir knew, and while another daemon uses it.

- Identity: the store holds a random id (``meta``); the state dir holds a marker ``.<tenant>.store-id``
  naming it.  A marker without its store (deleted, truncated to 0 bytes, replaced) is refused loudly: the
  daemon must not start an empty history silently.  Starting afresh is a conscious act: remove the marker.
- Integrity: the file must start with SQLite's header and pass ``PRAGMA quick_check`` before anything is
  written into it: always when a daemon opens it; when a command opens it to write, only while no live
  daemon serves the store (``served``). A daemon checked the whole file when it opened it and writes into
  it at every wake-up since, so a command's whole-file check (which grows with the history) could not keep
  a corrupt file from being written into; the command relies on SQLite's checks of the pages it touches,
  made stricter with ``cell_size_check``, and on the header and identity checks.
- One daemon per store: an exclusive ``flock`` on ``<store>.lock``, taken before the store is opened and
  held for the daemon's life (the kernel drops it when the process dies, whatever kills it), also while a
  storage fault keeps the store from opening; the holder writes who it is into that file, so the refusal
  names the other daemon (pid, host, config), and, once it opened the store, which store file it holds it
  for (``served``).
- Wake-ups: the lock holder listens on a datagram socket ``<store>.wake`` (runtime/sqlite_wake.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import time

from .store_errors import StoreBusy, StoreError, fault

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:

    from .confpath import StrPath
    from .store import Instance

HEADER = b"SQLite format 3\x00"
_INFO_ROOM = 1024  # bytes a lock file's holder info is padded to: room kept for the next holder
SHARED_WAIT = 0.5  # seconds a daemon waits for shared holders of its store's lock (commands looking at it)
_RESTORE_HINT = ("restore the file from a backup; to start a new, empty history instead, move the file aside "
                 "and remove {marker}")


# Paths are text here, and a Path is taken too: the lean `jobs enqueue` opens a store without pathlib
# (runtime/confpath.py says why).
def marker_path(state_dir: StrPath, tenant: str) -> str:
    return os.path.join(state_dir, f".{tenant}.store-id")


def read_marker(marker: StrPath) -> str | None:
    try:
        with open(marker, encoding="utf-8") as f:
            return json.loads(f.read())["id"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(marker: StrPath, store_id: str, path: StrPath) -> None:
    """Write the marker atomically.  Its temporary file is this process's own, made new (``O_EXCL``): the
    daemon and a command opening a new store at once both write it, and with one shared name one of them
    renamed the other's away (that one then failed to open the store)."""
    marker = os.fspath(marker)
    tmp = f"{marker}.{os.getpid()}.{os.urandom(4).hex()}.tmp"  # beside it (a marker names a file)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, (json.dumps({"id": store_id, "path": str(path)}) + "\n").encode())
        finally:
            os.close(fd)
        os.replace(tmp, marker)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_presence(path: StrPath, marker: StrPath) -> None:
    """Refuse a store that vanished or was emptied while the state dir remembers it had one."""
    known = read_marker(marker)
    if known is None:
        return
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = -1
    if size <= 0:
        what = "is gone" if size < 0 else "is empty (0 bytes)"
        raise StoreError(f"{path}: the run store {what}, but this state dir knew it with history "
                         f"(id {known})", hint=_RESTORE_HINT.format(marker=marker))


def check_header(path: StrPath) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:  # a store this process may not read (the web side as nobody): a store fault
        raise StoreError(f"{path}: cannot read the run store: {exc.strerror}",
                         hint="run as a user that may read it (the tenant's or the daemon's)") from None
    if head and head != HEADER:
        raise StoreError(f"{path}: not an SQLite database (overwritten?); refusing to use it",
                         hint=f"check it with: sqlite3 {path} 'PRAGMA quick_check'; restore it from a backup")


def check_integrity(db: sqlite3.Connection, path: StrPath) -> None:
    try:
        rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        got = fault(exc, path)
        if got is not None:  # a full disk, an I/O error, a lock: the check could not look; no sign of damage
            raise got from exc
        rows = [str(exc)]
    if rows != ["ok"]:
        raise StoreError(f"{path}: the run store is corrupt ({'; '.join(rows)[:200]}); refusing to write "
                         "into it", hint=f"see sqlite3 {path} 'PRAGMA quick_check'; restore it from a backup "
                         "(sqlite3 .recover can save what is left)")


def check_identity(store_id: str, marker: StrPath, path: StrPath) -> None:
    known = read_marker(marker)
    if known is not None and known != store_id:
        raise StoreError(f"{path}: this is not the run store the state dir knew (id {known}, found "
                         f"{store_id})", hint=_RESTORE_HINT.format(marker=marker))
    if known is None:
        write_marker(marker, store_id, path)


def served(path: StrPath) -> bool:
    """Whether a live daemon holds the instance lock of the store at ``path`` (see ``InstanceLock``).

    Looked at without creating, following or holding anything: the lock file named from ``path``, opened
    read-only without following a link (a FIFO is not waited for), must be a regular file with one link,
    owned by the store file's owner, on which a non-blocking shared ``flock`` fails, and its holder must
    have written that it holds it for this very file (device and inode: the held lock of another store,
    renamed into place by someone who can write the directory, is not this store's). The shared lock a
    success takes is released at once (a daemon taking the lock meanwhile waits for it: ``take``). A
    missing file, a link, a file of another user (the lock of a store in a directory someone else can
    write into), one this user may not read: not served, so the whole file is checked."""
    try:
        store = os.stat(path)
        fd = os.open(InstanceLock(path).path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != store.st_uid:
            return False
        return not _try_flock(fd, fcntl.LOCK_SH) and _holds(os.pread(fd, 4096, 0), store)
    finally:
        os.close(fd)  # releases a shared lock taken


def _holds(raw: bytes, store: os.stat_result) -> bool:
    """Whether a lock file's text (``InstanceLock.take``) names ``store``'s file."""
    try:
        return bool(json.loads(raw)["store"] == [store.st_dev, store.st_ino])
    except (ValueError, KeyError, TypeError):
        return False


def _try_flock(fd: int, how: int) -> bool:
    """A non-blocking flock: False while another holder's lock conflicts."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False
    return True


class InstanceLock:
    """The exclusive lock that makes a store one daemon's; released when the process ends.

    Taken before the store is opened (store.claim_store): a daemon whose store cannot be opened yet (a full
    disk, a read-only file system: it holds the runs) holds it all the same, so a second daemon is refused
    then as it is while the store is served. What the holder writes into it (who it is, which file it holds
    it for) is written over the same bytes each time and blanked, not cut, at release: a lock file that had
    a holder keeps its room, so a holder on a full disk can still say who it is. A holder that could not
    say it yet says it at its next ``take`` (``attach``, and each recovery)."""

    def __init__(self, path: StrPath) -> None:
        self.store = path
        self.path = os.fspath(path) + ".lock"  # (a store's path names a file: no trailing slash)
        self.fd: int | None = None

    def take(self, me: Instance, *, checked: bool = True) -> None:
        """Hold the lock (StoreBusy while another daemon does) and say who holds it, and, ``checked``, for
        which store file: only a daemon that opened (and so checked) the file names it, so that a command
        skips its whole-file check (``served``) only then, not while a daemon holds a store it could not
        open yet. Held already through a file still in place: only said again (a second open file of this
        process would conflict with the first one's lock); a lock file deleted or replaced meanwhile is
        taken anew."""
        if self.fd is None or not self.holds():
            self._hold(self._open())
        self._say(me, self._identity() if checked else None)

    def _open(self) -> int:
        """The lock file, created if need be; read-only where it cannot be written (a read-only file system,
        a full disk): a lock is held on a file opened for reading as well."""
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                raise
            try:
                return os.open(self.path, os.O_RDONLY | flags)
            except FileNotFoundError:
                raise exc from None

    def _hold(self, fd: int) -> None:
        try:
            taken = _take(fd)
        except OSError:
            os.close(fd)
            raise
        if not taken:
            holder = _who(os.pread(fd, 4096, 0), fd)
            os.close(fd)
            raise StoreBusy(f"{self.store}: in use by another taskserver daemon ({holder})",
                            hint="each store serves one daemon: stop the other one, or give this config its "
                            "own state_dir") from None
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd

    def holds(self) -> bool:
        """Whether the lock file in place is the one this holds (not deleted or replaced since)."""
        if self.fd is None:
            return False
        try:
            st, mine = os.stat(self.path, follow_symlinks=False), os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino) and mine.st_nlink > 0

    def _say(self, me: Instance, store: list[int] | None) -> None:
        """Write who holds the lock over the bytes there (no new room needed once a holder said it); a
        disk that takes no byte leaves it unsaid until the next ``take``."""
        self._write(json.dumps({"pid": me.pid, "host": me.host, "config": me.config, "instance": me.id,
                                "store": store}).encode())

    def _write(self, text: bytes | None) -> None:
        """``text`` (None: blanks) over the file's bytes, padded to its size, and to _INFO_ROOM at least.
        A lock taken read-only (on a read-only file system) is written through a second descriptor of the
        same file once it can be: what it says must not stay another's, or unsaid, after a remount."""
        assert self.fd is not None
        fd = self.fd
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDWR:
                fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if self._same_file(fd):
                size = os.fstat(fd).st_size
                room = size if text is None else max(_INFO_ROOM, len(text), size)
                os.pwrite(fd, (text or b"").ljust(room), 0)
        except OSError:
            pass  # read-only, or no room yet: the lock holds without it
        finally:
            if fd != self.fd:
                os.close(fd)

    def _same_file(self, fd: int) -> bool:
        """Whether ``fd`` is open on the file this lock is held through."""
        assert self.fd is not None
        mine, other = os.fstat(self.fd), os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (other.st_dev, other.st_ino)

    def _identity(self) -> list[int] | None:
        """The store file this lock is held for (``served`` believes a lock only for it)."""
        try:
            st = os.stat(self.store)
        except OSError:
            return None
        return [st.st_dev, st.st_ino]

    def release(self) -> None:
        if self.fd is not None:
            self._write(None)  # blanked in place: its room stays for the next holder
            os.close(self.fd)
            self.fd = None


def _take(fd: int) -> bool:
    """The exclusive lock, or False while another daemon holds it. Shared holders are commands asking
    whether a daemon serves the store (``served``), each for a moment: waited for, a bounded time (a user
    holding a shared lock on a lock file of its own keeps its own store from its daemon, as an exclusive
    one would)."""
    end = time.monotonic() + SHARED_WAIT
    while not _try_flock(fd, fcntl.LOCK_EX):
        if not _try_flock(fd, fcntl.LOCK_SH) or time.monotonic() > end:
            return False  # an exclusive holder: another daemon (or a shared one that stays)
        fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(0.002)
    return True


def _who(raw: bytes, fd: int) -> str:
    """The holder of the lock on ``fd``, by what it wrote there, else by the pid the kernel names. What it
    wrote is believed as it is: the pid it wrote is its own as seen in its pid namespace, which /proc/locks
    here may give otherwise, so the two are not compared."""
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on host {info['host']}, config {info['config']}"
    except (ValueError, KeyError, TypeError):
        pid = _holder(fd)
        said = "it has not said who it is (its file system may be full or read-only)"
        return f"pid {pid}; {said}" if pid is not None else said


def _holder(fd: int) -> int | None:
    """The pid holding the exclusive flock on ``fd``'s file, as /proc/locks names it (a holder that could
    not write who it is is still named). Lines: ``1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF``; a
    waiter's has ``->`` after its number."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if parts[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and len(parts) > 5 and parts[5] == want:
            return int(parts[4]) if parts[4].isdigit() and parts[4] != "0" else None
    return None
