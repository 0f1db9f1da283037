"""The APScheduler 3 side of each benchmark, one workload per process so figures do not mix.

Usage: python benchmarks/aps_side.py WORKLOAD [ARGS...]; prints one JSON object on stdout.
Each workload mirrors the taskserver one in run_all.py: the same job counts, due times, 4 parallel workers
(taskserver's default max_parallel) and /bin/true as the job's command.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from common import cpu_ns_precise, percentile, rss_bytes

WORKERS = 4


def _scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(WORKERS)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1000},
        timezone="UTC",
    )


def lateness(intervals: list[float]) -> dict[str, Any]:
    """Job i first due at start + intervals[i] (then every intervals[i]); lateness of each first run."""
    late: dict[int, float] = {}
    lock = threading.Lock()

    def job(i: int, due: float) -> None:
        started = time.time()
        with lock:
            late.setdefault(i, started - due)
        subprocess.run(["/bin/true"], check=False)

    sched = _scheduler()
    sched.start()
    t0 = time.time()
    for i, iv in enumerate(intervals):
        first = t0 + iv
        trig = IntervalTrigger(seconds=iv, start_date=datetime.fromtimestamp(first, UTC))
        sched.add_job(job, trig, args=(i, first), id=str(i))
    deadline = t0 + max(intervals) + 30
    while len(late) < len(intervals) and time.time() < deadline:
        time.sleep(0.05)
    sched.shutdown(wait=True)
    values = sorted(late.values())
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": values[-1]}


def idle(n: int, window: float) -> dict[str, Any]:
    """n jobs scheduled far ahead (daily cron); CPU used over ``window`` seconds of idling, and RSS."""
    sched = _scheduler()
    sched.start()
    for i in range(n):
        sched.add_job(_noop, CronTrigger(hour=3, minute=i % 60, timezone="UTC"), id=str(i))
    time.sleep(1.0)  # settle: the scheduler thread has computed its next wake-up
    before = cpu_ns_precise()
    time.sleep(window)
    used = cpu_ns_precise() - before
    rss = rss_bytes()
    sched.shutdown(wait=False)
    return {"cpu_per_min": used * 60 / window, "rss": rss, "maxrss": resource.getrusage(0).ru_maxrss * 1024}


def _noop() -> None:
    return None


def throughput(n: int) -> dict[str, Any]:
    """n one-off /bin/true runs due now; completed per second from the first start to the last end."""
    done = threading.Event()
    starts: list[float] = []
    ends: list[float] = []
    lock = threading.Lock()

    def job() -> None:
        started = time.time()
        subprocess.run(["/bin/true"], check=False)
        with lock:
            starts.append(started)
            ends.append(time.time())
            if len(ends) == n:
                done.set()

    sched = _scheduler()
    sched.start(paused=True)
    when = datetime.now(UTC) + timedelta(seconds=0.5)
    for i in range(n):
        sched.add_job(job, DateTrigger(when), id=str(i))
    sched.resume()
    done.wait(300)
    sched.shutdown(wait=True)
    return {"n": len(ends), "per_s": len(ends) / (max(ends) - min(starts))}


def main(argv: list[str]) -> int:
    work = argv[0]
    if work == "lateness":
        n, base, step = int(argv[1]), float(argv[2]), float(argv[3])
        result = lateness([base + i * step for i in range(n)])
    elif work == "idle":
        result = idle(int(argv[1]), float(argv[2]))
    elif work == "throughput":
        result = throughput(int(argv[1]))
    else:
        raise SystemExit(f"unknown workload {work}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
