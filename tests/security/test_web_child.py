"""The web side served by `taskserver run` (``task_server: http:``), attacked as real throwaway users.

A root-owned config with a daemon user and one user per tenant, started by root: the http child runs as the
daemon's user with no capabilities and no way to gain any; a token of tenant A cannot see or steer tenant B;
a non-root user can neither read nor replace the tokens file, and a tokens file such a user could write is
refused with one clear error; the child comes back after it is killed, and a port that cannot be bound is
one log line while the jobs run on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from secusers import (
    USER_ENV,
    USER_TASKSERVER,
    Lab,
    User,
    as_user,
    lab,
    needs_root,
    one_error,
    wait_for,
    write,
)
from weblab import free_port

pytestmark = needs_root
SERVING = re.compile(r"http: serving http://127\.0\.0\.1:(\d+)/ from pid (\d+)")


@dataclass
class Site:
    world: Lab
    cfg: Path
    port: int
    daemon_user: User
    a: User
    b: User
    stranger: User

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, name: str, *opts: str) -> str:
        res = self.world.ts(self.cfg, "web", "token-add", name, *opts)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        d, a, b, e = world.user("dmn"), world.user("tena"), world.user("tenb"), world.user("strg")
        port = free_port()
        cfg = write(world.base / "etc" / "ts.yaml", (
            f"task_server:\n  run_as: {d.name}\n  state_dir: {world.base / 'state'}\n  stop_timeout: 2s\n"
            f"  http:\n    listen: 127.0.0.1:{port}\n"
            "tenants:\n"
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n    jobs:\n"
            "      whoami: {command: [/usr/bin/id]}\n"
            "      slow: {command: [/bin/sleep, '300']}\n"
            f"  b:\n    login: shop-b\n    run_as: {b.name}\n    jobs:\n"
            "      nightly: {cron: '30 2 * * *', command: [/usr/bin/id]}\n"))
        yield Site(world, cfg, port, d, a, b, e)


def start(site: Site) -> tuple[subprocess.Popen[str], Path]:
    """`taskserver run` as root, with an interpreter the daemon's user can reach (the child is a new one)."""
    log = site.world.base / f"daemon-{len(site.world.procs)}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*USER_TASKSERVER, "-c", str(site.cfg), "-v", "run"],
                                env=site.world.env(USER_ENV), stdout=out, stderr=out, text=True)
    site.world.procs.append(proc)
    assert wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None), log.read_text()
    return proc, log


def child_pids(log: Path) -> list[int]:
    return [int(m.group(2)) for m in SERVING.finditer(log.read_text())]


def answers(site: Site) -> bool:
    try:
        return httpx.get(site.base + "/healthz", timeout=5).status_code in (200, 503)
    except httpx.TransportError:
        return False


def status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_the_http_child_is_the_daemons_user_without_privileges_and_comes_back(site: Site) -> None:
    tok = site.token("ops")
    daemon, log = start(site)
    assert wait_for(lambda: child_pids(log) and answers(site), 60), log.read_text()
    child = child_pids(log)[-1]
    st = status(child)
    assert st["Uid"].split() == [str(site.daemon_user.uid)] * 4, st  # never root, not even saved
    assert st["Gid"].split() == [str(site.daemon_user.gid)] * 4, st
    assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapAmb"], 16) == 0, st
    assert st["NoNewPrivs"].strip() == "1" and int(st["PPid"]) == daemon.pid, st
    assert httpx.get(site.base + "/healthz").json()["status"] == "ok"
    families = {m.name: m for m in text_string_to_metric_families(
        httpx.get(site.base + "/metrics", headers=bearer(tok)).text)}
    assert families["taskserver_daemon_up"].samples[0].value == 1
    paused = families["taskserver_job_paused"].samples
    assert {s.labels["job"] for s in paused} == {"whoami", "slow", "nightly"}
    # killed: the daemon restarts it (after its backoff), its jobs untouched meanwhile
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: len(child_pids(log)) >= 2 and answers(site), 60), log.read_text()
    assert child_pids(log)[-1] != child and daemon.poll() is None
    assert "http: the web server (pid" in log.read_text()
    daemon.send_signal(signal.SIGTERM)  # as a supervisor stopping the whole service: both get TERM
    os.kill(child_pids(log)[-1], signal.SIGTERM)
    assert daemon.wait(30) == 0, log.read_text()
    assert len(child_pids(log)) == 2, log.read_text()  # not restarted while the daemon stops
    assert not Path(f"/proc/{child_pids(log)[-1]}").exists() or status(child_pids(log)[-1])["State"][0] == "Z"
    assert not answers(site)  # stopped with the daemon


def test_actions_go_the_jobs_commands_path_and_a_tenant_token_stays_in_its_tenant(site: Site) -> None:
    a_only = site.token("aonly", "--tenants", "a")
    daemon, log = start(site)
    assert wait_for(lambda: answers(site), 60), log.read_text()
    with httpx.Client(base_url=site.base, headers=bearer(a_only), timeout=30) as c:
        run_id = c.post("/api/v1/tenants/a/jobs/whoami/run").json()["id"]
        assert wait_for(lambda: c.get(f"/api/v1/tenants/a/runs/{run_id}").json()["state"] == "OK", 60)
        out = c.get(f"/api/v1/tenants/a/runs/{run_id}").json()["output"]
        assert out.startswith(f"uid={site.a.uid}({site.a.name})"), out  # ran as tenant a's user
        slow = c.post("/api/v1/tenants/a/jobs/slow/run").json()["id"]
        assert wait_for(lambda: c.get(f"/api/v1/tenants/a/runs/{slow}").json()["state"] == "RUN", 60)
        assert c.post(f"/api/v1/tenants/a/runs/{slow}/cancel").json()["state"] == "RUN"
        assert wait_for(lambda: c.get(f"/api/v1/tenants/a/runs/{slow}").json()["state"] == "ERR", 60)
        assert c.get(f"/api/v1/tenants/a/runs/{slow}").json()["reason"] == "cancelled by aonly"
        assert c.post("/api/v1/tenants/a/jobs/whoami/pause").json()["paused_by"] == "aonly"
        for method, url in (("POST", "/api/v1/tenants/b/jobs/nightly/pause"),
                            ("POST", "/api/v1/tenants/b/jobs/nightly/run"),
                            ("POST", "/api/v1/tenants/b/runs/1/cancel"),
                            ("POST", "/api/v1/tenants/b/tasks"),
                            ("GET", "/api/v1/tenants/b/jobs"), ("GET", "/api/v1/tenants/b/runs")):
            r = c.request(method, url, json={"argv": ["/usr/bin/id"]})
            assert r.status_code == 403 and "tenant 'b'" in r.json()["error"], (url, r.text)
    listing = site.world.ts(site.cfg, "jobs", "list", "--json")
    paused = {(r["tenant"], r["job"]): r["paused"] for r in json.loads(listing.stdout)}
    assert paused == {("a", "whoami"): True, ("a", "slow"): False, ("b", "nightly"): False}
    child = child_pids(log)[-1]
    daemon.kill()  # kill -9: no clean stop, the kernel's parent-death signal ends the child
    daemon.wait(30)
    assert wait_for(lambda: not Path(f"/proc/{child}").exists() or status(child)["State"][0] == "Z", 30)
    assert not answers(site)


def test_a_user_cannot_read_or_replace_the_tokens_file_and_one_they_could_is_refused(site: Site) -> None:
    site.token("ops")
    tokens = site.cfg.parent / "tokens"
    assert tokens.stat().st_uid == 0 and tokens.stat().st_mode & 0o077 == 0
    e = site.stranger
    for attack in (f"cat {tokens}", f"echo 'evil {'0' * 64} * write' >> {tokens}",
                   f"echo x > {tokens}.new && mv {tokens}.new {tokens}", f"ln -sf /tmp/mine {tokens}"):
        res = subprocess.run(as_user(e, ["/bin/sh", "-c", attack]), capture_output=True, text=True,
                             check=False)
        assert res.returncode != 0, attack
    assert tokens.stat().st_uid == 0
    # the admin hands the file to the user (or makes it group-writable): the daemon refuses to start at all
    os.chown(tokens, e.uid, e.gid)
    refused = site.world.ts(site.cfg, "run", "--once")
    assert "tokens file belongs to uid" in one_error(refused) and str(tokens) in one_error(refused)
    assert refused.returncode == 2
    os.chown(tokens, 0, 0)
    tokens.chmod(0o620)
    refused = site.world.ts(site.cfg, "run")
    assert "writable by group or others" in one_error(refused) and refused.returncode == 2
    tokens.chmod(0o600)
    tokens.rename(tokens.with_name("real"))
    tokens.symlink_to(tokens.with_name("real"))  # a link in its place is not followed
    linked = site.world.ts(site.cfg, "run")
    assert "cannot open the tokens file" in one_error(linked) and "not a symbolic link" in linked.stderr


def test_a_port_in_use_is_one_log_line_and_the_jobs_run_on(site: Site) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", site.port))
        taken.listen(1)
        log = site.world.base / "daemon-busy.log"
        with log.open("w") as out:
            daemon = subprocess.Popen([*USER_TASKSERVER, "-c", str(site.cfg), "-v", "run"],
                                      env=site.world.env(USER_ENV), stdout=out, stderr=out, text=True)
        site.world.procs.append(daemon)
        assert wait_for(lambda: "serving 3 jobs" in log.read_text(), 60), log.read_text()
        run = site.world.ts(site.cfg, "jobs", "run", "--tenant", "a", "whoami", "--json")
        run_id = json.loads(run.stdout)["id"]
        done = lambda: '"state": "OK"' in site.world.ts(  # noqa: E731
            site.cfg, "jobs", "show", "--tenant", "a", str(run_id), "--json").stdout
        assert wait_for(done, 60), log.read_text()
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
        assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{site.port}" in errors[0], errors
        assert "ts.yaml:6:13" in errors[0] and "Traceback" not in log.read_text()  # the listen: value
    assert wait_for(lambda: answers(site), 90), log.read_text()  # retried, with backoff, once it is free
    assert daemon.poll() is None


def test_a_reload_is_served_at_once_and_once_mode_serves_nothing(site: Site) -> None:
    tok = site.token("ops")
    daemon, log = start(site)
    assert wait_for(lambda: answers(site), 60), log.read_text()
    first = child_pids(log)[-1]

    def tenants() -> list[str]:
        try:
            return [t["name"] for t in httpx.get(site.base + "/api/v1/tenants", headers=bearer(tok)).json()]
        except httpx.TransportError:
            return []  # between the old child and the new one

    assert tenants() == ["a", "b"]
    site.cfg.write_text(site.cfg.read_text() + "  c:\n    login:\n")
    assert site.world.ts(site.cfg, "reload").returncode == 0
    assert wait_for(lambda: tenants() == ["a", "b", "c"], 60), log.read_text()
    assert child_pids(log)[-1] != first and "http: the web server (pid" not in log.read_text()  # planned
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, log.read_text()
    once = site.world.ts(site.cfg, "-v", "run", "--once")
    assert once.returncode == 0 and "http: serving" not in once.stderr, once.stderr
