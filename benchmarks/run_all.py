"""Run every taskserver benchmark next to APScheduler 3 on the same workloads and print one table.

    .venv/bin/python benchmarks/run_all.py            # about 4 minutes (60 s idle window)
    .venv/bin/python benchmarks/run_all.py --quick    # about 2 minutes (20 s idle window, scaled to /min)

Figures are printed, never asserted: they depend on the machine and on what else runs on it, so the table
starts with the machine's own floor (interpreter start-up, raw spawn rate of /bin/true) and load average.
Each workload runs in its own process (benchmarks/ts_side.py, benchmarks/aps_side.py); the idle
measurements of both run at the same time, everything else one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import percentile

HERE = Path(__file__).resolve().parent
PY = sys.executable
STAGGER_STEP = 0.010  # 1,000 jobs due 10 ms apart: 10 s of schedule
# First due time, seconds after start-up: every job fires every FIRST_DUE + i*STEP seconds, so its second run
# (from 2*FIRST_DUE on) must come after the last first run (FIRST_DUE + 1000*STEP), or the second half of
# the staggered window would carry twice the load the benchmark claims.
FIRST_DUE = 12.0


def side(script: str, *args: object) -> dict[str, Any]:
    out = subprocess.run(
        [PY, str(HERE / script), *map(str, args)], cwd=HERE, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return dict(json.loads(out.stdout))


def floor() -> dict[str, float]:
    walls = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run([PY, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t)
    t = time.perf_counter()
    running, done, n = 0, 0, 1000
    while done < n:
        while running < 4 and done + running < n:
            os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
            running += 1
        os.waitpid(-1, 0)
        running -= 1
        done += 1
    return {"python_start": percentile(sorted(walls), 50), "spawn_per_s": n / (time.perf_counter() - t)}


def ms(x: object) -> str:
    return f"{float(x) * 1000:.1f} ms" if isinstance(x, int | float) else "-"


def mb(x: object) -> str:
    return f"{float(x) / 1e6:.1f} MB" if isinstance(x, int | float) else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 s idle window instead of 60 s")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs in the lateness runs (default 1000)")
    ap.add_argument("--idle-jobs", type=int, default=10000, help="jobs scheduled when idle (default 10000)")
    ap.add_argument("--runs", type=int, default=2000, help="one-off /bin/true runs (default 2000)")
    opts = ap.parse_args()
    window = 20.0 if opts.quick else 60.0
    n = opts.jobs

    base = floor()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"python start-up {ms(base['python_start'])}; raw posix_spawn+wait of /bin/true (4 at a time): "
        f"{base['spawn_per_s']:.0f}/s",
        flush=True,
    )

    with ThreadPoolExecutor(2) as pool:  # both idle at the same time: neither disturbs the other
        ts_idle_f = pool.submit(side, "ts_side.py", "idle", opts.idle_jobs, window)
        time.sleep(1)
        aps_idle_f = pool.submit(side, "aps_side.py", "idle", opts.idle_jobs, window)
        ts_idle, aps_idle = ts_idle_f.result(), aps_idle_f.result()
    ts_status = side("ts_side.py", "status")
    stag = [side(s, "lateness", n, FIRST_DUE, STAGGER_STEP) for s in ("ts_side.py", "aps_side.py")]
    burst = [side(s, "lateness", n, FIRST_DUE, 0) for s in ("ts_side.py", "aps_side.py")]
    thr = [side(s, "throughput", opts.runs) for s in ("ts_side.py", "aps_side.py")]

    rows: list[tuple[str, str, str, str]] = [
        (
            f"lateness p50, {n} jobs {STAGGER_STEP * 1000:.0f} ms apart",
            "",
            ms(stag[0].get("p50")),
            ms(stag[1].get("p50")),
        ),
        (
            f"lateness p99, {n} jobs {STAGGER_STEP * 1000:.0f} ms apart",
            "<= 10 ms",
            ms(stag[0].get("p99")),
            ms(stag[1].get("p99")),
        ),
        (
            "  same, seen by the job (p50 / p99)",
            "",
            f"{ms(stag[0].get('child_p50'))} / {ms(stag[0].get('child_p99'))}",
            "",
        ),
        (f"lateness p50, {n} jobs due at once", "", ms(burst[0].get("p50")), ms(burst[1].get("p50"))),
        (f"lateness p99, {n} jobs due at once", "", ms(burst[0].get("p99")), ms(burst[1].get("p99"))),
        (
            f"idle CPU per minute, {opts.idle_jobs} jobs ({window:.0f} s window)",
            "<= 0.05 s",
            f"{ts_idle.get('cpu_per_min', 0):.4f} s",
            f"{aps_idle.get('cpu_per_min', 0):.4f} s",
        ),
        (f"RSS with {opts.idle_jobs} jobs", "<= 40 MB", mb(ts_idle.get("rss")), mb(aps_idle.get("rss"))),
        ("  peak RSS (VmHWM / ru_maxrss)", "", mb(ts_idle.get("hwm")), mb(aps_idle.get("maxrss"))),
        (f"start-up until READY, {opts.idle_jobs} jobs", "", f"{ts_idle.get('startup_s', 0):.1f} s", ""),
        (
            f"one-off /bin/true runs per second ({opts.runs})",
            ">= 500/s",
            f"{thr[0].get('per_s', 0):.0f}/s",
            f"{thr[1].get('per_s', 0):.0f}/s",
        ),
        (
            f"  scheduled runs per second while {n} due at once drain",
            "",
            f"{burst[0].get('per_s') or 0:.0f}/s ({burst[0].get('n')} runs)",
            "",
        ),
        ("`taskserver status` wall p50, 1 job", "<= 100 ms", ms(ts_status.get("status_p50")), "n/a"),
        ("  same, CPU p50", "", ms(ts_status.get("status_cpu_p50")), ""),
        (
            f"`taskserver status` wall p50, {opts.idle_jobs} jobs",
            "<= 100 ms",
            ms(ts_idle.get("status_p50")),
            "n/a",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'benchmark':<{width}}  {'target':>10}  {'taskserver':>16}  {'APScheduler 3':>14}")
    for name, target, ts, aps in rows:
        print(f"{name:<{width}}  {target:>10}  {ts:>16}  {aps:>14}")
    errors = {
        k: v["error"]
        for k, v in {
            "ts idle": ts_idle,
            "aps idle": aps_idle,
            "ts status": ts_status,
            "ts stagger": stag[0],
            "aps stagger": stag[1],
            "ts burst": burst[0],
            "aps burst": burst[1],
            "ts runs": thr[0],
            "aps runs": thr[1],
        }.items()
        if "error" in v
    }
    for k, v in errors.items():
        print(f"error in {k}: {v}")
    print(
        f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        "lateness = start - due (taskserver: the daemon's own start record; the job's view is /bin/date's "
        "clock minus due); both use 4 parallel workers"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
