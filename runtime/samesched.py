"""A start-up's planning answers, worked out once for all the jobs they are the same for.

At a start every job of a tenant is asked two things: was a due time missed since its last one (else its
catch-up records and runs nothing), and when is it due next. Both depend only on the job's schedule (its
trigger, windows and time zone), its last due time and the start's ``now``: the 10,000 jobs of a large
file sit on a few schedules and mostly ran last at the same times, so each answer is computed once per such
group instead of once per job. Jobs are grouped by the identity of their trigger and windows (the parse
gives equal ones one object: runtime/config_jobs.py, runtime/config_wire.py); equal values held as two
objects are only asked twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from . import plans, schedule
from .model import JobDef
from .store import Store

Group = tuple[int, int, str | None, float | None]


class SameSchedule:
    """Shared answers for the jobs of one tenant (time zone ``tz``) at one start (``now``)."""

    def __init__(self, store: Store, tz: str, now: float) -> None:
        self.store, self.tz, self.now = store, tz, now
        self.quiet: dict[Group, bool] = {}
        self.next: dict[Group, float | None] = {}

    @staticmethod
    def group(job: JobDef, last: float | None) -> Group:
        # the config holds these objects while the start-up runs: their ids stay theirs
        return id(job.trigger), id(job.windows), job.timezone, last

    def none_missed(self, job: JobDef, last: float | None) -> bool:
        """No due time of ``job`` in (``last``, now]: its catch-up would record and run nothing."""
        if last is None:
            return True  # never due before: nothing to catch up (plans.catch_up)
        key = self.group(job, last)
        found = self.quiet.get(key)
        if found is None:
            nxt = schedule.next_fire(job, self.tz, datetime.fromtimestamp(last, UTC))
            found = self.quiet[key] = nxt is None or nxt.timestamp() > self.now
        return found

    def next_due(self, job: JobDef, last: float | None) -> float | None:
        """plans.next_due of ``job`` at this start, going on from ``last`` (None: the stored one, read)."""
        if last is None:
            return plans.next_due(self.store, job, self.tz, self.now)  # the job's own stored value
        key = self.group(job, last)
        if key not in self.next:
            self.next[key] = plans.next_due(self.store, job, self.tz, self.now, last)
        return self.next[key]
