"""Signalling the daemon: only a process verified to hold this config's lock, pinned by a pidfd.

``Daemon.verify`` pins the lock holder that ``pidfile.probe`` names with ``pidfd_open``, checks it still
holds the lock (a pid cannot be reused while its process holds a lock, so the pidfd is that process), and,
for a place owned by a user, that the process is entirely that user's: a user's files never make root signal
anything the user could not signal alone. The daemon's own start time in its info file must match /proc.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

from .errors import UserError
from .pidfile import Probe, probe, starttime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from .confpath import StrPath


def proc_uids(pid: int) -> set[int]:
    """Real, effective, saved and filesystem uid of a process."""
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("Uid:"):
            return {int(x) for x in line.split()[1:]}
    raise ProcessLookupError(pid)


class Daemon:
    """A daemon process verified to hold this config's lock, pinned by a pidfd: a signal sent through it
    reaches that process or nothing (never a process that got the pid later)."""

    def __init__(self, pid: int, pidfd: int | None, config_path: StrPath, path: str) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._config = config_path
        self._path = path

    @classmethod
    def find(cls, config_path: StrPath) -> Daemon | None:
        state = probe(config_path)
        return cls.verify(config_path, state) if state.running and state.pid else None

    @classmethod
    def verify(cls, config_path: StrPath, state: Probe) -> Daemon | None:
        assert state.pid is not None
        try:
            pidfd: int | None = os.pidfd_open(state.pid)
        except ProcessLookupError:
            return None
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            pidfd = None  # Linux before 5.3: see _still_holder
        daemon = cls(state.pid, pidfd, config_path, state.path)
        try:
            if not daemon._still_holder():  # after pinning: still the holder, so the pidfd is that process
                daemon.close()
                return None
            _check_identity(state)
        except BaseException:
            daemon.close()
            raise
        return daemon

    def _still_holder(self) -> bool:
        again = probe(self._config)
        return again.running and (again.pid, again.path) == (self.pid, self._path)

    def signal(self, sig: signal.Signals) -> bool:
        """False when the process is already gone."""
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            elif self._still_holder():  # no pidfd: a pid is not reused while its process holds the lock,
                os.kill(self.pid, sig)  # which leaves only the instant between these two calls
            else:
                return False
        except ProcessLookupError:
            return False
        except PermissionError:
            raise UserError(f"not allowed to signal pid {self.pid}",
                            hint="run as root or as the daemon's user", exit_code=4) from None
        return True

    def close(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None


def _check_identity(state: Probe) -> None:
    """A user's place may name only that user's processes; the daemon's own word must match /proc."""
    assert state.pid is not None
    try:
        uids = proc_uids(state.pid)
    except (OSError, ProcessLookupError):
        uids = set()
    info = state.info()
    if state.owner != 0 and uids != {state.owner}:
        raise UserError(
            f"refusing to signal pid {state.pid}: it holds the lock in {os.path.dirname(state.path)} (uid "
            f"{state.owner}'s) but runs as uids {sorted(uids)}",
            hint="that directory's owner could have planted it; remove the directory", exit_code=4)
    if info is not None and info.get("starttime") not in (None, starttime(state.pid)):
        raise UserError(f"refusing to signal pid {state.pid}: it is not the process that wrote {state.path}",
                        hint="remove the stale files next to it", exit_code=4)


def signal_daemon(path: StrPath, sig: signal.Signals) -> int | None:
    """Send ``sig`` to this config's daemon after verifying it (see ``Daemon``); its pid, or None when no
    daemon runs."""
    daemon = Daemon.find(path)
    if daemon is None:
        return None
    try:
        return daemon.pid if daemon.signal(sig) else None
    finally:
        daemon.close()
