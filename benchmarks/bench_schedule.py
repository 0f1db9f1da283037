"""CPU cost of schedule math for 10,000 jobs: next_fire, and catch_up after a day or a month of downtime.

Prints figures; asserts nothing. Uses process CPU time so other load on the machine matters less.
Run: python benchmarks/bench_schedule.py
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from taskserver.runtime.model import Cron, Every, JobDef
from taskserver.runtime.schedule import catch_up, next_fire
from taskserver.runtime.windows import parse_window

EXPRS = [
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 0 13 * fri",
    "15 9-17 * * mon-fri",
    "0 0 1 * *",
    "@daily",
    "*/7 3-5 * * *",
    "0 12 29 2 *",
    "5 4 * * sun",
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]
START = datetime(2026, 5, 28, 23, 0, tzinfo=UTC)


def make_jobs(n: int) -> list[tuple[JobDef, str]]:
    rnd = random.Random(1)
    jobs: list[tuple[JobDef, str]] = []
    while len(jobs) < n:
        trigger: Cron | Every
        if rnd.random() < 0.7:
            daily = f"{rnd.randrange(60)} {rnd.randrange(24)} * * *"
            trigger = Cron(rnd.choice(EXPRS) if rnd.random() < 0.5 else daily)
        else:
            trigger = Every(rnd.choice([30, 90, 3600, 86400]))
        windows = (parse_window("mon-fri 22:00-06:00"),) if rnd.random() < 0.1 else ()
        job = JobDef(name=f"j{len(jobs)}", tenant="t", trigger=trigger, command=("true",), windows=windows)
        tz = rnd.choice(ZONES)
        if next_fire(job, tz, START) is not None:  # the config rejects crons that never meet their window
            jobs.append((job, tz))
    return jobs


def measure(label: str, jobs: list[tuple[JobDef, str]], fn: object) -> None:
    t0 = time.process_time()
    for job, tz in jobs:
        fn(job, tz)  # type: ignore[operator]
    cpu = time.process_time() - t0
    print(f"{label:<40} {cpu:8.3f} s CPU  {cpu / len(jobs) * 1e6:9.1f} us/job")


def main() -> None:
    jobs = make_jobs(10_000)
    measure("next_fire x10000", jobs, lambda j, tz: next_fire(j, tz, START))
    measure(
        "next_fire across a DST change x10000",
        jobs,
        lambda j, tz: next_fire(j, tz, datetime(2026, 3, 28, 23, 0, tzinfo=UTC)),
    )
    for days in (1, 30):
        measure(
            f"catch_up after {days} day(s) down x10000",
            jobs,
            lambda j, tz, d=days: catch_up(j, tz, START, START + timedelta(days=d)),
        )


if __name__ == "__main__":
    main()
