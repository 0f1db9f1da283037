"""The built-in housekeeping job: purge old history (and the status files of purged tasks).

It runs inside the daemon (no child process), once at start and then every ``INTERVAL`` seconds.
Defaults keep OK runs 14 days and ERR runs 90 days (``keep_ok_days`` / ``keep_err_days``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from . import privs, statusfile, tenancy
from .model import Config
from .store import Store

log = logging.getLogger(__name__)

INTERVAL = 3600.0
DAY = 86400.0


def purge(stores: Mapping[str, Store], config: Config, now: float) -> int:
    """Purge every tenant's history; returns how many runs were deleted."""
    total, server = 0, config.server
    for tenant, store in stores.items():
        purged = store.purge(ok_before=now - server.keep_ok_days * DAY,
                             err_before=now - server.keep_err_days * DAY)
        conf = config.tenant(tenant)
        with privs.fs_identity(tenancy.file_identity(config, conf) if conf is not None else None):
            for run_id in purged.queued_ids:  # the tenant's own files: removed with its rights
                statusfile.remove(config.tenant_dir(tenant), tenant, run_id)
        if purged.count:
            log.info("housekeeping: tenant %s: purged %d old runs", tenant, purged.count)
        total += purged.count
    return total

