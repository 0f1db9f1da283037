"""The daemon's health with respect to its stores: fine, or degraded by a storage fault.

A storage fault (disk full, I/O error, a locked, vanished or replaced store) never ends the daemon, at
its start (a store that cannot be opened is held: runtime/daemon_plan.py) or while it runs: it logs one
clear error, starts nothing new, keeps every record it can (ends of runs are kept in memory until they
can be written), says so (sd_notify STATUS, and the pid file's info that `taskserver status` prints), and
retries with a doubling backoff until the store is writable again.  Later failures of the same fault are
logged at debug level only, so a full disk does not also fill the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .store import StoreError

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 10.0  # a freed disk is used again within seconds


class Health:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say  # publishes one line of status (sd_notify STATUS, `taskserver status`)
        self.fault: StoreError | None = None
        self.retry_at = 0.0
        self._backoff = FIRST_RETRY

    @property
    def degraded(self) -> bool:
        return self.fault is not None

    def failed(self, exc: StoreError, now: float) -> None:
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        if self.fault is None:
            log.error("storage fault: %s%s; runs are held until it can be written (retrying)%s",
                      exc.message, cause, f"; hint: {exc.hint}" if exc.hint else "")
            self._backoff = FIRST_RETRY
        else:
            log.debug("storage still failing: %s%s", exc.message, cause)
            self._backoff = min(self._backoff * 2, MAX_RETRY)
        self.fault = exc
        self.retry_at = now + self._backoff
        self.say(f"degraded: storage fault: {exc.message}; runs are held until it can be written (retrying)")

    def recovered(self) -> None:
        if self.fault is not None:
            log.warning("the store is writable again after: %s; resuming", self.fault.message)
            self.say("running")
        self.fault = None
        self._backoff = FIRST_RETRY

    def due(self, now: float) -> bool:
        return self.fault is not None and now >= self.retry_at
