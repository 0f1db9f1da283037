"""Command-line edges a user meets: global flags after the subcommand, a reader that leaves the pipe early,
and a nonsensical --time-limit. All through the real `taskserver` command."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from daemonlab import TASKSERVER, cli, sandbox_env, write_config

from taskserver.runtime.model import TenantDef
from taskserver.runtime.sqlite_store import open_sqlite


def test_verbose_after_the_subcommand_is_the_global_flag(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ts.yaml")
    proc = cli(cfg, "run", "--once", "-v")
    assert proc.returncode == 0
    assert "DEBUG" in proc.stderr, proc.stderr


def test_words_after_double_dash_are_left_to_the_enqueued_command(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ts.yaml")
    task_id = cli(cfg, "jobs", "enqueue", "--", "/bin/echo", "-v", "--debug").stdout.strip()
    shown = cli(cfg, "jobs", "show", task_id).stdout
    assert "/bin/echo -v --debug" in shown or "'/bin/echo', '-v', '--debug'" in shown, shown


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ts.yaml")
    store = open_sqlite(TenantDef(name="t", login="x"), tmp_path / "state")
    now = time.time()
    with store.batch():
        for _ in range(3000):  # far more than a pipe buffer holds once printed
            store.add("", argv=["/bin/true", "x" * 40], now=now)
    env = sandbox_env(cfg)
    proc = subprocess.Popen([TASKSERVER, "-c", str(cfg), "jobs", "history", "--json", "--limit", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert "Traceback" not in err, err
    assert code in (0, 141)


def test_time_limit_must_be_positive(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ts.yaml")
    proc = cli(cfg, "run", "--time-limit", "-5", check=False)
    assert proc.returncode == 2
    assert "above 0" in proc.stderr
