"""Run each job in its own child process: argv (never a shell unless the job says `shell: true`), its own
session so a timeout's TERM reaches the whole process group, stdout+stderr merged into one pipe of which the
last ``output_tail`` bytes are kept.

The executor never blocks: the daemon's selector watches each child's pipe, SIGCHLD wakes it to ``reap``,
and ``enforce`` sends TERM at the deadline and KILL after a grace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .jobenv import SAFE_PATH
from .launcher import Job, Launcher
from .model import JobDef, State
from .privs import Identity
from .store import CRASHED, INTERRUPTED, SPAWN_FAILED, TIMEOUT, cancelled

log = logging.getLogger(__name__)

KILL_GRACE = 5.0  # seconds between TERM and KILL
READ_CHUNKS = 16  # reads of 64 KiB per call of Executor.read: a whole pipe buffer (up to 1 MiB) at most
RUNNER = "taskserver.runtime.runner"
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def job_argv(job: JobDef) -> list[str]:
    if job.call is not None:
        return [sys.executable, "-m", RUNNER, job.call]
    assert job.command is not None, f"job {job.name} has neither command nor call"
    if job.shell:
        return ["/bin/sh", "-c", " ".join(job.command)]
    return list(job.command)


@dataclass
class Child:
    key: object  # the caller's handle for this run
    pid: int
    fd: int | None  # read end of the output pipe; None once closed
    started: float
    deadline: float | None
    tail: bytearray = field(default_factory=bytearray)
    kill_at: float | None = None
    timed_out: bool = False
    interrupted: bool = False
    returncode: int | None = None
    cancelled: str | None = None  # who asked to stop it (`jobs cancel`, the web side)
    proc: subprocess.Popen[bytes] | None = None  # only when started through Popen (a cwd to change to)


@dataclass(frozen=True)
class Outcome:
    state: State
    reason: str | None
    exit_code: int | None
    output: str


class Executor:
    def __init__(self, *, output_tail: int, cwd: Path | None = None, kill_grace: float = KILL_GRACE) -> None:
        self.output_tail = max(0, output_tail)
        self.cwd = cwd
        self.kill_grace = kill_grace
        self.children: dict[int, Child] = {}
        self.stopping = False  # set by the daemon once it is shutting down
        self.on_close: Callable[[int], None] | None = None  # told before a pipe is closed (selector upkeep)
        # with a launcher (runtime/launcher.py) the plain spawns are made by its threads: such a child is in
        # ``launching`` (pid 0) until ``landed`` learns its pid; ``early`` keeps the wait status of a child
        # reaped before that (waitpid(-1) may see it first)
        self.launcher: Launcher | None = None
        self.launching: dict[int, Child] = {}  # by id(child)
        # pid -> (wait status, the spawns pending when it was reaped): only one of those can be that process;
        # a spawn handed over later that gets the same pid (reused) must not take the old status
        self.early: dict[int, tuple[int, frozenset[int]]] = {}
        self.interrupt_at: float | None = None  # interrupt_all was called: a child landing later is, too
        _close_on_exec_all()

    def spawn(self, key: object, argv: list[str], env: Mapping[str, str], timeout: float | None,  # noqa: PLR0917
              now: float | None = None, ident: Identity | None = None) -> Child:
        """Start ``argv`` as ``ident`` (when given) with exactly ``env`` (runtime/jobenv.py builds it for
        the run's user: nothing of the daemon's own environment is added here); a program name without a
        slash is looked up in that env's PATH, not the daemon's. Raises OSError if it cannot be started."""
        now = time.time() if now is None else now
        full_env = dict(env)
        program = _resolve(argv[0], full_env)
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        switch = ident is not None and not ident.is_self
        proc = None
        plain = not switch and (self.cwd is None or os.path.samefile(self.cwd, "."))
        if plain and self.launcher is not None:
            return self._hand_over(key, program, argv, full_env, (rfd, wfd), now, timeout)
        try:
            if plain:
                pid = self._posix_spawn(program, argv, full_env, wfd)
            else:
                proc = self._popen(program, argv, full_env, wfd, ident if switch else None)
                pid = proc.pid
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        os.set_blocking(rfd, False)
        child = Child(key=key, pid=pid, fd=rfd, started=now, proc=proc,
                      deadline=now + timeout if timeout is not None else None)
        self.children[pid] = child
        return child

    def _hand_over(self, key: object, program: str, argv: list[str], env: dict[str, str],  # noqa: PLR0917
                   pipe: tuple[int, int], now: float, timeout: float | None) -> Child:
        """Give a plain spawn to the launcher's threads; the child (pid 0 until it lands) is returned now."""
        rfd, wfd = pipe
        try:
            _exec_strings(argv, env)  # what os.posix_spawn would refuse, refused here, in the loop
        except ValueError:
            os.close(rfd)
            os.close(wfd)
            raise
        os.set_blocking(rfd, False)
        child = Child(key=key, pid=0, fd=rfd, started=now,
                      deadline=now + timeout if timeout is not None else None)
        assert self.launcher is not None
        try:
            self.launcher.submit(Job(id(child), program, argv, env, wfd))
        except BaseException:
            os.close(rfd)
            os.close(wfd)
            raise
        self.launching[id(child)] = child
        return child

    def hand_over(self) -> None:
        """The spawns just handed to the launcher are under way (runtime/launcher.py, ``hand_over``)."""
        if self.launcher is not None:
            self.launcher.hand_over()

    def landed(self) -> list[tuple[Child, OSError | None]]:
        """Children whose spawn the launcher finished: now in ``children`` by pid, or failed (pipe closed)."""
        if self.launcher is None:
            return []
        out: list[tuple[Child, OSError | None]] = []
        for job in [*self.launcher.landed(), *self.launcher.spawned()]:
            os.close(job.out)  # the child has its copy (or never came): ours must not hold the pipe open
            child = self.launching.pop(job.token)
            if job.error is not None:
                self._close(child)
                out.append((child, job.error))
                continue
            child.pid = job.pid
            self.children[job.pid] = child
            if job.pid in self.early and job.token not in self.early[job.pid][1]:
                del self.early[job.pid]  # the status of an earlier process (not a run) that had this pid
            if self.interrupt_at is not None and job.pid not in self.early:  # (an ended one's pid is free)
                self._interrupt(child, self.interrupt_at)
            out.append((child, None))
        if not self.launching:  # what is left belongs to no run (another child of the daemon)
            self.early = {pid: got for pid, got in self.early.items() if pid in self.children}
        return out

    def _popen(self, program: str, argv: list[str], env: dict[str, str], out: int,
               ident: Identity | None) -> subprocess.Popen[bytes]:
        """The slow path: a working directory to change to, or another user to become (the child sets its
        groups, gid and uid before exec; the daemon's kept capabilities end there, as exec of a non-root
        program clears them)."""
        ids: dict[str, object] = {}
        if ident is not None:
            ids = {"user": ident.uid, "group": ident.gid, "extra_groups": list(ident.groups)}
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv, executable=program, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
            start_new_session=True, cwd=self.cwd, env=env, **ids)

    @staticmethod
    def _posix_spawn(program: str, argv: list[str], env: Mapping[str, str], out: int) -> int:
        # posix_spawn (vfork-style in glibc) costs a fraction of Popen's fork + fd-closing walk, which matters
        # at hundreds of runs per second. No fd leaks: every fd this process opens is close-on-exec (PEP 446,
        # SQLite, pipe2). Signals Python ignores (SIGPIPE, SIGXFSZ) go back to their defaults, like Popen.
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
        return os.posix_spawn(program, argv, env, file_actions=actions, setsid=True, setsigmask=(),
                               setsigdef=DEFAULT_SIGNALS)

    def read(self, child: Child) -> None:
        """Take what the child wrote so far, keeping only the tail; closes the pipe at end of file.  At most
        READ_CHUNKS reads per call: a pipe its writers keep full would keep an unbounded loop here reading,
        and hold the daemon for every tenant; what is left is read at the next call (the selector reports
        the pipe again)."""
        for _ in range(READ_CHUNKS):
            if child.fd is None:
                return
            try:
                data = os.read(child.fd, 65536)
            except BlockingIOError:
                return
            if not data:
                self._close(child)
                return
            child.tail += data
            if len(child.tail) > self.output_tail:
                del child.tail[: len(child.tail) - self.output_tail]

    def _close(self, child: Child) -> None:
        if child.fd is not None:
            if self.on_close is not None:
                self.on_close(child.fd)
            os.close(child.fd)
            child.fd = None

    def reap(self, *, any_child: bool = False) -> list[tuple[Child, Outcome]]:
        """Collect every child that has exited (call on SIGCHLD; cheap when none has).

        ``any_child``: one ``waitpid(-1)`` per exit instead of one call per running child, for a process
        (the daemon) whose every child is a run.
        """
        done = []
        for pid, status in self._exited(any_child):
            child = self.children.pop(pid, None)
            if child is None:
                if self.launching:  # maybe a spawn that has not landed yet: kept for when it does
                    self.early[pid] = (status, frozenset(self.launching))
                    assert self.launcher is not None
                    self.launcher.wake_on_landing()  # its end must not wait for another wake-up
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.proc is not None:
                child.proc.returncode = child.returncode  # so Popen never waits for it again
            done.append((child, self._finish(child)))
        return done

    def reapable(self) -> bool:
        """Whether ``reap`` would end a run now: a child of ours has exited (it is left to ``reap``), or one
        reaped before its spawn landed has landed since.  A child whose spawn has not landed yet does not
        count: the launcher is asked to wake the loop when one lands."""
        if self.early and any(pid in self.children for pid in self.early):
            return True
        try:
            got = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        if got is None:
            return False
        if got.si_pid in self.children or not self.launching or self.launcher is None \
                or self.launcher.exec_done(got.si_pid):  # (its C call is done: ``landed`` takes it)
            return True  # (a process that is no run is reaped too, with nothing launching: reap drops it)
        if any(_waiting(pid) for pid in self.children):  # the first one found has not landed; another?
            return True
        self.launcher.wake_on_landing()
        return False

    def _exited(self, any_child: bool) -> list[tuple[int, int]]:
        exited = [(pid, self.early.pop(pid)[0]) for pid in list(self.early) if pid in self.children]
        if any_child:
            while self.children or self.launching:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                exited.append((pid, status))
            return exited
        for pid in list(self.children):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 255 << 8
            if got != 0:
                exited.append((pid, status))
        return exited

    def _finish(self, child: Child) -> Outcome:
        self.read(child)  # what is left in the pipe; a grandchild holding it open must not block us
        self._close(child)
        code = child.returncode
        assert code is not None
        output = child.tail.decode(errors="replace")
        if child.cancelled is not None:
            return Outcome(State.ERR, cancelled(child.cancelled), code, output)
        if child.interrupted or (self.stopping and code < 0):
            # killed while the daemon stops: by us, or by whoever stops the daemon (a supervisor
            # signalling the whole group, Ctrl-C): not a crash of the job itself
            return Outcome(State.ERR, INTERRUPTED, code, output)
        if child.timed_out:
            return Outcome(State.ERR, TIMEOUT, code, output)
        if code == 0:
            return Outcome(State.OK, None, 0, output)
        if code < 0:  # killed by a signal nobody here sent: the process died
            return Outcome(State.ERR, CRASHED, code, output)
        return Outcome(State.ERR, f"exit code {code}", code, output)

    def enforce(self, now: float) -> None:
        """TERM children past their deadline, KILL those past the grace."""
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at:
                self._signal(child, signal.SIGKILL)
                child.kill_at = None
            elif child.deadline is not None and now >= child.deadline:
                child.timed_out = True
                child.deadline = None
                self._signal(child, signal.SIGTERM)
                child.kill_at = now + self.kill_grace

    def interrupt_all(self, now: float) -> None:
        """Shutdown: TERM every child now and KILL after the grace; they end as ERR interrupted."""
        self.interrupt_at = now
        if self.launcher is not None:
            self.launcher.wake_always = True  # a spawn landing from now on is stopped at once
        for child in self.children.values():
            self._interrupt(child, now)

    def _interrupt(self, child: Child, now: float) -> None:
        if not child.interrupted:
            child.interrupted = True
            child.deadline = None
            self._signal(child, signal.SIGTERM)
            child.kill_at = now + self.kill_grace

    def interrupt(self, pid: int, now: float) -> bool:
        """Stop our child ``pid`` as a shutdown would (it ends ERR interrupted); False when it is not ours
        (any more) or is being stopped already."""
        child = self.children.get(pid)
        if child is None or child.interrupted or child.cancelled is not None:
            return False
        self._interrupt(child, now)
        return True

    def cancel(self, pid: int, who: str, now: float) -> bool:
        """Stop our child ``pid`` on request: TERM its process group now, KILL after the grace (the same stop
        policy as a timeout). False when it is not ours (any more) or is being stopped already."""
        child = self.children.get(pid)
        if child is None or child.cancelled is not None or child.interrupted:
            return False
        child.cancelled = who
        child.deadline = None
        self._signal(child, signal.SIGTERM)
        child.kill_at = min(child.kill_at or now + self.kill_grace, now + self.kill_grace)
        return True

    def next_deadline(self) -> float | None:
        times = [t for c in self.children.values() for t in (c.deadline, c.kill_at) if t is not None]
        return min(times, default=None)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        # The child leads its own session, so its pid is its process group: reach its children too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)

    def wait_all(self, limit: float = 3600.0) -> list[tuple[Child, Outcome]]:
        """Block until every child ended (for tools and tests; the daemon uses its own loop)."""
        done: list[tuple[Child, Outcome]] = []
        end = time.monotonic() + limit
        with selectors.DefaultSelector() as sel:
            while (self.children or self.launching) and time.monotonic() < end:
                for child, error in self.landed():
                    if error is not None:
                        done.append((child, Outcome(State.ERR, SPAWN_FAILED, None, str(error))))
                watched = {c.fd: c for c in self.children.values() if c.fd is not None}
                for fd, c in watched.items():
                    sel.register(fd, selectors.EVENT_READ, c)
                for key, _ in sel.select(0.02):
                    self.read(key.data)
                for fd in watched:
                    sel.unregister(fd)
                self.enforce(time.time())
                done += self.reap()
        return done


def _exec_strings(argv: list[str], env: Mapping[str, str]) -> None:
    """Raise ValueError as os.posix_spawn does for what execve cannot take (a C string ends at a NUL)."""
    keys = "".join(env)  # joined: a look per string cost more than the whole spawn's other checks
    bad_env = "\0" in keys or "=" in keys or not all(env) or "\0" in "".join(env.values())
    if bad_env or "\0" in "".join(argv):
        raise ValueError("embedded null byte or bad environment variable name")


def _resolve(name: str, env: Mapping[str, str]) -> str:
    """``name`` as execve needs it: with a slash as given, else found in the run's own PATH."""
    if "/" in name:
        return name
    found = which(name, env.get("PATH", SAFE_PATH))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"not found in PATH={env.get('PATH', SAFE_PATH)}", name)
    return found


def which(name: str, path: str) -> str | None:
    """``shutil.which(name, path=path)`` for a name without a slash, as it is on POSIX: the first entry of
    ``path`` (an empty one is the working directory) holding an executable that is not a directory.  Not
    shutil itself: it loads bz2 and lzma, half a megabyte of the daemon's memory for good."""
    if not path:
        return None
    seen: set[str] = set()
    for folder in path.split(os.pathsep):
        if folder in seen:
            continue
        seen.add(folder)
        candidate = os.path.join(folder, name)
        runnable = os.path.exists(candidate) and os.access(candidate, os.F_OK | os.X_OK)
        if runnable and not os.path.isdir(candidate):
            return candidate
    return None


def _waiting(pid: int) -> bool:
    """The child ``pid`` has exited and waits to be reaped (it is left waiting)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return False


def _close_on_exec_all() -> None:
    """Mark every open fd above 2 close-on-exec, once: posix_spawn closes nothing itself, and fds our own
    parent left open (a shell's, a supervisor's, the pid file's lock) must not reach the jobs."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except FileNotFoundError:  # no /proc: try the low range every shell and supervisor uses
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):  # the fd listdir used is gone already
                os.set_inheritable(fd, False)
