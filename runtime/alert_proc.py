"""The delivery process: notifications leave the daemon here, so that none ever delays a run.

The daemon's loop only hands a prepared message to ``Courier.send`` (one non-blocking send on a
SOCK_SEQPACKET socket pair: the whole message or nothing; a full socket drops it, counted and logged). The
delivery process, forked from the daemon on first use, queues what it receives (bounded) and delivers it
with a few threads (runtime/alert_send.py); each result comes back as a message the loop reads when its
selector says so. A slow webhook or a hanging command therefore holds one delivery thread, never the loop.

Why a process and not a thread: the daemon reaps its runs with ``waitpid(-1)``, which would also take the
exit status of a notification command; the delivery process reaps its own children. It is forked, not
exec'd, so it keeps the daemon's user and the capabilities the daemon kept to start runs as tenant users;
right after the fork it closes every inherited file descriptor (a store's flock must never outlive the
daemon in it), ignores the stop signals and freezes the objects it inherited.

On stop the daemon closes its end; the delivery process finishes what it holds for at most ``GRACE``
seconds, then drops the rest with one log line and exits. If the daemon dies, the same happens.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from typing import Any

from .alert_queue import InOrder
from .limits import printable

log = logging.getLogger(__name__)

WORKERS = 4  # deliveries at the same time (each slow receiver holds one)
MAX_PENDING = 1000  # messages waiting in the delivery process; more are dropped
MAX_MESSAGE = 128 * 1024
GRACE = 5.0  # seconds pending notifications get when the daemon stops
SOCKET_BUFFER = 1 << 20


class Courier:
    """The daemon's side of the delivery process."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.inflight: dict[str, int] = {}  # per tenant: handed over, no result reported yet
        self.lost: list[dict[str, Any]] = []  # results for what a delivery process took with it

    def send(self, msg: dict[str, Any]) -> str | None:
        """Hand ``msg`` over without waiting: None, or why it was dropped."""
        data = json.dumps(msg).encode()
        if len(data) > MAX_MESSAGE:
            return f"the notification is {len(data)} bytes, more than {MAX_MESSAGE}"
        if self.sock is None:
            try:
                self._start()
            except OSError as exc:  # no process or descriptor left now: this one is dropped, the next tries
                return f"cannot start the delivery process ({exc.strerror or exc})"
        assert self.sock is not None
        try:
            self.sock.send(data)
        except BlockingIOError:
            return "the delivery queue is full"
        except OSError as exc:
            self.gone()
            return f"the delivery process is gone ({exc.strerror or exc})"
        tenant = msg["summary"]["tenant"]
        self.inflight[tenant] = self.inflight.get(tenant, 0) + 1
        return None

    def _start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (mine, theirs):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        try:
            pid = os.fork()
        except OSError:
            mine.close()
            theirs.close()
            raise
        if pid == 0:  # the delivery process: never returns into the daemon's code
            code = 70
            try:
                mine.close()
                _child(theirs)
                code = 0
            except BaseException:  # a defect: said once; the daemon counts what it held as dropped
                with contextlib.suppress(BaseException):
                    log.exception("the notification delivery process failed")
            finally:
                os._exit(code)
        theirs.close()
        mine.setblocking(False)
        self.sock, self.pid = mine, pid
        try:  # reaped through a pidfd: the daemon's waitpid(-1) may reap it first, and its pid be reused
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            self.pidfd = None
        log.debug("notification delivery process %d started", pid)

    def results(self) -> list[dict[str, Any]]:
        """What the delivery process reported since the last call (never waits)."""
        out: list[dict[str, Any]] = []
        while self.sock is not None:
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.gone()
                break
            report = json.loads(data)
            self.inflight[report["tenant"]] = self.inflight.get(report["tenant"], 1) - 1
            out.append(report)
        out += self.lost
        self.lost = []
        return out

    def gone(self) -> None:
        """The delivery process ended (or must): forget it; the next send starts a new one. What it held
        and never reported is counted dropped."""
        lost = sum(self.inflight.values())
        if lost:
            log.warning("the notification delivery process ended: %d notifications lost", lost)
            self.lost += [{"tenant": t, "result": "dropped"}
                          for t, n in self.inflight.items() for _ in range(n)]
        self.inflight = {}
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._reap(0.0)

    def close(self) -> list[dict[str, Any]]:
        """Stop: the delivery process gets GRACE seconds for what it holds; returns its last reports."""
        if self.sock is None:
            return []
        out: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + GRACE + 1.0  # `taskserver stop` allows for it (control.STOP_SLACK_S)
        while self.sock is not None and time.monotonic() < end:
            select.select([self.sock], [], [], max(0.0, end - time.monotonic()))
            out += self.results()
        if self.sock is not None:
            log.warning("the notification delivery process did not end in time: killed")
            if self.pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            self.sock.close()
            self.sock = None
        self._reap(1.0)
        return out + self.results()

    def _reap(self, wait: float) -> None:
        end = time.monotonic() + wait
        while self.pidfd is not None:
            try:
                done = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG) is not None
            except ChildProcessError:  # reaped already (the daemon's waitpid(-1) for its runs)
                done = True
            if done:
                os.close(self.pidfd)
                self.pidfd = self.pid = None
                return
            if time.monotonic() >= end:
                return  # a zombie for now: reaped by the next try, or by the daemon's waitpid(-1)
            time.sleep(0.01)


# -- the delivery process ------------------------------------------------------------------------------
def _child(sock: socket.socket) -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)  # it ends when the daemon closes its end (after a grace)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    gc.freeze()  # the daemon's objects are never collected here: their finalizers would close our fds
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)
    sock.setblocking(True)
    sender: Any
    try:  # imported before the privilege drop when the config had notify: (control.py); else only here
        from . import alert_send  # noqa: PLC0415
        sender = alert_send
    except ImportError as exc:  # an interpreter the daemon's user cannot read: fail each one, say why
        log.error("notifications cannot be delivered: %s (restart the daemon after adding notify:)", exc)
        sender = _Broken(f"the delivery code cannot be loaded: {exc}")
    Deliveries(sock, sender).serve()


class _Broken:
    def __init__(self, why: str) -> None:
        self.why = why

    def deliver(self, msg: dict[str, Any], stop: threading.Event) -> str:
        return self.why

    def kill_all(self) -> None:
        pass


class Deliveries:
    def __init__(self, sock: socket.socket, sender: Any) -> None:
        self.sock = sock
        self.sender = sender
        self.todo: InOrder[dict[str, Any]] = InOrder(MAX_PENDING)
        self.stop = threading.Event()
        self.lock = threading.Lock()  # one report on the socket at a time
        self.ending = threading.Lock()  # a result is reported, or counted dropped at the end: not both

    def serve(self) -> None:
        workers = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]
        for t in workers:
            t.start()
        while data := self._recv():
            msg = json.loads(data)
            s = msg["summary"]
            if not self.todo.put((s["tenant"], s["job"], msg["channel"]), msg):
                self._report(msg, "dropped", f"more than {MAX_PENDING} notifications wait")
        self._finish()

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(MAX_MESSAGE)
        except OSError:
            return b""

    def _work(self) -> None:
        while (got := self.todo.get()) is not None:
            key, msg = got
            err = self.sender.deliver(msg, self.stop)
            with self.ending:  # after the grace it is counted dropped already, once
                if not self.stop.is_set():
                    self._report(msg, "failed" if err else "sent", err)
                    self.todo.done(key)

    def _finish(self) -> None:
        """The daemon stops (or died): GRACE seconds for what is left, then drop the rest."""
        self.todo.wait_empty(GRACE)
        with self.ending:
            self.stop.set()
            left = self.todo.close()
        if left:
            log.warning("stopping: %d pending notifications dropped after a %g s grace", len(left), GRACE)
            for msg in left:
                self._report(msg, "dropped", None, quiet=True)
        self.sender.kill_all()
        self.sock.close()

    def _report(self, msg: dict[str, Any], result: str, why: str | None, *, quiet: bool = False) -> None:
        s = msg["summary"]
        if why and not quiet:
            log.warning("tenant %s job %s: %s notification (%s) %s: %s", s["tenant"], s["job"],
                        msg["channel"], s["event"], result, printable(why))  # one line, whatever it says
        elif not why:
            log.info("tenant %s job %s: %s notification (%s) sent", s["tenant"], s["job"], msg["channel"],
                     s["event"])
        data = json.dumps({"tenant": s["tenant"], "result": result}).encode()
        with self.lock, contextlib.suppress(OSError):
            self.sock.send(data)
