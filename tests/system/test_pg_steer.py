"""Pause and cancel with two daemons (as two hosts would run them) sharing a tenant through a real
PostgreSQL server: a pause made through one host's config holds on both, and a run cancelled through one
host is stopped by whichever daemon runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import TASKSERVER, sandbox_env, wait_for

psycopg = pytest.importorskip("psycopg")
ME = "root" if os.geteuid() == 0 else os.environ.get("USER", "")


def host_config(base: Path, name: str, dsn: str) -> Path:
    d = base / name
    d.mkdir()
    cfg = d / "cfg.yaml"
    cfg.write_text(json.dumps({
        "task_server": {"run_as": ME, "state_dir": str(d / "state"), "stop_timeout": "2s"},
        "tenants": {"t": {"login": "app", "store": {"postgresql": dsn}, "jobs": {
            "tick": {"every": "1s", "command": ["/bin/true"]},
            "slow": {"command": ["/bin/sleep", "300"]}}}}}))
    cfg.chmod(0o600)
    return cfg


def ts(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), *args], capture_output=True,
                          text=True, env=sandbox_env(cfg), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def two(tmp_path: Path, pg_server: Any) -> Iterator[tuple[list[Path], str]]:
    from taskserver.runtime import pg_store

    dsn = str(pg_server.database())
    pg_store.migrate(dsn)
    cfgs = [host_config(tmp_path, f"host{i}", dsn) for i in range(2)]
    procs = []
    for cfg in cfgs:
        with (cfg.parent / "daemon.log").open("w") as out:
            argv = [*runns.prefix(), TASKSERVER, "-c", str(cfg), "-v", "run"]
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=sandbox_env(cfg)))
    try:
        yield cfgs, dsn
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(60)


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql).fetchall())


def test_a_pause_through_one_host_holds_on_both(two: tuple[list[Path], str]) -> None:
    (first, second), dsn = two
    def ticks(state: str) -> int:
        return len(rows(dsn, f"SELECT 1 FROM taskserver_runs WHERE job='tick' AND state='{state}'"))

    def paused() -> int:
        sql = "SELECT 1 FROM taskserver_runs WHERE reason='missed' AND message LIKE 'paused by%'"
        return len(rows(dsn, sql))

    wait_for(lambda: ticks("OK") >= 3, "ticks running")
    ts(first, "jobs", "pause", "tick")
    wait_for(lambda: paused() >= 4, "due times recorded missed on the shared store")
    settled = rows(dsn, "SELECT MAX(created) FROM taskserver_runs")[0][0]  # both daemons have seen it by now
    wait_for(lambda: paused() >= 8, "more due times recorded missed")
    assert rows(dsn, f"SELECT id FROM taskserver_runs WHERE job='tick' AND started > {settled}") == []
    listing = json.loads(ts(second, "jobs", "list", "--json").stdout)
    assert {r["job"]: r["paused"] for r in listing} == {"tick": True, "slow": False}


def test_a_run_cancelled_through_one_host_is_stopped_where_it_runs(two: tuple[list[Path], str]) -> None:
    (first, second), dsn = two
    run_id = int(ts(first, "jobs", "run", "slow").stdout)
    wait_for(lambda: rows(dsn, f"SELECT pid FROM taskserver_runs WHERE id={run_id}")[0][0], "slow started")
    ts(second, "jobs", "cancel", str(run_id))
    state = f"SELECT state FROM taskserver_runs WHERE id={run_id}"
    wait_for(lambda: rows(dsn, state)[0][0] == "ERR", "the run stopped")
    assert rows(dsn, f"SELECT reason FROM taskserver_runs WHERE id={run_id}")[0][0] == f"cancelled by {ME}"
