"""Several daemons on one PostgreSQL store, next to one daemon on SQLite, in the same run.

    python benchmarks/bench_pg.py [--tasks 600] [--samples 40]

For 1, 2 and 3 daemons on one PostgreSQL tenant (and 1 on SQLite): runs per second of a burst of one-off
`/bin/true` tasks enqueued in one batch, and enqueue-to-start latency of single tasks enqueued while the
daemons idle (p50/p99). Needs root or a user that may run PostgreSQL's server binaries (tests/pglab.py starts
a private server on a unix socket). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]

from common import percentile  # noqa: E402
from pglab import PgServer  # noqa: E402

from taskserver.runtime import pg_store  # noqa: E402
from taskserver.runtime.model import StoreDef, TenantDef  # noqa: E402
from taskserver.runtime.store import Store, open_store  # noqa: E402

TASKSERVER = str(Path(sys.executable).parent / "taskserver")


def daemon_config(base: Path, i: int, store: dict[str, str]) -> Path:
    d = base / f"host{i}"
    d.mkdir()
    cfg = d / "cfg.yaml"
    cfg.write_text(json.dumps({
        "task_server": {"run_as": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                        "state_dir": str(base / "state"), "max_parallel": 8},
        "tenants": {"t": {"login": "bench", "store": store, "jobs": {}}}}))
    cfg.chmod(0o600)
    return cfg


def start(cfg: Path) -> subprocess.Popen[bytes]:
    with (cfg.parent / "daemon.log").open("w") as log:
        return subprocess.Popen([*_ns(), TASKSERVER, "-c", str(cfg), "-v", "run"], env=dict(os.environ),
                                stdout=log, stderr=subprocess.STDOUT)


def _ns() -> list[str]:
    # as root, each daemon gets its own mount namespace with a private /run/taskserver (pid files of
    # several daemons of configs with one name must not meet, and the host's must stay untouched)
    if os.geteuid() != 0:
        return []
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o mode=0755 tmp /run/taskserver && exec "$@"', "sh"]


def wait_all_ended(store: Store, n: int, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = store.history(limit=n)
        if len(runs) >= n and all(r.state.value in ("OK", "ERR") for r in runs):
            return
        time.sleep(0.05)
    raise SystemExit("the burst did not end in time")


def measure(tenant: TenantDef, store_def: dict[str, str], daemons: int, tasks: int, samples: int,
            base: Path) -> dict[str, float]:
    procs = [start(daemon_config(base, i, store_def)) for i in range(daemons)]
    store = open_store(tenant, base / "state")
    try:
        time.sleep(2.0)  # the daemons are up and idle
        lat = []
        for _ in range(samples):
            rid = store.add("", queue=None, argv=["/bin/true"], now=time.time())
            store.notify()
            deadline = time.monotonic() + 30
            while (run := store.get(rid)) is None or run.started is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"task {rid} did not start within 30 s (see {base}/host0/daemon.log)")
                time.sleep(0.002)
            lat.append(run.started - run.created)
            time.sleep(0.05)
        t0 = time.time()
        with store.batch():
            for _ in range(tasks):
                store.add("", queue=None, argv=["/bin/true"], now=t0)
        store.notify()
        wait_all_ended(store, tasks)
        rate = tasks / (max(r.finished or t0 for r in store.history(limit=tasks)) - t0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        store.close()
    lat.sort()
    return {"runs_per_s": rate, "latency_p50_ms": percentile(lat, 50) * 1000,
            "latency_p99_ms": percentile(lat, 99) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=600)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = PgServer()
    results: dict[str, dict[str, float]] = {}
    try:
        base = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
        tenant = TenantDef(name="t", login="bench")
        results["sqlite, 1 daemon"] = measure(tenant, {"sqlite": "t.sqlite"}, 1, args.tasks, args.samples,
                                              base)
        shutil.rmtree(base, ignore_errors=True)
        for n in (1, 2, 3):
            dsn = server.database()
            pg_store.migrate(dsn)
            base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
            tenant = TenantDef(name="t", login="bench", store=StoreDef(kind="postgresql", dsn=dsn))
            results[f"postgresql, {n} daemon{'s' if n > 1 else ''}"] = measure(
                tenant, {"postgresql": dsn}, n, args.tasks, args.samples, base)
            shutil.rmtree(base, ignore_errors=True)
    finally:
        server.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"load average {os.getloadavg()[0]:.2f}; {args.tasks} one-off /bin/true tasks in one batch, "
          f"{args.samples} single enqueues while idle")
    print(f"{'store':24} {'runs/s':>8} {'enqueue->start p50':>19} {'p99':>8}")
    for name, r in results.items():
        p50, p99 = r["latency_p50_ms"], r["latency_p99_ms"]
        print(f"{name:24} {r['runs_per_s']:8.0f} {p50:16.1f} ms {p99:5.1f} ms")


if __name__ == "__main__":
    main()
