"""Spawning runs from helper threads, so that the daemon's loop never waits for a child's exec.

``posix_spawn`` returns only once the child has called exec (glibc and musl start it with vfork): on a busy
machine the child first waits for a CPU, and ``os.posix_spawn`` holds the interpreter's lock all that time,
so the loop stood still for a millisecond or more per run (several under load), with free slots and
finished children waiting.  Here the same libc call is made through ctypes, which lets go of that lock
during the call, from a few threads of its own: the loop hands over a spawn and goes on (reaping,
recording, claiming the next runs); the thread reports the pid (or the error) through a queue.  Only an
error (or any spawn, once the loop asks for ``wake_always``: it is stopping) is worth a wake-up of its own
through the pipe the loop's selector watches: a pid that landed is taken at the loop's next wake-up, which
its owner bounds (runtime/runs.py, PID_DELAY), so a run costs the loop no pass of its own for it.

Two waits for the interpreter's lock were measured on that path (one-off /bin/true runs): a thread woken
for a spawn must take the lock back before it can make the call, and the loop, going on with its pass,
held it for 115 us at the median and 742 us at the 90th percentile; and after the call the thread waited
again to report the pid (940 us at the median, 2.1 ms at the 90th), so that a quarter of the children
had exited before the loop knew their pid.  So the loop waits, without the lock, until its spawns are in
the C call (``hand_over``, bounded), and it takes a spawn by the pid the C call wrote without waiting for
the thread's report (``spawned``).

Nothing about a run's order changes: the loop hands a spawn over only after the run's row was committed
and its status file written (runtime/runs.py).  Where libc or ctypes is not usable the executor spawns in
the loop as before (``Launcher.create`` returns None).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

THREADS = 4  # one per default slot (max_parallel): each waits for its own child's exec
_SETSIGDEF, _SETSIGMASK, _SETSID = 0x04, 0x08, 0x80  # POSIX_SPAWN_* (glibc and musl agree)
_FS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's, looked up once
_OPAQUE = 1024  # bytes for posix_spawnattr_t / posix_spawn_file_actions_t (glibc: 336 / 80, musl less)
HAND_OVER = 0.002  # seconds the loop waits at most for its spawns to be picked up (``hand_over``)


@dataclass
class Job:
    """One spawn handed to a thread: what to run and the write end of its output pipe (the caller closes
    it once the spawn landed).  The C arrays are built by ``submit`` in the loop: a thread only makes the
    one call, so it hardly ever needs the interpreter's lock (which the loop would then wait for)."""

    token: int  # the caller's handle for this spawn
    program: str
    argv: list[str]
    env: Mapping[str, str]
    out: int
    pid: int = 0
    error: OSError | None = None
    c_args: tuple[object, ...] = ()
    # where the C call writes the pid: only on success, once the child has called exec (glibc and musl)
    c_pid: ctypes.c_int = field(default_factory=ctypes.c_int)
    # held until its thread makes the call (``hand_over``)
    picked: threading.Lock = field(default_factory=threading.Lock)
    taken: bool = False  # the loop took it by its pid (``spawned``) before its thread reported it


class Launcher:
    def __init__(self, libc: ctypes.CDLL, default_signals: tuple[int, ...]) -> None:
        # the same library twice: calls through ``_libc`` keep the interpreter's lock (cheap calls, no
        # switch of threads), ``_spawn_fn`` lets go of it for the one call that waits for the child
        self._libc = ctypes.PyDLL(None, use_errno=True)
        self._spawn_fn = libc.posix_spawn
        self._attr = ctypes.create_string_buffer(_OPAQUE)  # the same for every run: made once
        self._sigsets = (ctypes.create_string_buffer(_OPAQUE), ctypes.create_string_buffer(_OPAQUE))
        self._set_attr(default_signals)
        # file actions by the pipe's fd: a number is reused (pipe2 takes the lowest free one), and two spawns
        # in flight never share one; made once per number, freed at ``close``
        self._actions: dict[int, ctypes.Array[ctypes.c_char]] = {}
        # every child's stdin: a dup of this one open /dev/null (a dup2 in the child, not an open: no path to
        # look up between the child's start and its exec)
        self._devnull = _above_stdio(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        self._todo: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: deque[Job] = deque()
        self._inflight: dict[int, Job] = {}  # by token: handed over, not yet taken by the loop
        self._handing: list[Job] = []  # submitted since the last ``hand_over``
        self.wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_always = False  # the loop wants to hear of every spawn at once (not only of errors)
        self._wake_once = False  # the loop waits for a landing (``wake_on_landing``)
        self._threads: list[threading.Thread] = []

    @classmethod
    def create(cls, default_signals: tuple[int, ...]) -> Launcher | None:
        """A launcher, or None where the C library's posix_spawn cannot be reached through ctypes."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            for name in ("posix_spawn", "posix_spawnattr_init", "posix_spawnattr_setflags",
                         "posix_spawnattr_setsigmask", "posix_spawnattr_setsigdefault",
                         "posix_spawn_file_actions_init", "posix_spawn_file_actions_adddup2",
                         "posix_spawn_file_actions_destroy",
                         "sigemptyset", "sigaddset"):
                getattr(libc, name)
            return cls(libc, default_signals)
        except (OSError, AttributeError) as exc:
            log.debug("spawning in the loop: %s", exc)
            return None

    def _set_attr(self, default_signals: tuple[int, ...]) -> None:
        libc = self._libc
        mask, defaults = self._sigsets
        _check(libc.sigemptyset(mask), "sigemptyset")
        _check(libc.sigemptyset(defaults), "sigemptyset")
        for sig in default_signals:
            _check(libc.sigaddset(defaults, sig), "sigaddset")
        _check(libc.posix_spawnattr_init(self._attr), "posix_spawnattr_init")
        _check(libc.posix_spawnattr_setsigmask(self._attr, mask), "posix_spawnattr_setsigmask")
        _check(libc.posix_spawnattr_setsigdefault(self._attr, defaults), "posix_spawnattr_setsigdefault")
        flags = ctypes.c_short(_SETSIGDEF | _SETSIGMASK | _SETSID)
        _check(libc.posix_spawnattr_setflags(self._attr, flags), "posix_spawnattr_setflags")

    # -- the loop's side ---------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, name=f"taskserver-spawn-{i}", daemon=True)
                             for i in range(THREADS)]
            for thread in self._threads:
                thread.start()
        job.c_args = self._prepare(job)
        self._inflight[job.token] = job
        job.picked.acquire()
        self._handing.append(job)
        self._todo.put(job)

    def spawn_here(self, job: Job) -> int:
        """Make the spawn in the calling thread (the interpreter's lock let go during the call); the pid, or
        OSError.  For a caller with threads of its own (benchmarks/bare_loop.py's per-slot workers)."""
        program, actions, argv, envp = self._prepare(job)
        err = self._spawn_fn(ctypes.byref(job.c_pid), program, actions, self._attr, argv, envp)
        if err:
            raise OSError(err, os.strerror(err), job.program)
        return job.c_pid.value

    def hand_over(self) -> None:
        """Wait, without the interpreter's lock, until the threads have picked up the spawns submitted
        since the last call and are in the C call: a thread woken for a spawn must first take that lock back,
        and the loop, going on with its own work, held it for a tenth of a millisecond at the median (several
        at worst) before the spawn even began.  Bounded: a machine too busy to run a thread soon does not
        hold the loop."""
        handing, self._handing = self._handing, []
        end = time.monotonic() + HAND_OVER
        for job in handing:
            if not job.picked.acquire(timeout=max(0.0, end - time.monotonic())):
                return

    def exec_done(self, pid: int) -> bool:
        """Whether ``pid`` is the child of a spawn in flight whose C call has written it (``spawned``)."""
        return any(job.c_pid.value == pid for job in self._inflight.values())

    def exec_done_any(self) -> bool:
        """Whether a spawn in flight has its pid written (``spawned`` would take it)."""
        return any(job.c_pid.value for job in self._inflight.values())

    def spawned(self) -> list[Job]:
        """Spawns whose child has exec'd, though their thread has not reported them yet: the C call has
        written the pid (glibc and musl write it only on success, once the child has called exec), but the
        thread is still waiting for the interpreter's lock, which the loop holds, to say so.  A short run
        often ends before that: the loop takes it here, by its pid, instead of waiting for the thread.
        Such a job is the loop's now; ``landed`` does not give it again."""
        taken: list[Job] = []
        for job in self._inflight.values():
            if pid := job.c_pid.value:
                job.pid, job.taken = pid, True
                taken.append(job)
        for job in taken:
            del self._inflight[job.token]
            job.c_args = ()
        return taken

    def wake_on_landing(self) -> None:
        """The loop reaped a child whose spawn has not landed yet (its thread has not got the interpreter
        back since): the next landing wakes the loop, and so does one that landed in the meantime.  (The
        thread appends, then looks at the flag; this sets the flag, then looks at what was appended: one of
        the two sees the other.)"""
        self._wake_once = True
        if self._done or self.exec_done_any():
            self._poke()  # (one whose C call has written its pid is taken by ``spawned`` at once)

    def landed(self) -> list[Job]:
        """Spawns finished since the last call (their pid set, or their error)."""
        done: list[Job] = []  # (the wake-up pipe is drained by the loop, which watches it)
        while self._done:
            job = self._done.popleft()
            if job.taken:  # the loop took it by its pid already (``spawned``)
                continue
            del self._inflight[job.token]
            job.c_args = ()
            done.append(job)
        return done

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        for actions in self._actions.values():
            self._libc.posix_spawn_file_actions_destroy(actions)
        self._actions.clear()
        os.close(self.wake_r)
        os.close(self._wake_w)
        os.close(self._devnull)

    # -- the threads -----------------------------------------------------------------------------------
    def _work(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())  # signals are the main thread's
        while (job := self._todo.get()) is not None:
            program, actions, argv, envp = job.c_args
            job.picked.release()
            err = self._spawn_fn(ctypes.byref(job.c_pid), program, actions, self._attr, argv, envp)
            if err:
                job.error = OSError(err, os.strerror(err), job.program)
            else:
                job.pid = job.c_pid.value
            self._done.append(job)
            if job.error is not None or self.wake_always or self._wake_once:
                self._wake_once = False
                self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the loop
            os.write(self._wake_w, b"\0")

    def _prepare(self, job: Job) -> tuple[object, ...]:
        """The C arguments of posix_spawn as os.posix_spawn makes them (stdin /dev/null, stdout and stderr
        the pipe, a new session, no blocked signals, SIGPIPE and SIGXFSZ at their defaults)."""
        actions = self._actions.get(job.out)
        if actions is None:
            actions = self._actions[job.out] = self._file_actions(job.out)
        envp = _strings([f"{k}={v}" for k, v in job.env.items()])
        return job.program.encode(*_FS), actions, _strings(job.argv), envp

    def _file_actions(self, out: int) -> ctypes.Array[ctypes.c_char]:
        libc = self._libc
        actions = ctypes.create_string_buffer(_OPAQUE)
        _check(libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
        try:
            _check(libc.posix_spawn_file_actions_adddup2(actions, self._devnull, 0),
                   "posix_spawn_file_actions_adddup2")
            for fd in (1, 2):
                _check(libc.posix_spawn_file_actions_adddup2(actions, out, fd),
                       "posix_spawn_file_actions_adddup2")
        except OSError:
            libc.posix_spawn_file_actions_destroy(actions)
            raise
        return actions


def _above_stdio(fd: int) -> int:
    """``fd``, or a copy of it numbered 3 or more (a daemon started with its stdin closed gets 0 from open:
    a dup2 of 0 onto 0 would leave it close-on-exec)."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe.  A read that returns less than asked for took all there was (a
    pipe hands over everything it holds), so no second read is made just to see it fail."""
    with contextlib.suppress(BlockingIOError):
        while len(os.read(fd, 4096)) == 4096:
            pass


def _strings(items: list[str]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated char* array (a NUL inside a string is refused as exec would: ValueError upstream)."""
    encoded = [s.encode(*_FS) for s in items]
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = result if result > 0 else ctypes.get_errno() or errno.EINVAL
        raise OSError(err, f"{what}: {os.strerror(err)}")
