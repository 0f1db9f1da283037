"""The JSON API, /metrics and /healthz against a real daemon and a real `taskserver web` process.

Auth is tried as a client would: no token, a wrong token, a token of tenant A on tenant B, a read-only
token acting, a browser session without and with its CSRF value, and another site's Origin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemonlab import Daemon, cli, runs, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from weblab import token, web_home, web_server

JOBS = {"hello": {"every": "1h", "command": ["/bin/echo", "hello from hello"]},
        "slow": {"command": ["/bin/sleep", "30"], "queue": "q"}}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    with web_home(tmp_path) as got:
        yield got


@pytest.fixture
def cfg(home: tuple[Path, dict[str, str]]) -> Path:
    base, server = home
    return write_config(base / "cfg.yaml", JOBS, server={"stop_timeout": "2s", **server},
                        extra_tenants={"b": {"login": os.environ.get("USER", "root") or "root", "jobs": {}}})


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_auth_rules(cfg: Path) -> None:
    full, only_b = token(cfg, "ops"), token(cfg, "bonly", "--tenants", "b")
    reader = token(cfg, "ro", "--read-only")
    with web_server(cfg) as base:
        task = {"argv": ["/bin/true"], "queue": "q"}
        tasks = f"{base}/api/v1/tenants/t/tasks"
        assert httpx.get(f"{base}/api/v1/tenants").status_code == 401
        assert httpx.get(f"{base}/api/v1/tenants", headers=bearer("wrong")).status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.post(f"{base}/api/v1/tenants/t/tasks", json=task).status_code == 401
        assert httpx.get(f"{base}/api/v1/tenants/t/jobs", headers=bearer(only_b)).status_code == 403
        r = httpx.post(f"{base}/api/v1/tenants/t/tasks", json=task, headers=bearer(only_b))
        assert r.status_code == 403 and "tenant 't'" in r.json()["error"]
        visible = httpx.get(f"{base}/api/v1/tenants", headers=bearer(only_b)).json()
        assert [t["name"] for t in visible] == ["b"]
        assert httpx.get(f"{base}/api/v1/tenants/t/jobs", headers=bearer(reader)).status_code == 200
        assert httpx.post(tasks, json=task, headers=bearer(reader)).status_code == 403
        assert httpx.post(tasks, json=task, headers=bearer(full)).status_code == 201
    assert len(runs(cfg)) == 1  # only the full token's task was stored


def test_session_cookie_and_csrf(cfg: Path) -> None:
    full = token(cfg, "ops")
    with web_server(cfg) as base, httpx.Client(base_url=base) as browser:
        assert browser.get("/").status_code == 303  # to /login
        assert browser.post("/login", data={"token": "nope"}).status_code == 401
        r = browser.post("/login", data={"token": full})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = browser.get("/")
        assert page.status_code == 200 and "hello" in page.text
        csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        url = "/api/v1/tenants/t/jobs/hello/run"
        assert browser.post(url).status_code == 403  # no CSRF value: what another site's form would send
        assert browser.post(url, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
        evil = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert browser.post(url, headers=evil).status_code == 403
        assert browser.post(url, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert [r["job"] for r in runs(cfg)] == ["hello"]


def test_api_reads_actions_and_metrics(cfg: Path) -> None:
    full = token(cfg, "ops")
    h = bearer(full)
    daemon = Daemon(cfg)
    try:
        with web_server(cfg) as base, httpx.Client(base_url=base, headers=h) as c:
            run_id = c.post("/api/v1/tenants/t/jobs/hello/run").json()["id"]
            wait_for(lambda: c.get(f"/api/v1/tenants/t/runs/{run_id}").json()["state"] == "OK", "run-now OK")
            assert "hello from hello" in c.get(f"/api/v1/tenants/t/runs/{run_id}").json()["output"]
            slow = c.post("/api/v1/tenants/t/jobs/slow/run").json()["id"]
            wait_for(lambda: c.get(f"/api/v1/tenants/t/runs/{slow}").json()["state"] == "RUN", "slow RUN")
            task = {"argv": ["/bin/true"], "queue": "q"}
            waiting = c.post("/api/v1/tenants/t/tasks", json=task).json()["id"]
            queues = c.get("/api/v1/tenants/t/queues").json()
            assert [r["id"] for r in queues[0]["QUE"]] == [waiting]
            assert [r["id"] for r in queues[0]["RUN"]] == [slow]
            cancelled = c.post(f"/api/v1/tenants/t/runs/{waiting}/cancel").json()
            assert (cancelled["state"], cancelled["reason"]) == ("ERR", "cancelled by ops")
            assert c.post(f"/api/v1/tenants/t/runs/{waiting}/cancel").status_code == 409  # ended
            stopping = c.post(f"/api/v1/tenants/t/runs/{slow}/cancel")
            assert stopping.status_code == 200 and stopping.json()["state"] == "RUN"  # its daemon stops it
            wait_for(lambda: c.get(f"/api/v1/tenants/t/runs/{slow}").json()["state"] == "ERR", "slow stopped")
            assert c.get(f"/api/v1/tenants/t/runs/{slow}").json()["reason"] == "cancelled by ops"
            paused = c.post("/api/v1/tenants/t/jobs/hello/pause").json()
            assert (paused["paused"], paused["paused_by"]) == (True, "ops")
            jobs = {j["name"]: j for j in c.get("/api/v1/tenants/t/jobs").json()}
            assert jobs["hello"]["paused"] and not jobs["slow"]["paused"]
            assert c.post("/api/v1/tenants/t/jobs/nope/pause").status_code == 404
            assert [r["id"] for r in c.get("/api/v1/tenants/t/runs?state=OK").json()] == [run_id]
            page = c.get(f"/api/v1/tenants/t/runs?limit=1&before={waiting}").json()
            assert [r["id"] for r in page] == [slow]
            assert c.get("/api/v1/tenants/t/runs?state=BAD").status_code == 400
            assert c.get("/api/v1/tenants/nope/jobs").status_code == 404
            for bad in ({"argv": []}, {"argv": ["a\u0000b"]}, {"argv": ["x"], "queue": "a/b"},
                        {"argv": ["x"], "queue": "x\nstate=OK"}, {"argv": "ls"}):
                assert c.post("/api/v1/tenants/t/tasks", json=bad).status_code == 400, bad
            metrics = {m.name: m for m in text_string_to_metric_families(c.get("/metrics").text)}
            for name in ("runs", "run_duration_seconds", "run_lateness_seconds",
                         "job_last_success_timestamp_seconds", "job_next_due_timestamp_seconds",
                         "queue_depth", "running", "daemon_up"):
                assert f"taskserver_{name}" in metrics, name
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for m in metrics.values() for s in m.samples}
            ok_hello = (("job", "hello"), ("state", "OK"), ("tenant", "t"))
            assert samples[("taskserver_runs_total", ok_hello)] == 1
            assert samples[("taskserver_running", (("tenant", "t"),))] == 0  # slow was stopped
            stopped = (("job", "slow"), ("state", "ERR"), ("tenant", "t"))
            assert samples[("taskserver_runs_total", stopped)] == 1
            assert samples[("taskserver_daemon_up", ())] == 1
            assert samples[("taskserver_job_paused", (("job", "hello"), ("tenant", "t")))] == 1
            assert samples[("taskserver_job_paused", (("job", "slow"), ("tenant", "t")))] == 0
            resumed = c.post("/api/v1/tenants/t/jobs/hello/resume").json()
            assert (resumed["paused"], resumed["changed"]) == (False, True)
            assert c.get("/healthz").status_code == 200
            daemon.stop()
            # /healthz answers from a reading of up to http.sweep_max_age (5 s) ago: the next one says it
            r = wait_for(lambda: (got := c.get("/healthz")).status_code == 503 and got, "/healthz to see it")
            assert "no taskserver daemon" in r.json()["reasons"][0]
    finally:
        daemon.stop()
        cli(cfg, "stop", check=False)


def test_an_action_whose_status_file_cannot_be_written_says_so_in_its_answer(cfg: Path) -> None:
    """The store commits, but the status directory and file are made read-only for the web server's user
    (root's test: a throwaway user): enqueue, run now and cancel stand, and each answer's ``warnings``
    names the file and why, in the words `taskserver jobs` prints (and the server's log has them too)."""
    h = bearer(token(cfg, "ops"))
    with web_server(cfg) as base, httpx.Client(base_url=base, headers=h) as c:
        first = c.post("/api/v1/tenants/t/tasks", json={"argv": ["/bin/true"]})
        assert first.status_code == 201 and first.json()["warnings"] == [], first.text
        first_id = first.json()["id"]
        status = cfg.parent / "state" / "status" / "t"
        (status / str(first_id)).chmod(0o444)
        status.chmod(0o555)
        try:
            queued = c.post("/api/v1/tenants/t/tasks", json={"argv": ["/bin/true"]})
            now = c.post("/api/v1/tenants/t/jobs/hello/run")
            cancelled = c.post(f"/api/v1/tenants/t/runs/{first_id}/cancel")
        finally:
            status.chmod(0o750)
        said = []
        for answer, what in ((queued, "queued"), (now, "queued"), (cancelled, "ERR cancelled by ops")):
            assert answer.status_code in (200, 201), answer.text
            run_id, warnings = answer.json()["id"], answer.json()["warnings"]
            assert warnings == [f"run {run_id} is {what}, but its status file was not written "
                                f"({status / str(run_id)}: Permission denied)"], answer.text
            said += warnings
        assert (cancelled.json()["state"], cancelled.json()["reason"]) == ("ERR", "cancelled by ops")
        assert [r["state"] for r in c.get("/api/v1/tenants/t/runs").json()] == ["QUE", "QUE", "ERR"]
    log = "".join(p.read_text() for p in cfg.parent.glob("web-*.log"))
    assert all(f"taskserver: warning: {text}" in log for text in said), log


def test_tokens_file_must_be_private(cfg: Path) -> None:
    token(cfg, "ops")
    tokens = cfg.parent / "tokens"
    tokens.chmod(0o620)
    r = cli(cfg, "web", "--listen", "127.0.0.1:1", check=False)
    assert r.returncode == 2 and "writable by group or others" in r.stderr and "Traceback" not in r.stderr


def test_a_store_that_cannot_be_read_is_named_and_the_other_tenants_are_served(
        home: tuple[Path, dict[str, str]]) -> None:
    base, server = home
    cfg = write_config(base / "cfg.yaml", JOBS, server=server, extra_tenants={
        "broken": {"login": "x", "jobs": {"j": {"every": "1h", "command": ["/bin/true"]}}}})
    (base / "state").mkdir(exist_ok=True)
    (base / "state" / "broken.sqlite").write_bytes(b"this is not an SQLite file" * 100)
    cli(cfg, "jobs", "enqueue", "--tenant", "t", "--", "/bin/true")  # tenant t: a store with a run
    full = token(cfg, "ops")
    with web_server(cfg) as base, httpx.Client(base_url=base, headers=bearer(full)) as c:
        health = c.get("/healthz")
        assert health.status_code == 503
        assert any(r.startswith("tenant broken: its store cannot be read:") for r in health.json()["reasons"])
        metrics = c.get("/metrics")
        assert metrics.status_code == 200
        depth = [s for m in text_string_to_metric_families(metrics.text) for s in m.samples
                 if s.name == "taskserver_queue_depth"]
        assert [(s.labels["tenant"], s.value) for s in depth] == [("t", 1)]
        assert c.get("/api/v1/tenants/broken/jobs").status_code == 503
        page = c.get("/")
        assert page.status_code == 200 and "its store cannot be read" in page.text and "hello" in page.text


def test_a_scoped_token_sees_only_its_tenants_metrics(cfg: Path) -> None:
    """/metrics gave every token every tenant's series (job names, run counts, next due times)."""
    only_b = token(cfg, "bonly", "--tenants", "b")
    full = token(cfg, "ops")
    cli(cfg, "jobs", "run", "--tenant", "t", "hello")
    d = Daemon(cfg, "--once")
    assert d.wait() == 0, d.text()
    with web_server(cfg) as base:
        def tenants_in(tok: str) -> set[str]:
            text = httpx.get(f"{base}/metrics", headers=bearer(tok)).text
            return {s.labels["tenant"] for fam in text_string_to_metric_families(text) for s in fam.samples
                    if "tenant" in s.labels}
        assert "t" in tenants_in(full)
        assert tenants_in(only_b) <= {"b"}


def test_hostile_requests_get_4xx_not_500(cfg: Path) -> None:
    """Bodies are read only up to their limit (a 400 MB login body filled the server's memory, without a
    token); run ids of 20 and 5,000 digits, JSON nested 100,000 deep and an argv byte that is not UTF-8
    (enqueued through the CLI, then listed) each gave a 500, the long id with a traceback in the log."""
    full = token(cfg, "ops")
    bad = os.fsdecode(b"caf\xe9")
    cli(cfg, "jobs", "enqueue", "--tenant", "t", "--queue", "q", "--", "/bin/echo", bad)
    with web_server(cfg) as base, httpx.Client(base_url=base, headers=bearer(full)) as c:
        big = b"token=" + b"a" * (2 << 20)
        assert httpx.post(f"{base}/login", content=big).status_code == 413
        assert c.post("/api/v1/tenants/t/tasks", content=b"[" * 100_000).status_code == 400
        assert c.post("/api/v1/tenants/t/tasks", content=b" " * (2 << 20)).status_code == 400
        for rid in ("9" * 20, "9" * 5000):
            assert c.get(f"/api/v1/tenants/t/runs/{rid}").status_code == 404
            assert c.post(f"/api/v1/tenants/t/runs/{rid}/cancel").status_code in (404, 405)
        listed = c.get("/api/v1/tenants/t/runs")
        assert listed.status_code == 200 and listed.json()[0]["argv"] == ["/bin/echo", "caf\udce9"]
        assert c.get("/api/v1/tenants/t/queues").status_code == 200
        assert c.get("/").status_code == 200 and "caf\\udce9" in c.get("/").text
    assert "Traceback" not in "".join(p.read_text() for p in cfg.parent.glob("web-*.log"))


def test_sign_out_ends_the_session(cfg: Path) -> None:
    """A cookie kept after /logout still read and acted for up to 12 hours."""
    full = token(cfg, "ops")
    with web_server(cfg) as base, httpx.Client(base_url=base) as browser:
        assert browser.post("/login", data={"token": full}).status_code == 303
        cookie = browser.cookies.get("taskserver_session")
        assert browser.get("/api/v1/tenants/t/jobs").status_code == 200
        assert browser.post("/logout").status_code == 303
        again = httpx.get(f"{base}/api/v1/tenants/t/jobs", cookies={"taskserver_session": cookie or ""})
        assert again.status_code == 401
