"""Notifications by webhook, against a real daemon and a real HTTP receiver on loopback (issue 13).

A failing streak notifies once, ``recovered`` comes at the first OK after it, a restart in the middle of a
streak neither repeats the failure nor forgets the recovery; a receiver that fails is retried; a slow one
delays no run; the counters reach `taskserver status`.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemonlab import Daemon, runs, status_text, wait_for, write_config
from notifylab import Receiver, flag_job, run_job, wait_events
from prometheus_client.parser import text_string_to_metric_families
from weblab import token, web_server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _config(tmp_path: Path, receiver: Receiver, **hook: object) -> tuple[Path, Path]:
    flag = tmp_path / "flag"
    job = flag_job(flag, notify={"webhook": {"url": receiver.url(), "backoff": "100ms", **hook}})
    return write_config(tmp_path / "ts.yaml", {"flaky": job}), flag


def test_a_streak_notifies_once_and_its_recovery_once(tmp_path: Path, receiver: Receiver) -> None:
    cfg, flag = _config(tmp_path, receiver, headers={"Authorization": "Bearer s3cr3t"})
    daemon = Daemon(cfg)
    try:
        for code in (3, 4, 5):
            run_job(cfg, "flaky", code, flag)
        assert wait_events(receiver, 1) == ["failure"]
        run_job(cfg, "flaky", 0, flag)
        assert wait_events(receiver, 2) == ["failure", "recovered"]
        run_job(cfg, "flaky", 6, flag)
        assert wait_events(receiver, 3) == ["failure", "recovered", "failure"]
    finally:
        daemon.stop()  # what is pending is delivered (or dropped) before the daemon exits
    assert receiver.events() == ["failure", "recovered", "failure"]
    assert "Traceback" not in daemon.text(), daemon.text()
    first = receiver.posts[0]
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["headers"]["Authorization"] == "Bearer s3cr3t"
    body = first["body"]
    ran = runs(cfg)
    assert body["run_id"] == ran[0]["id"] and body["reason"] == "exit code 3" and body["exit_code"] == 3
    assert (body["tenant"], body["job"], body["state"], body["version"]) == ("t", "flaky", "ERR", 1)
    assert body["started"] and body["finished"] and body["host"]
    assert receiver.posts[1]["body"]["run_id"] == ran[3]["id"]


def test_a_restart_in_a_streak_neither_repeats_it_nor_forgets_the_recovery(tmp_path: Path,
                                                                           receiver: Receiver) -> None:
    cfg, flag = _config(tmp_path, receiver)
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "flaky", 1, flag)
        run_job(cfg, "flaky", 1, flag)
        assert wait_events(receiver, 1) == ["failure"]
    finally:
        daemon.stop()
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "flaky", 2, flag)  # still the same streak: no second failure
        run_job(cfg, "flaky", 0, flag)
        assert wait_events(receiver, 2) == ["failure", "recovered"]
    finally:
        daemon.stop()
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "flaky", 0, flag)  # healthy: nothing to say
        run_job(cfg, "flaky", 7, flag)
        assert wait_events(receiver, 3) == ["failure", "recovered", "failure"]
    finally:
        daemon.stop()
    assert receiver.events() == ["failure", "recovered", "failure"]


def test_a_failing_receiver_is_retried_and_counted(tmp_path: Path, receiver: Receiver) -> None:
    receiver.replies["/hook"] = [500, 503]
    cfg, flag = _config(tmp_path, receiver, retries=2)
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "flaky", 1, flag)
        wait_for(lambda: len(receiver.posts) == 3, "three attempts")
        assert [p["status"] for p in receiver.posts] == [500, 503, 200]
        assert len({str(p["body"]) for p in receiver.posts}) == 1  # the same notification each time
        status = wait_for(lambda: (out := status_text(cfg)) and "1 sent" in out and out, "counters")
        assert "notifications since start: t 1 sent, 0 failed, 0 dropped" in status
        receiver.replies["/hook"] = [500, 500, 500]
        run_job(cfg, "flaky", 0, flag)  # recovered: three 500s, all retries used up
        wait_for(lambda: "1 failed" in status_text(cfg), "a failed notification counted")
    finally:
        daemon.stop()
    assert "webhook notification (recovered) failed: HTTP 500 (after 3 attempts)" in daemon.text()


def test_a_slow_receiver_delays_no_run(tmp_path: Path, receiver: Receiver) -> None:
    """The receiver holds the notification's request for up to 60 s; meanwhile the every-second job goes on
    running, and a stop neither waits for the receiver nor leaves the notification unsaid in the log."""
    receiver.delay["/hook"] = 60.0
    flag = tmp_path / "flag"
    job = flag_job(flag, every="1s", notify={"webhook": {"url": receiver.url(), "timeout": "2m"}})
    flag.write_text("1\n")
    cfg = write_config(tmp_path / "ts.yaml", {"ticker": job})
    daemon = Daemon(cfg)
    try:
        wait_for(lambda: "/hook" in receiver.opened, "the notification's request")
        held_from = len(runs(cfg))
        wait_for(lambda: len([r for r in runs(cfg) if r["finished"]]) >= held_from + 3, "runs meanwhile")
        assert not receiver.posts  # the request is still held: the runs did not wait for it
    finally:
        daemon.stop()
    assert not receiver.posts  # the daemon ended before the receiver answered
    assert "pending notifications dropped after a 5 s grace" in daemon.text(), daemon.text()


def test_the_counters_reach_the_web_metrics(tmp_path: Path, receiver: Receiver) -> None:
    """The daemon publishes its counters; `taskserver web`'s /metrics serves them, as Prometheus parses."""
    receiver.replies["/hook"] = [404]  # final at once: counted failed
    cfg, flag = _config(tmp_path, receiver)
    bearer = {"Authorization": f"Bearer {token(cfg, 'ops')}"}
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "flaky", 1, flag)
        run_job(cfg, "flaky", 0, flag)
        wait_for(lambda: "1 sent, 1 failed" in status_text(cfg), "both counted")
        with web_server(cfg) as base:
            text = httpx.get(f"{base}/metrics", headers=bearer).text
    finally:
        daemon.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for m in text_string_to_metric_families(text) for s in m.samples}
    name = "taskserver_notifications_total"
    assert samples[(name, (("result", "sent"), ("tenant", "t")))] == 1
    assert samples[(name, (("result", "failed"), ("tenant", "t")))] == 1
    assert samples[(name, (("result", "dropped"), ("tenant", "t")))] == 0
    assert "webhook notification (failure) failed: HTTP 404" in daemon.text()


def test_a_killed_delivery_process_loses_only_what_it_held_and_is_replaced(tmp_path: Path,
                                                                            receiver: Receiver) -> None:
    receiver.delay["/slow"] = 60.0
    slow, fast = tmp_path / "slow-flag", tmp_path / "fast-flag"
    jobs = {"held": flag_job(slow, notify={"webhook": receiver.url("/slow")}),
            "later": flag_job(fast, notify={"webhook": receiver.url("/hook")})}
    cfg = write_config(tmp_path / "ts.yaml", jobs)
    daemon = Daemon(cfg)
    try:
        run_job(cfg, "held", 1, slow)
        wait_for(lambda: "/slow" in receiver.opened, "the held request")
        started = re.findall(r"notification delivery process (\d+) started", daemon.text())
        assert len(started) == 1, daemon.text()
        os.kill(int(started[0]), signal.SIGKILL)
        wait_for(lambda: "0 sent, 0 failed, 1 dropped" in status_text(cfg), "the loss counted")
        run_job(cfg, "later", 1, fast)
        assert wait_events(receiver, 1) == ["failure"]  # a new delivery process took it
        assert len(re.findall(r"notification delivery process \d+ started", daemon.text())) == 2
        wait_for(lambda: "1 sent, 0 failed, 1 dropped" in status_text(cfg), "the delivery counted")
    finally:
        daemon.stop()
    assert "the notification delivery process ended: 1 notifications lost" in daemon.text()
