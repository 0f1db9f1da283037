"""The daemon's health with respect to its stores: each tenant's store fine, or set aside by a storage fault.

A storage fault (disk full, I/O error, a locked, vanished or replaced store) never ends the daemon, at
its start (a store that cannot be opened is held: runtime/daemon_plan.py) or while it runs, and it holds
only the tenants of the store that failed: their runs are set aside (nothing of theirs starts, the ends of
their runs are kept in memory until they can be written) while every other tenant's jobs go on. Each such
tenant is logged once, said (sd_notify STATUS, and the pid file's info that `taskserver status` prints: one
line per tenant) and retried with a doubling backoff of its own until its store is writable again. Later
failures of the same fault are logged at debug level only, so a full disk does not also fill the log. A
store several tenants share fails for each of them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .store import StoreError

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 10.0  # a freed disk is used again within seconds


@dataclass
class Fault:
    error: StoreError
    retry_at: float
    backoff: float


class Health:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say  # publishes the status (sd_notify STATUS, `taskserver status`), one line per tenant
        self.faults: dict[str, Fault] = {}  # tenant -> the fault that holds its runs

    @property
    def degraded(self) -> bool:
        return bool(self.faults)

    @property
    def retry_at(self) -> float | None:
        return min((f.retry_at for f in self.faults.values()), default=None)

    def failed(self, tenant: str, exc: StoreError, now: float) -> None:
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        old = self.faults.get(tenant)
        if old is None:
            log.error("tenant %s: storage fault: %s%s; its runs are held until it can be written (retrying; "
                      "the other tenants' runs go on)%s", tenant, exc.message, cause,
                      f"; hint: {exc.hint}" if exc.hint else "")
            backoff = FIRST_RETRY
        else:
            log.debug("tenant %s: storage still failing: %s%s", tenant, exc.message, cause)
            backoff = min(old.backoff * 2, MAX_RETRY)
        self.faults[tenant] = Fault(exc, now + backoff, backoff)
        self._publish()

    def recovered(self, tenant: str) -> None:
        fault = self.faults.pop(tenant, None)
        if fault is not None:
            log.warning("tenant %s: the store is writable again after: %s; resuming", tenant,
                        fault.error.message)
            self._publish()

    def aside(self, tenant: str) -> bool:
        return tenant in self.faults

    def due(self, now: float) -> list[str]:
        """The tenants whose store is to be tried again now."""
        return [t for t, f in self.faults.items() if now >= f.retry_at]

    def _publish(self) -> None:
        if not self.faults:
            self.say("running")
            return
        self.say("\n".join(f"degraded: tenant {t}: storage fault: {f.error.message}; runs are held until it "
                           "can be written (retrying)" for t, f in sorted(self.faults.items())))
