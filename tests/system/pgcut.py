"""A forwarder between the daemons and the test's PostgreSQL server that loses commit acknowledgements.

It listens on a unix socket of its own (a directory libpq takes as ``host=``) and forwards every connection
to the real server (tests/pglab.py), reading the frontend protocol as it goes by: which statements each
transaction ran (a claim, an acquire QUE -> RUN, an end, a lease renewal, ...) and its ``COMMIT``, which
psycopg sends as a simple query ('Q' "COMMIT"). When a cut is asked for, the next COMMIT of a transaction
that ran the named kind of statement is either

- ``after``: forwarded, the server's whole reply (CommandComplete + ReadyForQuery) read and dropped, then
  both sides cut: the transaction committed and the client never learns it; or
- ``before``: not forwarded, both sides cut at once: the server sees its client go away inside the
  transaction and rolls it back, and the client cannot tell this from the other case.

Everything else passes byte for byte. Nothing here mocks the server: the commit and the rollback happen in
the real PostgreSQL; only the reply (or the request) is lost on the way, as on a network that breaks.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
SOCKET = ".s.PGSQL.5432"

# the kinds of statement a transaction ran, by a phrase of the statement's text (runtime/pg_store.py)
KINDS = {
    "claim": ("INSERT INTO taskserver_runs", "'QUE'"),
    "missed": ("INSERT INTO taskserver_runs", "'ERR'"),
    "acquire": ("SET state='RUN'",),
    "end": ("WHEN reported IN ('OK', 'ERR') THEN reported",),
    "lease": ("UPDATE taskserver_instances SET heartbeat",),
    "pid": ("SET pid=$1",),
}


def kinds_of(sql: str) -> set[str]:
    return {kind for kind, phrases in KINDS.items() if all(p in sql for p in phrases)}


@dataclass
class Cut:
    mode: str  # "after" (it committed) or "before" (it did not)
    target: str  # the kind asked for
    kinds: frozenset[str]  # every kind the transaction ran


@dataclass
class Plan:
    """The cuts to make, in turn: (kind, mode); at most one per ``gap`` seconds, so the daemon comes back
    (it retries a lost store after a second) and runs on between two of them."""

    todo: list[tuple[str, str]]
    gap: float = 1.5
    done: list[Cut] = field(default_factory=list)
    last: float = 0.0

    def pick(self, kinds: set[str]) -> tuple[str, str] | None:
        if not self.todo or time.monotonic() - self.last < self.gap:
            return None
        kind, mode = self.todo[0]
        if kind not in kinds:
            return None
        self.todo.pop(0)
        self.last = time.monotonic()
        return kind, mode


class Cutter:
    def __init__(self, server_dir: Path, base: Path) -> None:
        self.server = str(server_dir / SOCKET)
        self.dir = base / "pgcut"
        self.dir.mkdir(mode=0o755)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.dir / SOCKET))
        self.listener.listen(64)
        self.lock = threading.Lock()
        self.plan = Plan([])
        self.commits: Counter[str] = Counter()  # commits seen, by kind (every commit once as "all")
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, db_dsn: str) -> str:
        """The DSN of the same database through this forwarder."""
        return db_dsn.split("?host=", maxsplit=1)[0] + f"?host={self.dir}"

    def cut(self, todo: list[tuple[str, str]], gap: float = 1.5) -> None:
        with self.lock:
            self.plan = Plan(list(todo), gap)

    @property
    def done(self) -> list[Cut]:
        with self.lock:
            return list(self.plan.done)

    @property
    def left(self) -> int:
        with self.lock:
            return len(self.plan.todo)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.server)
            except OSError:  # the server is down: the client sees its connection refused, as it would
                client.close()
                continue
            threading.Thread(target=Link(self, client, upstream).pump, daemon=True).start()


class Link:
    """One client connection and its upstream, in one thread: while it decides on a COMMIT, nothing else
    of this connection moves."""

    def __init__(self, cutter: Cutter, client: socket.socket, upstream: socket.socket) -> None:
        self.cutter, self.client, self.upstream = cutter, client, upstream
        self.buf = b""
        self.started = False  # the startup message went by: typed messages from here on
        self.statements: dict[bytes, str] = {}  # prepared statement name -> its text
        self.kinds: set[str] = set()  # what the open transaction ran

    def pump(self) -> None:
        try:
            while True:
                ready, _, _ = select.select([self.client, self.upstream], [], [])
                if self.upstream in ready:
                    data = self.upstream.recv(65536)
                    if not data:
                        return
                    self.client.sendall(data)
                if self.client in ready:
                    data = self.client.recv(65536)
                    if not data:
                        return
                    self.buf += data
                    if not self._frontend():
                        return
        except OSError:
            return
        finally:
            for sock in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _frontend(self) -> bool:
        """Forward every whole message in the buffer; False once the connection was cut."""
        while True:
            if not self.started:
                if len(self.buf) < 8:
                    return True
                length, code = struct.unpack("!ii", self.buf[:8])
                if len(self.buf) < length:
                    return True
                msg, self.buf = self.buf[:length], self.buf[length:]
                self.started = code not in (SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST)
                self.upstream.sendall(msg)
                continue
            if len(self.buf) < 5:
                return True
            kind, length = self.buf[:1], struct.unpack("!i", self.buf[1:5])[0]
            if len(self.buf) < 1 + length:
                return True
            msg, self.buf = self.buf[:1 + length], self.buf[1 + length:]
            if not self._message(kind, msg[5:], msg):
                return False

    def _message(self, kind: bytes, body: bytes, msg: bytes) -> bool:
        if kind == b"P":  # Parse: name, text
            name, rest = body.split(b"\0", 1)
            self.statements[name] = rest.split(b"\0", 1)[0].decode(errors="replace")
        elif kind == b"B":  # Bind: portal, statement name: the statement runs
            name = body.split(b"\0", 2)[1]
            self.kinds |= kinds_of(self.statements.get(name, ""))
        elif kind == b"Q":
            sql = body.rstrip(b"\0").decode(errors="replace").strip()
            if sql.upper() == "BEGIN":
                self.kinds = set()
            elif sql.upper() == "COMMIT":
                return self._commit(msg)
            else:
                self.kinds |= kinds_of(sql)
        self.upstream.sendall(msg)
        return True

    def _commit(self, msg: bytes) -> bool:
        cutter = self.cutter
        with cutter.lock:
            cutter.commits.update(["all", *self.kinds])
            chosen = cutter.plan.pick(self.kinds)
            if chosen is not None:
                cutter.plan.done.append(Cut(chosen[1], chosen[0], frozenset(self.kinds)))
        if chosen is None:
            self.upstream.sendall(msg)
            return True
        if chosen[1] == "after":
            self.upstream.sendall(msg)
            self._swallow_reply()
        return False  # pump's finally cuts both sides

    def _swallow_reply(self) -> None:
        """Read the server's reply to the COMMIT up to its ReadyForQuery: the commit is done."""
        got = b""
        self.upstream.settimeout(60)
        while True:
            data = self.upstream.recv(65536)
            if not data:
                return
            got += data
            pos = 0
            while len(got) >= pos + 5:
                kind, length = got[pos:pos + 1], struct.unpack("!i", got[pos + 1:pos + 5])[0]
                if len(got) < pos + 1 + length:
                    break
                if kind == b"Z":
                    return
                pos += 1 + length
