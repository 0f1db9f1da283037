"""Run every taskserver benchmark next to its peers on the same workloads and print one table.

    .venv/bin/python benchmarks/run_all.py            # about 15 minutes (60 s idle window, 100,000-job start)
    .venv/bin/python benchmarks/run_all.py --quick    # a few minutes (20 s idle window, smaller scaling runs)
    .venv/bin/python benchmarks/run_all.py --json     # the figures as JSON: {workload: {system: {...}}}
    .venv/bin/python benchmarks/run_all.py --docs     # also rewrite docs/performance.md and its picture

Peers (the `bench` extra; the picture needs `bench-plot`): APScheduler 3 with its in-memory job store
(persists nothing) and with its SQLAlchemy job store on SQLite (what a user who wants durability picks),
and Huey with its SQLite storage for one-off throughput and enqueue rate.  Every system gets 4 workers
(taskserver's default max_parallel) and the same commands in a child process (common.py: the lateness
jobs run `/bin/date +%s.%N`, the one-off tasks `/bin/true`), whose output every system reads through one
pipe to its end, as taskserver keeps each run's output.  Figures are printed,
never asserted: they depend on the machine and on what else runs on it, so the table starts with the
machine's own floor (interpreter start-up, raw spawn rate of /bin/true) and its load average before and
after.  Each workload runs in its own process (ts_side.py, aps_side.py, huey_side.py); the idle
measurements of taskserver and APScheduler run at the same time, everything else one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import KEEP_FILES, percentile, steal_seconds

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
PY = sys.executable
WORKERS = 4
STAGGER_STEP = 0.010  # 1,000 jobs due 10 ms apart: 10 s of schedule
# First due time, seconds after start-up: every job fires every FIRST_DUE + i*STEP seconds, so its second run
# (from 2*FIRST_DUE on) must come after the last first run (FIRST_DUE + 1000*STEP), or the second half of
# the staggered window would carry twice the load the benchmark claims.
FIRST_DUE = 12.0
TS, APS_MEM, APS_SQL, HUEY = "taskserver", "apscheduler3-memory", "apscheduler3-sqlite", "huey-sqlite"
SYSTEMS = (TS, APS_MEM, APS_SQL, HUEY)
Results = dict[str, dict[str, dict[str, Any]]]


# the workloads' environment: ``main`` points their TMPDIR to a scratch directory of its own, removed once
# every workload ran (common.py, KEEP_FILES)
SIDE_ENV = dict(os.environ)


def side(script: str, *args: object) -> dict[str, Any]:
    out = subprocess.run([PY, str(HERE / script), *map(str, args)], cwd=HERE, capture_output=True, text=True,
                         check=False, env=SIDE_ENV)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {out.returncode}"}
    return dict(json.loads(out.stdout))


def run(system: str, *args: object) -> dict[str, Any]:
    """One workload on one system, in a process of its own."""
    if system == TS:
        return side("ts_side.py", *args)
    if system == HUEY:
        return side("huey_side.py", *args)
    return side("aps_side.py", "memory" if system == APS_MEM else "sqlite", *args)


def compile_package() -> None:
    """Byte-compile taskserver as an install does: with PYTHONDONTWRITEBYTECODE set (as in some CI and
    development shells) every command would compile its modules from source at each start."""
    import compileall

    for folder in ("runtime", "installer"):
        compileall.compile_dir(HERE.parent / folder, quiet=1)


def floor() -> dict[str, float]:
    walls = []
    for _ in range(10):
        t = time.perf_counter()
        subprocess.run([PY, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t)
    return {"python_start": percentile(sorted(walls), 50), "spawn_per_s": spawn_rate(), **cpu_speed()}


def cpu_speed(tries: int = 5) -> dict[str, float]:
    """How fast this machine runs Python right now: CPU seconds of a fixed loop (3,000,000 additions), the
    fastest and slowest of ``tries``, each in a fresh interpreter.  On a shared virtual machine the same
    work can cost half again as much CPU from one second to the next, and every CPU figure of the table
    (catch-up, CPU per run) moves with it: this says how far."""
    code = ("import time\nt = time.process_time()\ns = 0\nfor i in range(3_000_000):\n    s += i\n"
            "print(time.process_time() - t)")
    got = sorted(float(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout)
                 for _ in range(tries))
    return {"loop_cpu_min": got[0], "loop_cpu_max": got[-1]}


def spawn_rate(rounds: int = 3, n: int = 1000) -> float:
    """The machine's raw rate of posix_spawn+wait of /bin/true, WORKERS at a time: the best of ``rounds``
    (the floor is what the machine does with nothing in the way; one round caught a busy moment of the
    host and made the reference, and so taskserver's share of it, move by a third between runs)."""
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        running, done = 0, 0
        while done < n:
            while running < WORKERS and done + running < n:
                os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
                running += 1
            os.waitpid(-1, 0)
            running -= 1
            done += 1
        best = max(best, n / (time.perf_counter() - t))
    return best


def measure(opts: argparse.Namespace) -> Results:
    n, quick = opts.jobs, opts.quick
    window = 20.0 if quick else 60.0
    res: Results = {}

    def note(text: str) -> None:
        if not opts.json:
            print(f"  ... {text}", file=sys.stderr, flush=True)

    note("idle (taskserver and APScheduler at the same time)")
    with ThreadPoolExecutor(2) as pool:  # both idle at the same time: neither disturbs the other
        ts_f = pool.submit(run, TS, "idle", opts.idle_jobs, window)
        time.sleep(1)
        aps_f = pool.submit(run, APS_MEM, "idle", opts.idle_jobs, window)
        res["idle"] = {TS: ts_f.result(), APS_MEM: aps_f.result()}
    res["status"] = {TS: run(TS, "status")}
    note("staggered lateness")
    res["stagger"] = {s: run(s, "lateness", n, FIRST_DUE, STAGGER_STEP) for s in (TS, APS_MEM, APS_SQL)}
    note("burst lateness")
    res["burst"] = {s: run(s, "lateness", n, FIRST_DUE, 0) for s in (TS, APS_MEM, APS_SQL)}
    note("one-off throughput")
    res["throughput"] = {s: run(s, "throughput", opts.runs) for s in SYSTEMS}
    res["loopcpu"] = {TS: run(TS, "loopcpu", opts.runs)}  # the daemon's own CPU per run
    # the floor of the design: a bare Python loop with the same durable steps (benchmarks/bare_loop.py)
    res["bare_loop"] = {how: side("bare_loop.py", opts.runs, how) for how in ("inline", "threads")}
    note("one serial queue, two lengths")
    for size in (1000, 4000) if quick else (1000, 8000):
        res[f"serial_{size}"] = {TS: run(TS, "serial", size)}
    note("enqueue")
    res["enqueue"] = {TS: run(TS, "enqueue", 10000), HUEY: run(HUEY, "enqueue", 10000 if not quick else 2000)}
    note("scaling: burst at 100, 1,000, 10,000 jobs")
    for size in (100, 1000, 10000):
        base = FIRST_DUE if size <= 1000 else 30.0  # 10,000 runs must drain before the second round
        peers = (TS, APS_MEM) if size > 1000 else (TS, APS_MEM, APS_SQL)  # 10,000 SQLite adds: minutes
        if size == n:
            res[f"burst_{size}"] = res["burst"]  # the same workload: measured once
            continue
        res[f"burst_{size}"] = {s: run(s, "lateness", size, base, 0) for s in peers}
    note("start-up until READY")
    for size in (1000, 10000) if quick else (1000, 10000, 100000):
        res[f"startup_{size}"] = {TS: run(TS, "startup", size), APS_SQL: run(APS_SQL, "startup", size)}
    note("catch-up after 30 days down")
    res["catchup"] = {TS: run(TS, "catchup", opts.idle_jobs, 30)}
    return res


def ms(x: object) -> str:
    return f"{float(x) * 1000:.1f} ms" if isinstance(x, int | float) else "-"


def mb(x: object) -> str:
    return f"{float(x) / 1e6:.1f} MB" if isinstance(x, int | float) else "-"


def rate(x: object) -> str:
    return f"{float(x):,.0f}/s" if isinstance(x, int | float) else "-"


def secs(x: object) -> str:
    return f"{float(x):.2f} s" if isinstance(x, int | float) else "-"


def table(res: Results, opts: argparse.Namespace, base: dict[str, float]) -> list[list[str]]:
    """Rows: benchmark, target, then one cell per system."""
    n, idle_n = opts.jobs, opts.idle_jobs

    def cells(workload: str, key: str, fmt: Any) -> list[str]:
        got = res.get(workload, {})
        return [fmt(got[s].get(key)) if s in got else "" for s in SYSTEMS]

    ts_rate = res["throughput"][TS].get("per_s")
    floor_pct = f"{ts_rate / base['spawn_per_s'] * 100:.0f} % of raw spawn" if ts_rate else "-"
    rows = [
        [f"lateness p50, {n} jobs {STAGGER_STEP * 1000:.0f} ms apart", "", *cells("stagger", "p50", ms)],
        [f"lateness p99, {n} jobs {STAGGER_STEP * 1000:.0f} ms apart", "<= 10 ms",
         *cells("stagger", "p99", ms)],
        [f"lateness p50, {n} jobs due at once", "", *cells("burst", "p50", ms)],
        [f"lateness p99, {n} jobs due at once", "", *cells("burst", "p99", ms)],
        [f"one-off /bin/true runs per second ({opts.runs})", ">= 80 % raw",
         *cells("throughput", "per_s", rate)],
        ["  taskserver as a share of the machine's raw spawn rate", "", floor_pct, "", "", ""],
        ["  taskserver, tasks queued without a status file (the client's default)", "",
         rate(res["throughput"][TS].get("per_s_no_file")), "", "", ""],
        ["  taskserver, the daemon's CPU per run (all threads / its loop's thread)", "",
         "{} / {}".format(*(f"{v:.3f} ms" if isinstance(v, float) else "-" for v in (
             res["loopcpu"][TS].get("cpu_s_per_run_ms"), res["loopcpu"][TS].get("main_cpu_s_per_run_ms")))),
         "", "", ""],
        ["  CPU per one-off run: the scheduler's own (all threads) / its child's", "",
         *cpu_cells(res)],
        *bare_rows(res),
        ["enqueue, client batch of 10,000 (huey: one call each)", ">= 5,000/s",
         rate(res["enqueue"][TS].get("many_per_s")), "", "", rate(res["enqueue"][HUEY].get("per_s"))],
        ["  same (1,000), with a status file per task", "", rate(res["enqueue"][TS].get("many_files_per_s")),
         "", "", ""],
        ["  client, one call (one transaction) per task", "", rate(res["enqueue"][TS].get("single_per_s")),
         "", "", ""],
        ["`taskserver jobs enqueue` wall p50", "<= 60 ms", ms(res["enqueue"][TS].get("cli_p50")), "", "", ""],
        [f"idle CPU per minute, {idle_n} jobs", "<= 0.05 s",
         *cells("idle", "cpu_per_min", lambda x: f"{x:.4f} s" if isinstance(x, float) else "-")],
        [f"RSS with {idle_n} jobs", "<= 35 MB", *cells("idle", "rss", mb)],
        ["  RSS once each of 10,000 jobs ran (the burst of 10,000, at its end)", "",
         *cells("burst_10000", "rss_ran", mb)],
        ["`taskserver status` wall p50, 1 job", "<= 50 ms", ms(res["status"][TS].get("status_p50")),
         "", "", ""],
        [f"`taskserver status` wall p50, {idle_n} jobs", "<= 50 ms", ms(res["idle"][TS].get("status_p50")),
         "", "", ""],
        [f"catch-up after 30 days down, {idle_n} jobs (CPU)", "<= 0.5 s",
         secs(res["catchup"][TS].get("cpu_s")), "", "", ""],
    ]
    for key in sorted((k for k in res if k.startswith("serial_")), key=lambda k: int(k.split("_")[1])):
        one = res[key][TS]
        rows.append([f"one serial queue of {int(key.split('_')[1]):,} tasks: runs/s, loop CPU per run", "",
                     f"{rate(one.get('per_s'))}, {one.get('main_cpu_per_run_ms', 0):.3f} ms", "", "", ""])
    for size in (100, 1000, 10000):
        key = f"burst_{size}"
        rows.append([f"scaling: burst of {size:,} jobs, lateness p99", "", *cells(key, "p99", ms)])
        rows.append([f"scaling: burst of {size:,} jobs, runs per second", "", *cells(key, "per_s", rate)])
    for size in (1000, 10000, 100000):
        if f"startup_{size}" in res:
            target = "<= 1 s" if size == 10000 else ""
            got = cells(f"startup_{size}", "startup_s", secs)
            rows.append([f"start-up until READY, {size:,} jobs", target, *got])
            parsed = secs(res[f"startup_{size}"][TS].get("parse_s"))
            rows.append([f"same, parsing the config (its first start, or after an edit), {size:,} jobs", "",
                         parsed, "", "", ""])
    return rows


def cpu_cells(res: dict[str, Any]) -> list[str]:
    """Where a one-off run's CPU goes, per system: the scheduler's own and its child's (taskserver: from the
    daemon's `run --once` of the same tasks, benchmarks/ts_side.py ``loop_cpu``)."""
    def cell(own: object, child: object) -> str:
        ok = isinstance(own, int | float) and isinstance(child, int | float)
        return f"{own:.3f} / {child:.3f} ms" if ok else "-"
    got = [cell(res["loopcpu"][TS].get("cpu_s_per_run_ms"), res["loopcpu"][TS].get("child_cpu_s_per_run_ms"))]
    for system in SYSTEMS[1:]:
        one = res["throughput"].get(system, {})
        got.append(cell(one.get("own_cpu_per_run_ms"), one.get("child_cpu_per_run_ms")))
    return got


def bare_rows(res: Results) -> list[list[str]]:
    """The floor of taskserver's design: a bare loop with the same durable steps and nothing else
    (benchmarks/bare_loop.py), its runs/s and CPU per run (its own / its child's) in taskserver's column."""
    rows = []
    ways = (("inline", "spawning in the loop"), ("threads", "spawning through taskserver's threads"))
    for how, label in ways:
        got = res.get("bare_loop", {}).get(how, {})
        own, child = got.get("own_cpu_per_run_ms"), got.get("child_cpu_per_run_ms")
        cpu = f"{own:.3f} / {child:.3f} ms" if isinstance(own, float) and isinstance(child, float) else "-"
        rows.append([f"  a bare durable loop in Python, {label}: runs/s, CPU per run", "",
                     f"{rate(got.get('per_s'))}, {cpu}", "", "", ""])
    return rows


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [["benchmark", "target", *SYSTEMS], *rows]) for i in range(6)]
    lines = []
    for r in [["benchmark", "target", *SYSTEMS], *rows]:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    head = ["benchmark", "target", *SYSTEMS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.strip() for c in r) + " |" for r in rows]
    return "\n".join(out)


def picture(res: Results, path: Path) -> bool:
    """Lateness distributions (empirical CDFs) of every system, staggered and burst (False: no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, workload, title in ((axes[0], "stagger", "1,000 jobs 10 ms apart"),
                                (axes[1], "burst", "1,000 jobs due at once")):
        for system, got in res.get(workload, {}).items():
            values = sorted(got.get("values") or [])
            if values:
                ax.plot([v * 1000 for v in values], [(i + 1) / len(values) for i in range(len(values))],
                        label=system)
        ax.set_xscale("log")
        ax.set_xlabel("lateness (start - due), ms, log scale")
        ax.set_ylabel("share of runs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...], base: dict[str, float]) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return (f"{os.cpu_count()} CPUs ({model}), load average {' '.join(f'{x:.2f}' for x in load_before)} "
            f"before and {' '.join(f'{x:.2f}' for x in load_after)} after; python start-up "
            f"{ms(base['python_start'])}; raw posix_spawn+wait of /bin/true ({WORKERS} at a time, the best "
            f"of three rounds before the workloads and three after): {base['spawn_per_s']:,.0f}/s; a fixed "
            f"Python loop (3,000,000 additions; five tries before and five after) took "
            f"{base['loop_cpu_min']:.3f} to {base['loop_cpu_max']:.3f} s of CPU; the host took "
            f"{base['steal_share'] * 100:.1f} % of the CPUs' time during the run (steal)")


def write_docs(text_rows: str, about: str, has_png: bool) -> None:
    doc = DOCS / "performance.md"
    old = doc.read_text() if doc.exists() else ""
    marker_a, marker_b = "<!-- measured: begin -->", "<!-- measured: end -->"
    how = "benchmarks/run_all.py" + (" --quick" if "--quick" in sys.argv else "")
    block = (f"{marker_a}\nMeasured with `{how}` "
             f"on {time.strftime('%Y-%m-%d', time.gmtime())}: {about}.\n\n{text_rows}\n\n"
             + ("![lateness distributions](performance-lateness.png)\n" if has_png else "") + marker_b)
    if marker_a in old and marker_b in old:
        doc.write_text(old[: old.index(marker_a)] + block + old[old.index(marker_b) + len(marker_b):])
    else:
        doc.write_text(old + ("\n" if old else "") + block + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 s idle window, no 100,000-job start-up")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs in the lateness runs (default 1000)")
    ap.add_argument("--idle-jobs", type=int, default=10000, help="jobs scheduled when idle (default 10000)")
    ap.add_argument("--runs", type=int, default=2000, help="one-off /bin/true runs (default 2000)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    ap.add_argument("--docs", action="store_true", help="rewrite docs/performance.md's table and picture")
    opts = ap.parse_args()

    compile_package()
    load_before, steal, wall = os.getloadavg(), steal_seconds(), time.monotonic()
    base = floor()
    scratch = tempfile.mkdtemp(prefix="bench-run-")
    SIDE_ENV.update({"TMPDIR": scratch, KEEP_FILES: "1"})
    try:
        res = measure(opts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base["spawn_per_s"] = max(base["spawn_per_s"], spawn_rate())  # again at the end: the best of both
    after = cpu_speed()
    base["loop_cpu_min"] = min(base["loop_cpu_min"], after["loop_cpu_min"])
    base["loop_cpu_max"] = max(base["loop_cpu_max"], after["loop_cpu_max"])
    load_after = os.getloadavg()
    base["steal_share"] = (steal_seconds() - steal) / ((time.monotonic() - wall) * (os.cpu_count() or 1))
    has_png = picture(res, DOCS / "performance-lateness.png") if opts.docs else False
    rows = table(res, opts, base)
    about = machine(load_before, load_after, base)
    if opts.json:
        res["machine"] = {"floor": {**base}, "cpus": {"count": os.cpu_count() or 0},
                          "load": {"before": list(load_before), "after": list(load_after)}}
        for systems in res.values():  # the distributions are for the picture, not the JSON
            for got in systems.values():
                got.pop("values", None)
        print(json.dumps(res, indent=2))
    else:
        print(f"machine: {about}\n")
        print(render_text(rows))
        for workload, systems in res.items():
            for system, got in systems.items():
                if "error" in got:
                    print(f"error in {workload} / {system}: {got['error']}")
        print("\nlateness = start - due (taskserver: the daemon's own start record, committed before the "
              "process starts); every system runs the same commands (lateness: /bin/date, one-off: "
              "/bin/true) with 4 workers and reads their output")
    if opts.docs:
        write_docs(render_markdown(rows), about, has_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
