"""What the commands say must be true: a late "ok" cannot hide a failed run, enabling a tenant without a
login says it still runs nothing, init-config says which file the other commands read, `check -v` tells
whether each `call:` module can be imported as the run's user, and `reload` names the settings that wait
for a restart. All through the real `taskserver` command, real stores and a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from daemonlab import TASKSERVER, Daemon, cli, runs, sandbox_env, wait_for, write_config


def test_ok_after_a_run_ended_err_is_refused_and_the_run_stays_err(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    rid = cli(cfg, "jobs", "enqueue", "--", "sh", "-c", "exit 3").stdout.strip()
    assert Daemon(cfg, "--once").wait() == 0
    proc = cli(cfg, "jobs", "finish", rid, "--status", "ok", check=False)
    assert proc.returncode == 2 and "already ended ERR exit code 3" in proc.stderr, proc.stderr
    assert "hint:" in proc.stderr
    assert [(r["state"], r["reason"], r["exit_code"]) for r in runs(cfg)] == [("ERR", "exit code 3", 3)]
    shown = json.loads(cli(cfg, "jobs", "show", rid, "--json").stdout)
    assert (shown["state"], shown["reason"]) == ("ERR", "exit code 3")


def test_enabling_a_tenant_without_a_login_says_it_runs_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"  # block style: the tenants commands edit the file in place
    cfg.write_text(f"task_server:\n  state_dir: {tmp_path / 'state'}\ntenants:\n  idle:\n    jobs: {{}}\n")
    cfg.chmod(0o600)
    out = cli(cfg, "tenants", "enable", "idle").stdout
    assert "no login, so it runs nothing" in out and "--login USER" in out, out
    out = cli(cfg, "tenants", "enable", "idle", "--login", "someone").stdout
    assert out.startswith("tenant idle: enabled in") and "runs nothing" not in out, out


def test_init_config_names_the_file_other_commands_read(tmp_path: Path) -> None:
    env = sandbox_env(tmp_path / "c.yaml")
    env["HOME"] = str(tmp_path / "home")
    target = tmp_path / "elsewhere" / "ts.yaml"
    proc = subprocess.run([TASKSERVER, "init-config", str(target)], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    default = "/etc/taskserver/taskserver.yaml" if os.geteuid() == 0 else str(
        tmp_path / "home" / ".config" / "taskserver" / "taskserver.yaml")
    assert f"without -c, taskserver commands read {default}" in proc.stdout, proc.stdout
    assert f"-c {target}" in proc.stdout
    (tmp_path / "a-file").write_text("")
    proc = subprocess.run([TASKSERVER, "init-config", str(tmp_path / "a-file" / "x.yaml")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_check_v_tells_whether_each_call_module_imports(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "appjobs.py").write_text("def run():\n    return 0\n")
    jobs = {"mine": {"call": "appjobs:run"}, "gone": {"call": "nosuch.mod:f"}}
    cfg = write_config(tmp_path / "c.yaml", jobs, server={"install_dir": str(app)})
    out = cli(cfg, "check", "-v").stdout
    assert "t/mine: call appjobs:run: importable as" in out, out
    assert "t/gone: call nosuch.mod:f: NOT importable as" in out and "nosuch" in out, out


def test_reload_names_settings_that_wait_for_a_restart(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"tick": {"every": 3600, "command": ["true"]}})
    daemon = Daemon(cfg)
    try:
        wait_for(lambda: "serving" in daemon.text() or daemon.proc.poll() is not None, "the daemon to start")
        assert daemon.proc.poll() is None, daemon.text()
        doc = json.loads(cfg.read_text())
        doc["task_server"]["state_dir"] = str(tmp_path / "state2")
        doc["task_server"]["max_parallel"] = 7
        cfg.write_text(json.dumps(doc))
        proc = cli(cfg, "reload")
        assert "applied only by `taskserver restart`: task_server.state_dir" in proc.stderr, proc.stderr
        assert "max_parallel" not in proc.stderr
        wait_for(lambda: "apply only after a restart: task_server.state_dir" in daemon.text(), "the log line")
        cfg.write_text("task_server: [\n")
        proc = cli(cfg, "reload")
        assert "the daemon keeps its running config" in proc.stderr and ":2:1:" in proc.stderr, proc.stderr
        wait_for(lambda: "reload failed" in daemon.text(), "the failed reload")
        assert daemon.proc.poll() is None
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.stop()
