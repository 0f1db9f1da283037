"""The floor of taskserver's design in CPython: a bare loop that runs queued one-off tasks with the same
durable steps as the daemon, and nothing else.

Each task is a row in a SQLite file (WAL, synchronous=NORMAL, as taskserver's store) and a status file.
Per wake-up the loop reaps the children that exited (reading their output to its end), records their ends
and takes the next tasks for the free slots (QUE -> RUN) in one transaction, rewrites the status files of
both in place, then spawns the new tasks, WORKERS at a time, each with stdin /dev/null and its output in a
pipe the loop watches.  It has no config, tenants, privileges, retries, alerts, limits, clock checks or
steering: what it costs per run is what any Python loop with these durable steps costs on this machine.

Two ways to spawn: ``inline`` (os.posix_spawn in the loop, which waits while each child execs) and
``threads`` (taskserver's own launcher: a few threads make the libc call without the interpreter's lock,
runtime/launcher.py).

A third design, ``slots``, has no loop: WORKERS threads, one per slot, each spawns its task (the same libc
call, without the interpreter's lock), waits for its own child (its output to the end, then its exit),
and, under one lock, records its end and takes the next task in one transaction, as APScheduler's
workers each run one job after another.  The same durable steps; no hand-over between threads per run.
It answers whether a durable design with no central loop would be ahead of APScheduler 3 here.

Usage: python benchmarks/bare_loop.py N inline|threads|slots; prints one JSON object: runs/s from the
first start to the last end, and the CPU per run of the loop's process (all its threads) and of its
children.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ONE_OFF_COMMAND, cpu_split, discard

from taskserver.runtime.executor import DEFAULT_SIGNALS
from taskserver.runtime.launcher import Job, Launcher

WORKERS = 4
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/", "LOGNAME": "bench", "USER": "bench", "SHELL": "/bin/sh",
       "TASKSERVER_TENANT": "bench", "TASKSERVER_JOB": "", "TASKSERVER_CONFIG": "/bench.yaml"}
_OPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ACTIONS = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]


class Loop:
    def __init__(self, base: Path, n: int, launcher: Launcher | None) -> None:
        self.status = base / "status"
        self.status.mkdir()
        self.db = sqlite3.connect(base / "bare.sqlite", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, state TEXT NOT NULL, argv TEXT NOT NULL, "
                        "started REAL, finished REAL, exit_code INTEGER, output TEXT)")
        self.db.execute("CREATE INDEX queued ON runs (state, id)")
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO runs (state, argv) VALUES ('QUE', ?)",
                                [(json.dumps(ONE_OFF_COMMAND),)] * n)
        for i in range(1, n + 1):  # the tasks come with their status files, as `jobs enqueue` makes them
            (self.status / str(i)).write_text("QUE\n")
        self.launcher = launcher
        self.sel = selectors.EpollSelector()
        self.active: dict[int, tuple[int, int]] = {}  # pid -> (run id, output pipe)
        self.launching: dict[int, tuple[int, int]] = {}  # run id -> (run id, output pipe), pid not known yet
        self.early: dict[int, int] = {}  # pid -> wait status of a child reaped before its pid landed
        self.started = self.finished = 0.0

    def run(self, n: int) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        self.sel.register(wake_r, selectors.EVENT_READ, None)
        if self.launcher is not None:
            self.sel.register(self.launcher.wake_r, selectors.EVENT_READ, None)
        done = 0
        while done < n:
            now = time.time()
            ends = self._reap()
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                for run_id, code, out in ends:
                    self.db.execute("UPDATE runs SET state=?, finished=?, exit_code=?, output=? WHERE id=? "
                                    "RETURNING id", ("OK" if code == 0 else "ERR", now, code, out, run_id))
                free = WORKERS - len(self.active) - len(self.launching)
                taken = self.db.execute(
                    "UPDATE runs SET state='RUN', started=? WHERE id IN "
                    "(SELECT id FROM runs WHERE state='QUE' ORDER BY id LIMIT ?) RETURNING id, argv",
                    (now, free)).fetchall() if free else []
            for run_id, code, _ in ends:
                self._status(run_id, f"{'OK' if code == 0 else 'ERR'}\nexit code {code}\nfinished {now}\n")
            done += len(ends)
            for run_id, argv in taken:
                self._status(run_id, f"RUN\nstarted {now}\n")
                self._spawn(run_id, json.loads(argv))
                self.started = self.started or now
            if self.launcher is not None:
                self.launcher.hand_over()  # as the daemon: on once its spawns are in the C call
            self.finished = now
            for key, _ in self.sel.select(1.0 if done < n else 0):
                if key.data is None:  # a signal's or a landed spawn's wake-up; an output pipe is read at reap
                    with contextlib.suppress(BlockingIOError):
                        os.read(key.fd, 4096)
        self.sel.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        if self.launcher is not None:
            self.launcher.close()
        self.db.close()

    def _status(self, run_id: int, text: str) -> None:
        fd = os.open(self.status / str(run_id), _OPEN)
        try:
            os.pwrite(fd, text.encode(), 0)
        finally:
            os.close(fd)

    def _spawn(self, run_id: int, argv: list[str]) -> None:
        env = {**ENV, "TASKSERVER_RUN_ID": str(run_id), "TASKSERVER_STATUS_FILE": f"{self.status}/{run_id}"}
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(rfd, False)
        self.sel.register(rfd, selectors.EVENT_READ, run_id)
        if self.launcher is not None:
            self.launcher.submit(Job(run_id, argv[0], argv, env, wfd))
            self.launching[run_id] = (run_id, rfd)
            return
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=[*_ACTIONS, (os.POSIX_SPAWN_DUP2, wfd, 1),
                                                                  (os.POSIX_SPAWN_DUP2, wfd, 2)],
                                 setsid=True, setsigmask=(), setsigdef=DEFAULT_SIGNALS)
        finally:
            os.close(wfd)
        self.active[pid] = (run_id, rfd)

    def _reap(self) -> list[tuple[int, int, str]]:
        statuses: list[tuple[int, int]] = []
        if self.launcher is not None:
            for job in self.launcher.landed():
                os.close(job.out)
                if job.error is not None:
                    raise job.error
                self.active[job.pid] = self.launching.pop(job.token)
                if job.pid in self.early:
                    statuses.append((job.pid, self.early.pop(job.pid)))
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            statuses.append((pid, status))
        ends = []
        for pid, status in statuses:
            if pid not in self.active:  # its spawn has not landed yet
                self.early[pid] = status
                continue
            run_id, rfd = self.active.pop(pid)
            ends.append((run_id, os.waitstatus_to_exitcode(status), self._read(rfd)))
        if self.early and self.launcher is not None:
            self.launcher.wake_on_landing()  # (a landing wakes no one otherwise)
        return ends

    def _read(self, rfd: int) -> str:
        out = b""
        try:
            while chunk := os.read(rfd, 65536):
                out += chunk
        except BlockingIOError:
            pass  # a child of the task holds the pipe: what came so far
        self.sel.unregister(rfd)
        os.close(rfd)
        return out.decode(errors="replace")


class Slots(Loop):
    """``slots``: one thread per slot, each running its tasks one after another (see the module's text)."""

    def run(self, n: int) -> None:
        assert self.launcher is not None
        self.lock = threading.Lock()
        workers = [threading.Thread(target=self._work) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.launcher.close()
        self.db.close()

    def _work(self) -> None:
        end: tuple[int, int, str] | None = None
        while True:
            with self.lock:
                now = time.time()
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    if end is not None:
                        self.db.execute(
                            "UPDATE runs SET state=?, finished=?, exit_code=?, output=? WHERE id=?",
                            ("OK" if end[1] == 0 else "ERR", now, end[1], end[2], end[0]))
                    row = self.db.execute(
                        "UPDATE runs SET state='RUN', started=? WHERE id IN "
                        "(SELECT id FROM runs WHERE state='QUE' ORDER BY id LIMIT 1) RETURNING id, argv",
                        (now,)).fetchone()
                self.started = self.started or now
                self.finished = now
            if end is not None:
                state = "OK" if end[1] == 0 else "ERR"
                self._status(end[0], f"{state}\nexit code {end[1]}\nfinished {now}\n")
            if row is None:
                return
            run_id, argv = row[0], json.loads(row[1])
            self._status(run_id, f"RUN\nstarted {now}\n")
            end = (run_id, *self._run(run_id, argv))

    def _run(self, run_id: int, argv: list[str]) -> tuple[int, str]:
        assert self.launcher is not None
        env = {**ENV, "TASKSERVER_RUN_ID": str(run_id), "TASKSERVER_STATUS_FILE": f"{self.status}/{run_id}"}
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            pid = self.launcher.spawn_here(Job(run_id, argv[0], argv, env, wfd))
        finally:
            os.close(wfd)
        out = b""
        with open(rfd, "rb", buffering=0, closefd=True) as pipe:
            while chunk := pipe.read(65536):
                out += chunk
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def main(argv: list[str]) -> int:
    n, how = int(argv[0]), argv[1]
    if how not in ("inline", "threads", "slots"):
        raise SystemExit(f"unknown way to spawn {how!r}: inline, threads or slots")
    base = Path(tempfile.mkdtemp(prefix="bare-loop-"))
    try:
        launcher = Launcher.create(DEFAULT_SIGNALS) if how != "inline" else None
        if how != "inline" and launcher is None:
            raise SystemExit("libc's posix_spawn is not reachable through ctypes here")
        loop = (Slots if how == "slots" else Loop)(base, n, launcher)
        own, kids = cpu_split()
        loop.run(n)
        own2, kids2 = cpu_split()
        spent = loop.finished - loop.started
    finally:
        discard(base)
    print(json.dumps({"n": n, "how": how, "per_s": n / spent if spent else None,
                      "own_cpu_per_run_ms": (own2 - own) * 1000 / n,
                      "child_cpu_per_run_ms": (kids2 - kids) * 1000 / n}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
