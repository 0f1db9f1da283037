"""Talk to the service manager (sd_notify protocol) without linking libsystemd.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the unix socket named by ``$NOTIFY_SOCKET``;
a leading ``@`` names a socket in the abstract namespace. Sending never raises: a supervisor that went away
must not take the daemon down with it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

log = logging.getLogger(__name__)


class Notifier:
    """One connection to the service manager's notification socket.

    ``address`` None sends nothing (``start`` uses that to learn of readiness through ``on_ready`` alone).
    ``on_ready`` is called once, after READY=1 is sent.
    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        # abstract-namespace sockets are addressed with a leading NUL byte
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._on_ready = on_ready
        self._sock: socket.socket | None = None
        self.on_status: Callable[[str], None] | None = None  # also told every STATUS (`taskserver status`)
        # told facts for `taskserver status` and the web's metrics (the notification counters)
        self.on_publish: Callable[[str, object], None] | None = None
        if address:
            import socket  # noqa: PLC0415 - only under a supervisor: `status` should not pay for it

            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when not started by a notify-aware supervisor."""
        address = os.environ.get("NOTIFY_SOCKET", "")
        if not address.startswith(("/", "@")):
            return None
        return cls(address, _watchdog_usec_from_env())

    def send(self, *lines: str) -> bool:
        """Send one state update; False (logged at debug) when the socket is unreachable."""
        data = "\n".join(lines).encode()
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto(data, self._address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", data, exc)
            return False
        return True

    def ready(self) -> None:
        self.send("READY=1", f"MAINPID={os.getpid()}")
        hook, self._on_ready = self._on_ready, None
        if hook is not None:
            hook()

    def status(self, text: str) -> None:
        # a newline would start a new KEY=VALUE assignment
        self.send("STATUS=" + text.replace("\n", " "))
        if self.on_status is not None:
            self.on_status(text)

    def publish(self, key: str, value: object) -> None:
        """A fact for the daemon's info file (nothing goes to the service manager)."""
        if self.on_publish is not None:
            self.on_publish(key, value)

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def ping(self) -> None:
        self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the supervisor's timeout), or None when not watched."""
        if not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _watchdog_usec_from_env() -> int | None:
    """``$WATCHDOG_USEC`` when it is meant for this process (``$WATCHDOG_PID`` unset or our pid)."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
