"""Slow clients against the web server (runtime/web/guard.py; `taskserver web` and the daemon's web child
serve through the same code, runtime/web/serve.py).

An audit's clients that sent part of a request head and then a byte now and then, or nothing, held 19,990
sockets and starved the server: uvicorn's h11 protocol has no timeout on a head that never completes, and
no cap on connections. Here a real `taskserver web` meets real sockets that do that: each is closed by the
server (the test waits for its end of file, with a generous bound, and never asserts how long it took);
a flood of them, far more than ``max_connections``, still leaves a legitimate request its answer; and the
server's open file descriptors, counted in /proc, stay bounded by the cap.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from secusers import USER_ENV, USER_TASKSERVER, Lab, lab, wait_for, write
from weblab import free_port

CAP = 20
BEYOND = 4 * 16  # runtime/web/guard.py: accepted 16 at a time, open beyond the cap for a few turns
SLACK = 16  # files the server may open meanwhile (a store, a log line)
BOUND = 60.0  # seconds to wait for the server to close a connection: generous, never asserted as a speed


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        yield the_lab


@contextlib.contextmanager
def server(world: Lab) -> Iterator[tuple[int, int, Path]]:
    """`taskserver web` with a small cap and short limits (the defaults are 256, 10 s, 30 s and 5 s); its
    port, pid and log. Started by root it serves as nobody: an interpreter nobody can read."""
    port = free_port()
    cfg = write(world.base / "etc" / "ts.yaml", (
        f"task_server:\n  state_dir: {world.base / 'state'}\n  http:\n    listen: 127.0.0.1:{port}\n"
        f"    max_connections: {CAP}\n    header_timeout: 1s\n    client_timeout: 1s\n    idle_timeout: 1s\n"
        "tenants:\n  t:\n    login: shop\n"))
    log = world.base / "web.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*USER_TASKSERVER, "-c", str(cfg), "web", "--anonymous-read"],
                                env=world.env(USER_ENV), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: answers(port) or proc.poll() is not None, 60), log.read_text()
        assert proc.poll() is None, log.read_text()
        yield port, proc.pid, log
    finally:
        proc.terminate()
        proc.wait(30)


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/login", timeout=30).status_code == 200
    except httpx.TransportError:
        return False


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to BOUND) for the server's end of the connection: end of file, or a reset."""
    sock.settimeout(BOUND)
    try:
        while sock.recv(4096):
            pass  # a 4xx the server may send first
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def partial(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    if data:
        sock.sendall(data)
    return sock


def test_a_head_that_never_completes_is_closed_however_it_trickles(world: Lab) -> None:
    with server(world) as (port, _pid, log):
        silent = partial(port, b"")  # connects and sends nothing
        half = partial(port, b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        drip = partial(port, b"GET / HTTP/1.1\r\n")
        stop = threading.Event()

        def trickle() -> None:  # a byte now and then: each arrives well within any idle limit
            with contextlib.suppress(OSError):
                while not stop.wait(0.2):
                    drip.sendall(b"X")

        dripping = threading.Thread(target=trickle)
        dripping.start()
        try:
            assert closed_by_server(silent)
            assert closed_by_server(half)
            assert closed_by_server(drip)
        finally:
            stop.set()
            dripping.join()
        # a body that stops halfway (POST /login needs no token), and a keep-alive connection left idle
        body = partial(port, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                       b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=abc")
        assert closed_by_server(body)
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
        idle.request("GET", "/login")
        assert idle.getresponse().read()
        assert idle.sock is not None and closed_by_server(idle.sock)
        assert answers(port)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_a_flood_of_slow_clients_leaves_room_for_a_request_and_bounds_the_files(world: Lab) -> None:
    with server(world) as (port, pid, log):
        before = open_fds(pid)
        flood = []
        try:
            for _ in range(15 * CAP):  # each holds a partial head, as the audit's clients did
                flood.append(partial(port, b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: "))
                assert open_fds(pid) <= before + CAP + BEYOND + SLACK
            assert answers(port)  # a client that sends its request at once is answered
            assert open_fds(pid) <= before + CAP + BEYOND + SLACK
            # the server closed all but at most CAP of them, without waiting for their heads to time out
            still_open = 0
            for sock in flood:
                sock.setblocking(False)
                try:
                    still_open += sock.recv(1) != b""
                except BlockingIOError:
                    still_open += 1
                except ConnectionResetError:
                    pass
            assert still_open <= CAP
        finally:
            for sock in flood:
                sock.close()
        assert wait_for(lambda: open_fds(pid) <= before + SLACK, BOUND)
    assert "max_connections" in log.read_text()  # said once, not once per connection
    assert log.read_text().count("max_connections") == 1, log.read_text()
