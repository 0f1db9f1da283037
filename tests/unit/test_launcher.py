"""Spawning from the launcher's threads (runtime/launcher.py) with real child processes: the child gets the
same clean process state as the in-loop posix_spawn, an exec error comes back as the run's error, and the
races of a spawn that lands late (its child already reaped, or the daemon already interrupting) end right."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserver.runtime.executor import DEFAULT_SIGNALS, Child, Executor
from taskserver.runtime.launcher import Job, Launcher
from taskserver.runtime.model import State
from taskserver.runtime.store import INTERRUPTED


def launching_executor() -> Executor:
    executor = Executor(output_tail=4096)
    executor.launcher = Launcher.create(DEFAULT_SIGNALS)
    assert executor.launcher is not None, "libc's posix_spawn must be reachable through ctypes here"
    return executor


@pytest.fixture
def ex() -> Iterator[Executor]:
    executor = launching_executor()
    yield executor
    assert executor.launcher is not None
    executor.launcher.close()


def landed(ex: Executor, child: Child, limit: float = 30) -> OSError | None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        for got, error in ex.landed():
            if got is child:
                return error
        time.sleep(0.005)
    raise AssertionError("the spawn never landed")


def test_a_daemon_started_with_its_stdin_closed_still_gives_each_child_dev_null(tmp_path: Path) -> None:
    """The launcher keeps one /dev/null open for the children's stdin; in a process whose fd 0 was closed,
    that open returns 0, and the launcher moves it above the standard fds (glibc clears close-on-exec on a
    dup2 of 0 onto 0, which POSIX required only lately: another C library may not)."""
    script = (
        "import os, sys\n"
        "from taskserver.runtime.executor import DEFAULT_SIGNALS, Executor\n"
        "from taskserver.runtime.launcher import Launcher\n"
        "os.close(0)\n"
        "ex = Executor(output_tail=4096)\n"
        "ex.launcher = Launcher.create(DEFAULT_SIGNALS)\n"
        "assert ex.launcher is not None\n"
        "ex.spawn('k', ['/bin/readlink', '/proc/self/fd/0'], {}, None)\n"
        "((_, out),) = ex.wait_all(limit=60)\n"
        "ex.launcher.close()\n"
        "print(out.state.value, out.output.strip())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert (done.returncode, done.stdout) == (0, "OK /dev/null\n"), done.stderr


def test_a_launched_child_has_a_clean_process_state(tmp_path: Path) -> None:
    leak = os.open(tmp_path / "inheritable", os.O_CREAT | os.O_WRONLY)  # made inheritable before the
    os.set_inheritable(leak, True)  # executor starts, as a supervisor's fds are: it must not reach a job
    ex = launching_executor()
    code = ("import fcntl, os, sys; print(os.getsid(0) == os.getpid(), os.readlink('/proc/self/fd/0'), "
            "fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY, "
            "sorted(int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2), "
            "os.environ['X'], sys.argv[1])")
    try:
        child = ex.spawn("k", [sys.executable, "-c", code, "an argument"], {"X": "é"}, None)
        assert child.pid == 0 and ex.launching  # handed over: the pid comes later
        ((_, out),) = ex.wait_all(limit=60)
        ex.spawn("k", ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"], {"PATH": "/usr/bin:/bin"}, None)
        ((_, sigs),) = ex.wait_all(limit=60)  # grep, not Python: Python ignores SIGPIPE itself
    finally:
        os.close(leak)
        assert ex.launcher is not None
        ex.launcher.close()
    assert out.output == "True /dev/null True [3] é an argument\n"  # 3: the fd listdir itself opened
    blocked, ignored = (int(line.split()[1], 16) for line in sigs.output.splitlines())
    assert blocked == 0
    assert not ignored & (1 << (signal.SIGPIPE - 1))  # back to its default, as Popen does
    assert (out.state, out.exit_code) == (State.OK, 0)


def test_an_exec_error_comes_back_from_the_thread(ex: Executor, tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    child = ex.spawn("k", [str(script)], {}, None)
    error = landed(ex, child)
    assert isinstance(error, PermissionError) and error.filename == str(script)
    assert child.fd is None and not ex.launching and not ex.children  # nothing left behind


def test_a_nul_byte_is_refused_in_the_loop(ex: Executor) -> None:
    with pytest.raises(ValueError, match="null byte"):
        ex.spawn("k", ["/bin/echo", "a\0b"], {}, None)
    assert not ex.launching


def test_a_child_reaped_before_its_spawn_landed_is_not_lost(ex: Executor, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    child = ex.spawn("k", ["/bin/sh", "-c", f"echo bye; touch {mark}; exit 3"], {}, None)
    end = time.monotonic() + 30
    while not mark.exists():  # (its pipe cannot tell: our write end is closed only when it lands)
        assert time.monotonic() < end
        time.sleep(0.005)
    time.sleep(0.3)  # it exits right after
    assert ex.reap(any_child=True) == []  # waitpid(-1) got it first: kept for the landing
    assert ex.early
    assert _woken(ex)  # its landing (here already there, or still to come) wakes the loop to end it
    assert landed(ex, child) is None
    ((got, out),) = ex.reap(any_child=True)
    assert got is child and (out.state, out.exit_code, out.output) == (State.ERR, 3, "bye\n")
    assert not ex.early


def test_a_spawn_landing_after_interrupt_all_is_interrupted(ex: Executor) -> None:
    ex.stopping = True
    child = ex.spawn("k", ["/bin/sleep", "30"], {}, None)
    ex.interrupt_all(time.time())  # before the loop learnt its pid
    assert landed(ex, child) is None
    end = time.monotonic() + 30
    done = []
    while not done and time.monotonic() < end:
        done = ex.reap(any_child=True)
        time.sleep(0.01)
    ((got, out),) = done
    assert got is child and out.reason == INTERRUPTED and out.exit_code == -signal.SIGTERM


def test_another_childs_status_is_not_kept_for_a_run(ex: Executor) -> None:
    """waitpid(-1) also reaps the daemon's other children (the web side, the notifier): such a status is
    kept only while a spawn is pending, and never handed to a run that was spawned after it (a reused pid)."""
    other = os.posix_spawn("/bin/true", ["/bin/true"], {})
    child = ex.spawn("k", ["/bin/sleep", "2"], {}, None)
    end = time.monotonic() + 30
    while _proc_state(other) != "Z":  # /bin/true has ended (a loaded machine may take a while)
        assert time.monotonic() < end
        time.sleep(0.01)
    assert ex.reap(any_child=True) == []
    assert other in ex.early  # maybe the pending spawn's: kept, with the spawns it could belong to
    assert landed(ex, child) is None
    assert other not in ex.early  # no spawn is pending any more: it was nobody's run
    end = time.monotonic() + 30
    done = []
    while not done and time.monotonic() < end:
        done = ex.reap(any_child=True)
        time.sleep(0.01)
    ((got, out),) = done
    assert got is child and out.state is State.OK


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _woken(ex: Executor) -> bool:
    """Whether the launcher wrote to the loop's wake-up pipe (drained, as the loop drains it)."""
    assert ex.launcher is not None
    try:
        return bool(os.read(ex.launcher.wake_r, 4096))
    except BlockingIOError:
        return False


def test_only_a_failed_spawn_wakes_the_loop_until_it_stops(ex: Executor, tmp_path: Path) -> None:
    """A pid that landed waits for the loop's next wake-up (the daemon bounds that by PID_DELAY): no pass
    of the loop of its own.  An error wakes it at once, and so does every spawn once it is stopping."""
    child = ex.spawn("k", ["/bin/true"], {}, None)
    assert landed(ex, child) is None
    assert not _woken(ex)
    bad = tmp_path / "not-executable"
    bad.write_text("#!/bin/sh\n")
    child = ex.spawn("k", [str(bad)], {}, None)
    assert isinstance(landed(ex, child), PermissionError)
    assert _woken(ex)
    ex.wait_all(limit=60)
    ex.stopping = True
    ex.interrupt_all(time.time())
    child = ex.spawn("k", ["/bin/sleep", "30"], {}, None)
    assert landed(ex, child) is None
    assert _woken(ex)
    ex.wait_all(limit=60)


def test_a_spawn_whose_thread_has_not_reported_is_taken_by_its_pid(ex: Executor) -> None:
    """The C call writes the pid once the child has called exec; its thread then needs the interpreter's
    lock to report it, which the loop holds while it works.  The loop takes such a spawn by its pid at once
    (``landed``), so a short run's end does not wait for the thread, and the thread's late report is not
    taken a second time.  Here the loop keeps the lock (a switch interval far longer than the test, and no
    call that lets go of it) from the hand-over until the pid is there.  The hand-over itself lets go of
    the lock, so on a busy machine the thread may report first: tried until once it did not."""
    assert ex.launcher is not None
    before_report = 0
    for _ in range(50):
        child, first = _spawn_holding_the_lock(ex)
        before_report += first
        assert ex.launcher.landed() == [] or not first  # taken once only: its thread's report is dropped
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # /bin/true ran and exits
        ((done, out),) = ex.reap(any_child=True)
        assert done is child and out.state is State.OK
        end = time.monotonic() + 30
        while ex.launcher._inflight and time.monotonic() < end:
            time.sleep(0.005)  # (nothing is left in flight, taken or reported)
        assert ex.landed() == [] and not ex.launching
        if before_report:
            break
    assert before_report, "in 50 tries the loop never took a spawn before its thread reported it"


def _spawn_holding_the_lock(ex: Executor) -> tuple[Child, bool]:
    """Spawn /bin/true and wait for its pid while holding the interpreter's lock; whether the loop took it
    before its thread had reported it."""
    assert ex.launcher is not None
    before = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        child = ex.spawn("k", ["/bin/true"], {}, None)
        ex.hand_over()  # its thread is in the C call now (or the bound ran out: then it is not yet)
        end = time.monotonic() + 30
        while not ex.launcher.exec_done_any() and not ex.launcher._done and time.monotonic() < end:
            pass  # spins with the interpreter's lock held: a thread in the C call cannot report meanwhile
        reported = bool(ex.launcher._done)
        got = ex.landed()
    finally:
        sys.setswitchinterval(before)
    assert got == [(child, None)] and child.pid > 0 and ex.children == {child.pid: child}
    return child, not reported


def test_spawn_here_spawns_in_the_calling_thread_with_the_same_process_state(tmp_path: Path) -> None:
    """``spawn_here`` (the per-slot benchmark's spawn) makes the same call in the caller's thread: the child
    gets the pipe as stdout and stderr, /dev/null as stdin, a session of its own; an exec error is raised."""
    launcher = Launcher.create(DEFAULT_SIGNALS)
    assert launcher is not None
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        code = "import os; print(os.getsid(0) == os.getpid(), os.readlink('/proc/self/fd/0'))"
        pid = launcher.spawn_here(Job(1, sys.executable, [sys.executable, "-c", code], {}, wfd))
        os.close(wfd)
        with open(rfd, "rb", closefd=False) as pipe:
            out = pipe.read()
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert out == b"True /dev/null\n"
        bad = tmp_path / "not-executable"
        bad.write_text("#!/bin/sh\n")
        with pytest.raises(PermissionError):
            launcher.spawn_here(Job(2, str(bad), [str(bad)], {}, rfd))
    finally:
        os.close(rfd)
        launcher.close()
