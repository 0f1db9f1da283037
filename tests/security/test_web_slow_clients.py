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
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pglab import PgServer, locked, waiting
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
def server(world: Lab, tenants: str = "  t:\n    login: shop\n", run_as: str | None = None,
           before: Callable[[Path], None] | None = None) -> Iterator[tuple[int, int, Path]]:
    """`taskserver web` with a small cap and short limits (the defaults are 256, 10 s, 30 s and 5 s); its
    port, pid and log. Started by root it serves as ``run_as``, else as nobody: an interpreter nobody can
    read. ``before``: what to do with the config before the server starts."""
    port = free_port()
    who = f"  run_as: {run_as}\n" if run_as else ""
    cfg = write(world.base / "etc" / "ts.yaml", (
        f"task_server:\n{who}"
        f"  state_dir: {world.base / 'state'}\n  http:\n    listen: 127.0.0.1:{port}\n"
        f"    max_connections: {CAP}\n    header_timeout: 1s\n    client_timeout: 1s\n    idle_timeout: 1s\n"
        f"tenants:\n{tenants}"))
    if before is not None:
        before(cfg)
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


BIG_RUNS = 80  # queued tasks with a 100 KB command each: a list of them is 8 MB of JSON, more than the
# kernel takes into a loopback socket's buffers (about 3 MB here, however little the client reads)
ESTABLISHED = 1  # TCP_INFO's tcpi_state (linux/tcp.h)


def _big_runs(cfg: Path) -> None:
    """The runs, queued by root through the client as the tenant's user (the server's run_as reads them)."""
    code = ("import sys\nfrom taskserver.runtime.client import Client\n"
            "with Client(sys.argv[1], tenant='t') as c:\n"
            f"    c.enqueue_many([['/bin/true', str(i), 'x' * 100_000] for i in range({BIG_RUNS})])\n")
    done = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def server_end(ends: tuple[int, int]) -> str | None:
    """The server's end of this connection in the kernel's table: ``socket:[INODE]`` while a process holds
    it, ``orphan`` while the kernel alone keeps it (closed, with data still to send), None when it is gone.
    ``ends``: the server's port and the client's."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)) == ends:
            return f"socket:[{fields[9]}]" if fields[9] != "0" else "orphan"
    return None


def holds(pid: int, name: str) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fds / fd) == name for fd in os.listdir(fds))


def test_a_response_the_client_never_takes_is_cut(world: Lab) -> None:
    """A client asks for a large answer and reads none of it: the server's writes fill the socket, and
    after client_timeout the server closes the connection, frees what it held, and tells the client so (a
    reset: nothing more will come); a client that reads gets the whole answer."""
    user = world.user("web")
    with server(world, run_as=user.name, before=_big_runs) as (port, pid, log):
        whole = httpx.get(f"http://127.0.0.1:{port}/api/v1/tenants/t/runs?limit=500", timeout=BOUND)
        assert whole.status_code == 200 and len(whole.json()) == BIG_RUNS
        size = len(whole.content)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little, and then nothing
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /api/v1/tenants/t/runs?limit=500 HTTP/1.1\r\nHost: x\r\n\r\n")
        ends = (port, sock.getsockname()[1])
        held: list[str] = []

        def served() -> bool:
            found = server_end(ends)
            held.extend([found] if found is not None and holds(pid, found) else [])
            return bool(held)

        try:
            assert wait_for(served, BOUND)
            end = held[0]
            # without reading a byte: the server lets the connection go, the kernel keeps nothing of it
            # (no orphan offering the rest for minutes), and the client hears of it
            assert wait_for(lambda: not holds(pid, end), BOUND)
            assert wait_for(lambda: server_end(ends) is None, BOUND), server_end(ends)
            assert wait_for(lambda: tcp_state(sock) != ESTABLISHED, BOUND), tcp_state(sock)
            got = 0
            with contextlib.suppress(ConnectionResetError):
                sock.settimeout(BOUND)
                while chunk := sock.recv(65536):
                    got += len(chunk)
            assert got < size  # never the whole answer
        finally:
            sock.close()
        assert answers(port)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_a_new_connection_is_answered_503_when_every_connection_is_being_served(world: Lab,
                                                                                 pg_server: PgServer) -> None:
    """max_connections requests, each whole and each waiting in the server on a locked store: a new
    connection (there is nobody waiting on a client to make room for it) was reset with no answer at all.
    Now each of a flood of them is answered at once with a 503, its Retry-After and a one-line body, and
    closed, while the server's open fds stay within the cap plus the accepted-not-yet-closed; none of the
    served ones is cut for them, and each of those gets its answer once the store is free."""
    dsn = pg_server.database()

    def migrate(cfg: Path) -> None:
        done = world.ts(cfg, "store", "migrate")
        assert done.returncode == 0, done.stderr

    tenants = f"  slow:\n    login: x\n    store: {{postgresql: '{dsn}'}}\n"
    request = b"GET /api/v1/tenants/slow/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with server(world, tenants, before=migrate) as (port, pid, log):
        with locked(dsn) as watch:
            served = [partial(port, request) for _ in range(CAP)]
            assert wait_for(lambda: waiting(watch) == CAP, BOUND), waiting(watch)
            busy = open_fds(pid)  # the cap's connections, and the store connection each served one holds
            late = []
            for _ in range(10 * CAP):  # a flood, none of which reads its answer yet
                late.append(partial(port, request))
                assert open_fds(pid) <= busy + BEYOND + SLACK
            for sock in late:
                head, _, body = reply(sock).partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                assert lines[0] == b"HTTP/1.1 503 Service Unavailable", head
                assert b"Retry-After: 5" in lines and b"Connection: close" in lines, head
                assert body.endswith(b"\n") and body.count(b"\n") == 1 and b"try again" in body, body
            assert waiting(watch) == CAP  # none of the served requests was given up for them
            assert wait_for(lambda: open_fds(pid) <= busy + SLACK, BOUND)  # none of them holds a file
        got = [reply(sock) for sock in served]  # the store is free: each is answered
        assert [g.split(b"\r\n", 1)[0] for g in got] == [b"HTTP/1.1 200 OK"] * CAP, got[:2]
        assert all(g.endswith(b"\r\n\r\n[]") for g in got), got[:2]
        assert answers(port)
    text = log.read_text()
    assert text.count(f"answering new connections 503: all {CAP} are being served") == 1, text
    assert "Traceback" not in text, text


def reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    sock.settimeout(BOUND)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()
    return data
