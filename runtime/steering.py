"""What the daemon reads of the steering others do through the store (`jobs pause|resume|cancel`, the web).

- A paused job's due times still come and are recorded ``ERR missed`` with a note naming who paused it and
  since when: the history shows why a night did not run, and the job's last due time moves on as usual, so a
  resume does not catch up the paused stretch. Retries and claimed due times of a paused job that wait are
  recorded the same way. A run going on is not touched; `run now` and enqueued tasks still run.
- A cancel request on a RUN row is acted on by the daemon whose child it is: it TERMs the run's process group
  and KILLs it after the grace (runtime/executor.py), and the run ends ``ERR cancelled by NAME``. Only its own
  children are signalled (a pid it spawned and has not reaped yet), never a pid read from the store.

The paused jobs are read once per tenant and kept until the store's wake-up says something changed (a pause
writes, then wakes every daemon of the store); cancel requests are read on such wake-ups and at least every
``CHECK_EVERY`` seconds, and only for tenants with runs of this daemon going on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from .runs import Runs
from .store import CANCELLED, PAUSED, Pause, Run, Store

log = logging.getLogger(__name__)
CHECK_EVERY = 30.0


def pause_note(pause: Pause) -> str:
    since = datetime.fromtimestamp(pause.since, UTC).isoformat(timespec="seconds")
    return f"{PAUSED} {pause.who} since {since}"


def was_cancelled(run: Run) -> bool:
    """Stopped on request: never retried."""
    return (run.reason or "").startswith(CANCELLED)


class Steering:
    def __init__(self, store: Callable[[str], Store]) -> None:
        self.store = store  # the daemon's store of a tenant, inside its wake-up's transaction
        self._paused: dict[str, dict[str, Pause]] = {}
        self._next_check = 0.0

    def forget(self) -> None:
        """Something changed in the stores (a wake-up): read the pauses again when next asked."""
        self._paused.clear()
        self._next_check = 0.0

    def paused(self, tenant: str, job: str) -> str | None:
        """The note to record for a due time of a paused job; None when the job is not paused."""
        book = self._paused.get(tenant)
        if book is None:
            book = self._paused[tenant] = self.store(tenant).paused()
        pause = book.get(job)
        return pause_note(pause) if pause is not None else None

    def cancels(self, stores: Mapping[str, Store], runs: Runs, now: float) -> None:
        """Stop this daemon's runs that someone asked to cancel."""
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY
        mine = {(act.tenant, act.run_id): pid for pid, act in runs.active.items()}
        for tenant in {t for t, _ in mine} & set(stores):
            for run_id, who in self.store(tenant).cancelling().items():
                pid = mine.get((tenant, run_id))
                if pid is not None and runs.executor.cancel(pid, who, now):
                    log.info("tenant %s run %d: cancelled by %s: stopping it", tenant, run_id, who)
