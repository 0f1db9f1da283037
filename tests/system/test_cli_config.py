"""The real `taskserver` command: check exit codes and messages, init-config, tenants edits."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

TASKSERVER = str(Path(sys.executable).parent / "taskserver")


def ts(cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TASKSERVER_CONFIG"}
    # pid file and default state dir in the test's own directory, never the host's /run or /var/lib
    for var in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        env[var] = str(cfg.parent / var.lower())
    return subprocess.run([TASKSERVER, "-c", str(cfg), *argv], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_init_config_then_check_ok(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "c.yaml"
    r = ts(cfg, "init-config")
    assert r.returncode == 0, r.stderr
    assert cfg.stat().st_mode & 0o7777 == 0o644
    r = ts(cfg, "check")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"{cfg}: OK (1 tenant(s), 3 job(s))\n"
    r = ts(cfg, "-v", "check")
    assert "  example/nightly-report: next " in r.stdout and "02:30+00:00" in r.stdout
    assert "  example/rebuild-index: next when enqueued" in r.stdout
    before = cfg.read_bytes()
    r = ts(cfg, "init-config")
    assert r.returncode == 2 and "already exists; not overwriting it" in r.stderr
    assert cfg.read_bytes() == before


def test_check_reports_every_error_with_position_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tenants:\n  a:\n    jobs:\n      j:\n        every: soon\n        comand: [x]\n")
    r = ts(cfg, "check")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"taskserver: error: {cfg}:4:7: tenants.a.jobs.j: a job needs command: (an argv list) or call: "
        "(module:function)",
        'taskserver: hint: add e.g. command: ["/usr/local/bin/report"] or call: "myapp.jobs:cleanup"',
        f"taskserver: error: {cfg}:5:16: tenants.a.jobs.j.every: expected a duration, got the text 'soon'",
        "taskserver: hint: write a duration like 90s, 5m, 1h30m, 2d (or a plain number of seconds)",
        f"taskserver: error: {cfg}:6:9: tenants.a.jobs.j: unknown key 'comand'",
        "taskserver: hint: did you mean 'command'?",
    ]
    assert "Traceback" not in r.stderr


def test_check_yaml_syntax_error_and_unsafe_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tenants:\n  a: [1\n")
    r = ts(cfg, "check")
    assert r.returncode == 2 and r.stderr.startswith(f"taskserver: error: {cfg}:3:1: ")
    cfg.write_text("tenants: {}\n")
    cfg.chmod(0o666)
    r = ts(cfg, "check")
    assert r.returncode == 2 and "writable by group or others" in r.stderr


def test_check_missing_file_given_with_c_is_an_error(tmp_path: Path) -> None:
    r = ts(tmp_path / "none.yaml", "check")
    assert r.returncode == 2 and "does not exist" in r.stderr and "init-config" in r.stderr


def test_tenants_enable_disable_list(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    assert ts(cfg, "init-config").returncode == 0
    original = cfg.read_text()
    r = ts(cfg, "tenants", "enable", "example", "--login", "nobody")
    assert r.returncode == 0, r.stderr
    r = ts(cfg, "tenants", "enable", "second", "--login", "daemon")
    assert r.returncode == 0, r.stderr
    r = ts(cfg, "tenants", "disable", "example")
    assert r.returncode == 0, r.stderr
    r = ts(cfg, "tenants", "list")
    rows = [line.split()[:4] for line in r.stdout.splitlines()]
    assert rows == [["TENANT", "LOGIN", "STATE", "JOBS"], ["example", "nobody", "disabled", "3"],
                    ["second", "daemon", "enabled", "0"]]
    # every original line is still there, in order; four lines were added
    added = cfg.read_text().splitlines()
    kept = iter(added)
    assert all(line in kept for line in original.splitlines())
    assert len(added) == len(original.splitlines()) + 4
    r = ts(cfg, "tenants", "disable", "nope")
    assert r.returncode == 2 and "no tenant 'nope'" in r.stderr
    r = ts(cfg, "tenants", "enable", "x", "--login", "bad user")
    assert r.returncode == 2 and "is not a user name" in r.stderr
    assert ts(cfg, "check").returncode == 0


def test_check_reads_a_postgresql_store_offline(tmp_path: Path) -> None:
    """check validates a shared store's DSN without connecting, and names the extra when the driver is
    missing; a bad DSN is an error at the store's place."""
    cfg = tmp_path / "c.yaml"
    head = "tenants:\n  t:\n    login: app\n    store: "
    cfg.write_text(head + '{postgresql: "dbname=x host=/nonexistent"}\n')
    assert ts(cfg, "check").returncode == 0
    cfg.write_text(head + '{postgresql: "dbname=\'x"}\n')
    r = ts(cfg, "check")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"taskserver: error: {cfg}:4:12: tenants.t.store"), r.stderr
    assert "Traceback" not in r.stderr


def test_a_config_path_that_is_not_utf8_is_refused_by_every_command(tmp_path: Path) -> None:
    """The path's bytes come as lone surrogates: `run` and `start` failed with an internal error (the pid
    file, the log and the info file could not hold the name)."""
    cfg = Path(os.fsdecode(bytes(tmp_path) + b"/c\xff.yaml"))
    cfg.write_text(f"task_server:\n  state_dir: {tmp_path}/state\ntenants:\n  t:\n    login: x\n")
    for argv in (["check"], ["run", "--once"], ["start"], ["status"], ["stop"], ["jobs", "list"],
                 ["jobs", "enqueue", "--", "/bin/true"]):
        r = ts(cfg, *argv)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (argv, r)
        assert r.stderr.splitlines()[0].endswith("the config file's path is not UTF-8 text"), (argv, r.stderr)
    assert not (tmp_path / "state").exists()


def test_a_lone_surrogate_is_refused_where_it_stands_by_every_command(tmp_path: Path) -> None:
    # "\ud800" in double quotes is half of a UTF-16 pair: it reached exec, the environment, the store's path
    # and printed an internal error, a traceback or the codec's words, depending on the key it was in
    me = pwd.getpwuid(os.geteuid()).pw_name
    job = "      a:\n        command: [/bin/true]\n"
    places = {
        "command": '      a:\n        command: [/bin/true, "x\\ud800"]\n',
        "notify command": job + '        notify: [{command: [/bin/echo, "\\udfff"]}]\n',
        "environment": job + '        environment: {X: "\\ud800"}\n',
        "env_file": job + '        env_file: "/etc/\\ud800"\n',
        "job name": '      "a\\ud800":\n        command: [/bin/true]\n',
        "store": job + '    store: {sqlite: "\\U0000DC00.db"}\n',
    }
    for what, jobs in places.items():
        cfg = tmp_path / f"{what.replace(' ', '_')}.yaml"
        text = (f"task_server:\n  state_dir: {tmp_path / 's'}\ntenants:\n  t:\n    login: {me}\n"
                f"    jobs:\n{jobs}")
        cfg.write_text(text)
        quote = text.rindex('"', 0, text.index("\\"))  # the double-quoted value's place
        line, col = text.count("\n", 0, quote) + 1, quote - text.rindex("\n", 0, quote)
        for argv in (["check"], ["jobs", "run", "a"], ["run", "--once"]):
            r = ts(cfg, *argv)
            assert r.returncode == 2, (what, argv, r.stderr)
            first, hint = r.stderr.splitlines()[:2]
            at = f"taskserver: error: {cfg}:{line}:{col}: "
            assert first.startswith(f"{at}a value that is not valid text"), (what, argv, r.stderr)
            assert hint.startswith("taskserver: hint: \\ud800-\\udfff are halves of a UTF-16 pair"), r.stderr
            assert "Traceback" not in r.stderr and "codec" not in r.stderr
    cfg = tmp_path / "state_dir.yaml"
    cfg.write_text('task_server:\n  state_dir: "/var/lib/\\ud800"\n')
    r = ts(cfg, "check")
    assert r.returncode == 2 and f"{cfg}:2:14: a value that is not valid text" in r.stderr, r.stderr


def test_an_interval_too_small_to_schedule_is_refused_by_check_and_run(tmp_path: Path) -> None:
    # every: 5e-324 passed check and then spun the daemon at 100% CPU (a zero timedelta), deaf to SIGTERM;
    # 1e-300 and 0.0000004 ended `run` with a ZeroDivisionError
    me = pwd.getpwuid(os.geteuid()).pw_name
    for every in ("5e-324", "1e-300", "0.0000004", "0.0009"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"task_server:\n  state_dir: {tmp_path / 's'}\ntenants:\n  t:\n    login: {me}\n"
                       f"    jobs:\n      a:\n        command: [/bin/true]\n        every: {every}\n")
        for argv in (["check"], ["run", "--once"]):
            r = ts(cfg, *argv)
            assert r.returncode == 2, (every, argv, r.stderr)
            assert r.stderr.startswith(f"taskserver: error: {cfg}:9:16: tenants.t.jobs.a.every: expected 0 "
                                       "or a duration of at least 1ms"), r.stderr
            assert "Traceback" not in r.stderr
