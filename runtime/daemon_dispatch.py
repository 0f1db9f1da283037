"""The daemon's timers and slots: a timer that fired claims its due times; free slots start what waits
(scheduled runs first, then queued tasks), inside a job's windows; a failed run's retry is claimed.
"""

from __future__ import annotations

import functools
import heapq
import logging
import time
from collections import deque

from . import housekeeping, plans, schedule, steering
from .daemon_plan import Planning
from .daemon_state import Key, Pending, as_utc
from .model import JobDef, State
from .runs import Active
from .samesched import SameSchedule
from .store import INTERRUPTED, MISSED, Run
from .waiting import Waiting

log = logging.getLogger(__package__ + ".daemon")  # the daemon's one name in the log, whichever layer writes


class Dispatching(Planning):
    def _fire_timers(self, now: float) -> None:
        """Take every timer that came; the due times they bring are claimed together at the end, one
        statement per 300 rows and tenant (1,000 jobs due at once took a statement each before the first
        of them could start)."""
        claims: dict[str, list[tuple[Key, float]]] = {}
        # what the fired jobs of one schedule share is worked out once (their ids: the config holds them)
        decided: dict[tuple[object, ...], plans.Decision] = {}
        same: dict[str, SameSchedule] = {}
        elsewhere: dict[str, dict[str, set[float]]] = {}  # shared stores: due times waiting, by job
        later = []  # the timers of tenants whose store another writer has locked for a moment: kept
        while self.timers and self.timers[0][0] <= now and not self.stopping:
            timer = heapq.heappop(self.timers)
            when, _, kind, tenant, job, gen, attempt, rid = timer
            key = (tenant, job)
            if tenant in self.stores.locked:
                later.append(timer)
                continue
            if kind == "housekeeping":
                housekeeping.purge(self.stores, self.config, now)
                self._status()
                self._timer(now + housekeeping.INTERVAL, "housekeeping", "", "")
                continue
            if key not in self.jobs or self.gen[key] != gen or tenant in self.stores.aside:
                continue  # removed or changed by a reload since this timer was set, or its store failed
                # (planned again from its store when it is back)
            waiting = self.pending.setdefault(key, deque())
            if kind == "fire":
                if tenant not in same:
                    same[tenant] = SameSchedule(self._st(tenant), self._tz(tenant), now)
                    elsewhere[tenant] = self._waiting_in_store(tenant)
                due_now = self._fire(key, when, now, waiting, same[tenant], decided,
                                     elsewhere[tenant].get(job, set()))
                claims.setdefault(tenant, []).extend((key, due) for due in due_now)
            else:
                waiting.append((None, attempt, rid))
        for timer in later:
            heapq.heappush(self.timers, timer)
        for tenant, to_claim in claims.items():
            if not to_claim:
                continue
            rows = [(key[1], due, self.jobs[key].queue) for key, due in to_claim]
            for (key, due), got in zip(to_claim, self._st(tenant).claim_many(rows, now=now), strict=True):
                if got is not None:  # else this due time has its record already (caught up, or elsewhere)
                    self.pending.setdefault(key, deque()).append((due, 0, got))

    def _waiting_in_store(self, tenant: str) -> dict[str, set[float]]:
        """A shared store's due times claimed and not started yet, by job: those another host claimed
        wait there too (their job runs on some host), and count as this daemon's own waiting ones do."""
        store = self._st(tenant)
        if store.exclusive:
            return {}
        found: dict[str, set[float]] = {}
        for run in store.waiting():
            if run.due is not None:
                found.setdefault(run.job, set()).add(run.due)
        return found

    def _fire(self, key: Key, when: float, now: float, waiting: deque[Pending], same: SameSchedule,  # noqa: PLR0917
              decided: dict[tuple[object, ...], plans.Decision], elsewhere: set[float]) -> list[float]:
        """A job's timer fired: on time its due time is run; late, the job's catch-up policy decides.
        Returns the due times to run, which the caller claims in this wake-up's transaction before
        anything starts (their records exist before anything else).  ``same`` and ``decided``: the
        answers the jobs that fired with it share (their next due time, their decision). ``elsewhere``:
        the job's due times waiting in a shared store (claimed by any host); one waiting is enough."""
        tz, store = same.tz, same.store  # the tenant's, looked up once per wake-up (_fire_timers)
        self._schedule_next(key, tz, now, when, same=same)
        dues = plans.overdue(store, self.jobs[key], when, tenant=key[0], tz=tz, now=now,
                             cause=self.clock.cause(when, now), shared=decided)
        if dues and (paused := self.steer.paused(*key)):
            store.missed(key[1], dues, now=now, note=paused)
            return []
        dues = [due for due in dues if due not in elsewhere]  # claimed by another host already
        if (waiting or elsewhere) and dues:  # one due time already waits to start: never pile them up
            earlier = "a retry of an earlier run" if any(attempt for _, attempt, _ in waiting) else \
                "an earlier due time"
            note = ("the previous run was still going" if self.runs.job_busy(*key) else
                    f"{earlier} was still waiting: the job or its queue was running on another host"
                    if waiting and key in self.held_elsewhere else
                    f"{earlier} was still waiting for its queue or a free slot (max_parallel)" if waiting else
                    "an earlier due time was still waiting to start on another host")
            store.missed(key[1], dues, now=now, note=note)
            return []
        return dues

    def _dispatch(self, now: float) -> None:
        """Pick what starts in the free slots (scheduled runs first, then queued tasks), then acquire the
        picked rows: one statement per tenant.  Slots freed by picks that did not start (a task that cannot
        start ends ERR at once, a row settled meanwhile) are filled in another round; each round takes its
        picks out of what waits, so the rounds end."""
        self.runs.refill = False
        try:
            while True:
                if self._dispatch_scheduled(now):
                    self._dispatch_queued(now)
                if not self.runs.acquire_picked() or self._slots() <= 0:
                    return
        finally:  # due times whose job runs on another host wait on, first in line (after the rounds);
            self.held_elsewhere = set()  # `run --once` leaves them in the store for the next start
            for act in self.runs.take_blocked():
                self.held_elsewhere.add((act.tenant, act.job))
                if not self.once:
                    self.pending.setdefault((act.tenant, act.job), deque()).appendleft(
                        (act.due, act.attempt, act.run_id))

    def _dispatch_scheduled(self, now: float) -> bool:
        """False when the slots ran out.  The walk stops there: it is not a copy of every waiting job's key
        (10,000 jobs due at once made each wake-up copy them all), so nothing in it may add a job to
        ``pending``; the jobs it emptied leave it after the walk."""
        emptied: list[Key] = []
        try:
            for key, waiting in self.pending.items():
                if self._slots() <= 0:
                    return False
                job = self.jobs.get(key)
                if job is None or not waiting:  # removed, or its due time was claimed elsewhere
                    emptied.append(key)
                    continue
                if self.runs.job_busy(*key) or self.runs.queue_busy(key[0], job.queue) or \
                        key[0] in self.stores.aside:  # (its store failed: its runs are held)
                    continue
                pend = waiting.popleft()
                if not waiting:
                    emptied.append(key)
                if paused := self.steer.paused(*key):  # claimed before the pause: it does not start either
                    self._st(key[0]).finish(pend[2], State.ERR, MISSED, exit_code=None, output="", now=now,
                                            note=paused)
                elif self._window_allows(key, job, pend, now):
                    self.runs.start_scheduled(key[0], job, *pend)
            return True
        finally:
            for key in emptied:
                if not self.pending.get(key):
                    self.pending.pop(key, None)

    def _dispatch_queued(self, now: float) -> None:
        if self.que_dirty:
            self.que_dirty = False
            self.queued = {}
            for tenant, store in self.stores.items():
                runs = store.queued()
                self.runs.files.expect_tasks(tenant, runs)  # status files made ahead, if none came
                self.queued[tenant] = Waiting(runs)
        for tenant, waiting in self.queued.items():
            conf = self.config.tenant(tenant)
            if conf is None or conf.login is None or tenant in self.stores.aside:
                continue  # removed, its login taken away by a reload, or its store failed: its tasks wait
            if not waiting.offer(functools.partial(self._start_task, tenant), self._slots):
                return

    def _start_task(self, tenant: str, run: Run) -> bool:
        """Start a queued task unless its queue or its job is busy (runtime/waiting.py offers it)."""
        if self.runs.queue_busy(tenant, run.queue) or (run.job and self.runs.job_busy(tenant, run.job)):
            return False
        self.runs.start_queued(tenant, run, self.jobs.get((tenant, run.job)) if run.job else None)
        return True

    def _window_allows(self, key: Key, job: JobDef, pend: Pending, now: float) -> bool:
        """A scheduled run starts only inside one of its job's windows, whatever made it late.

        next_fire() only yields due times inside a window, but a catch-up run after downtime, a due time
        that waited for the job's previous run, or a retry after its backoff can come up outside: a due
        time is then recorded missed (ON_TIME late is still on time), a retry waits for the next opening.
        """
        due, attempt, rid = pend
        tz = self._tz(key[0])
        if schedule.in_window(job, tz, as_utc(now)):
            return True
        if due is not None and attempt == 0 and now - due <= schedule.ON_TIME.total_seconds():
            return True  # due inside the window (next_fire), starting a moment after it closed
        if due is None or attempt > 0:
            opens = schedule.next_window_opening(job, tz, as_utc(now))
            log.info("tenant %s job %s: retry %d waits for its window at %s", *key, attempt,
                     opens.isoformat(timespec="seconds"))
            self._timer(opens.timestamp(), "retry", *key, attempt=attempt, rid=rid)
        else:
            log.warning("tenant %s job %s: due %s, now outside its window: recorded missed", *key,
                        as_utc(due).isoformat(timespec="seconds"))
            self._st(key[0]).finish(rid, State.ERR, MISSED, exit_code=None, output="", now=now,
                                    note="outside the job's window when it could run")
        return False

    def _retry_one(self, act: Active, run: Run) -> None:
        """A failed run of a job with retries left: its retry is claimed (stored, with the time it may start)
        in the same transaction that records the failure, then waits for its backoff."""
        job = act.jobdef
        stopped = run.reason == INTERRUPTED or steering.was_cancelled(run)  # asked to stop: no retry
        if job is None or run.state is not State.ERR or stopped or self.once:
            return
        if act.attempt < job.retry.count:
            delay = job.retry.delay(act.attempt)
            now = time.time()
            rid = self.stores[act.tenant].claim(act.job, run.due, attempt=act.attempt + 1, queue=job.queue,
                                                not_before=now + delay, now=now)
            if rid is not None:
                log.info("tenant %s job %s: retry %d in %.0f s", act.tenant, act.job, act.attempt + 1, delay)
                self._timer(now + delay, "retry", act.tenant, act.job, attempt=act.attempt + 1, rid=rid)
