"""`taskserver jobs ...` with the real command and daemon: enqueue without and with a daemon, queue order,
status files QUE -> RUN -> OK, `jobs finish` winning over the exit code, list/show/history/run, errors."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest
from daemonlab import TASKSERVER, Daemon, cli, first_line, runs, status_file, wait_for, write_config


def enqueue(cfg: Path, *argv: str, queue: str = "default") -> int:
    return int(cli(cfg, "jobs", "enqueue", "--queue", queue, "--", *argv).stdout)


def show(cfg: Path, run_id: int) -> dict[str, object]:
    out: dict[str, object] = json.loads(cli(cfg, "jobs", "show", str(run_id), "--json").stdout)
    return out


def test_enqueue_without_a_daemon_waits_as_que_and_once_runs_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml")
    script = 'echo "$TASKSERVER_TENANT $TASKSERVER_RUN_ID $1"'
    res = cli(cfg, "jobs", "enqueue", "--", "sh", "-c", script, "-", "an arg")
    rid = int(res.stdout)
    assert "no daemon is running" in res.stderr
    again = json.loads(cli(cfg, "jobs", "enqueue", "--json", "--", "true").stdout)
    assert (again["id"], again["status_file"]) == (rid + 1, str(status_file(cfg, rid + 1)))
    path = status_file(cfg, rid)
    lines = path.read_text().splitlines()
    assert lines[0] == "QUE"
    assert 'argv=["sh", "-c", "echo \\"$TASKSERVER_TENANT $TASKSERVER_RUN_ID $1\\"", "-", "an arg"]' in lines
    assert "queue=default" in lines
    assert show(cfg, rid)["state"] == "QUE"
    assert Daemon(cfg, "--once").wait() == 0
    got = show(cfg, rid)
    assert (got["state"], got["output"]) == ("OK", f"t {rid} an arg\n")
    assert first_line(path) == "OK"


def test_status_file_goes_que_run_ok_and_enqueue_wakes_the_daemon(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml")
    d = Daemon(cfg)
    try:
        wait_for(lambda: "serving" in d.text(), "the daemon to be up")
        go = tmp_path / "go"
        # The idle daemon sleeps far longer than this test waits: only the SIGUSR1 wake-up starts the task.
        script = f'echo "$TASKSERVER_STATUS_FILE"; while [ ! -e {go} ]; do sleep 0.05; done'
        rid = enqueue(cfg, "sh", "-c", script)
        path = status_file(cfg, rid)
        wait_for(lambda: first_line(path) == "RUN", "the status file to say RUN", timeout=20)
        go.touch()
        wait_for(lambda: first_line(path) == "OK", "the status file to say OK")
        assert show(cfg, rid)["output"] == f"{path}\n"
    finally:
        d.stop()


def test_a_queue_runs_one_task_at_a_time_in_order(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", server={"max_parallel": 8})
    trace = tmp_path / "trace"
    ids = [enqueue(cfg, "sh", "-c", f"echo start {i} >> {trace}; sleep 0.1; echo end {i} >> {trace}",
                   queue="q1") for i in range(4)]
    other = enqueue(cfg, "true", queue="q2")
    assert Daemon(cfg, "--once").wait() == 0
    expected = [f"{word} {i}" for i in range(4) for word in ("start", "end")]
    assert trace.read_text().splitlines() == expected
    assert all(show(cfg, i)["state"] == "OK" for i in [*ids, other])


def test_finish_report_wins_over_the_exit_code(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml")
    ts = TASKSERVER
    says_err = enqueue(cfg, "sh", "-c",
                       f'"{ts}" jobs finish "$TASKSERVER_RUN_ID" --status err --message "disk full"; exit 0')
    # no -c, no --tenant, no id: the run's environment names the config, the tenant and the run
    says_ok = enqueue(cfg, "sh", "-c", f'"{ts}" jobs finish --status ok; exit 3')
    assert Daemon(cfg, "--once").wait() == 0
    err = show(cfg, says_err)
    assert (err["state"], err["reason"], err["message"]) == ("ERR", "reported", "disk full")
    assert err["exit_code"] == 0
    ok = show(cfg, says_ok)
    assert (ok["state"], ok["reason"], ok["exit_code"]) == ("OK", None, 3)
    assert first_line(status_file(cfg, says_err)) == "ERR"
    assert first_line(status_file(cfg, says_ok)) == "OK"


def test_finish_of_a_waiting_task_settles_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml")
    rid = enqueue(cfg, "false")
    cli(cfg, "jobs", "finish", str(rid), "--status", "ok", "--message", "done by hand")
    assert first_line(status_file(cfg, rid)) == "OK"
    assert Daemon(cfg, "--once").wait() == 0
    assert (show(cfg, rid)["state"], show(cfg, rid)["started"]) == ("OK", None)  # never ran


def test_list_history_show_and_run(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg.yaml",
        {"report": {"every": 3600, "command": ["echo", "report"]}, "adhoc": {"command": ["echo", "adhoc"]}},
        extra_tenants={"idle": {"jobs": {"never": {"every": 60, "command": ["true"]}}}})
    started = json.loads(cli(cfg, "jobs", "run", "report", "--tenant", "t", "--json").stdout)
    rid = started["id"]
    assert (started["tenant"], started["status_file"]) == ("t", str(status_file(cfg, rid)))
    assert Daemon(cfg, "--once").wait() == 0
    listed = {(r["tenant"], r["job"]): r for r in json.loads(cli(cfg, "jobs", "list", "--json").stdout)}
    assert listed["t", "report"]["last"]["id"] == rid
    assert listed["t", "report"]["next_due"] is not None and listed["t", "report"]["runs"]
    assert listed["t", "adhoc"]["trigger"] == "on demand" and listed["t", "adhoc"]["last"] is None
    assert listed["idle", "never"]["runs"] is False
    assert "no login" in listed["idle", "never"]["note"]
    lines = cli(cfg, "jobs", "list").stdout.splitlines()
    assert lines[0].split()[:3] == ["TENANT", "JOB", "TRIGGER"]  # a header, then one aligned row per job
    idle = next(ln for ln in lines if ln.split()[:2] == ["idle", "never"])
    assert "tenant has no login" in idle and idle.index("every") == lines[0].index("TRIGGER")
    hist = json.loads(cli(cfg, "jobs", "history", "report", "--tenant", "t", "--json").stdout)
    assert [(h["id"], h["state"]) for h in hist] == [(rid, "OK")]
    assert "report" in cli(cfg, "jobs", "history", "--tenant", "t").stdout
    shown = cli(cfg, "jobs", "show", str(rid), "--tenant", "t").stdout
    assert "state: OK" in shown and "report\n" in shown
    assert [r["id"] for r in runs(cfg)] == [rid]


def test_bad_input_is_one_line_with_a_hint_and_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", extra_tenants={"idle": {"jobs": {}}})
    cases = [
        (["jobs", "enqueue", "--tenant", "idle", "--", "true"], "has no login", "enable idle --login"),
        (["jobs", "enqueue", "--tenant", "nope", "--", "true"], "no tenant 'nope'", "--tenant"),
        (["jobs", "run", "--tenant", "t", "missing"], "no job 'missing'", "jobs list"),
        (["jobs", "history", "--tenant", "t", "missing", "--json"], "no job 'missing'", "jobs list"),
        (["jobs", "show", "--tenant", "t", "99"], "no run 99", "jobs history"),
        (["jobs", "finish", "--tenant", "t", "99", "--status", "ok"], "no run", "hint"),
    ]
    for args, error, hint in cases:
        res = cli(cfg, *args, check=False)
        assert res.returncode == 2, (args, res.stderr)
        err_lines = res.stderr.splitlines()
        assert error in err_lines[0] and hint in err_lines[1], (args, res.stderr)


def test_root_cli_writes_the_store_as_the_run_as_user(tmp_path: Path) -> None:
    """As root with run_as: nobody, what `jobs enqueue` creates stays usable by the dropped daemon."""
    if os.geteuid() != 0:
        pytest.skip("needs root: switches to the user nobody")
    base = Path(tempfile.mkdtemp(prefix="taskserver-runas-"))  # tmp_path is private to root
    try:
        base.chmod(0o755)
        cfg = write_config(base / "cfg.yaml", server={"run_as": "nobody"})
        rid = enqueue(cfg, "sh", "-c", "id -un")
        assert (base / "state" / "t.sqlite").stat().st_uid == pwd.getpwnam("nobody").pw_uid
        d = Daemon(cfg, "--once")
        assert d.wait() == 0, d.text()
        assert (show(cfg, rid)["state"], show(cfg, rid)["output"]) == ("OK", "nobody\n")
    finally:
        shutil.rmtree(base)
