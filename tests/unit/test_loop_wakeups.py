"""A run refused at its start (after its transaction committed) frees its slot, and the next run starts
at the next wake-up, which comes at once; with the real loop under ``serve`` and real child processes."""

from __future__ import annotations

import os
import pwd
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from taskserver.runtime import daemon as daemon_mod
from taskserver.runtime.config import parse_text
from taskserver.runtime.executor import Child, Executor, Outcome
from taskserver.runtime.runs import Runs
from taskserver.runtime.store import open_store


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argvs: list[list[str]], *,
           run_as: bool = True) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """``taskserver run --once`` in this process (for at most 60 s) over tasks queued with ``argvs``: the
    rows' states and outputs, and for each wake-up how many runs it ended and how many it started.
    ``run_as``: the config names the user the daemon runs as (without, root's runs are refused)."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\n" + (f"  run_as: {me}\n" if run_as else "")
            + f"tenants:\n  t:\n    login: {me}\n    jobs: {{}}\n")
    cfg = parse_text(text, tmp_path / "c.yaml")
    store = open_store(cfg.tenants[0], tmp_path / "state", verify=True)
    try:
        for argv in argvs:
            store.add("", argv=argv, now=time.time())
    finally:
        store.close()
    steps: list[tuple[int, int]] = []
    now: list[int] = [0, 0]
    reap, launch, step = Executor.reap, Runs.launch, daemon_mod.Daemon._step

    def reaped(self: Executor, *, any_child: bool = False) -> list[tuple[Child, Outcome]]:
        got = reap(self, any_child=any_child)
        now[0] += len(got)
        return got

    def launched(self: Runs) -> None:
        now[1] += len(self.claimed)
        launch(self)

    def stepped(self: daemon_mod.Daemon, work: Callable[[float], None], at: float) -> None:
        now[:] = [0, 0]
        step(self, work, at)
        steps.append((now[0], now[1]))

    monkeypatch.setattr(Executor, "reap", reaped)
    monkeypatch.setattr(Runs, "launch", launched)
    monkeypatch.setattr(daemon_mod.Daemon, "_step", stepped)
    assert daemon_mod.serve(cfg, once=True, time_limit=60) == 0
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    try:
        rows = [(str(s), str(o if s != "ERR" else r)) for s, o, r in
            db.execute("SELECT state, output, reason FROM runs ORDER BY id")]
    finally:
        db.close()
    return rows, steps


@pytest.mark.skipif(os.geteuid() != 0, reason="the root rule refuses only a daemon that runs as root")
def test_runs_refused_at_their_start_do_not_hold_up_the_next(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A root daemon with no run_as refuses each task when it starts it, after the transaction that took
    it committed. Its slot is free then, and the next task starts at the next wake-up, which comes at
    once: before, it waited for any other event (up to a minute when none came), so ten refused tasks held
    a `run --once` for minutes and a task queued behind them as long. Here all ten end within the
    daemon's time limit; they were all still waiting when it ran out before."""
    rows, _ = _serve(tmp_path, monkeypatch, [["/bin/true"]] * 10, run_as=False)
    assert rows == [("ERR", "refused")] * 10
