"""The real daemon (`taskserver run` as a subprocess) against a real SQLite store: crash marking after
kill -9, SIGTERM interrupting runs, SIGHUP reload, --once, --time-limit, the memory limit, catch-up."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

from daemonlab import Daemon, cli, first_line, kill_group, me, runs, status_file, wait_for, write_config


def enqueue(cfg: Path, *argv: str, queue: str = "default") -> int:
    return int(cli(cfg, "jobs", "enqueue", "--queue", queue, "--", *argv).stdout)


def run_of(cfg: Path, run_id: int) -> dict[str, object]:
    return next(r for r in runs(cfg) if r["id"] == run_id)


def test_kill_9_during_a_run_is_found_crashed_at_the_next_start(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml")
    rid = enqueue(cfg, "sleep", "300")
    d = Daemon(cfg)
    try:
        wait_for(lambda: run_of(cfg, rid)["state"] == "RUN" and run_of(cfg, rid)["pid"], "the task to run")
        d.signal(signal.SIGKILL)
        d.wait()
    finally:
        d.stop()
        kill_group(run_of(cfg, rid)["pid"])  # type: ignore[arg-type]
    assert run_of(cfg, rid)["state"] == "RUN"  # nobody was there to record the end
    again = Daemon(cfg, "--once")
    assert again.wait() == 0, again.text()
    run = run_of(cfg, rid)
    assert (run["state"], run["reason"]) == ("ERR", "crashed")
    assert first_line(status_file(cfg, rid)) == "ERR"


def test_sigterm_interrupts_a_run_after_stop_timeout_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", server={"stop_timeout": 0.2})
    rid = enqueue(cfg, "sleep", "300")
    d = Daemon(cfg)
    try:
        wait_for(lambda: run_of(cfg, rid)["state"] == "RUN", "the task to run")
        d.signal(signal.SIGTERM)
        assert d.wait() == 0, d.text()
    finally:
        d.stop()
    run = run_of(cfg, rid)
    assert (run["state"], run["reason"]) == ("ERR", "interrupted")
    assert "stop timeout: interrupting 1 runs" in d.text()


def test_sigterm_lets_a_run_finish_within_stop_timeout(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", server={"stop_timeout": 300})
    go = tmp_path / "go"
    rid = enqueue(cfg, "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done; echo finished")
    d = Daemon(cfg)
    try:
        wait_for(lambda: run_of(cfg, rid)["state"] == "RUN", "the task to run")
        d.signal(signal.SIGTERM)
        wait_for(lambda: "stopping (signal SIGTERM)" in d.text(), "the daemon to take the signal")
        go.touch()
        assert d.wait() == 0, d.text()
    finally:
        d.stop()
    run = run_of(cfg, rid)
    assert (run["state"], run["output"]) == ("OK", "finished\n")


def test_sighup_adds_changes_and_removes_jobs_without_dropping_runs(tmp_path: Path) -> None:
    every = {"every": 0.2, "command": ["true"]}
    cfg = write_config(tmp_path / "cfg.yaml", {"gone": every, "stays": {**every, "every": 3600}})
    go = tmp_path / "go"
    d = Daemon(cfg)
    try:
        wait_for(lambda: any(r["job"] == "gone" for r in runs(cfg)), "job `gone` to run")
        long_task = enqueue(cfg, "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done")
        wait_for(lambda: run_of(cfg, long_task)["state"] == "RUN", "the long task to run")
        # change `stays` (hourly -> 0.2 s), remove `gone`, add `new`
        write_config(cfg, {"stays": every, "new": every})
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in d.text(), "the reload")
        assert "added t/new; changed t/stays; removed t/gone" in d.text()

        def count(job: str) -> int:
            return sum(r["job"] == job for r in runs(cfg))

        wait_for(lambda: count("new") >= 2 and count("stays") >= 2, "the added and changed jobs to run")
        gone = count("gone")
        new = count("new")
        wait_for(lambda: count("new") >= new + 3, "more runs of `new`")
        assert count("gone") == gone  # removed: no run started since
        go.touch()
        wait_for(lambda: run_of(cfg, long_task)["state"] == "OK", "the long task to finish")
    finally:
        d.stop()
    assert d.wait() == 0


def test_once_runs_what_is_due_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"hourly": {"every": 3600, "command": ["true"]},
                                               "manual": {"command": ["echo", "by hand"]}})
    tasks = [enqueue(cfg, "echo", str(i)) for i in range(3)]
    manual = int(cli(cfg, "jobs", "run", "manual").stdout)
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()
    for i, rid in enumerate(tasks):
        assert (run_of(cfg, rid)["state"], run_of(cfg, rid)["output"]) == ("OK", f"{i}\n")
    assert run_of(cfg, manual)["output"] == "by hand\n"
    assert not any(r["job"] == "hourly" for r in runs(cfg))  # not due: first seen now


def test_time_limit_stops_taking_work_and_lets_runs_finish(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": 0.2, "command": ["true"]}})
    go = tmp_path / "go"
    rid = enqueue(cfg, "sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done")
    d = Daemon(cfg, "--time-limit", "2")  # long enough for a loaded machine to start the task first
    try:
        wait_for(lambda: run_of(cfg, rid)["state"] == "RUN", "the task to start")
        wait_for(lambda: "time limit reached" in d.text(), "the time limit")
        ticks = sum(r["job"] == "tick" for r in runs(cfg))
        assert d.proc.poll() is None  # still waiting for the running task
        go.touch()
        assert d.wait() == 0, d.text()
    finally:
        d.stop()
    assert run_of(cfg, rid)["state"] == "OK"
    assert sum(r["job"] == "tick" for r in runs(cfg)) == ticks  # no new work after the limit
    job_file = tmp_path / "state" / "status" / "t" / "tick.job"  # a scheduled job's file: its last run
    last_tick = max(r["id"] for r in runs(cfg) if r["job"] == "tick")
    assert first_line(job_file) == "OK" and f"id={last_tick}\n" in job_file.read_text()
    assert not any(r["state"] in ("RUN", "QUE") for r in runs(cfg))


def test_memory_limit_ends_the_daemon_with_0(tmp_path: Path) -> None:
    # The smallest limit (32M) is above the daemon's own size: the run's 48 MB of output it holds
    # (output_tail) takes it over.
    cfg = write_config(tmp_path / "cfg.yaml", server={"memory_limit": "32M", "output_tail": "64M"})
    rid = enqueue(cfg, "head", "-c", str(48 << 20), "/dev/zero")
    d = Daemon(cfg)
    assert d.wait() == 0, d.text()
    assert "memory limit" in d.text()
    # Checked between jobs: the run that took it over the limit ends and is recorded before the daemon does.
    assert run_of(cfg, rid)["state"] == "OK"


def test_catch_up_after_downtime_records_missed_runs(tmp_path: Path) -> None:
    jobs = {name: {"every": 600, "command": ["true"], "catch_up": name} for name in ("latest", "skip", "all")}
    cfg = write_config(tmp_path / "cfg.yaml", jobs)
    assert Daemon(cfg, "--once").wait() == 0  # first start: the jobs are known from now on
    # An hour of downtime: six due times every 600 s after the last known one, the newest 90 s ago.
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:
        db.execute("UPDATE jobs SET last_due = ?", (time.time() - 3690,))
    db.close()
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()

    def outcome(job: str) -> tuple[int, int]:
        mine = [r for r in runs(cfg) if r["job"] == job]
        return (sum(r["state"] == "OK" for r in mine),
                sum((r["state"], r["reason"]) == ("ERR", "missed") for r in mine))

    assert outcome("latest") == (1, 5)
    assert outcome("skip") == (0, 6)
    assert outcome("all") == (6, 0)
    assert "missed runs recorded" in d.text()


def test_timeout_and_retry_in_the_daemon(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {
        "slow": {"command": ["sleep", "300"], "timeout": 0.3, "retries": {"count": 1, "backoff": 0.1}}})
    cli(cfg, "jobs", "run", "slow")
    d = Daemon(cfg)
    try:
        wait_for(lambda: [(r["state"], r["reason"], r["attempt"]) for r in runs(cfg)]
                 == [("ERR", "timeout", 0), ("ERR", "timeout", 1)], "a timeout and one retry")
    finally:
        d.stop()


def test_retries_back_off_exponentially_then_stop(tmp_path: Path) -> None:
    flaky = {"command": ["false"], "retries": {"count": 2, "backoff": 0.4}}
    cfg = write_config(tmp_path / "cfg.yaml", {"flaky": flaky})
    cli(cfg, "jobs", "run", "flaky")
    d = Daemon(cfg)

    def three_done() -> list[dict[str, object]] | None:
        got = runs(cfg)
        return got if len(got) == 3 and got[-1]["finished"] else None

    try:
        got = wait_for(three_done, "two retries")
        assert "retry 2 in" in d.text()
    finally:
        d.stop()
    assert [(r["state"], r["reason"], r["attempt"]) for r in got] == [("ERR", "exit code 1", n)
                                                                     for n in range(3)]
    # backoff, then twice that: a lower bound only (a retry is never early), no timing of the machine
    assert got[1]["started"] - got[0]["finished"] >= 0.4
    assert got[2]["started"] - got[1]["finished"] >= 0.8
    assert len(runs(cfg)) == 3  # count 2: no third retry


def test_a_thousand_retries_without_backoff_do_not_end_the_daemon(tmp_path: Path) -> None:
    """The backoff doubled per retry overflowed a float after 1,024 of them and ended the daemon."""
    flaky = {"command": ["false"], "retries": {"count": 1100, "backoff": 0}}
    cfg = write_config(tmp_path / "cfg.yaml", {"flaky": flaky})
    cli(cfg, "jobs", "run", "flaky")
    d = Daemon(cfg)
    try:
        wait_for(lambda: len(runs(cfg)) == 1101 and runs(cfg)[-1]["finished"], "1,100 retries", timeout=120)
        assert d.proc.poll() is None, d.text()
    finally:
        d.stop()
    assert "internal error" not in d.text()
    assert [r["attempt"] for r in runs(cfg)] == list(range(1101))


def test_a_command_whose_bytes_are_not_utf8_is_recorded_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """Anyone who may enqueue could end the daemon: a program named by bytes that are not UTF-8 failed to
    spawn, and its message (naming the program, a lone surrogate in Python) could not be stored."""
    cfg = write_config(tmp_path / "cfg.yaml")
    missing = enqueue(cfg, os.fsdecode(b"/no/such/\xff"))
    ran = enqueue(cfg, "printf", "%s\n", os.fsdecode(b"caf\xe9"))
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()
    assert "internal error" not in d.text()
    failed = run_of(cfg, missing)
    assert (failed["state"], failed["reason"]) == ("ERR", "spawn failed")
    assert "/no/such/\\udcff" in str(failed["output"]), failed["output"]
    assert first_line(status_file(cfg, missing)) == "ERR"
    assert run_of(cfg, ran)["state"] == "OK"
    cli(cfg, "jobs", "finish", "--status", "err", "--message", os.fsdecode(b"\xff"), str(ran))
    assert run_of(cfg, ran)["message"] == "\\udcff"


def test_tenant_without_login_runs_nothing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"mine": {"every": 0.2, "command": ["true"]}},
                       extra_tenants={"idle": {"jobs": {"theirs": {"every": 0.2, "command": ["true"]}}}})
    d = Daemon(cfg)
    try:
        wait_for(lambda: len(runs(cfg)) >= 3, "tenant t's job to run a few times")
    finally:
        d.stop()
    assert d.wait() == 0
    assert "tenant idle has no login: it runs nothing (1 jobs)" in d.text()
    assert not (tmp_path / "state" / "idle.sqlite").exists()


def test_a_scheduled_run_sees_its_status_file_and_environment(tmp_path: Path) -> None:
    script = ('head -1 "$TASKSERVER_STATUS_FILE"; '
              'echo "$TASKSERVER_TENANT/$TASKSERVER_JOB/$TASKSERVER_LOGIN/$TASKSERVER_RUN_ID"')
    cfg = write_config(tmp_path / "cfg.yaml", {"env": {"every": 3600, "command": ["sh", "-c", script]}})
    rid = int(cli(cfg, "jobs", "run", "env").stdout)
    assert Daemon(cfg, "--once").wait() == 0
    run = run_of(cfg, rid)
    assert run["output"] == f"RUN\nt/env/{me()}/{rid}\n"
    assert first_line(status_file(cfg, rid)) == "OK"  # came through the queue: the file stays


def overlap(trace: Path) -> int:
    """The most runs that were going at once, from a trace of `start X` / `end X` lines."""
    going = most = 0
    for line in trace.read_text().splitlines():
        going += 1 if line.startswith("start") else -1
        most = max(most, going)
    return most


def test_max_parallel_is_respected(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", server={"max_parallel": 2})
    trace = tmp_path / "trace"
    for i in range(6):  # six queues: only max_parallel holds them back
        enqueue(cfg, "sh", "-c", f"echo start >> {trace}; sleep 0.2; echo end >> {trace}", queue=f"q{i}")
    assert Daemon(cfg, "--once").wait() == 0
    assert overlap(trace) == 2
    assert [r["state"] for r in runs(cfg)] == ["OK"] * 6


def test_a_job_never_overlaps_itself(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    script = f"echo start >> {trace}; sleep 0.5; echo end >> {trace}"
    cfg = write_config(tmp_path / "cfg.yaml", {"slow": {"every": 0.1, "command": ["sh", "-c", script]}})
    d = Daemon(cfg)
    try:
        wait_for(lambda: sum(r["state"] == "OK" for r in runs(cfg)) >= 3, "three runs of the slow job")
    finally:
        d.stop()
    assert overlap(trace) == 1
    missed = [r for r in runs(cfg) if r["reason"] == "missed"]
    notes = [r["message"] for r in missed]
    # each note names a true cause: mostly the run still going; on a loaded machine also a due time that
    # was still waiting to start (its predecessor had just ended), or a loop that could not act in time
    still_going = "the previous run was still going"
    true_causes = (still_going, "an earlier due time was still waiting", "the daemon could not act between")
    assert still_going in notes, notes
    assert all(n.startswith(true_causes) for n in notes), notes


def test_housekeeping_at_start_purges_old_history(tmp_path: Path) -> None:
    """The defaults, not set in the config: OK runs are kept 14 days, ERR runs 90 days."""
    cfg = write_config(tmp_path / "cfg.yaml")
    age = {enqueue(cfg, "true"): 15, enqueue(cfg, "true"): 13, enqueue(cfg, "false"): 91,
           enqueue(cfg, "false"): 89}
    assert Daemon(cfg, "--once").wait() == 0
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:
        for run_id, days in age.items():
            db.execute("UPDATE runs SET finished = finished - ? * 86400 WHERE id = ?", (days, run_id))
    db.close()
    d = Daemon(cfg, "--once")
    assert d.wait() == 0
    old_ok, new_ok, old_err, new_err = age
    assert [(r["id"], r["state"]) for r in runs(cfg)] == [(new_ok, "OK"), (new_err, "ERR")]
    assert not status_file(cfg, old_ok).exists() and status_file(cfg, new_ok).exists()
    assert not status_file(cfg, old_err).exists() and status_file(cfg, new_err).exists()
    assert "purged 2 old runs" in d.text()


def test_a_run_killed_by_whoever_stops_the_daemon_is_interrupted(tmp_path: Path) -> None:
    """A supervisor that signals every process (systemd's default KillMode) kills the runs too."""
    cfg = write_config(tmp_path / "cfg.yaml", server={"stop_timeout": 300})
    rid = enqueue(cfg, "sleep", "300")
    d = Daemon(cfg)
    try:
        pid = wait_for(lambda: run_of(cfg, rid)["state"] == "RUN" and run_of(cfg, rid)["pid"],
                       "the task to run")
        d.signal(signal.SIGTERM)
        wait_for(lambda: "stopping (signal SIGTERM)" in d.text(), "the daemon to take the signal")
        os.kill(pid, signal.SIGTERM)
        assert d.wait() == 0, d.text()
    finally:
        d.stop()
    run = run_of(cfg, rid)
    assert (run["state"], run["reason"], run["exit_code"]) == ("ERR", "interrupted", -signal.SIGTERM)


def test_a_long_downtime_is_recorded_bounded_and_summarised(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg.yaml", {"j": {"every": 600, "command": ["true"], "catch_up": "skip"}})
    assert Daemon(cfg, "--once").wait() == 0
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:  # 500 due times missed (every 600 s for ~3.5 days), the newest 90 s ago
        db.execute("UPDATE jobs SET last_due = ?", (time.time() - 500 * 600 - 90,))
    db.close()
    assert Daemon(cfg, "--once").wait() == 0
    missed = [r for r in runs(cfg) if r["reason"] == "missed"]
    summaries = [r for r in missed if "(summarised)" in (r["message"] or "")]
    assert len(summaries) == 1 and len(missed) < 500  # a row per listed due time, one for the rest
    counted = int(summaries[0]["message"].split()[0])
    assert counted + len(missed) - 1 == 500  # every one of them accounted for


def closed_window() -> str:
    """A daily two-minute window six hours from now (UTC): the daemon is outside it for the whole test."""
    opens = time.gmtime(time.time() + 6 * 3600)
    closes = time.gmtime(time.time() + 6 * 3600 + 120)
    return f"{opens.tm_hour:02d}:{opens.tm_min:02d}-{closes.tm_hour:02d}:{closes.tm_min:02d}"


def test_a_catch_up_run_outside_the_window_is_recorded_missed_not_run(tmp_path: Path) -> None:
    job = {"every": 60, "command": ["true"], "catch_up": "latest", "window": closed_window()}
    cfg = write_config(tmp_path / "cfg.yaml", {"w": job})
    assert Daemon(cfg, "--once").wait() == 0  # first start: the job is known from now on
    # 20 h down: yesterday's window (18 h ago) had due times; the newest is caught up, but not now
    db = sqlite3.connect(tmp_path / "state" / "t.sqlite")
    with db:
        db.execute("UPDATE jobs SET last_due = ?", (time.time() - 20 * 3600,))
    db.close()
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()
    got = runs(cfg)
    assert got and all((r["state"], r["reason"]) == ("ERR", "missed") for r in got), got
    assert "outside the job's window" in got[-1]["message"]
    assert "now outside its window: recorded missed" in d.text()


def test_a_retry_waits_for_the_window(tmp_path: Path) -> None:
    job = {"every": 3600, "command": ["false"], "window": closed_window(),
           "retries": {"count": 1, "backoff": 0.1}}
    cfg = write_config(tmp_path / "cfg.yaml", {"w": job})
    cli(cfg, "jobs", "run", "w")  # run now, ignoring the schedule (and so the window)
    d = Daemon(cfg)
    try:
        wait_for(lambda: "retry 1 waits for its window" in d.text(), "the retry to be put off")
        # the retry waits as a stored QUE row (attempt 1), so a restart does not forget it
        assert [(r["state"], r["reason"], r["attempt"]) for r in runs(cfg)] == [("ERR", "exit code 1", 0),
                                                                                ("QUE", None, 1)]
    finally:
        d.stop()
    again = Daemon(cfg)
    try:
        wait_for(lambda: "retry 1 waits for its window" in again.text(), "the stored retry to wait again")
        assert [(r["state"], r["attempt"]) for r in runs(cfg)] == [("ERR", 0), ("QUE", 1)]
    finally:
        again.stop()


def test_a_config_others_can_write_is_refused_by_the_daemon_and_on_reload(tmp_path: Path) -> None:
    """A config naming commands is a privilege boundary: run, start and enqueue refuse it; a running daemon
    keeps its config when a reload finds the file made writable since."""
    cfg = write_config(tmp_path / "cfg.yaml", {"tick": {"every": 3600, "command": ["true"]}})
    cfg.chmod(0o620)
    for args in (["run", "--once"], ["start"], ["jobs", "enqueue", "--", "true"]):
        res = cli(cfg, *args, check=False)
        assert res.returncode == 2, (args, res)
        lines = res.stderr.splitlines()
        assert len(lines) == 2 and "refusing a config writable by group or others" in lines[0], res.stderr
        assert lines[1] == f"taskserver: hint: chmod go-w {cfg}"
    assert cli(cfg, "status", check=False).returncode == 3
    assert runs(cfg) == []
    cfg.chmod(0o600)
    d = Daemon(cfg)
    try:
        wait_for(lambda: "serving 1 jobs" in d.text(), "the daemon to be up")
        cfg.write_text(cfg.read_text().replace('"tick"', '"tock"'))
        cfg.chmod(0o606)
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed, keeping the running config" in d.text(), "the reload to be refused")
        assert "writable by group or others" in d.text() and "tock" not in d.text()
        assert d.proc.poll() is None
    finally:
        d.stop()
    assert d.wait() == 0


def test_call_and_shell_jobs_through_the_daemon(tmp_path: Path) -> None:
    """`call:` imports module:function from install_dir in a child; `shell: true` hands one string to sh."""
    app = tmp_path / "app"
    app.mkdir()
    code = "import os\n\ndef hello():\n    print('hello', os.environ['TASKSERVER_JOB'])\n\n"
    (app / "appjobs.py").write_text(code + "def boom():\n    raise RuntimeError('kaput')\n")
    cfg = write_config(tmp_path / "cfg.yaml", {
        "greet": {"call": "appjobs:hello"}, "fail": {"call": "appjobs:boom"},
        "pipe": {"command": "echo $TASKSERVER_JOB | tr a-z A-Z", "shell": True},
        "argv": {"command": ["echo", "$TASKSERVER_JOB | tr"]}}, server={"install_dir": str(app)})
    ids = {name: int(cli(cfg, "jobs", "run", name).stdout) for name in ("greet", "fail", "pipe", "argv")}
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()
    got = {name: run_of(cfg, rid) for name, rid in ids.items()}
    assert (got["greet"]["state"], got["greet"]["output"]) == ("OK", "hello greet\n")
    assert (got["fail"]["state"], got["fail"]["reason"]) == ("ERR", "exit code 1")
    assert "RuntimeError: kaput" in str(got["fail"]["output"])
    assert (got["pipe"]["state"], got["pipe"]["output"]) == ("OK", "PIPE\n")
    assert got["argv"]["output"] == "$TASKSERVER_JOB | tr\n"  # no shell unless asked
