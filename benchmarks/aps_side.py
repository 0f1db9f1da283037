"""The APScheduler 3 side of each benchmark, one workload per process so figures do not mix.

Usage: python benchmarks/aps_side.py memory|sqlite WORKLOAD [ARGS...]; prints one JSON object on stdout.
Each workload mirrors the taskserver one in run_all.py: the same job counts, due times, 4 parallel workers
(taskserver's default max_parallel) and the same commands, their output read as taskserver reads it
(common.py).  ``memory`` is APScheduler's default
job store (it persists nothing); ``sqlite`` its SQLAlchemy job store on a SQLite file (what a user who wants
the schedule to survive a restart picks).  Job functions live at module level so that store can pickle them.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from common import (
    IDLE_HOUR,
    LATE_COMMAND,
    ONE_OFF_COMMAND,
    cpu_ns_precise,
    cpu_per_run,
    cpu_split,
    discard,
    percentile,
    rss_bytes,
    run_like_taskserver,
)

WORKERS = 4
STORE = "memory"
TMP = Path(tempfile.mkdtemp(prefix="aps-bench-"))
LATE: dict[int, float] = {}
SPANS: list[tuple[float, float]] = []
LOCK = threading.Lock()


def _scheduler() -> BackgroundScheduler:
    stores = {}
    if STORE == "sqlite":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        stores["default"] = SQLAlchemyJobStore(url=f"sqlite:///{TMP / 'jobs.sqlite'}")
    return BackgroundScheduler(
        jobstores=stores,
        executors={"default": ThreadPoolExecutor(WORKERS)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1000},
        timezone="UTC",
    )


def late_job(i: int, due: float) -> None:
    started = time.time()
    with LOCK:
        LATE.setdefault(i, started - due)
    run_like_taskserver(LATE_COMMAND)
    with LOCK:
        SPANS.append((started, time.time()))


def lateness(intervals: list[float]) -> dict[str, Any]:
    """Job i first due at t0 + intervals[i] (then every intervals[i]); lateness of each first run.

    The jobs are added while the scheduler is paused and t0 is taken after: adding 10,000 jobs to the SQLite
    store takes seconds, which must not count as lateness."""
    sched = _scheduler()
    sched.start(paused=True)
    t0 = time.time() + 2 + len(intervals) * (0.015 if STORE == "sqlite" else 0.0005)
    for i, iv in enumerate(intervals):
        first = t0 + iv
        trig = IntervalTrigger(seconds=iv, start_date=datetime.fromtimestamp(first, UTC))
        sched.add_job(late_job, trig, args=(i, first), id=str(i))
    added = time.time()
    sched.resume()
    deadline = t0 + max(intervals) + 60 + len(intervals) / 100
    while len(LATE) < len(intervals) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the last runs' threads finish
    rss_ran = rss_bytes()  # every job ran once (taskserver's is read at the same point)
    sched.shutdown(wait=True)
    values = sorted(LATE.values())
    firsts = sorted(SPANS)[: len(values)]
    span = max(e for _, e in firsts) - min(s for s, _ in firsts) if firsts else 0
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": values[-1], "per_s": len(firsts) / span if span else None,
            "add_overran_s": max(0.0, added - t0), "rss_ran": rss_ran, "values": values}


def idle(n: int, window: float) -> dict[str, Any]:
    """n jobs scheduled far ahead (daily cron); CPU used over ``window`` seconds of idling, and RSS."""
    sched = _scheduler()
    sched.start()
    for i in range(n):
        sched.add_job(_noop, CronTrigger(hour=IDLE_HOUR, minute=i % 60, timezone="UTC"), id=str(i))
    time.sleep(1.0)  # settle: the scheduler thread has computed its next wake-up
    before = cpu_ns_precise()
    time.sleep(window)
    used = cpu_ns_precise() - before
    rss = rss_bytes()
    sched.shutdown(wait=False)
    return {"cpu_per_min": used * 60 / window, "rss": rss, "maxrss": resource.getrusage(0).ru_maxrss * 1024}


def _noop() -> None:
    return None


def one_off() -> None:
    started = time.time()
    run_like_taskserver(ONE_OFF_COMMAND)
    with LOCK:
        SPANS.append((started, time.time()))


def throughput(n: int) -> dict[str, Any]:
    """n one-off /bin/true runs due now; completed per second from the first start to the last end."""
    sched = _scheduler()
    sched.start(paused=True)
    when = datetime.now(UTC) + timedelta(seconds=0.5)
    for i in range(n):
        sched.add_job(one_off, DateTrigger(when), id=str(i))
    before = cpu_split()
    sched.resume()
    deadline = time.time() + 300
    while len(SPANS) < n and time.time() < deadline:
        time.sleep(0.05)
    sched.shutdown(wait=True)
    return {"n": len(SPANS), "per_s": len(SPANS) / (max(e for _, e in SPANS) - min(s for s, _ in SPANS)),
            **cpu_per_run(before, n)}


def startup(n: int) -> dict[str, Any]:
    """n daily jobs already in the store (added by an earlier scheduler); time until a new one started."""
    sched = _scheduler()
    sched.start(paused=True)
    for i in range(n):
        sched.add_job(_noop, CronTrigger(hour=IDLE_HOUR, minute=i % 60, timezone="UTC"), id=str(i))
    sched.shutdown(wait=False)
    t = time.perf_counter()
    again = _scheduler()
    again.start()
    took = time.perf_counter() - t
    again.shutdown(wait=False)
    return {"startup_s": took}


def main(argv: list[str]) -> int:
    global STORE
    STORE, work = argv[0], argv[1]
    argv = argv[1:]
    try:
        return _main(work, argv)
    finally:
        discard(TMP)


def _main(work: str, argv: list[str]) -> int:
    if work == "lateness":
        n, base, step = int(argv[1]), float(argv[2]), float(argv[3])
        result = lateness([base + i * step for i in range(n)])
    elif work == "idle":
        result = idle(int(argv[1]), float(argv[2]))
    elif work == "throughput":
        result = throughput(int(argv[1]))
    elif work == "startup":
        result = startup(int(argv[1]))
    else:
        raise SystemExit(f"unknown workload {work}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
