"""A host's wall clock stepped back by more than a lease while its daemon runs (libfaketime, its offset
changed while the daemon reads it), on a store shared with a host whose clock stays right: no live lease
is taken for dead, on either host, and no due time runs twice; what the runs' processes wrote is the
judge (tests/system/pghosts.py: each host a namespace of its own)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from clocklab import faketime_env
from daemonlab import wait_for
from pghosts import hosts, rows, trace_lines, traced

from taskserver.runtime.stores import SHARED_BEAT, SHARED_LEASE_TTL, SHARED_SKEW

# more than a lease; the second also more than the skew the hosts' clocks may have
STEPS = [4 * round(SHARED_LEASE_TTL), round(SHARED_SKEW) + 60]


def config(dsn: str, jobs: dict[str, Any], parallel: int) -> dict[str, Any]:
    return {"task_server": {"run_as": "root", "stop_timeout": "3s", "max_parallel": parallel},
            "tenants": {"t": {"login": "app", "store": {"postgresql": dsn}, "jobs": jobs}}}


def both_running(dsn: str) -> dict[str, int] | None:
    """Host -> id of its long run, once each host runs one."""
    got = {r["host"]: r["id"] for r in rows(dsn) if r["state"] == "RUN" and r["pid"]}
    return got if len(got) == 2 else None


def renewed_after(dsn: str, when: float) -> bool:
    """Both leases renewed (on the server's clock, which is this machine's) after ``when``."""
    with psycopg.connect(dsn) as conn:
        beats = [b for (b,) in conn.execute("SELECT heartbeat FROM taskserver_instances").fetchall()]
    return len(beats) == 2 and min(beats) > when


def once_per_due(dsn: str, lab: Path) -> list[tuple[Any, ...]]:
    """(job, due, attempt) executed more than once, by what the runs' processes wrote."""
    by_id = {r["id"]: r for r in rows(dsn)}
    started = [rid for what, _, _, rid in trace_lines(lab / "trace") if what == "start"]
    keys = [(by_id[rid]["job"], by_id[rid]["due"], by_id[rid]["attempt"]) for rid in started]
    return sorted({k for k in keys if keys.count(k) > 1})


@pytest.mark.parametrize("step", STEPS)
def test_a_clock_stepped_back_while_running_takes_no_live_lease(lab: Path, dsn: str, step: int) -> None:
    """Each host runs a long run; beta's clock steps back ``step`` seconds. Two leases and renewals later,
    judged by both hosts, both runs still run under their leases and nothing was settled as lost."""
    rc = lab / "faketime.rc"
    rc.write_text("+0\n")
    long = {"every": "2s", "command": traced(lab / "trace", lab / "locks", 300)}
    with hosts(lab, ["alpha", "beta"], config(dsn, {"long1": long, "long2": long}, 1)) as (alpha, beta):
        alpha.start()
        beta.start(faketime_env(rc))
        first = wait_for(lambda: both_running(dsn), "a long run on each host", 60)
        rc.write_text(f"-{step}\n")
        stepped = time.time()
        wait_for(lambda: "clock was set back" in beta.log.read_text(), "beta to see its clock set back", 60)
        wait_for(lambda: renewed_after(dsn, stepped + SHARED_LEASE_TTL + 2 * SHARED_BEAT),
                 "both hosts' renewals a lease after the step", 120)
        assert both_running(dsn) == first
        assert {r["reason"] for r in rows(dsn) if r["state"] == "ERR"} <= {"missed"}
        with psycopg.connect(dsn) as conn:
            assert {h for (h,) in conn.execute("SELECT host FROM taskserver_instances")} == {"alpha", "beta"}


@pytest.mark.parametrize("step", STEPS)
def test_a_clock_stepped_back_while_running_runs_no_due_time_twice(lab: Path, dsn: str, step: int) -> None:
    """An interval job due every second on both hosts; beta's clock steps back ``step`` seconds: each due
    time runs once, and the job keeps one grid (no two due times less than its interval apart: a second
    grid runs the job twice per interval over the same hours)."""
    rc = lab / "faketime.rc"
    rc.write_text("+0\n")
    tick = {"every": "1s", "command": traced(lab / "trace", lab / "locks", 0)}
    with hosts(lab, ["alpha", "beta"], config(dsn, {"tick": tick}, 4)) as (alpha, beta):
        alpha.start()
        beta.start(faketime_env(rc))
        wait_for(lambda: len(trace_lines(lab / "trace")) >= 10, "the first runs", 60)
        rc.write_text(f"-{step}\n")
        wait_for(lambda: "clock was set back" in beta.log.read_text(), "beta to see its clock set back", 60)
        seen = len(trace_lines(lab / "trace"))
        wait_for(lambda: len(trace_lines(lab / "trace")) >= seen + 2 * 25, "25 runs after the step", 120)
    dues = sorted(r["due"] for r in rows(dsn) if r["job"] == "tick")
    close = [(round(a, 3), round(b, 3)) for a, b in itertools.pairwise(dues) if b - a < 1 - 0.01]
    notes = sorted({r["message"] for r in rows(dsn) if r["reason"] == "missed"})
    print(f"\nbeta's clock set back {step} s: {len(dues)} due times, {len(close)} less than 1 s apart; "
          f"missed notes {notes}")
    assert once_per_due(dsn, lab) == []
    assert close == []
