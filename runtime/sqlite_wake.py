"""The wake-up socket of a SQLite store: `jobs enqueue` wakes the daemon serving the store without knowing its
pid. Only the holder of the store's lock (runtime/sqlite_guard.py ``InstanceLock``) binds it."""

from __future__ import annotations

import _socket
import contextlib
import os

from .confpath import parent

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from collections.abc import Iterator

    from .confpath import StrPath

_SUN_PATH = 100  # a socket address's bytes: sun_path holds 108 with its NUL; kept under it with a margin


def wake_path(store: StrPath) -> str:
    """Where the store's wake-up socket (``WakeSocket``) is: beside it (a store's path names a file)."""
    return os.fspath(store) + ".wake"


class WakeSocket:
    """A datagram socket next to the store: `jobs enqueue` wakes the daemon without knowing its pid.

    Bound only by the daemon holding the instance lock, so a socket file found at ``listen`` is a dead
    daemon's.  A path too long for ``sun_path`` (108 bytes: a deep state dir) is reached through its
    directory opened as a file descriptor (``/proc/self/fd/N/NAME``), for the bind and for each wake-up;
    only a name too long even then gets no socket (the pid file's SIGUSR1 still wakes the daemon).
    """

    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)
        # the plain _socket type: the socket module's import (its enums) was a tenth of `jobs enqueue`
        self.sock: _socket.socket | None = None

    @contextlib.contextmanager
    def _address(self) -> Iterator[str | None]:
        """The socket's address: its path, or for a path too long its directory's descriptor's path
        (valid while the descriptor is open); None when even that is too long."""
        if len(os.fsencode(self.path)) <= _SUN_PATH:
            yield self.path
            return
        try:
            fd = os.open(parent(self.path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            yield None
            return
        try:
            short = f"/proc/self/fd/{fd}/{os.path.basename(self.path)}"
            yield short if len(os.fsencode(short)) <= _SUN_PATH else None
        finally:
            os.close(fd)

    def listen(self) -> None:
        self.close()
        with self._address() as address:
            if address is None:
                return
            flags = _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
            sock = _socket.socket(_socket.AF_UNIX, flags)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        os.chmod(self.path, 0o660)  # its user and group (the daemon's, a tenant's) may wake it, no one else
        self.sock = sock

    def fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock is not None and self.sock.recv(64):
                pass

    def notify(self) -> bool:
        """Send a wake-up; False when nobody listens."""
        with self._address() as address:
            if address is None:
                return False
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
            try:
                s.sendto(b"!", address)
            except BlockingIOError:
                return True  # its buffer is full of wake-ups it has not read yet: it will look
            except OSError:
                return False
            finally:
                s.close()
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):  # ours: bound under the instance lock
                os.unlink(self.path)
