"""`taskserver start|stop|restart|reload|status` as an LSB init script would behave, on the real command."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Sandbox, wait_for


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.cleanup()


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_start_status_stop_exit_codes(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"  # no file: the embedded default
    st = box.ts(cfg, "status")
    assert st.returncode == 3, st
    assert "not running" in st.stdout

    started = box.ts(cfg, "start")
    assert started.returncode == 0, started.stderr
    assert "started (pid" in started.stdout
    pid = box.pid_of(cfg)
    assert _alive(pid)

    st = box.ts(cfg, "status")
    assert st.returncode == 0, st
    assert st.stdout.count("\n") == 1  # one line
    assert f"pid {pid}" in st.stdout and "up " in st.stdout
    assert "default runs nothing" in st.stdout  # the embedded tenant has no login

    again = box.ts(cfg, "start")
    assert again.returncode == 0
    assert f"already running (pid {pid})" in again.stdout

    stopped = box.ts(cfg, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not _alive(pid)
    assert box.ts(cfg, "status").returncode == 3
    assert box.ts(cfg, "stop").returncode == 0  # stopping a stopped server is success


def test_daemon_is_detached_and_logs_to_the_state_dir(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    # setsid: its own session, not ours; double fork: not our child, not a session leader
    assert os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) != pid
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    log = Path(os.readlink(f"/proc/{pid}/fd/2"))
    assert log.is_relative_to(box.state_dir) and log.suffix == ".log"
    assert f"taskserver {pid} started" in log.read_text()


def test_stale_pid_file_is_status_1_and_stop_cleans_it(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: box.ts(cfg, "status").returncode == 1)
    st = box.ts(cfg, "status")
    assert f"pid {pid} is gone" in st.stdout
    assert box.ts(cfg, "reload").returncode == 7
    stop = box.ts(cfg, "stop")
    assert stop.returncode == 0 and "stale" in stop.stdout
    assert box.ts(cfg, "status").returncode == 3


def test_reload_exit_codes(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "reload").returncode == 7
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    rl = box.ts(cfg, "reload")
    assert rl.returncode == 0, rl.stderr
    # SIGHUP reloads and does not end the daemon (its default action would): a second reload reaches the
    # same live pid, and stop finds it running rather than a stale pid file
    assert box.ts(cfg, "reload").returncode == 0
    stop = box.ts(cfg, "stop")
    assert stop.returncode == 0 and f"stopped (pid {pid})" in stop.stdout


def test_restart_gives_a_new_pid(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "restart").returncode == 0  # restart of a stopped server starts it
    first = box.pid_of(cfg)
    assert box.ts(cfg, "restart").returncode == 0
    second = box.pid_of(cfg)
    assert second != first and not _alive(first)


def test_second_daemon_on_the_same_config_refuses(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    second = box.ts(cfg, "run", "--time-limit", "5")
    assert second.returncode == 1
    assert f"already running as pid {pid}" in second.stderr
    assert _alive(pid)


def test_foreground_run_excludes_start(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    fg = box.popen(cfg, "run")
    try:
        assert wait_for(lambda: box.ts(cfg, "status").returncode == 0)
        start = box.ts(cfg, "start")
        assert start.returncode == 0 and f"already running (pid {fg.pid})" in start.stdout
    finally:
        fg.send_signal(signal.SIGTERM)
        assert fg.wait(30) == 0


def test_two_configs_are_two_servers(box: Sandbox) -> None:
    a, b = box.base / "a.yaml", box.base / "b.yaml"
    assert box.ts(a, "start").returncode == 0
    assert box.ts(b, "start").returncode == 0
    pa, pb = box.pid_of(a), box.pid_of(b)
    assert pa != pb and _alive(pa) and _alive(pb)
    assert box.pidfile(a).read_text() == f"{pa}\n" and box.pidfile(b).read_text() == f"{pb}\n"
    assert box.ts(a, "stop").returncode == 0
    assert box.ts(b, "status").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="changes root's (private, see runns.py) pid directory")
def test_unsafe_pid_directory_is_refused(box: Sandbox) -> None:
    cfg = box.base / "a.yaml"
    box.run_dir.chmod(0o777)
    try:
        res = box.ts(cfg, "start")
        assert res.returncode == 2
        assert "unsafe pid file directory" in res.stderr and "hint:" in res.stderr
        assert box.ts(cfg, "status").returncode == 2  # nothing found there is believed
    finally:
        box.run_dir.chmod(0o755)
    assert box.ts(cfg, "status").returncode == 3


def test_pid_file_symlink_is_not_followed(box: Sandbox, tmp_path: Path) -> None:
    cfg = box.base / "a.yaml"
    assert box.ts(cfg, "start").returncode == 0
    pidfile = box.pidfile(cfg)
    assert box.ts(cfg, "stop").returncode == 0
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pidfile.unlink(missing_ok=True)
    pidfile.symlink_to(victim)
    res = box.ts(cfg, "start")
    assert res.returncode != 0
    assert victim.read_text() == "precious\n"


def _tenant_config(path: Path, jobs: int) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    lines = [
        f"task_server:\n  run_as: {me}\n  state_dir: {path.parent / 'srv-state'}\n",
        "tenants:\n  idle:\n    timezone: UTC\n",
        f"  acme:\n    login: {me}\n    jobs:\n",
    ]
    job = '        cron: "0 3 * * *"\n        command: ["/bin/true"]\n'
    lines += [f"      j{i}:\n{job}" for i in range(jobs)]
    path.write_text("".join(lines))
    path.chmod(0o644)


def test_status_lists_tenants_and_follows_reload(box: Sandbox) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    cfg = box.base / "t.yaml"
    _tenant_config(cfg, 1)
    assert box.ts(cfg, "start").returncode == 0
    st = box.ts(cfg, "status")
    assert "idle runs nothing (no login)" in st.stdout and f"acme ({me}, 1 job)" in st.stdout, st.stdout
    _tenant_config(cfg, 3)
    assert box.ts(cfg, "reload").returncode == 0
    assert wait_for(lambda: f"acme ({me}, 3 jobs)" in box.ts(cfg, "status").stdout)
    # status reads what the daemon published, not the file: a broken edit does not break status
    cfg.write_text("tenants: [this is not valid\n")
    st = box.ts(cfg, "status")
    assert st.returncode == 0 and "3 jobs" in st.stdout, st


def test_bad_config_fails_start_and_run_with_its_location(box: Sandbox) -> None:
    cfg = box.base / "bad.yaml"
    cfg.write_text("task_server:\n  max_parallel: many\n")
    cfg.chmod(0o644)
    for cmd in ("start", "run"):
        res = box.ts(cfg, cmd)
        assert res.returncode == 2, res
        assert f"{cfg}:2:" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert box.ts(cfg, "status").returncode == 3


def test_failure_after_the_fork_reaches_the_caller(box: Sandbox) -> None:
    """The daemon fails after detaching (its state dir cannot be made): start says why, through the pipe."""
    blocker = box.base / "a-file"
    blocker.write_text("")
    cfg = box.base / "s.yaml"
    cfg.write_text(f"task_server:\n  state_dir: {blocker / 'state'}\n")
    cfg.chmod(0o644)
    res = box.ts(cfg, "start")
    assert res.returncode == 2, res
    assert "start failed: state_dir" in res.stderr and "Not a directory" in res.stderr, res.stderr
    assert "hint:" in res.stderr
    assert box.ts(cfg, "status").returncode == 3  # the pid file was released


def test_help_at_every_level_shows_defaults() -> None:
    from daemonproc import TASKSERVER

    top = subprocess.run([TASKSERVER, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "start", "stop", "restart", "reload", "status", "check", "jobs"):
        assert f"    {cmd} " in top, cmd
    run = subprocess.run([TASKSERVER, "run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--once" in run and "--time-limit S" in run and "default: no limit" in run
    stop = subprocess.run([TASKSERVER, "stop", "--help"], capture_output=True, text=True, check=True).stdout
    assert "stop_timeout (default 30s)" in stop


def test_install_dir_is_the_daemons_working_directory(box: Sandbox) -> None:
    app = box.base / "app"
    app.mkdir()
    cfg = box.base / "i.yaml"
    cfg.write_text(f"task_server:\n  install_dir: {app}\n  debug: true\n")
    cfg.chmod(0o644)
    assert box.ts(cfg, "start").returncode == 0
    pid = box.pid_of(cfg)
    assert os.readlink(f"/proc/{pid}/cwd") == str(app)
    log = Path(os.readlink(f"/proc/{pid}/fd/2"))
    assert " DEBUG " in log.read_text()  # task_server.debug turns on debug logging
    plain = box.base / "a.yaml"
    assert box.ts(plain, "start").returncode == 0
    assert os.readlink(f"/proc/{box.pid_of(plain)}/cwd") == "/"  # never holds the caller's directory
