"""The built-in housekeeping job: purge old history (and the status files of purged tasks).

It runs inside the daemon (no child process), once at start and then every ``INTERVAL`` seconds.
Defaults keep OK runs 14 days and ERR runs 90 days (``keep_ok_days`` / ``keep_err_days``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from . import statusfile
from .model import ServerSettings
from .store import Store

log = logging.getLogger(__name__)

INTERVAL = 3600.0
DAY = 86400.0


def purge(stores: Mapping[str, Store], server: ServerSettings, now: float) -> int:
    """Purge every tenant's history; returns how many runs were deleted."""
    total = 0
    for tenant, store in stores.items():
        purged = store.purge(ok_before=now - server.keep_ok_days * DAY,
                             err_before=now - server.keep_err_days * DAY)
        for run_id in purged.queued_ids:
            statusfile.remove(server.state_dir, tenant, run_id)
        if purged.count:
            log.info("housekeeping: tenant %s: purged %d old runs", tenant, purged.count)
        total += purged.count
    return total

