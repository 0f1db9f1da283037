"""The fault-injection lab: jobs that log their own start and end, and an audit that compares what the
processes did with what the store recorded.

Each job is ``sh -c`` that first takes a non-blocking ``flock`` on a per-job lock file (held by the job and
every process it starts, released only when they are all gone) and writes ``overlap`` to the trace if
another copy of the same job still holds it; then ``start``, the work, ``end``.  The trace is the processes'
own account; the store is the daemon's.  The audit counts:

- contradictions: a recorded state the process contradicts (OK without an end; an execution whose run id
  was recorded for another job or as missed; a run left RUN once the daemon stopped, or QUE although it
  ran).  A QUE row nothing ran is a due time still waiting (stored; the next start runs it).
- overlaps: a copy of a job started while another copy of it was still alive (the lock says so)
- lost: executions without any record, and due times without a record (a gap of more than two intervals
  between consecutive recorded due times of an interval job: after a restart the grid starts anew from
  the restart, so one gap of up to two intervals is the schedule, not a loss)
- duplicated: one (job, due time, attempt) executed more than once
- unknown: runs recorded ``ERR crashed`` whose process had ended (its daemon died before seeing how)
- stopped: live orphans a restarted daemon stopped and recorded ``ERR interrupted``
- leftover: processes of the test's jobs still alive after the daemon stopped
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runns
from daemonlab import TASKSERVER, sandbox_env, write_config

if TYPE_CHECKING:
    from secusers import Lab, User


def job(lab: Path, seconds: float, every: float | None = None, ignore_term: bool = False) -> dict[str, Any]:
    trace, locks = shlex.quote(str(lab / "trace")), shlex.quote(str(lab / "locks"))
    trap = "trap '' TERM; " if ignore_term else ""
    # a task queued with this command has no job name: it logs as "-" (read back as "" by ``trace``)
    script = (f"{trap}j=\"${{TASKSERVER_JOB:--}}\"; exec 9>>{locks}/\"$j\"; "
              f"flock -n 9 || echo \"overlap $j $TASKSERVER_RUN_ID $$\" >> {trace}; "
              f"echo \"start $j $TASKSERVER_RUN_ID $$\" >> {trace}; sleep {seconds}; "
              f"echo \"end $j $TASKSERVER_RUN_ID $$\" >> {trace}")
    spec: dict[str, Any] = {"command": ["sh", "-c", script]}
    if every is not None:
        spec["every"] = every
    return spec


def lab_config(lab: Path, jobs: dict[str, Any], name: str = "cfg.yaml", **server: Any) -> Path:
    (lab / "locks").mkdir(parents=True, exist_ok=True)
    return write_config(lab / name, jobs, server=server)


def popen(cfg: Path, *args: str) -> subprocess.Popen[bytes]:
    """`taskserver -c CFG -v ARGS` in the tests' mount namespace (tests/system/runns.py); its pid is the
    daemon's (nsenter execs it)."""
    log = (cfg.parent / "daemon.log").open("ab")
    return subprocess.Popen([*runns.prefix(), TASKSERVER, "-c", str(cfg), "-v", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=sandbox_env(cfg))


def seen(path: Path) -> Path:
    """``path`` as the daemons see it: through their mount namespace, where a test may mount a tmpfs."""
    if os.geteuid() != 0:
        return path
    return runns.run_dir().parent.parent / path.relative_to("/")


def in_namespace(*argv: str) -> None:
    """Run a command (mount, umount) in the daemons' mount namespace."""
    subprocess.run([*runns.prefix(), *argv], check=True)


_READ = """
import json, sqlite3, sys
try:
    db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    print(json.dumps([dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]))
except sqlite3.OperationalError:
    print("[]")
"""


def rows(cfg: Path, tenant: str = "t") -> list[dict[str, Any]]:
    """Every run in the store, oldest first; none while it does not exist (opened read-only: a look must
    never create the file the daemon is about to write back).  A store on a file system mounted only in
    the daemons' namespace is read from inside it (SQLite resolves /proc/PID/root to the host's /)."""
    path = cfg.parent / "state" / f"{tenant}.sqlite"
    try:
        private = os.stat(seen(path.parent)).st_dev != os.stat(path.parent).st_dev
    except OSError:  # a directory only the namespace has (made inside a tmpfs mounted there) is private too
        private = seen(path.parent).is_dir()
    if private:
        out = subprocess.run([*runns.prefix(), sys.executable, "-c", _READ, str(path)], capture_output=True,
                             text=True, check=True).stdout
        return list(json.loads(out))
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.OperationalError:
        return []
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return []
        raise
    finally:
        db.close()


def trace(lab: Path) -> list[tuple[str, str, int, int]]:
    """(what, job, run id, pid) lines the jobs wrote."""
    path = lab / "trace"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, job_name, run_id, pid = line.split()
        out.append((what, "" if job_name == "-" else job_name, int(run_id), int(pid)))
    return out


def job_processes(cfg: Path) -> list[int]:
    """Live processes started for this config (their environment names it)."""
    want = f"TASKSERVER_CONFIG={cfg.absolute()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if want in env and state not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


@dataclass
class Figures:
    scenario: str
    iterations: int = 0
    runs: int = 0
    executions: int = 0
    contradictions: list[str] = field(default_factory=list)
    overlaps: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: int = 0
    unknown: int = 0
    stopped: int = 0  # live orphans a restarted daemon stopped (ERR interrupted)
    leftover: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.scenario}: iterations {self.iterations}, runs {self.runs}, executions "
                f"{self.executions}, contradictions {len(self.contradictions)}, overlaps {self.overlaps}, "
                f"lost {len(self.lost)}, duplicated {self.duplicated}, orphans stopped at restart "
                f"{self.stopped}, outcome unknown (crashed) {self.unknown}, processes left "
                f"{len(self.leftover)}")

    def assert_clean(self) -> None:
        assert not self.contradictions, self.contradictions[:10]
        assert self.overlaps == 0, self.line()
        assert not self.lost, self.lost[:10]
        assert self.duplicated == 0, self.line()
        assert not self.leftover, self.leftover


def audit(cfg: Path, scenario: str, iterations: int, intervals: dict[str, float],
          store: str = "t") -> Figures:
    """``store``: the store's path in the state dir, without `.sqlite` (the tenant's name by default)."""
    fig = judge(rows(cfg, store), trace(cfg.parent), scenario, iterations, intervals)
    fig.leftover = job_processes(cfg)
    return fig


def judge(got: list[dict[str, Any]], lines: list[tuple[str, str, int, int]], scenario: str, iterations: int,
          intervals: dict[str, float]) -> Figures:
    """``audit`` of one store's rows against the trace lines of its jobs (``trace``; of this store's jobs
    only: run ids are per store)."""
    by_id = {r["id"]: r for r in got}
    fig = Figures(scenario, iterations=iterations, runs=len(got))
    starts = [(j, rid, pid) for what, j, rid, pid in lines if what == "start"]
    ends = {(j, rid) for what, j, rid, _ in lines if what == "end"}
    fig.executions = len(starts)
    fig.overlaps = sum(1 for what, *_ in lines if what == "overlap")
    for j, rid, pid in starts:
        row = by_id.get(rid)
        if row is None:
            fig.lost.append(f"execution of {j} (run id {rid}, pid {pid}) has no record")
        elif row["job"] != j or row["reason"] == "missed" or row["pid"] not in (None, pid):
            fig.contradictions.append(f"execution of {j} as run {rid} (pid {pid}) is recorded as {dict(row)}")
    keys = Counter((by_id[rid]["job"], by_id[rid]["due"], by_id[rid]["attempt"]) for _, rid, _ in starts
                   if rid in by_id and by_id[rid]["due"] is not None)  # a run by hand has no due time
    fig.duplicated = sum(n - 1 for n in keys.values() if n > 1)
    for r in got:
        fig.contradictions += _judge(r, ends, {rid for _, rid, _ in starts})
        fig.unknown += (r["state"], r["reason"]) == ("ERR", "crashed") and (r["job"], r["id"]) in ends
        fig.stopped += r["reason"] == "interrupted" and "died while it ran" in (r["message"] or "")
    for name, every in intervals.items():
        mine = [r for r in got if r["job"] == name and r["due"] is not None]
        covered = {r["due"] for r in mine if "(summarised)" in (r["message"] or "")}
        fig.lost += _gaps(name, [r["due"] for r in mine], every, covered)
    return fig


def _judge(r: dict[str, Any], ends: set[tuple[str, int]], started: set[int]) -> list[str]:
    if r["state"] == "RUN" or (r["state"] == "QUE" and r["id"] in started):
        return [f"run {r['id']} ({r['job']}) left {r['state']} after the daemon stopped"]
    if r["state"] == "OK" and (r["job"], r["id"]) not in ends:
        return [f"run {r['id']} ({r['job']}) recorded OK, but its process never logged its end"]
    return []


def _gaps(name: str, dues: list[float], every: float, covered: set[float]) -> list[str]:
    """Gaps between recorded due times; a summarised missed row (a long outage, counted in one row)
    accounts for every due time up to its own."""
    dues = sorted(set(dues))
    return [f"{name}: no record for the due times between {a:.3f} and {b:.3f}"
            for a, b in itertools.pairwise(dues) if b - a > 2 * every + 0.25 and b not in covered]


def stop_foreground(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.terminate()
    return proc.wait(timeout)


def kill_everything(cfg: Path) -> None:
    """Last resort after a failed test: no process of this test survives it."""
    for pid in job_processes(cfg):
        with contextlib.suppress(OSError):
            os.kill(pid, 9)


def fill(path: Path) -> None:
    """Write until the file system is full. (The close fails too when a write was cut short: what it left
    in the buffer has no room either.)"""
    with contextlib.suppress(OSError), path.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def taskserver_as(user: User | None, world: Lab, cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`taskserver -c CFG ARGV...` in the tests' namespace, as root (``user`` None) or as a throwaway user
    (tests/security/secusers.py), with the environment that user's own shell would give it."""
    from secusers import USER_ENV, USER_TASKSERVER, as_user

    cmd, env = [TASKSERVER, "-c", str(cfg), *argv], sandbox_env(cfg)
    if user is not None:
        cmd = as_user(user, [*USER_TASKSERVER, *cmd[1:]])
        env = world.env({"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name, **USER_ENV})
    return subprocess.run([*runns.prefix(), *cmd], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
