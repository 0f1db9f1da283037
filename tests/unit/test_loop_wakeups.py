"""What wakes the daemon's loop for a wake-up's work (a transaction, the timers, dispatch), with real child
processes and the real loop under ``serve``: output of a running child is read without one, and so is a
SIGCHLD whose child an earlier wake-up already reaped; every run still ends, with all of its output. A run
refused at its start (after its transaction committed) frees its slot, and the next wake-up comes at once.

``Executor.reapable`` decides the SIGCHLD case: it must see an exited child without reaping it, see none
while a child runs, and not count a child whose spawn has not landed (the landing wakes the loop instead)."""

from __future__ import annotations

import ctypes
import os
import pwd
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskserver.runtime import daemon as daemon_mod
from taskserver.runtime.config import parse_text
from taskserver.runtime.executor import DEFAULT_SIGNALS, Child, Executor, Outcome
from taskserver.runtime.launcher import Launcher
from taskserver.runtime.model import Config, State
from taskserver.runtime.runs import Runs
from taskserver.runtime.store import open_store

LINES = 40
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


@pytest.fixture(autouse=True)
def _timer_slack() -> Iterator[None]:
    """``serve`` takes this process's timer slack away (caps.precise_timers), as the daemon does: it is
    given back after each test, or the processes later tests start would inherit it."""
    libc = ctypes.CDLL(None)
    slack = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    yield
    if slack > 0:
        libc.prctl(_PR_SET_TIMERSLACK, slack, 0, 0, 0)


def _exited(pid: int) -> None:
    """Wait, without reaping it, until the child ``pid`` has exited."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


@pytest.fixture
def ex() -> Iterator[Executor]:
    executor = Executor(output_tail=4096)
    executor.launcher = Launcher.create(DEFAULT_SIGNALS)
    assert executor.launcher is not None
    yield executor
    executor.launcher.close()


def _landed(ex: Executor, limit: float = 30) -> None:
    end = time.monotonic() + limit
    while ex.launching and time.monotonic() < end:
        ex.landed()
        time.sleep(0.002)
    assert not ex.launching, "the spawn never landed"


def test_reapable_sees_an_exited_child_and_leaves_it_to_reap(ex: Executor) -> None:
    assert not ex.reapable()  # no child at all
    child = ex.spawn("k", ["/bin/sh", "-c", "read x; exit 3"], {}, None)  # waits for its stdin: /dev/null
    _landed(ex)
    _exited(child.pid)
    assert ex.reapable()
    assert ex.reapable()  # asking reaps nothing
    ((got, outcome),) = ex.reap(any_child=True)
    assert got is child and (outcome.state, outcome.exit_code) == (State.ERR, 3)
    assert not ex.reapable()


def test_reapable_sees_no_running_child(ex: Executor) -> None:
    child = ex.spawn("k", ["/bin/sleep", "30"], {}, None)
    _landed(ex)
    try:
        assert not ex.reapable()
    finally:
        os.kill(child.pid, 9)
        _exited(child.pid)
    assert ex.reapable()
    ex.reap(any_child=True)


def test_a_child_whose_spawn_has_not_landed_is_left_to_its_landing(ex: Executor) -> None:
    """A process of ours has exited while a spawn is in flight and is not a known run: it may be that
    spawn's child, so ``reapable`` says no and asks the launcher to wake the loop at the next landing (the
    landing of a spawn sets its pid; then the child is a known run that has exited)."""
    assert ex.launcher is not None
    pending = Child(key="pending", pid=0, fd=None, started=time.time(), deadline=None)
    ex.launching[id(pending)] = pending  # a spawn in flight, as the launcher's threads leave it
    other = subprocess.Popen(["/bin/true"])
    try:
        _exited(other.pid)
        assert not ex.reapable()
        assert ex.launcher._wake_once
        known = ex.spawn("k", ["/bin/true"], {}, None)
        end = time.monotonic() + 30
        while known.pid == 0 and time.monotonic() < end:
            ex.landed()
            time.sleep(0.002)
        _exited(known.pid)
        assert ex.reapable()  # the first exited child found is not a known run; a known one has exited too
    finally:
        del ex.launching[id(pending)]
        other.wait()
    ex.reap(any_child=True)


def _config(tmp_path: Path, *, run_as: bool = True) -> Config:
    """Tenant ``t`` logged in as the current user; ``run_as``: the config names the user the daemon runs
    as (without, a root daemon refuses the tenant's runs)."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n" + (f"  run_as: {me}\n" if run_as else "")
            + f"tenants:\n  t:\n    login: {me}\n    jobs: {{}}\n")
    return parse_text(text, tmp_path / "c.yaml")


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argvs: list[list[str]], *, run_as: bool = True,
           once: bool = True, time_limit: float = 60.0,
           ) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """``taskserver run`` (``--once`` by default) in this process, for at most ``time_limit`` seconds,
    over tasks queued with ``argvs``: the rows' states and outputs (the reason of an ERR), and for each
    wake-up how many runs it ended and how many it started."""
    cfg = _config(tmp_path, run_as=run_as)
    store = open_store(cfg.tenants[0], tmp_path / "state", verify=True)
    try:
        for argv in argvs:
            store.add("", argv=argv, now=time.time())
    finally:
        store.close()
    steps: list[tuple[int, int]] = []
    now: list[int] = [0, 0]
    reap, launch, step = Executor.reap, Runs.launch, daemon_mod.Daemon._step

    def reaped(self: Executor, *, any_child: bool = False) -> list[tuple[Child, Outcome]]:
        got = reap(self, any_child=any_child)
        now[0] += len(got)
        return got

    def launched(self: Runs) -> None:
        now[1] += len(self.claimed)
        launch(self)

    def stepped(self: daemon_mod.Daemon, work: Callable[[float], None], at: float) -> None:
        now[:] = [0, 0]
        step(self, work, at)
        steps.append((now[0], now[1]))

    monkeypatch.setattr(Executor, "reap", reaped)
    monkeypatch.setattr(Runs, "launch", launched)
    monkeypatch.setattr(daemon_mod.Daemon, "_step", stepped)
    assert daemon_mod.serve(cfg, once=once, time_limit=time_limit) == 0
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    try:
        rows = [(str(s), str(o if s != "ERR" else r)) for s, o, r in
            db.execute("SELECT state, output, reason FROM runs ORDER BY id")]
    finally:
        db.close()
    return rows, steps


def test_a_job_that_writes_line_by_line_costs_no_wake_up_per_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A task writes LINES lines, one every 20 ms: each is read as it comes (the pipe never fills), but
    the loop does a wake-up's work only for the run's start and end (and a few timers meanwhile: its
    pid's write), not once per line as before."""
    script = f"for i in $(seq {LINES}); do echo line $i; sleep 0.02; done"
    rows, steps = _serve(tmp_path, monkeypatch, [["/bin/sh", "-c", script]])
    assert rows == [("OK", "".join(f"line {i}\n" for i in range(1, LINES + 1)))]
    assert len(steps) < LINES / 4, steps


def test_a_burst_of_short_runs_loses_no_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 short tasks, four at a time, through the real loop: with the wake-ups that find nothing to
    reap left out (a SIGCHLD whose child was reaped already, an end of file, a landing), every run still
    ends OK and each end is recorded once; a lost wake-up would leave runs waiting past the time limit."""
    count = 1000
    rows, steps = _serve(tmp_path, monkeypatch, [["/bin/true", str(i)] for i in range(count)])
    assert rows == [("OK", "")] * count
    assert sum(ended for ended, _ in steps) == count
    assert sum(started for _, started in steps) == count


def _daemon(tmp_path: Path) -> daemon_mod.Daemon:
    return daemon_mod.Daemon(_config(tmp_path), once=True, time_limit=None, notifier=None, config_loader=None)


def test_a_sigchld_with_nothing_to_reap_is_no_wake_up(tmp_path: Path) -> None:
    """The loop's decision (``Daemon._events``) on the signal pipe's wake-up, with real children: SIGCHLD
    alone and no exited child is nothing to do; an exited run is; any other signal is."""
    d = _daemon(tmp_path)
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        key = d.sel.register(rfd, selectors.EVENT_READ, None)
        d.sig_r = rfd

        def woken(*signals: int) -> bool:
            os.write(wfd, b"x")
            d.signals[:] = list(signals)
            return d._events([(key, selectors.EVENT_READ)])

        assert not woken(signal.SIGCHLD)  # no child at all
        with pytest.raises(BlockingIOError):
            os.read(rfd, 10)  # drained: the next signal wakes the loop again
        child = d.executor.spawn("k", ["/bin/sleep", "30"], {}, None)
        _landed(d.executor)
        assert not woken(signal.SIGCHLD, signal.SIGCHLD)  # running
        assert woken(signal.SIGCHLD, signal.SIGHUP)  # a reload to do
        assert woken(signal.SIGTERM)
        os.kill(child.pid, signal.SIGKILL)
        _exited(child.pid)
        assert woken(signal.SIGCHLD)  # its end to record
        ((got, _),) = d.executor.reap(any_child=True)
        assert got is child
        assert not woken(signal.SIGCHLD)  # reaped by the wake-up before: this one finds nothing
    finally:
        d.close()
        os.close(rfd)
        os.close(wfd)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root rule refuses only a daemon that runs as root")
def test_runs_refused_at_their_start_do_not_hold_up_the_next(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A root daemon with no run_as refuses each task when it starts it, after the transaction that took
    it committed. Its slot is free then, and the next task starts at the next wake-up, which comes at
    once: before, it waited for any other event (up to a minute when none came), so ten refused tasks held
    a `run --once` for minutes and a task queued behind them as long. Here all ten end within the
    daemon's time limit; they were all still waiting when it ran out before."""
    rows, _ = _serve(tmp_path, monkeypatch, [["/bin/true"]] * 10, run_as=False)
    assert rows == [("ERR", "refused")] * 10


FLOOD = """
import os, pwd, sys, time
from pathlib import Path
from taskserver.runtime import daemon
from taskserver.runtime.config import parse_text
from taskserver.runtime.store import open_store
base = Path(sys.argv[1])
me = pwd.getpwuid(os.geteuid()).pw_name
cfg = parse_text(f"task_server:\\n  state_dir: {base / 'state'}\\n  run_as: {me}\\n"
                 f"tenants:\\n  t:\\n    login: {me}\\n    jobs:\\n"
                 "      flood: {every: 1d, command: [/bin/sh, -c, yes & yes & exec yes], timeout: 1s}\\n",
                 base / "c.yaml")
store = open_store(cfg.tenants[0], base / "state", verify=True)
store.add("flood", now=time.time())
store.close()
sys.exit(daemon.serve(cfg, time_limit=3.0))
"""


def test_a_job_that_never_stops_writing_does_not_hold_the_loop_past_what_is_due(tmp_path: Path) -> None:
    """Three `yes` write into one run's pipe without a pause, so the loop is rarely without output to read,
    and output alone is no wake-up's work. What comes due still gets its wake-up (the loop leaves the
    reading once anything is due): the job's 1 s timeout ends it (ERR timeout), and the daemon's time
    limit (3 s) ends the daemon, which exits 0 well within the bound."""
    done = subprocess.run([sys.executable, "-c", FLOOD, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    try:
        assert db.execute("SELECT job, state, reason FROM runs").fetchall() == [("flood", "ERR", "timeout")]
    finally:
        db.close()


ENDLESS = """
import os, sys, time
from taskserver.runtime.executor import Child, Executor
ex = Executor(output_tail=100)
child = Child(key="k", pid=0, fd=os.open("/dev/zero", os.O_RDONLY), started=time.time(), deadline=None)
ex.read(child)
print(len(child.tail), child.fd is not None)
"""


def test_a_read_of_a_pipe_that_never_runs_dry_returns() -> None:
    """``Executor.read`` over an fd that always has more (/dev/zero stands for a pipe its writers keep
    full) returns after a bounded number of reads, with the tail bounded, and leaves the fd open for the
    next call. Unbounded, it read for ever and held the loop for every tenant."""
    done = subprocess.run([sys.executable, "-c", ENDLESS], capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stdout) == (0, "100 True\n"), done.stderr[-2000:]


def test_the_loop_sleeps_while_a_run_outlives_the_time_limit(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's time limit (1 s) is reached while a run (1.5 s) goes on: it takes no new work and
    waits for the run, asleep. Before, the reached limit stayed a deadline in the past, and the loop did
    a wake-up's work thousands of times a second until the run ended."""
    rows, steps = _serve(tmp_path, monkeypatch, [["/bin/sleep", "1.5"]], once=False, time_limit=1.0)
    assert [state for state, _ in rows] == ["OK"]
    assert len(steps) < 50, steps
