"""`taskserver web` started by root, apart from the daemon: it never parses a request as root.

Root's config without `run_as` (or with `run_as: root`) made `taskserver web` serve as root with every
capability: the process that parses each request was uid 0. It now becomes whom the daemon's own web child
becomes (`nobody` with the daemon's group), after binding the address and reading the tokens as root. The
stores root's jobs commands made are root's alone: their tenants are store faults, named per tenant, and
the pages still answer; actions are refused as `taskserver jobs` run by `nobody` would be.
"""

from __future__ import annotations

import contextlib
import pwd
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from secusers import USER_ENV, USER_TASKSERVER, Lab, lab, needs_root, wait_for, write
from weblab import free_port

pytestmark = needs_root


def status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@contextlib.contextmanager
def web(world: Lab, cfg: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """`taskserver web` as root, with an interpreter `nobody` can read (the installation's own may be in a
    home only root may enter)."""
    log = world.base / f"web-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*USER_TASKSERVER, "-c", str(cfg), "web"], env=world.env(USER_ENV),
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None
        assert wait_for(up, 60) and proc.poll() is None, log.read_text()
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.parametrize("run_as", ["", "  run_as: root\n"], ids=["no-run-as", "run-as-root"])
def test_root_started_web_serves_as_nobody_and_names_the_stores_it_cannot_read(run_as: str) -> None:
    with lab() as world:
        port = free_port()
        state = world.base / "state"
        cfg = write(world.base / "etc" / "ts.yaml", (
            f"task_server:\n{run_as}  state_dir: {state}\n  http:\n    listen: 127.0.0.1:{port}\n"
            "tenants:\n"
            "  a:\n    login: shop-a\n    jobs:\n"
            "      nightly: {cron: '30 2 * * *', command: [/usr/bin/id]}\n"
            "  b:\n    login: shop-b\n"))
        queued = world.ts(cfg, "jobs", "enqueue", "--tenant", "a", "--", "/bin/true")  # a store of root's
        assert queued.returncode == 0, queued.stderr
        made = world.ts(cfg, "web", "token-add", "ops")
        assert made.returncode == 0, made.stderr
        bearer = {"Authorization": f"Bearer {made.stdout.strip()}"}
        nobody = pwd.getpwnam("nobody")
        with web(world, cfg, port) as proc, httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                         headers=bearer, timeout=30) as c:
            st = status(proc.pid)  # the process that parses the requests
            assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, st  # real, effective, saved, fs
            assert st["Gid"].split() == [str(nobody.pw_gid)] * 4, st
            assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapAmb"], 16) == 0, st
            assert st["NoNewPrivs"].strip() == "1", st
            # the pages answer; each tenant whose store nobody may read is a store fault of its own
            health = c.get("/healthz")
            assert health.status_code == 503, health.text
            assert any(r.startswith("tenant a: its store cannot be read") for r in health.json()["reasons"])
            assert [t["name"] for t in c.get("/api/v1/tenants").json()] == ["a", "b"]
            jobs = c.get("/api/v1/tenants/a/jobs")
            assert jobs.status_code == 503 and "Permission denied" in jobs.json()["error"], jobs.text
            page = c.get("/")
            assert page.status_code == 200 and "its store cannot be read" in page.text
            # nobody cannot act for a tenant of root's daemon (the jobs commands' rule, or the store out of
            # reach): refused, nothing stored
            act = c.post("/api/v1/tenants/a/jobs/nightly/run")
            assert act.status_code in (403, 503), act.text
            assert "permission denied" in act.json()["error"].lower(), act.text
        db = sqlite3.connect(state / "a.sqlite")
        try:
            assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)  # the one root queued
        finally:
            db.close()
