"""Small measuring helpers shared by the benchmark scripts."""

from __future__ import annotations

import math
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

# The commands every system runs: the lateness jobs print when they ran (taskserver's job-side figure), the
# one-off tasks do nothing.  taskserver keeps each run's output (stdout and stderr in one pipe, read to its
# end), so the peers read it the same way (``run_like_taskserver``): the same child, the same work around it.
LATE_COMMAND = ["/bin/date", "+%s.%N"]
ONE_OFF_COMMAND = ["/bin/true"]
# The hour (UTC) of the daily jobs that must stay idle while measured (idle CPU, memory, start-up,
# `status`): twelve hours from now. A fixed hour made them fire inside the measurement when the benchmark
# ran during that hour (10,000 jobs at minute i % 60: about 170 runs a minute in both schedulers).
IDLE_HOUR = (time.gmtime().tm_hour + 12) % 24


def run_like_taskserver(argv: list[str]) -> bytes:
    """Run ``argv`` as a taskserver run is run: stdin from /dev/null, stdout and stderr into one pipe."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          check=False).stdout


# Set by run_all.py (with TMPDIR, a scratch directory of its own): a workload leaves its files for run_all to
# remove once every workload has run.  ext4 without a journal (this benchmark's machine) skips, for a minute
# and up to six while their inode table block is unwritten, every inode freed that recently when it gives out
# a new one: a workload that removed its thousands of status files made the next one's new files cost up to a
# millisecond each, on whichever system came next (docs/performance.md, eleventh round).
KEEP_FILES = "BENCH_KEEP_FILES"


def discard(path: Path) -> None:
    """Remove a workload's directory, unless run_all.py removes it at its end (``KEEP_FILES``)."""
    if not os.environ.get(KEEP_FILES):
        shutil.rmtree(path, ignore_errors=True)


_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def steal_seconds() -> float:
    """CPU time the host took from this virtual machine since it booted (all CPUs; /proc/stat's steal):
    what changes over a measurement says how much of it the machine's own CPUs were not there for."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            fields = line.split()
            return int(fields[8]) / _TICK if len(fields) > 8 else 0.0
    return 0.0


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of a process (not its children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_ns_precise(pid: int | str = "self") -> float:
    """CPU seconds of all live threads at nanosecond resolution (/proc/PID/task/*/schedstat).

    Clock ticks (10 ms) are too coarse to see an idle daemon's few milliseconds per minute.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended while we looked
    return total / 1e9


def rss_bytes(pid: int | str = "self") -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def cpu_split() -> tuple[float, float]:
    """CPU seconds so far of this process (all its threads) and of its children it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def cpu_per_run(before: tuple[float, float], n: int) -> dict[str, float]:
    """The scheduler's own CPU per run (all its threads) and its children's, since ``before``."""
    own, kids = cpu_split()
    return {"own_cpu_per_run_ms": (own - before[0]) * 1000 / n,
            "child_cpu_per_run_ms": (kids - before[1]) * 1000 / n}
