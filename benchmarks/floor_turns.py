"""One-off throughput by turns: APScheduler 3 (in memory), the bare durable loop (both ways of spawning), a
bare durable design without a loop (a worker thread per slot) and taskserver, one after the other, round
after round, the order rotated each round.

Why: on a small shared machine one run of a workload can differ from the next by a quarter, so a single
run_all.py table cannot say whether one system is ahead of another by a tenth. Here each round runs every
system once within a minute or so, and the summary counts in how many rounds one beat the other. Each
round also says how much CPU time the host took from the machine meanwhile (steal, from /proc/stat): a
round with much of it measured the host.

The question it answers: can a loop that commits each run to SQLite and writes its status file (the
durable steps taskserver must take, benchmarks/bare_loop.py) spawn /bin/true faster than APScheduler 3,
which persists nothing, on this machine?  If the bare loop, with nothing else in it, is behind in most
rounds, taskserver (the same steps plus its own layers) cannot be ahead there by tuning its layers; and if
the design without a loop is behind as well, no rearrangement of those steps in CPython would be.

    python benchmarks/floor_turns.py                  # 6 rounds of 3,000 runs each: about 5 minutes
    python benchmarks/floor_turns.py --rounds 10 --runs 2000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from common import KEEP_FILES, steal_seconds
from run_all import APS_MEM, SIDE_ENV, TS, compile_package, run, side, spawn_rate

BARE_INLINE, BARE_THREADS = "bare loop, spawning in the loop", "bare loop, through the launcher threads"
BARE_SLOTS = "bare design, a worker thread per slot, no loop"
SYSTEMS = (APS_MEM, BARE_INLINE, BARE_THREADS, BARE_SLOTS, TS)
BARE = {BARE_INLINE: "inline", BARE_THREADS: "threads", BARE_SLOTS: "slots"}


def measure(system: str, runs: int) -> dict[str, Any]:
    """Runs per second and the system's own CPU per run (taskserver: its daemon's, from `run --once`)."""
    if system in BARE:
        return side("bare_loop.py", runs, BARE[system])
    if system == APS_MEM:
        return run(APS_MEM, "throughput", runs)
    got = run(TS, "throughput", runs)
    cpu = run(TS, "loopcpu", runs)
    return {"per_s": got.get("per_s"), "own_cpu_per_run_ms": cpu.get("cpu_s_per_run_ms"),
            "error": got.get("error") or cpu.get("error")}


def rounds(count: int, runs: int, quiet: bool) -> list[dict[str, Any]]:
    out = []
    for r in range(count):
        order = SYSTEMS[r % len(SYSTEMS):] + SYSTEMS[:r % len(SYSTEMS)]  # nobody always goes first
        got: dict[str, Any] = {"load": os.getloadavg()[0], "order": list(order)}
        steal, wall = steal_seconds(), time.monotonic()
        got["raw_spawn_per_s"] = spawn_rate(rounds=1)  # a slowed host shows here first (steal misses some)
        for system in order:
            got[system] = measure(system, runs)
        # the host's share of the round: steal over the round's CPU seconds (wall time x CPUs)
        got["steal_share"] = (steal_seconds() - steal) / ((time.monotonic() - wall) * (os.cpu_count() or 1))
        out.append(got)
        if not quiet:
            cells = "; ".join(f"{s}: {_rate(got[s])}, {_cpu(got[s])}" for s in SYSTEMS)
            head = (f"round {r + 1} (load {got['load']:.2f}, raw spawn {got['raw_spawn_per_s']:,.0f}/s, "
                    f"stolen by the host {_pct(got['steal_share'])})")
            print(f"{head}: {cells}", file=sys.stderr, flush=True)
    return out


def _rate(got: dict[str, Any]) -> str:
    value = got.get("per_s")
    return f"{value:,.0f}/s" if isinstance(value, int | float) else f"error: {got.get('error')}"


def _cpu(got: dict[str, Any]) -> str:
    value = got.get("own_cpu_per_run_ms")
    return f"{value:.3f} ms CPU/run" if isinstance(value, int | float) else "-"


def summary(every: list[dict[str, Any]], raw: float, max_steal: float) -> dict[str, Any]:
    """Figures and counts over the rounds in which the host took at most ``max_steal`` of the CPUs' time
    (the others are counted as left out)."""
    res = [r for r in every if r["steal_share"] <= max_steal]

    def values(system: str, key: str) -> list[float]:
        return [float(r[system][key]) for r in res if isinstance(r[system].get(key), int | float)]

    per: dict[str, Any] = {}
    for system in SYSTEMS:
        rates, cpus = values(system, "per_s"), values(system, "own_cpu_per_run_ms")
        middle = _median(rates)
        per[system] = {
            "runs_per_s": {"min": min(rates, default=None), "median": _median(rates),
                           "max": max(rates, default=None)},
            "own_cpu_per_run_ms": {"min": min(cpus, default=None), "median": _median(cpus),
                                   "max": max(cpus, default=None)},
            "share_of_raw_median": middle / raw if middle is not None and raw else None,
        }
    complete = [r for r in res if all(isinstance(r[s].get("per_s"), int | float) for s in SYSTEMS)]
    steal = [r["steal_share"] for r in every]
    raws = [r["raw_spawn_per_s"] for r in res]
    aps_ahead_of_bare = sum(r[APS_MEM]["per_s"] > max(r[b]["per_s"] for b in BARE) for r in complete)
    aps_ahead_of_ts = sum(r[APS_MEM]["per_s"] > r[TS]["per_s"] for r in complete)
    return {"rounds": len(complete), "left_out_for_steal": len(every) - len(res), "max_steal": max_steal,
            "raw_spawn_per_s": raw, "systems": per,
            "rounds_apscheduler_ahead_of_the_bare_loop": aps_ahead_of_bare,
            "rounds_apscheduler_ahead_of_taskserver": aps_ahead_of_ts,
            "steal_share": {"min": min(steal, default=None), "max": max(steal, default=None)},
            "round_raw_spawn_per_s": {"min": min(raws, default=None), "max": max(raws, default=None)}}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def render(summ: dict[str, Any]) -> str:
    lines = [f"raw posix_spawn+wait of /bin/true, 4 at a time (best of 3 before and 3 after): "
             f"{summ['raw_spawn_per_s']:,.0f}/s", "",
             "| system | runs/s min / median / max | own CPU per run, ms, min / median / max | median, "
             "share of raw |", "|---|---|---|---|"]
    for system, got in summ["systems"].items():
        r, c = got["runs_per_s"], got["own_cpu_per_run_ms"]
        share = got["share_of_raw_median"]
        lines.append(f"| {system} | {_triple(r, '{:,.0f}')} | {_triple(c, '{:.3f}')} | "
                     f"{f'{share * 100:.0f} %' if share is not None else '-'} |")
    lines += ["", f"rounds: {summ['rounds']} ({summ['left_out_for_steal']} more left out: the host took over "
              f"{_pct(summ['max_steal'])} of the CPUs' time in them); APScheduler 3 (memory) ahead of the "
              "best bare design in "
              f"{summ['rounds_apscheduler_ahead_of_the_bare_loop']}, ahead of taskserver in "
              f"{summ['rounds_apscheduler_ahead_of_taskserver']}; the host took "
              f"{_pct(summ['steal_share']['min'])} to {_pct(summ['steal_share']['max'])} of the CPUs' time "
              "in a round (steal); the raw spawn rate at the start of the rounds kept: "
              f"{_span(summ['round_raw_spawn_per_s'], '{:,.0f}/s')}"]
    return "\n".join(lines)


def _span(got: dict[str, float | None], fmt: str) -> str:
    low, high = got["min"], got["max"]
    return "-" if low is None or high is None else f"{fmt.format(low)} to {fmt.format(high)}"


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f} %" if value is not None else "-"


def _triple(got: dict[str, float | None], fmt: str) -> str:
    picked = (got["min"], got["median"], got["max"])
    return " / ".join(fmt.format(v) if v is not None else "-" for v in picked)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="rounds, every system once in each (default 6)")
    ap.add_argument("--runs", type=int, default=3000, help="/bin/true runs per measure (default 3000)")
    ap.add_argument("--json", action="store_true", help="print every round and the summary as JSON")
    ap.add_argument("--max-steal", type=float, default=5.0, metavar="PCT",
                    help="leave out of the summary the rounds in which the host took more than PCT %% of the "
                         "CPUs' time (default 5)")
    opts = ap.parse_args()
    if opts.rounds < 1 or opts.runs < 100:
        ap.error("--rounds must be at least 1 and --runs at least 100")

    compile_package()
    raw = spawn_rate()
    scratch = tempfile.mkdtemp(prefix="bench-turns-")  # no workload's deletions slow the next one's files
    SIDE_ENV.update({"TMPDIR": scratch, KEEP_FILES: "1"})
    try:
        res = rounds(opts.rounds, opts.runs, quiet=opts.json)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    raw = max(raw, spawn_rate())
    summ = summary(res, raw, opts.max_steal / 100)
    if opts.json:
        print(json.dumps({"rounds": res, "summary": summ}, indent=2))
    else:
        print(render(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
