"""Command-line edges a user meets: global flags after the subcommand, a reader that leaves the pipe early,
and a nonsensical --time-limit. All through the real `taskserver` command."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import runns
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


@pytest.mark.parametrize(("words", "code"), [(["status"], 3), (["check"], 141)])
def test_a_command_whose_reader_is_gone_ends_without_a_word(tmp_path: Path, words: list[str],
                                                             code: int) -> None:
    """Output to a pipe is flushed by the command itself at its end (runtime/cli.py flushed): a reader that
    is already gone ends a command that succeeded with 141, as a reader gone mid-command does, and leaves a
    failure's own code (`status`: 3, not running); never the interpreter's "Exception ignored" and 120.
    `status` is a lean command (ended without the interpreter's teardown), `check` is not."""
    cfg = write_config(tmp_path / "ts.yaml")
    proc = _to_a_gone_reader([*runns.prefix(), TASKSERVER, "-c", str(cfg), *words], cfg)
    assert proc.returncode == code, proc
    assert proc.stderr == "", proc.stderr


def test_the_installers_output_to_a_reader_that_is_gone_ends_it_without_a_word(tmp_path: Path) -> None:
    """`taskserver-install` flushes its own output too (runtime/errors.flushed): `--detect` (read-only) with
    its reader gone exits 141, not the interpreter's "Exception ignored" and 120."""
    installer = str(Path(TASKSERVER).with_name("taskserver-install"))
    proc = _to_a_gone_reader([installer, "--detect"], write_config(tmp_path / "ts.yaml"))
    assert proc.returncode == 141, proc
    assert proc.stderr == "", proc.stderr


def test_a_lean_command_writes_all_it_says_to_a_file_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """Ended without the teardown, a lean command's buffered output still reaches a file (block-buffered,
    unlike a terminal), and its exit code is its own: `status` of a server not running is 3."""
    cfg = write_config(tmp_path / "ts.yaml")
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        proc = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), "status"], stdout=f,
                              stderr=subprocess.PIPE, text=True, env=_buffered(cfg), timeout=60, check=False)
    assert proc.returncode == 3, proc
    assert out.read_text() == f"taskserver not running (config {cfg})\n"


def _buffered(cfg: Path) -> dict[str, str]:
    """The sandbox's environment with stdout block-buffered, as it is for most callers (a pipe, a file)."""
    return {k: v for k, v in sandbox_env(cfg).items() if k != "PYTHONUNBUFFERED"}


def _to_a_gone_reader(argv: list[str], cfg: Path) -> subprocess.CompletedProcess[str]:
    """``argv`` with stdout a pipe nobody reads any more (the flush at its end meets EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, env=_buffered(cfg),
                              timeout=60, check=False)
    finally:
        os.close(write_end)
