"""A lost commit acknowledgement: the connection breaks after the daemon sent COMMIT and before the reply
came, so the daemon cannot know whether its transaction committed. A real daemon serves a tenant through a
forwarder (tests/system/pgcut.py) that cuts chosen COMMITs of its real PostgreSQL connection, some after the
server committed (`after`), some before it could (`before`), in every kind of transaction the daemon runs:
claiming due times, acquiring runs QUE -> RUN before their spawn, recording ends, renewing its lease. Then
the history is audited against what the runs' own processes wrote: every contradiction counts."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import TASKSERVER, sandbox_env, wait_for
from pgcut import Cutter

# each run writes its own start and end (run id, job) with O_APPEND
SCRIPT = ('echo "S $TASKSERVER_RUN_ID ${TASKSERVER_JOB:-task}" >> "$1"; sleep 0.3; '
          'echo "E $TASKSERVER_RUN_ID ${TASKSERVER_JOB:-task}" >> "$1"')
TARGETS = ("claim", "acquire", "end", "lease")
EACH = 3  # cuts of each kind of transaction in each mode
SUMMARY = re.compile(r"^(\d+) due times from .* missed \(summarised\)")
# causes a missed record may not name here: no daemon was stopped and no clock was set while it ran
FALSE_CAUSES = ("the daemon was stopped", "system clock was set", "clock was set")


def _config(path: Path, dsn: str, log: Path) -> Path:
    argv = ["/bin/sh", "-c", SCRIPT, "sh", str(log)]
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "task_server": {"run_as": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                        "state_dir": str(path.parent / "state"), "stop_timeout": "30s", "max_parallel": 16},
        "tenants": {"t": {"login": "app", "store": {"postgresql": dsn},
                          "jobs": {f"tick{i}": {"every": "1s", "command": argv} for i in range(8)}}}}))
    path.chmod(0o600)
    return path


@pytest.fixture
def cutter(pg_server: Any, tmp_path: Path) -> Iterator[Cutter]:
    made = Cutter(pg_server.sock, tmp_path)
    yield made
    made.close()


def rows(dsn: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM taskserver_runs ORDER BY id").fetchall())


def lines(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    return [(w, int(rid), job) for w, rid, job in (ln.split() for ln in log.read_text().splitlines())]


def audit(all_rows: list[dict[str, Any]], log: Path, daemon_log: Path) -> dict[str, list[Any]]:
    """Every way the history contradicts what the runs' processes wrote, or its own promises; and the
    daemon's word that another daemon had recorded a run of its own (there is no other daemon here)."""
    by_id = {r["id"]: r for r in all_rows}
    written = lines(log)
    starts = Counter(rid for what, rid, _ in written if what == "S")
    ends = {rid for what, rid, _ in written if what == "E"}
    found: dict[str, list[Any]] = {
        "started twice": [rid for rid, n in starts.items() if n > 1],
        "started without a committed start": [rid for rid in starts if rid not in by_id or
                                              by_id[rid]["state"] == "QUE" or by_id[rid]["started"] is None],
        "left RUN": [r["id"] for r in all_rows if r["state"] == "RUN"],
        "ended OK without its process": [r["id"] for r in all_rows
                                         if r["state"] == "OK" and r["id"] not in ends],
        "its process ended, the record says otherwise": [rid for rid in ends if rid in by_id
                                                         and by_id[rid]["state"] != "OK"],
        "missed but ran": [r["id"] for r in all_rows if r["reason"] == "missed" and r["id"] in starts],
        "missed for a false cause": [r["message"] for r in all_rows if r["reason"] == "missed"
                                     and any(c in (r["message"] or "") for c in FALSE_CAUSES)],
    }
    sched = [r for r in all_rows if not r["queued"]]
    keys = Counter((by_id[rid]["job"], by_id[rid]["due"], by_id[rid]["attempt"]) for rid in starts
                   if rid in by_id and not by_id[rid]["queued"])
    found["due time run twice"] = [k for k, n in keys.items() if n > 1]
    found["due time recorded twice"] = [k for k, n in Counter((r["job"], r["due"], r["attempt"])
                                                              for r in sched).items() if n > 1]
    lost = []
    for job in {r["job"] for r in sched}:
        mine = sorted((r for r in sched if r["job"] == job and r["attempt"] == 0), key=lambda r: r["due"])
        for a, b in itertools.pairwise(mine):
            summary = SUMMARY.search(b["message"] or "")
            if round(b["due"] - a["due"]) - 1 > (int(summary.group(1)) if summary else 0):
                lost.append((job, a["due"], b["due"]))
    found["due times lost"] = lost
    found["said recorded by another daemon"] = [ln for ln in daemon_log.read_text().splitlines()
                                                if "before its process here ended" in ln]
    return found


def _enqueue(cfg: Path, stop: threading.Event, log: Path, made: list[int]) -> None:
    argv = ["/bin/sh", "-c", SCRIPT, "sh", str(log)]
    while not stop.is_set():
        proc = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), "jobs", "enqueue", "--", *argv],
                              capture_output=True, text=True, env=sandbox_env(cfg), check=False, timeout=120)
        if proc.returncode == 0:
            made.append(int(proc.stdout))
        stop.wait(0.3)


def test_lost_commit_acknowledgements_leave_a_true_history(tmp_path: Path, dsn: str, cutter: Cutter) -> None:
    """Cuts of each kind of transaction, both ways, while eight jobs run every second and tasks are
    enqueued (on another connection, not cut) the whole time: the daemon lives through every one, and
    the history has no contradiction with what the runs' processes wrote."""
    log = tmp_path / "runs.log"
    cfg = _config(tmp_path / "host" / "cfg.yaml", cutter.dsn(dsn), log)
    direct = _config(tmp_path / "cli" / "cfg.yaml", dsn, log)
    out = (tmp_path / "daemon.log").open("a")
    daemon = subprocess.Popen([*runns.prefix(), TASKSERVER, "-c", str(cfg), "-v", "run"], stdout=out,
                              stderr=subprocess.STDOUT, env=sandbox_env(cfg))
    stop, tasks = threading.Event(), []
    enqueuer = threading.Thread(target=_enqueue, args=(direct, stop, log, tasks))
    try:
        wait_for(lambda: len(lines(log)) > 20, "the daemon's first runs", 60)
        enqueuer.start()
        cutter.cut([(kind, mode) for _ in range(EACH) for kind in TARGETS for mode in ("after", "before")])
        # a daemon that stalls (a job held by a RUN row of no process) gives no transaction to cut: the
        # audit below then says why
        with contextlib.suppress(AssertionError):
            wait_for(lambda: cutter.left == 0 or daemon.poll() is not None, "every cut", 150)
        assert daemon.poll() is None, "the daemon died"
        time.sleep(5)  # (no assertion on it: runs on after the last cut, as a daemon does)
        stop.set()
        enqueuer.join(150)
        with contextlib.suppress(AssertionError):  # (one held by a RUN row of no process never ends)
            wait_for(lambda: {r["id"] for r in rows(dsn) if r["state"] in ("OK", "ERR")} >= set(tasks),
                     "every task enqueued to end", 120)
    finally:
        stop.set()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(120)
        out.close()
    all_rows = rows(dsn)
    found = audit(all_rows, log, tmp_path / "daemon.log")
    cuts = Counter((c.target, c.mode) for c in cutter.done)
    covered = Counter((kind, c.mode) for c in cutter.done for kind in c.kinds)
    figures = {"runs": len(all_rows), "tasks": len(tasks), "commits": cutter.commits["all"],
               "contradictions": sum(len(v) for v in found.values())}
    print(f"\nlost commit acknowledgements: {figures}; cuts {dict(cuts)}; kinds in cut transactions "
          f"{dict(covered)}")
    assert {k: v for k, v in found.items() if v} == {}, found
    assert all(cuts[kind, mode] == EACH for kind in TARGETS for mode in ("after", "before")), cuts


@pytest.mark.parametrize(("mode", "state", "said"), [("after", "RUN", "after the server had committed it"),
                                                       ("before", "QUE", "the server had not committed it")])
def test_a_run_acquired_by_a_commit_not_acknowledged_waits_to_start_again(
        tmp_path: Path, dsn: str, cutter: Cutter, mode: str, state: str, said: str) -> None:
    """The store alone, one cut: the acquire's commit is lost `after` the server committed it (the row is
    RUN under the instance, and nothing will run it) or `before` (still QUE). Reconnected, the store puts
    the row back to QUE either way, and says which of the two it found."""
    from taskserver.runtime.pg_store import PgStore
    from taskserver.runtime.store import Instance, StoreError

    store = PgStore("t", cutter.dsn(dsn))
    now = time.time()
    store.attach(Instance(id="i1", host="h", pid=1, boot_id=None, proc_start=None, config="/c", started=now,
                          heartbeat=now, expires=now + 15))
    rid = store.claim("job", 1000.0, now=now)
    assert rid is not None
    cutter.cut([("acquire", mode)], gap=0)
    with pytest.raises(StoreError), store.batch():
        store.acquire(instance="i1", now=now, ids=[rid])
    assert [(r["id"], r["state"]) for r in rows(dsn)] == [(rid, state)]
    note = store.recover()
    assert note is not None and said in note and str(rid) in note, note
    assert [(r["id"], r["state"], r["instance"], r["started"]) for r in rows(dsn)] == [
        (rid, "QUE", None, None)]
    # (the cut session may still hold its row lock for a moment: the acquire skips locked rows)
    got = wait_for(lambda: store.acquire(instance="i1", now=now, ids=[rid]), "the run acquired again", 30)
    assert [r.id for r in got] == [rid]
    store.close()
