"""Several daemons (as several hosts would run them: separate configs, state dirs and pid files) share one
tenant through a real PostgreSQL server: every due time runs exactly once, a queued task starts on some
host at once, a daemon killed with -9 has its runs reaped after its lease, and a server restart loses and
doubles nothing. The figures are printed for the closing note."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import TASKSERVER, sandbox_env, wait_for

from taskserver.runtime.stores import SHARED_BEAT

# Each run writes its own start and end (job, host dir, wall time) with O_APPEND: overlaps are counted
# from what the processes did, not from what the store says.
SCRIPT = ('echo "S $TASKSERVER_JOB $(date +%s.%N)" >> "$1"; sleep 0.2; '
          'echo "E $TASKSERVER_JOB $(date +%s.%N)" >> "$1"')


def jobs(log: Path) -> dict[str, Any]:
    """Three jobs that log their own start and end, and 57 more every second: about 60 due times a
    second for the daemons to share without doubling or losing one."""
    argv = ["/bin/sh", "-c", SCRIPT, "sh", str(log)]
    logged = {f"tick{i}": {"every": "1s", "command": argv} for i in range(3)}
    return logged | {f"beat{i}": {"every": "1s", "command": ["/bin/true"]} for i in range(57)}


def host_config(base: Path, name: str, dsn: str) -> Path:
    d = base / name
    d.mkdir()
    cfg = d / "cfg.yaml"
    cfg.write_text(json.dumps({
        "task_server": {"run_as": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                        "state_dir": str(d / "state"), "stop_timeout": "5s", "max_parallel": 16},
        "tenants": {"t": {"login": "app", "store": {"postgresql": dsn}, "jobs": jobs(base / "runs.log")}}}))
    cfg.chmod(0o600)
    return cfg


class Host:
    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.log = cfg.parent / "daemon.log"
        with self.log.open("a") as out:
            argv = [*runns.prefix(), TASKSERVER, "-c", str(cfg), "-v", "run"]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=sandbox_env(cfg))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture
def hosts(tmp_path: Path, dsn: str) -> Iterator[list[Host]]:
    started = [Host(host_config(tmp_path, f"host{i}", dsn)) for i in range(3)]
    try:
        yield started
    finally:
        for h in started:
            h.stop()


def rows(dsn: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM taskserver_runs ORDER BY id").fetchall())


def overlaps(log: Path) -> int:
    """Runs of one job whose processes were alive at the same time, from the runs' own log."""
    alive: Counter[str] = Counter()
    found = 0
    for line in sorted(log.read_text().splitlines(), key=lambda ln: float(ln.split()[2])):
        what, job, _ = line.split()
        if what == "S":
            found += alive[job] > 0
            alive[job] += 1
        else:
            alive[job] -= 1
    return found


SUMMARY = re.compile(r"^(\d+) due times from .* missed \(summarised\)")


def check_history(all_rows: list[dict[str, Any]], log: Path) -> dict[str, int]:
    """Duplicated and lost due times of the scheduled runs (from the store), overlaps (from the runs)."""
    sched = [r for r in all_rows if not r["queued"]]
    dup = sum(n - 1 for n in Counter((r["job"], r["due"], r["attempt"]) for r in sched).values())
    lost = 0
    for job in {r["job"] for r in sched}:
        mine = sorted((r for r in sched if r["job"] == job), key=lambda r: r["due"])
        for a, b in itertools.pairwise(mine):
            gap = round(b["due"] - a["due"]) - 1
            summary = SUMMARY.search(b["message"] or "")  # "N due times from .. to .. missed (summarised)"
            lost += max(0, gap - (int(summary.group(1)) if summary else 0))
    return {"runs": len(sched), "duplicated": dup, "lost": lost, "overlaps": overlaps(log),
            "daemons": len({r["instance"] for r in sched if r["instance"]})}


def test_three_daemons_run_each_due_time_once(hosts: list[Host], dsn: str) -> None:
    time.sleep(20)
    for h in hosts:
        h.stop()
    figures = check_history(rows(dsn), hosts[0].cfg.parent.parent / "runs.log")
    print(f"\n3 daemons, 20 s, 60 jobs every 1 s: {figures}")
    # about 1,200 due times in 20 s; the daemons' start takes part of that on a loaded machine (900 seen
    # with other test runs beside it): the count only shows they worked, the history's truth is below
    assert figures["runs"] >= 600
    assert (figures["duplicated"], figures["lost"], figures["overlaps"]) == (0, 0, 0), figures


def test_status_lists_the_live_daemons_of_the_shared_tenant(hosts: list[Host]) -> None:
    def listed() -> str:
        res = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(hosts[1].cfg), "status"],
                             capture_output=True, text=True, env=sandbox_env(hosts[1].cfg), check=False)
        return res.stdout if "3 live daemon(s)" in res.stdout else ""

    out = wait_for(listed, "status to list the three daemons", 30)
    assert out.count("last heartbeat") == 3, out


def test_a_task_enqueued_on_one_host_starts_at_once(hosts: list[Host], dsn: str) -> None:
    """The enqueue wakes the daemons: without the wake-up a task waits for a daemon's next look at the
    store, up to SHARED_BEAT (5 s) later, so three tasks in a row each starting within 2 s would come by
    chance less than one time in ten; a wake-up makes each start in milliseconds (a loaded machine may
    take a second)."""
    waits = []
    for _ in range(3):
        proc = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(hosts[0].cfg), "jobs", "enqueue", "--",
                               "/bin/true"],
                              capture_output=True, text=True, env=sandbox_env(hosts[0].cfg), check=True)
        run_id = int(proc.stdout)
        run = wait_for(lambda rid=run_id: next(
            (r for r in rows(dsn) if r["id"] == rid and r["state"] == "OK"), None), "the task", 10)
        waits.append((round(run["started"] - run["created"], 3), run["host"]))
    print(f"\nenqueue -> start: {waits}")
    assert SHARED_BEAT == 5.0
    assert all(wait < 2.0 for wait, _ in waits), waits


def test_postgresql_restart_loses_and_doubles_nothing(hosts: list[Host], dsn: str, pg_server: Any) -> None:
    time.sleep(4)
    pg_server.stop()
    time.sleep(10)
    pg_server.start()
    time.sleep(15)
    assert all(h.proc.poll() is None for h in hosts), "a daemon died when the server went away"
    for h in hosts:
        h.stop()
    figures = check_history(rows(dsn), hosts[0].cfg.parent.parent / "runs.log")
    print(f"\nPostgreSQL down 10 s: {figures}")
    notes = {r["message"] for r in rows(dsn) if r["reason"] == "missed"}
    # the outage is named; on a loaded machine, while the daemons catch up after it, a due time may also be
    # missed for another true cause (its predecessor still waiting for a slot or still running, a busy loop);
    # no note may name a false one: the clock was not set and no daemon was stopped
    assert any("run store could not be written" in n for n in notes), sorted(notes)
    false_causes = ("system clock was set", "the daemon was stopped")
    assert not [n for n in notes if any(c in n for c in false_causes)], sorted(notes)
    assert figures["duplicated"] == 0 and figures["overlaps"] == 0


def test_a_killed_daemons_runs_are_reaped_and_its_jobs_go_on_elsewhere(hosts: list[Host], dsn: str) -> None:
    time.sleep(5)
    busy = Counter(r["instance"] for r in rows(dsn) if not r["queued"] and r["instance"])
    victim_instance = busy.most_common(1)[0][0]
    import psycopg

    with psycopg.connect(dsn) as conn:
        sql = "SELECT pid FROM taskserver_instances WHERE id=%s"
        (pid,) = conn.execute(sql, (victim_instance,)).fetchone()
    victim = next(h for h in hosts if h.proc.pid == pid)
    victim.proc.kill()
    victim.proc.wait(10)
    killed_at = time.time()
    def taken_over() -> bool:
        now = rows(dsn)
        reaped = not any(r["state"] == "RUN" and r["instance"] == victim_instance for r in now)
        return reaped and any(r["instance"] not in (None, victim_instance) and (r["started"] or 0) > killed_at
                              for r in now)

    wait_for(taken_over, "the others to reap the dead daemon's runs and go on", 60)
    time.sleep(3)
    for h in hosts:
        h.stop()
    all_rows = rows(dsn)
    figures = check_history(all_rows, hosts[0].cfg.parent.parent / "runs.log")
    after = [r for r in all_rows if r["started"] and r["started"] > killed_at]
    print(f"\nkill -9 of the busiest daemon: {figures}; {len(after)} runs after the kill by "
          f"{len({r['instance'] for r in after})} other daemon(s)")
    assert (figures["duplicated"], figures["lost"], figures["overlaps"]) == (0, 0, 0), figures
    assert not [r for r in all_rows if r["state"] == "RUN"]
