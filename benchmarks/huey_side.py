"""The Huey side: its SQLite storage, a consumer with 4 worker threads (taskserver's max_parallel), the task
``/bin/true`` in a child process, its output read as taskserver reads it (common.py).

Usage: python benchmarks/huey_side.py WORKLOAD [ARGS...]; prints one JSON object on stdout.
- ``enqueue N``: N tasks put into the SQLite storage one call each (Huey has no batch form); tasks/s.
- ``throughput N``: N tasks queued first, then the consumer started; completed per second from the first
  start to the last end.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import ONE_OFF_COMMAND, cpu_per_run, cpu_split, discard, run_like_taskserver
from huey import SqliteHuey

WORKERS = 4
TMP = Path(tempfile.mkdtemp(prefix="huey-bench-"))
HUEY = SqliteHuey(filename=str(TMP / "huey.sqlite"), results=False)
SPANS: list[tuple[float, float]] = []
LOCK = threading.Lock()


@HUEY.task()
def true_task() -> None:
    started = time.time()
    run_like_taskserver(ONE_OFF_COMMAND)
    with LOCK:
        SPANS.append((started, time.time()))


def enqueue(n: int) -> dict[str, Any]:
    t = time.perf_counter()
    for _ in range(n):
        true_task()
    took = time.perf_counter() - t
    return {"n": n, "per_s": n / took}


def throughput(n: int) -> dict[str, Any]:
    for _ in range(n):
        true_task()
    consumer = HUEY.create_consumer(workers=WORKERS, worker_type="thread", periodic=False, initial_delay=0.01,
                                    max_delay=0.1)
    before = cpu_split()
    consumer.start()
    deadline = time.time() + 300
    while len(SPANS) < n and time.time() < deadline:
        time.sleep(0.05)
    consumer.stop(graceful=True)
    return {"n": len(SPANS), "per_s": len(SPANS) / (max(e for _, e in SPANS) - min(s for s, _ in SPANS)),
            **cpu_per_run(before, n)}


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "enqueue":
            result = enqueue(int(argv[1]))
        elif argv[0] == "throughput":
            result = throughput(int(argv[1]))
        else:
            raise SystemExit(f"unknown workload {argv[0]}")
    finally:
        discard(TMP)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
