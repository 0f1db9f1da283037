"""The postgresql store kind through the real commands: `store migrate`, a daemon that finds no schema, a
newer schema, history naming the host, and a clear error when the driver extra is missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import runns
from daemonlab import TASKSERVER, sandbox_env


def config(tmp_path: Path, dsn: str) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({
        "task_server": {"run_as": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                        "state_dir": str(tmp_path / "state")},
        "tenants": {"t": {"login": "app", "store": {"postgresql": dsn},
                          "jobs": {"hello": {"command": ["/bin/echo", "hello"]}}}}}))
    cfg.chmod(0o600)
    return cfg


def ts(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), *args], capture_output=True,
                          text=True, env={**sandbox_env(cfg), **(env or {})}, timeout=120, check=False)


@pytest.fixture
def dsn(pg_server: Any) -> str:
    return str(pg_server.database())


def test_migrate_then_run_and_history_names_the_host(tmp_path: Path, dsn: str) -> None:
    cfg = config(tmp_path, dsn)
    before = ts(cfg, "run", "--once")
    assert before.returncode == 2 and "no taskserver schema" in before.stderr, before.stderr
    assert "taskserver store migrate" in before.stderr and "Traceback" not in before.stderr
    assert "created" in ts(cfg, "store", "migrate").stdout
    assert "current" in ts(cfg, "store", "migrate").stdout  # idempotent
    run_id = ts(cfg, "jobs", "run", "hello").stdout.strip()
    done = ts(cfg, "run", "--once")
    assert done.returncode == 0, done.stderr
    shown = json.loads(ts(cfg, "jobs", "show", run_id, "--json").stdout)
    assert shown["state"] == "OK" and "hello" in shown["output"] and shown["host"]
    history = ts(cfg, "jobs", "history").stdout
    assert "HOST" in history.splitlines()[0] and shown["host"] in history


def test_a_newer_schema_is_refused(tmp_path: Path, dsn: str) -> None:
    import psycopg

    cfg = config(tmp_path, dsn)
    ts(cfg, "store", "migrate")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE taskserver_meta SET value='99' WHERE key='schema_version'")
    for args in (("run", "--once"), ("store", "migrate")):
        res = ts(cfg, *args)
        assert res.returncode != 0 and "99" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_without_the_driver_the_error_names_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('psycopg is not installed here')\n")
    cfg = config(tmp_path, "postgresql://nobody@/none?host=/nonexistent")
    res = ts(cfg, "run", "--once", env={"PYTHONPATH": str(blocker)})
    assert res.returncode == 2 and "taskserver[postgresql]" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("dsn", "secret"), [
    ("postgresql://postgres:pw%zz-Secret1@/db?host=/nonexistent", "Secret1"),  # an invalid %-escape
    ("postgresql://postgres:pw@Secret2@nohost.invalid/db", "Secret2"),  # an unescaped @: read as the host
    ("host=/nonexistent dbname=db password='it''s Secret3' port=none", "Secret3"),
])
def test_no_command_shows_the_password(tmp_path: Path, dsn: str, secret: str) -> None:
    """libpq's errors quote what they cannot read (a password with an invalid percent escape, whole) and
    take a password's unescaped @ as part of the host name (shown in every connection error): whatever
    the DSN, no message of any command or of the daemon shows any part of the password."""
    cfg = config(tmp_path, dsn)
    for args in (("check",), ("jobs", "enqueue", "--", "/bin/true"), ("jobs", "history"), ("status",),
                 ("store", "migrate"), ("-v", "run", "--once")):
        res = ts(cfg, *args)
        said = res.stdout + res.stderr
        assert secret not in said and "Traceback" not in said, (args, said)
        assert res.returncode != 0 or args in (("check",), ("status",)), (args, said)
