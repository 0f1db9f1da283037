"""kill -9 of the daemon, many times: at random moments, and at the instant a job's process appears.

The restarted daemon must find every run the dead one left: a live orphan is stopped and recorded
``ERR interrupted`` (never a second copy beside it), a gone one ``ERR crashed``; a due time that waited
behind a running run is still waiting; nothing ran without a record, nothing ran twice.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from faultlab import audit, job, kill_everything, lab_config, popen, stop_foreground

ITERATIONS = 25
AT_SPAWN = 12


def _jobs(lab: Path) -> dict[str, object]:
    # `slow` outlasts its interval (a due time waits behind it); `quick` is usually between runs
    return {"slow": job(lab, 1.5, every=1.0), "quick": job(lab, 0.1, every=0.5)}


def test_kill_9_at_random_moments(tmp_path: Path, figures: list[str]) -> None:
    cfg = lab_config(tmp_path, _jobs(tmp_path), stop_timeout=1)
    rng = random.Random(8)
    try:
        for _ in range(ITERATIONS):
            proc = popen(cfg, "run")
            time.sleep(rng.uniform(0.5, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        proc = popen(cfg, "run")
        time.sleep(2.0)
        assert stop_foreground(proc) == 0
    finally:
        kill_everything(cfg)
    fig = audit(cfg, "kill -9 at random moments", ITERATIONS, {"slow": 1.0, "quick": 0.5})
    figures.append(fig.line())
    print(fig.line())
    assert fig.executions >= 5  # jobs did run between the kills (how many depends on the machine's load)
    fig.assert_clean()


def job_children(pid: int) -> list[str]:
    """The daemon's children that are runs (not, say, the child that parses its config).  Every thread's:
    the daemon spawns runs from helper threads (runtime/launcher.py), whose children are listed there."""
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += (task / "children").read_text().split()
    except OSError:
        return []
    found = []
    for kid in kids:
        try:
            if b"TASKSERVER_RUN_ID=" in Path(f"/proc/{kid}/environ").read_bytes():
                found.append(kid)
        except OSError:
            continue
    return found


def test_kill_9_the_instant_a_job_appears(tmp_path: Path, figures: list[str]) -> None:
    """Several jobs come due together; the daemon dies the moment its first child exists, while it may
    still be spawning the others: every process it started must already have its committed record."""
    jobs = {f"tick{i}": job(tmp_path, 5.0, every=1.0) for i in range(6)}
    cfg = lab_config(tmp_path, jobs, stop_timeout=1)
    try:
        for i in range(AT_SPAWN):
            proc = popen(cfg, "run")
            end = time.monotonic() + 60
            while not job_children(proc.pid):  # polled tightly: the point is to strike within a millisecond
                assert time.monotonic() < end, f"no job was spawned in round {i}"
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        log = cfg.parent / "daemon.log"
        served = log.read_text(errors="replace").count("serving")
        proc = popen(cfg, "run")
        end = time.monotonic() + 60  # settling the dead daemons' runs comes first: a SIGTERM before the
        while log.read_text(errors="replace").count("serving") == served:  # daemon serves ends it outright
            assert proc.poll() is None and time.monotonic() < end, "the last daemon did not come up"
            time.sleep(0.05)
        time.sleep(1.0)
        assert stop_foreground(proc) == 0
    finally:
        kill_everything(cfg)
    fig = audit(cfg, "kill -9 when a job appears", AT_SPAWN, dict.fromkeys(jobs, 1.0))
    figures.append(fig.line())
    print(fig.line())
    assert fig.executions > 0 and fig.stopped > 0  # children logged, and the restarts found them alive
    fig.assert_clean()
