"""Just before a job's due time, the work of firing it is done once with nothing kept, so that the real
firing a moment later runs warm.

Measured here (docs/performance.md, eleventh round): code the loop ran a moment ago runs about ten times
faster than the same code after the loop slept (13 µs against 128 µs after a 10 ms sleep: by then the
caches hold other work's lines).  A job due after a sleep paid that for everything between the wake-up and
its start record: 0.56 to 0.76 ms (p50) for one job due 10 ms after the last one, of which 0.20 to 0.24 ms
went to working out its next due time and catch-up decision and 0.16 to 0.22 ms to its claim in the store.

So the loop wakes ``LEAD`` seconds before a job's timer (``Daemon._sleep``), works out that job's next due
time and catch-up decision for its due time and reads its row in the store, keeps none of it, then sleeps
the rest precisely and fires the timer as always.  Nothing is written and no state of the daemon changes:
the firing decides everything again, at its own time.  A wake-up that came late (less than half the lead
left, on a busy machine) fires at once without a rehearsal.
"""

from __future__ import annotations

from datetime import UTC, datetime

from . import plans, schedule
from .model import JobDef
from .samesched import SameSchedule
from .store import Store

# Seconds before a due time that its rehearsal starts: enough for the rehearsal itself (0.2-0.6 ms here,
# cold), short enough that the rest of the sleep leaves the caches warm (the gain halves after 2 ms).
LEAD = 0.0012
# A sleep shorter than this (beyond LEAD) is not split: the loop ran a moment ago, it is warm.
MIN_SLEEP = 0.002


def rehearse(store: Store, job: JobDef, tz: str, due: float, cause: str) -> None:
    """Run what firing ``job``'s timer for ``due`` runs (runtime/daemon_dispatch.py ``_fire``), as if it
    fired on time, and keep nothing: its next due time, its catch-up decision, its last due time in
    ``store``."""
    SameSchedule(store, tz, due).next_due(job, due)
    since = schedule.just_before(job, datetime.fromtimestamp(due, UTC))
    plans.decide(job, since, tz=tz, now=due, cause=cause)
    store.last_due(job.name)
