"""Empty files made ahead of time in the status directories, so that a run's new status file costs a rename.

A new status file (a job's first run, a queued task that came without one) needs a new inode, and on a
busy file system that is the most expensive thing the daemon does per run: on a full ext4 without a journal
the allocator looks at every recently deleted inode of the group before it takes one (about a millisecond
here, 20 to 100 times a rename).  The daemon's loop says which files it expects to create soon
(``expect``); a helper thread makes that many empty files, ``.spare.<pid>.<n>``, owned and moded as the
status file would be; ``take`` hands one to ``statusfile.write``, which fills it and renames it into place,
so what a reader sees is still a whole file that appeared at once.  When none is ready the loop creates
the file itself, as before: the helper only ever takes work off the loop, never adds a wait to it.

The thread touches nothing but these files.  It acts as the tenant's user through its own filesystem ids
(setfsuid is per thread), never through the umask (per process), and it sleeps while nothing is expected.
Spares left by a daemon that died are taken over (renamed to this daemon's names and emptied: cheaper than
new ones); those left at a clean exit are removed. A spare is always handed out empty, so filling it is a
write and a rename (statusfile._fill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from . import privs

log = logging.getLogger(__name__)

PREFIX = ".spare."
# per directory, made and not taken yet: the most jobs a config may hold (limits.MAX_JOBS), so a burst of
# every job's first run finds its files made; a bigger wave of tasks without status files creates the rest
# in the loop, as before, while the thread keeps making more
MAX_SPARES = 10_000
# a status directory may be a tenant's: no link followed, never a wait in open() (a FIFO in a spare's place)
_MAKE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

class Spares:
    def __init__(self) -> None:
        self._pid = os.getpid()
        self._seq = 0
        self._cond = threading.Condition()
        # by directory, as text (os.fspath): a spare's path is joined as text, never as a Path, whose parts
        # would be interned for good (10,000 first runs grew the interpreter's table by a megabyte)
        self._ready: dict[str, deque[str]] = {}  # made, not taken yet
        self._need: dict[str, int] = {}  # files expected there and not created yet
        self._asked: dict[str, list[str]] = {}  # names to look for (the thread counts those missing)
        self._whose: dict[str, privs.Identity | None] = {}
        self._mode: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- the loop's side ---------------------------------------------------------------------------------
    def expect(self, directory: Path | str, names: Iterable[str], mode: int,
               ident: privs.Identity | None) -> None:
        """Files named ``names`` may soon be created in ``directory`` (which exists): spares are made for
        those not there yet.  Each name is to be told once (the caller keeps track)."""
        directory = os.fspath(directory)
        with self._cond:
            self._asked.setdefault(directory, []).extend(names)
            self._whose[directory] = ident
            self._mode[directory] = mode
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="taskserver-spares", daemon=True)
            self._thread.start()

    def take(self, directory: Path | str) -> str | None:
        """A spare of ``directory`` (this process's, owned and moded for it), or None; one fewer is needed."""
        directory = os.fspath(directory)
        ready = self._ready.get(directory)
        if not ready:
            return None
        try:
            spare = ready.popleft()
        except IndexError:  # the last one went between the look and the pop (the thread only adds)
            return None
        with self._cond:
            need = self._need[directory] = max(0, self._need.get(directory, 0) - 1)
            if need >= MAX_SPARES:  # more are expected than were kept made: the thread makes the next one
                self._cond.notify()
        return spare

    def close(self) -> None:
        """Stop the thread and remove the spares not used."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for ready in self._ready.values():
            for spare in ready:
                with contextlib.suppress(OSError):
                    os.unlink(spare)
            ready.clear()

    # -- the helper thread -------------------------------------------------------------------------------
    def _work(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())  # signals are the main thread's
        while True:
            with self._cond:
                while not self._stop and not self._asked and self._short() is None:
                    self._cond.wait()
                if self._stop:
                    return
                asked, self._asked = self._asked, {}
            try:
                for directory, names in asked.items():
                    self._count(directory, names)
                self._make_some()
            except Exception as exc:  # a spare is an optimisation: the loop creates what it needs itself
                log.debug("spare status files: %s", exc)
                with self._cond:
                    self._need.clear()

    def _short(self) -> str | None:
        """A directory with fewer spares than it should have made."""
        return next((d for d in self._need if self._wanted(d) > len(self._ready.get(d, ()))), None)

    def _wanted(self, directory: str) -> int:
        """How many spares ``directory`` should have made: one per file expected, at most MAX_SPARES."""
        return min(self._need.get(directory, 0), MAX_SPARES)

    def _count(self, directory: str, names: list[str]) -> None:
        """How many of ``names`` are missing; at the first look, spares a dead daemon left are taken over."""
        with privs.fs_identity(self._whose.get(directory)):
            if directory not in self._ready:
                self._ready[directory] = deque()
                for name in os.listdir(directory):
                    if name.startswith(PREFIX) and _orphaned(name):
                        self._adopt(directory, name)
            missing = sum(1 for name in names if not os.path.lexists(os.path.join(directory, name)))
        with self._cond:
            self._need[directory] = self._need.get(directory, 0) + missing

    def _adopt(self, directory: str, name: str) -> None:
        """A dead daemon's spare becomes ours, emptied here: a spare handed out is always empty, so filling
        it is a write without a truncate (statusfile._fill)."""
        mine = self._name(directory)
        with contextlib.suppress(OSError):
            os.rename(os.path.join(directory, name), mine)
            fd = os.open(mine, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # no link, no wait
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device in its place: not a spare
                    return
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
            self._ready[directory].append(mine)

    def _make_some(self) -> None:
        """Make spares until every directory has what it needs, a few at a time (new wishes come first)."""
        while not self._stop and not self._asked:
            directory = self._short()
            if directory is None:
                return
            with privs.fs_identity(self._whose.get(directory)):
                for _ in range(16):
                    if len(self._ready[directory]) >= self._wanted(directory):
                        break
                    self._ready[directory].append(self._make(directory))

    def _make(self, directory: str) -> str:
        path = self._name(directory)
        mode = self._mode[directory]
        # no O_EXCL: a file of this name is a spare of an earlier process with our pid, as good as a new one
        # once emptied (O_TRUNC: a spare handed out is always empty)
        fd = os.open(path, _MAKE, mode)
        try:
            os.fchmod(fd, mode)  # not the umask's choice (see statusfile.write)
        finally:
            os.close(fd)
        return path

    def _name(self, directory: str) -> str:
        self._seq += 1
        return f"{directory}/{PREFIX}{self._pid}.{self._seq}"


def _orphaned(name: str) -> bool:
    """A spare whose daemon is gone (``.spare.<pid>.<n>``)."""
    try:
        pid = int(name[len(PREFIX):].split(".", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
