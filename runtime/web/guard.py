"""Slow clients: a bound on every wait for a client, and on the connections open at once.

uvicorn's h11 protocol waits for a request head without any limit (its keep-alive timer runs only after a
response), and its ``limit_concurrency`` answers 503 only once a whole request head has arrived: an audit's
clients that sent part of a head, then a byte now and then, or nothing, held 19,990 sockets until the
server could open no file. Its protocol class is therefore wrapped here (uvicorn takes a protocol class;
nothing of uvicorn is patched), and each connection is always in one phase:

- ``head``: waiting for a request head; the whole head must arrive within ``header_timeout`` of the
  connection's open (or of the first byte of its next request): a byte now and then does not extend it;
- ``body``: the head is in, its body must follow within ``client_timeout``;
- ``serving``: the request is whole and the application works on it (the only phase not waiting on the
  client); a response the client does not take (the socket's buffer stays full) is closed after
  ``client_timeout`` as well (a reset: see ``_reset``);
- ``idle``: a keep-alive connection between requests: uvicorn's own timer closes it after ``idle_timeout``.

At most ``max_connections`` are open: a new one beyond it takes the place of the connection that has been
waiting on its client the longest; when every connection is being served it is answered at once with a
small fixed 503 (``Retry-After``), written without waiting (what the socket does not take at once is
dropped), and closed, so it holds no file while the served ones go on. A client
that sends its request when it connects is therefore answered however many slow ones hold connections. The
process's open-file limit is raised for this (or the cap lowered, with a warning), so that accepting never
runs out of file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from ..model import HttpSettings

log = logging.getLogger(__name__)
ACCEPT_BATCH = 16  # connections asyncio accepts at one turn of its loop (uvicorn's backlog)
# a connection over the cap is closed within three turns of its accept (a task makes its transport, which
# then calls connection_made, whose abort closes the socket at the next turn), while each turn accepts a
# batch more: so many may be open beyond the cap for a moment
BEYOND = 4 * ACCEPT_BATCH
QUEUE = 128  # the kernel's queue of connections not yet accepted (uvicorn made it the accept batch)
RESERVE = 256  # files besides the connections: the stores the worker threads read (an SQLite store takes
# three), the modules, the listening socket, the sweeps
WARN_EVERY = 60.0  # seconds between two warnings that the cap is reached (a flood would fill the log)
HEAD, BODY, SERVING, IDLE, CLOSED = "head", "body", "serving", "idle", "closed"
RETRY_AFTER = 5  # seconds a client turned away is asked to wait
_BUSY_BODY = b"every connection of this server is being served; try again in a few seconds\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (RETRY_AFTER, len(_BUSY_BODY), _BUSY_BODY))


@dataclass(frozen=True)
class Limits:
    max_connections: int
    header_timeout: float
    client_timeout: float


def limits(http: HttpSettings) -> Limits:
    """The settings, with a cap this process can hold open (raising its soft limit of open files first)."""
    return Limits(_fitting(http.max_connections), http.header_timeout, http.client_timeout)


def _fitting(wanted: int) -> int:
    need = wanted + BEYOND + RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    fits = max(1, soft - BEYOND - RESERVE)
    log.warning("http: max_connections %d lowered to %d: this process may open %d files (ulimit -n); raise "
                "that limit (LimitNOFILE= for a systemd unit) to allow more", wanted, fits, soft)
    return fits


def protocol(lim: Limits) -> type[Guarded]:
    """The protocol class for one server: its connections are counted apart from any other server's."""

    class Served(Guarded):
        pass

    Served.limits, Served.live, Served.waiting = lim, {}, {}
    return Served


class Guarded(H11Protocol):
    limits: ClassVar[Limits]
    live: ClassVar[dict[Guarded, None]]  # the connections counted against the cap
    waiting: ClassVar[dict[Guarded, None]]  # those waiting on their client, longest-waiting first
    warned: ClassVar[float] = float("-inf")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = HEAD
        self.timer: asyncio.TimerHandle | None = None
        self.stalled: asyncio.TimerHandle | None = None

    # -- uvicorn's protocol, wrapped ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.live) >= self.limits.max_connections and not self._evict():
            self._warn(f"answering new connections 503: all {len(self.live)} are being served")
            self.phase = CLOSED
            _turn_away(transport)
            return
        self.live[self] = None
        self._enter(HEAD, self.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.phase == CLOSED:
            return
        if self.phase == IDLE:  # the first byte of the next request: its head is timed from here
            self._enter(HEAD, self.limits.header_timeout)
        super().data_received(data)
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer, or starts a pipelined request
        if self.phase == CLOSED or self.transport.is_closing():
            return
        if self._in_request():
            self._settle()
        else:
            self._enter(IDLE, None)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stalled is None and self.phase != CLOSED:
            self.stalled = self.loop.call_later(self.limits.client_timeout, self._close, "takes no response")
            self.waiting.pop(self, None)
            self.waiting[self] = None

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
            if self.phase == SERVING:
                self.waiting.pop(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    # -- phases --------------------------------------------------------------------------------------------
    def _in_request(self) -> bool:
        cycle = cast("RequestResponseCycle | None", self.cycle)
        return cycle is not None and not cycle.response_complete

    def _settle(self) -> None:
        """After h11 has read what came: a head that is complete moves on to its body or to serving."""
        if self.phase not in (HEAD, BODY) or not self._in_request():
            return
        if self.conn.their_state is h11.SEND_BODY:
            if self.phase == HEAD:
                self._enter(BODY, self.limits.client_timeout)
        else:
            self._enter(SERVING, None)

    def _enter(self, phase: str, timeout: float | None) -> None:
        self.phase = phase
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if timeout is not None:
            self.timer = self.loop.call_later(timeout, self._close, f"no whole request {phase} in time")
        self.waiting.pop(self, None)
        if phase != SERVING or self.stalled is not None:
            self.waiting[self] = None  # at the end: it waits from now

    def _evict(self) -> bool:
        """Close the connection that has waited on its client the longest; False when none waits."""
        victim = next(iter(self.waiting), None)
        if victim is None:
            return False
        self._warn(f"{len(self.live)} connections open (max_connections): closing those that wait longest "
                   "on their clients")
        victim._close("its place was needed")
        return True

    def _close(self, why: str) -> None:
        if self.phase == CLOSED:
            return
        log.debug("http: closing a connection from %s: %s", self.client, why)
        self._forget()
        self.phase = CLOSED
        _reset(self.transport)
        self.transport.abort()  # at once, even with a response the client never took in its buffer

    def _forget(self) -> None:
        self.live.pop(self, None)
        self.waiting.pop(self, None)
        for handle in (self.timer, self.stalled):
            if handle is not None:
                handle.cancel()
        self.timer = self.stalled = None

    def _warn(self, message: str) -> None:
        now = self.loop.time()
        if now - Guarded.warned >= WARN_EVERY:
            Guarded.warned = now
            log.warning("http: %s", message)


def _turn_away(transport: asyncio.Transport) -> None:
    """Answer 503 and close, never waiting on the client: the transport's write sends at once what the
    socket's buffer takes (all of these few bytes on a new connection), and the abort drops any rest with
    the connection. The end of the response is marked for the client (FIN) before the socket closes, so it
    reads the answer even when its request, unread here, makes the close a reset."""
    transport.write(BUSY)
    sock = transport.get_extra_info("socket")
    if sock is not None and not transport.get_write_buffer_size():
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    transport.abort()


def _reset(transport: asyncio.Transport) -> None:
    """Make the close a reset (SO_LINGER on, 0 s): a plain close left the part of a response the kernel had
    taken (about 3 MB on loopback) to an orphaned socket, which went on offering it to a client that read
    nothing for minutes, and that client was never told the answer was cut. A reset frees it at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
