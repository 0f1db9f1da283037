"""Requests whose cost grows with the number of tenants cannot starve the web server.

Each /healthz read every tenant's store in one of Starlette's 40 worker threads: 60 parallel /healthz
against 1,000 tenants slowed an API call to 35 s. Here the first tenant's store is a real PostgreSQL
database whose tables the test keeps locked, so every reading of it waits, for as long as the test wants,
and the database itself counts the readings: each is a session waiting for the lock. 60 parallel
/healthz make one reading (one waiting session, one serial in all 60 answers), an API call sent after
them is answered while that reading still waits, and a repeated /healthz reuses it. /metrics shares its
readings the same way; the dashboard (open to anyone with `--anonymous-read`) cannot share its reading
(it is per viewer), but a storm of it waits in line in at most two threads. Nothing here is timed: each
step waits for a state, with a generous bound.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pglab import PgServer, locked, waiting
from secusers import USER_ENV, USER_TASKSERVER, Lab, lab, wait_for, write
from weblab import free_port

STORM = 60
HEAVY = 2  # runtime/web/sweep.py: threads for dashboards
BOUND = 60.0


@dataclass
class Site:
    world: Lab
    base: str
    slow_dsn: str
    token: str


@pytest.fixture
def site(pg_server: PgServer) -> Iterator[Site]:
    """Tenant `slow` (the locked database) first, then `api` (a database of its own) and 200 more tenants
    on SQLite without a store yet; reads are open to anyone, and every reading is kept 10 minutes, so that
    nothing but sharing can explain one reading for many requests."""
    slow_dsn, api_dsn = pg_server.database(), pg_server.database()
    job = "    jobs:\n      nightly: {cron: '30 2 * * *', command: [/bin/true]}\n"
    more = "".join(f"  t{i:03}:\n    login: x\n{job}" for i in range(200))
    with lab() as world:
        port = free_port()
        cfg = write(world.base / "etc" / "ts.yaml", (
            f"task_server:\n  state_dir: {world.base / 'state'}\n  http:\n    listen: 127.0.0.1:{port}\n"
            f"    sweep_max_age: 10m\ntenants:\n"
            f"  slow:\n    login: x\n    store: {{postgresql: '{slow_dsn}'}}\n{job}"
            f"  api:\n    login: x\n    store: {{postgresql: '{api_dsn}'}}\n{job}{more}"))
        for ran in (world.ts(cfg, "store", "migrate"), made := world.ts(cfg, "web", "token-add", "ops")):
            assert ran.returncode == 0, ran.stderr
        log = world.base / "web.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*USER_TASKSERVER, "-c", str(cfg), "web", "--anonymous-read"],
                                    env=world.env(USER_ENV), stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            assert wait_for(lambda: _answers(base + "/login") or proc.poll() is not None, BOUND)
            assert proc.poll() is None, log.read_text()
            yield Site(world, base, slow_dsn, made.stdout.strip())
        finally:
            proc.terminate()
            proc.wait(30)
        assert "Traceback" not in log.read_text(), log.read_text()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def storm(base: str, path: str, headers: dict[str, str]) -> list[socket.socket]:
    """STORM requests sent whole, on connections of their own, before anything else is asked."""
    host = base.removeprefix("http://")
    name, _, port = host.partition(":")
    socks = []
    for _ in range(STORM):
        sock = socket.create_connection((name, int(port)), timeout=BOUND)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}\r\n".encode())
        socks.append(sock)
    return socks


def replies(socks: list[socket.socket]) -> list[tuple[int, bytes]]:
    out = []
    for sock in socks:
        sock.settimeout(BOUND)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        out.append((int(head.split()[1]), body))
    return out


def api_call_answers_while_the_reading_waits(site: Site, watch: Any) -> None:
    """Sent after the storm, while the slow store's reading still waits (its lock is held throughout)."""
    r = httpx.get(f"{site.base}/api/v1/tenants/api/jobs", timeout=BOUND,
                  headers={"Authorization": f"Bearer {site.token}"})
    assert r.status_code == 200 and [j["name"] for j in r.json()] == ["nightly"], r.text
    assert waiting(watch) >= 1  # the reading is still going on


def test_parallel_healthz_share_one_reading_and_an_api_call_is_answered_meanwhile(site: Site) -> None:
    with locked(site.slow_dsn) as watch:
        socks = storm(site.base, "/healthz", {})
        assert wait_for(lambda: waiting(watch) >= 1, BOUND)
        api_call_answers_while_the_reading_waits(site, watch)
        assert waiting(watch) == 1  # one reading for all of them, not one per request (40 threads' worth)
    got = replies(socks)
    answers = [json.loads(body) for _status, body in got]
    assert {status for status, _ in got} == {503}  # no daemon runs
    assert {a["sweep"] for a in answers} == {1} and len({a["checked"] for a in answers}) == 1, answers[:2]
    again = httpx.get(site.base + "/healthz", timeout=BOUND).json()  # repeated within sweep_max_age
    assert (again["sweep"], again["checked"]) == (1, answers[0]["checked"])


def test_parallel_metrics_share_one_reading(site: Site) -> None:
    with locked(site.slow_dsn) as watch:
        socks = storm(site.base, "/metrics", {"Authorization": f"Bearer {site.token}"})
        assert wait_for(lambda: waiting(watch) >= 1, BOUND)
        api_call_answers_while_the_reading_waits(site, watch)
        assert waiting(watch) == 1
    got = replies(socks)
    assert {status for status, _ in got} == {200} and len({body for _, body in got}) == 1


def test_a_storm_of_dashboards_waits_in_line_and_an_api_call_is_answered_meanwhile(site: Site) -> None:
    with locked(site.slow_dsn) as watch:
        socks = storm(site.base, "/", {})  # anonymous reads: anyone may ask for the whole dashboard
        assert wait_for(lambda: waiting(watch) >= 1, BOUND)
        api_call_answers_while_the_reading_waits(site, watch)
        assert waiting(watch) <= HEAVY
    got = replies(socks)
    assert {status for status, _ in got} == {200}
