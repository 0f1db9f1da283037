"""The daemon loop: sleep until the next due time, a child's exit or a signal; start what is due.

No fixed tick: a heap holds every job's next due time, and ``selectors`` waits on the signal wake-up pipe
(SIGCHLD, SIGUSR1 for enqueue, SIGHUP, SIGTERM, SIGINT) and the running children's output pipes, with a
timeout that ends at the next due time, timeout or watchdog ping.  A job never overlaps itself: a due time
that comes while the job runs waits (one at most; another is recorded missed).

Every due time is claimed in the store (a QUE row, unique per job, due and attempt) when it comes; a run is
acquired (QUE -> RUN) inside the wake-up's transaction and spawned only after that transaction committed,
so a run exists durably before its process does, and a due time waiting behind a running run or a retry
waiting for its backoff survives a restart.  Enqueued tasks and `jobs run` are QUE rows read back when the
store's wake-up (or SIGUSR1) says so.  Each daemon holds a lease on its stores; at start the runs of dead
instances are settled by evidence (runtime/orphans.py).  A storage fault degrades the daemon instead of
ending it (runtime/health.py): it starts nothing new, keeps what it can, and resumes when the store does.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import logging
import os
import select
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import alerts, caps, housekeeping, memory, plans, rehearse, schedule, steering, stores, tenancy
from .clock import ClockWatch, boottime
from .executor import Child
from .health import Health
from .isolate import gc_paused
from .launcher import drain
from .memory import rss_bytes
from .model import Config, JobDef, State, TenantDef
from .notify import Notifier
from .runs import Active, Runs
from .samesched import SameSchedule
from .store import INTERRUPTED, MISSED, NO_SUCH_JOB, Run, Store, StoreError, StoreFault, open_store
from .waiting import Waiting

if TYPE_CHECKING:
    from .httpd import WebChild


log = logging.getLogger(__name__)

FINE = 0.0015  # seconds of a sleep that are slept precisely (the end of the last epoll millisecond)
MAX_SLEEP = stores.MAX_SLEEP  # re-read the wall clock at least this often (it may be stepped while we sleep)
RSS_EVERY = 0.1  # seconds between two looks at the daemon's memory (memory_limit)
CLOCK_SLACK = 1.0  # a last due time further after now is a clock's doing (hosts of a store differ a little)
SOON = 60.0  # jobs due within this many seconds of a (re)start get their first status file made ahead
HANDLED = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
Key = tuple[str, str]  # (tenant, job)
Pending = tuple[float | None, int, int]  # due, attempt, the claimed row's id


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Daemon:
    def __init__(self, config: Config, *, once: bool, time_limit: float | None, notifier: Notifier | None,
                 config_loader: Callable[[], Config] | None, web: WebChild | None = None) -> None:
        self.config = config
        self.web = web  # task_server.http: the web server's child process (runtime/httpd.py)
        self.once = once
        self.notifier = notifier
        self.config_loader = config_loader
        self.instance = os.urandom(16).hex()  # random, as uuid4().hex was; uuid loads `platform`
        self.started = time.time()
        self.clock = ClockWatch.start(self.started, boottime())
        # CLOCK_BOOTTIME read with the loop's `now`, for the clock check (_check_clock): read later, after
        # a store that blocked (a PostgreSQL server restarting), the stall looked like the wall clock set
        # back, then forward
        self.boot = boottime()
        self.end_at = self.started + time_limit if time_limit is not None else None
        self.sel = selectors.DefaultSelector()
        self.stores = stores.Stores(instance=self.instance, started=self.started,
                                    config=lambda: self.config.path, sel=self.sel)
        self.jobs: dict[Key, JobDef] = {}
        self.gen: dict[Key, int] = {}
        # when, seq, kind, tenant, job, gen, attempt, claimed row (a retry's)
        self.timers: list[tuple[float, int, str, str, str, int, int, int]] = []
        self.seq = 0
        self.pending: dict[Key, deque[Pending]] = {}  # claimed rows waiting to start, per job
        self.queued: dict[str, Waiting] = {}  # queued tasks by tenant (runtime/waiting.py)
        self.que_dirty = True
        self.runs = Runs(config=lambda: self.config, store=self._st, instance=self.instance, sel=self.sel)
        self.runs.on_end = self._retry_one
        self.steer = steering.Steering(self._st)  # paused jobs and cancel requests (runtime/steering.py)
        self.alerts = alerts.Alerts(lambda: self.config, once=once, sel=self.sel, notifier=notifier)
        self.health = Health(self._say)
        self.held: dict[str, StoreFault] = {}  # tenants whose store a storage fault kept from opening
        self.unplanned: set[str] = set()  # tenants held or not planned since the start (``_cause``)
        self.executor = self.runs.executor
        self.stopping = False
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self.next_ping: float | None = None
        self.next_rss = 0.0  # when the memory limit is looked at next (after a run ended)
        self.ran = False  # runs happened since freed memory was last given back (memory.give_back)
        self.give_back_at = 0.0  # monotonic time from which it may be given back again
        self.signals: list[int] = []
        self.sig_r = -1  # the signal wake-up pipe's read end (serve)
        self.wake_at = 0.0  # when the loop's current sleep ends, on the monotonic clock (``_sleep``)
        self.start_only = plans.restart_settings(config)  # what a reload cannot change

    # -- set-up ----------------------------------------------------------------------------------------
    def start_up(self) -> None:
        now = time.time()
        self._open_tenants(self.config, now)
        if not self.once:
            self._timer(now, "housekeeping", "", "")
        else:
            housekeeping.purge(self.stores, self.config, now)
        interval = self.notifier.watchdog_interval() if self.notifier else None
        self.next_ping = now + interval if interval else None

    def _open_tenants(self, config: Config, now: float) -> None:
        """Open the stores of the tenants with a login, then plan them: the daemon's start."""
        self._plan_start(self._open_stores(config.tenants, now), now)

    def _open_stores(self, tenants: Iterable[TenantDef], now: float) -> list[TenantDef]:
        """Open the stores of the tenants with a login; those opened. A store a storage fault keeps from
        opening (a full disk at start) is held, as a fault while running holds the runs: nothing of its
        tenant starts until ``_recover`` opens it. A store that must not be used refuses the start."""
        opened = []
        for tenant in tenants:
            if tenant.login is None:
                log.info("tenant %s has no login: it runs nothing (%d jobs)", tenant.name, len(tenant.jobs))
                continue
            try:
                self._open_store(tenant, now)
            except StoreFault as exc:
                self._hold(tenant.name, exc, now)
                continue
            opened.append(tenant)
        return opened

    def _hold(self, tenant: str, exc: StoreFault, now: float) -> None:
        self.held[tenant] = exc
        self.unplanned.add(tenant)
        self._fault(exc, now)

    def _plan_start(self, tenants: list[TenantDef], now: float) -> None:
        """The start's plan of the opened tenants, one transaction; a storage fault in it degrades the daemon
        (nothing of the plan is kept; ``_recover`` plans them again) instead of ending it."""
        try:
            with self.stores.tx():
                for tenant in tenants:
                    self._plan_tenant(tenant, now)
        except StoreError as exc:
            self.unplanned.update(t.name for t in tenants)
            self._fault(exc, now)

    def _plan_tenant(self, tenant: TenantDef, now: float, cause: str = plans.DOWN,
                     since: float | None = None) -> None:
        """Know the tenant's jobs, reload the due times waiting in its store, catch up, schedule.
        ``since``: when the jobs it had not known yet became due (a held tenant's: the daemon's start)."""
        store = self._st(tenant.name)
        store.remember_jobs([j.name for j in tenant.jobs if self._scheduled(j)], now=since or now)
        for job in tenant.jobs:
            self._register(tenant, job)
        self._load_waiting(tenant, store, now)
        batch = plans.Batch(self._last_dues(tenant.name, store, now))  # one read, write and log line for all
        same = SameSchedule(store, tenant.timezone, now)  # answers the jobs of one schedule share
        todo = [(job, [] if same.none_missed(job, batch.lasts.get(job.name))
                 else plans.catch_up(store, tenant, job, now, cause, batch=batch))
                for job in tenant.jobs if self._scheduled(job)]
        batch.write(store, tenant.name, cause, now)
        todo = [(job, self._unpaused(tenant, job, dues, now)) for job, dues in todo]
        rids = iter(store.claim_many([(j.name, due, j.queue) for j, dues in todo for due in dues], now=now))
        for job, dues in todo:  # the runs to start now, claimed in one write like the missed records
            self._queue(tenant, job, [(due, next(rids)) for due in dues], now, batch.lasts.get(job.name),
                        same=same)

    def _last_dues(self, tenant: str, store: Store, now: float) -> dict[str, float]:
        """The jobs' last due times, none later than now: a wall clock set back while no daemon ran (or a
        daemon whose clock ran ahead) left them in the future, where they would hide every due time of
        the downtimes to come until the clock caught up. They are moved back to now, as a running daemon
        does when it sees the clock set back (``_check_clock``)."""
        lasts = store.last_dues()
        ahead = sum(last > now + CLOCK_SLACK for last in lasts.values())
        if not ahead:
            return lasts
        log.warning("tenant %s: %d jobs were last due after now (the clock was set back while the daemon "
                    "was down, or ran ahead): their due times go on from now", tenant, ahead)
        store.rewind(now)
        return store.last_dues()

    def _open_store(self, tenant: TenantDef, now: float) -> Store:
        """Open a tenant's store under this instance's lease; dead daemons' runs are settled there.  A tenant
        with run_as: its directory, store and status files are its user's (tenancy.open_as)."""
        where = self.config.tenant_dir(tenant.name)

        def opener() -> Store:
            store = tenancy.open_as(self.config, tenant, lambda: open_store(tenant, where, verify=True))
            return self.alerts.observe(tenant.name, store)  # run ends may notify (runtime/alerts.py)

        return self.stores.open(tenant, opener, now, lambda run: self.runs.write_status(tenant.name, run))

    def _load_waiting(self, tenant: TenantDef, store: Store, now: float) -> None:
        """Due times and retries claimed before (by this daemon before a fault, or by one that died)."""
        for run in store.waiting():
            key = (tenant.name, run.job)
            job = self.jobs.get(key)
            if job is None or not job.enabled:
                note = "its job was removed or disabled before it could run"
                store.finish(run.id, State.ERR, NO_SUCH_JOB, exit_code=None, output="", now=now, note=note)
            elif run.not_before is not None and run.not_before > now:
                self._timer(run.not_before, "retry", *key, attempt=run.attempt, rid=run.id)
            else:
                self.pending.setdefault(key, deque()).append((run.due, run.attempt, run.id))

    def _reread_shared(self, tenant: str, now: float) -> None:
        """A shared store: claims another daemon made and could not start (its job ran elsewhere, or that
        daemon died) wait in the store; take them into our own waiting list, and look at the queue again
        (a NOTIFY may have been lost while a connection was down)."""
        conf = self.config.tenant(tenant)
        if conf is None or conf.login is None:
            return
        known = {rid for waiting in self.pending.values() for _, _, rid in waiting}
        for run in self.stores[tenant].waiting():
            key = (tenant, run.job)
            job = self.jobs.get(key)
            if run.id in known or job is None or not job.enabled:
                continue  # ours already, or for a job this daemon does not know (another config version)
            if run.not_before is None or run.not_before <= now:
                self.pending.setdefault(key, deque()).append((run.due, run.attempt, run.id))
        self.que_dirty = True

    def _scheduled(self, job: JobDef) -> bool:
        return job.enabled and job.trigger is not None

    def _add_job(self, tenant: TenantDef, job: JobDef, now: float) -> None:
        self._register(tenant, job)
        self._plan_job(tenant, job, now)

    def _register(self, tenant: TenantDef, job: JobDef) -> None:
        key = (tenant.name, job.name)
        self.jobs[key] = job
        self.gen[key] = self.gen.get(key, 0) + 1  # timers set before this are void

    def _plan_job(self, tenant: TenantDef, job: JobDef, now: float, cause: str = plans.DOWN) -> None:
        if self._scheduled(job):
            self._take(tenant, job, plans.catch_up(self._st(tenant.name), tenant, job, now, cause), now)

    def _take(self, tenant: TenantDef, job: JobDef, dues: list[float], now: float) -> None:
        """Claim the due times to run now and set the job's timer."""
        dues = self._unpaused(tenant, job, dues, now)
        rids = self._st(tenant.name).claim_many([(job.name, due, job.queue) for due in dues], now=now)
        self._queue(tenant, job, list(zip(dues, rids, strict=True)), now)

    def _unpaused(self, tenant: TenantDef, job: JobDef, dues: list[float], now: float) -> list[float]:
        """The due times to claim: none of a paused job's (they are recorded missed, noting the pause)."""
        if dues and (paused := self.steer.paused(tenant.name, job.name)):
            self._st(tenant.name).missed(job.name, dues, now=now, note=paused)
            return []
        return dues

    def _queue(self, tenant: TenantDef, job: JobDef, claimed: list[tuple[float, int | None]], now: float,
               last: float | None = None, *, same: SameSchedule | None = None) -> None:
        """Queue the claimed due times (id None: claimed or settled before) and set the job's timer.
        ``last``: its last due time as read before the catch-up (None: read it now); the next due time
        follows from it as from the one the catch-up leaves, both lie on the job's grid. ``same``: a
        start-up's shared answers."""
        key = (tenant.name, job.name)
        for due, rid in claimed:
            if rid is not None:
                self.pending.setdefault(key, deque()).append((due, 0, rid))
        if not self.once:
            self._schedule_next(key, tenant.timezone, now, last, same=same)

    def _schedule_next(self, key: Key, tz: str, now: float, last: float | None = None, *,
                       same: SameSchedule | None = None) -> None:
        """Set the job's timer to its first due time after ``now`` (an interval goes on from due time
        ``last``, by default the stored last due time: see schedule.next_due)."""
        job = self.jobs[key]
        nxt = same.next_due(job, last) if same is not None else plans.next_due(self._st(key[0]), job, tz, now,
                                                                                   last)
        if nxt is not None:
            self._timer(nxt, "fire", *key)

    def _timer(self, when: float, kind: str, tenant: str, job: str, *, attempt: int = 0,
               rid: int = 0) -> None:
        self.seq += 1
        gen = self.gen.get((tenant, job), 0)
        heapq.heappush(self.timers, (when, self.seq, kind, tenant, job, gen, attempt, rid))

    def _tz(self, tenant: str) -> str:
        t = self.config.tenant(tenant)
        return t.timezone if t is not None else "UTC"

    # -- the loop ----------------------------------------------------------------------------------------
    def loop(self) -> int:
        while True:
            now, self.boot = time.time(), boottime()
            self._step(self._wake_up, now)
            # Healthy, the wake-up recorded the ends in its own transaction; a child that ended since is the
            # next wake-up's (its SIGCHLD is already waiting): not a second commit for it now.
            freed = self._collect() if self.health.degraded else False
            self.executor.enforce(now)
            if freed:
                self._check_limits(now, run_ended=True)  # between jobs: a run just ended
                if not self.stopping:
                    self._step(self._dispatch, now)
            if not self.runs and (self.stopping or (self.once and not self._work_left())):
                self._flush_at_exit()
                return self.exit_code
            self._give_back()
            # the sleep is worked out at its start: the wake-up's own work does not make the next one late
            events = self._sleep()
            while not self._events(events) and time.monotonic() < self.wake_at:
                # only output of running children came, and nothing is due yet: sleep on, to the end of
                # the sleep this began in, no further (the wake-up then looks at the clock: worked out
                # afresh on a wall clock set back meanwhile, the sleep would run to MAX_SLEEP)
                events = self._sleep(self.wake_at)

    def _events(self, events: list[tuple[selectors.SelectorKey, int]]) -> bool:
        """Handle what woke the loop; False when it was only output of children (their end of file too:
        a run ends when its process is reaped, which SIGCHLD tells), which needs no wake-up's work: a job
        that writes many lines costs no transaction per line, and a short run's end of file, which comes
        just before its SIGCHLD, no wake-up that finds nothing to reap.  True for everything else, and
        for a sleep that ran out (a timer or deadline is due)."""
        more = not events
        reap = False  # whether a run may have ended
        for key, _ in events:
            if isinstance(key.data, Child):
                self.executor.read(key.data)
                more = more or self.sig_r < 0  # no SIGCHLD wake-up (a loop run without ``serve``)
                continue
            if key.data is None:
                drain(key.fd)  # the signal wake-up pipe (its handlers noted the signals), or the launcher's
                reap = True
                if key.fd != self.sig_r:  # spawns landed: an error to record, or the pid of a run that ended
                    self.runs.land(time.time())
                    more = more or bool(self.runs.spawn_failed) or self.stopping
                continue
            more = True
            if key.data is self.web and self.web is not None:
                self.web.exited()
            elif key.data is self.alerts:
                self.alerts.drained()  # notification results: counted, published
            else:
                key.data.drain_wakeups()  # a store's wake-up: new queued tasks
                self.que_dirty = True
        if reap and not more:
            # SIGCHLD alone: a wake-up that reaped several runs has often reaped this one's too
            more = any(sig != signal.SIGCHLD for sig in self.signals) or self.executor.reapable()
        return more

    def _sleep(self, until: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for the next wake-up.  When it is a job's timer, the firing is rehearsed shortly before it
        (runtime/rehearse.py), then the rest is slept: the firing itself then runs warm.  ``until``: the
        rest of a sleep a stretch of output broke into, which ends there at the latest (monotonic)."""
        now = time.time()
        sleep = self._sleep_time(now)
        if until is None:
            self.wake_at = time.monotonic() + sleep  # a stretch of output ends there (monotonic: a step of
            # the wall clock while a job writes must not stretch it; the wake-up after it looks at the clock)
        else:
            sleep = min(sleep, max(0.0, until - time.monotonic()))
        timer = self.timers[0] if self.timers and not self.stopping and not self.health.degraded else None
        if timer is None or timer[2] != "fire" or sleep < rehearse.LEAD + rehearse.MIN_SLEEP \
                or timer[0] - now > sleep + 1e-6:  # something else comes first
            return wait_for_events(self.sel, sleep)
        end = time.monotonic() + sleep  # as one sleep: a step of the wall clock meanwhile neither stretches
        events = wait_for_events(self.sel, sleep - rehearse.LEAD)  # nor cuts it (see wait_for_events)
        if events:
            return events
        when, _, _, tenant, name, gen, *_ = timer
        key = (tenant, name)
        # a wake-up that came late (a busy machine) leaves no time to rehearse: the firing goes first
        if key in self.jobs and self.gen[key] == gen and end - time.monotonic() >= rehearse.LEAD / 2:
            try:
                rehearse.rehearse(self._st(tenant), self.jobs[key], self._tz(tenant), when,
                                  self.clock.cause(when, when))
            except StoreError as exc:  # the firing meets it too, and handles it
                log.debug("rehearsing the timer of %s/%s: %s", tenant, name, exc)
        return wait_for_events(self.sel, max(0.0, end - time.monotonic()))

    def _wake_up(self, now: float) -> None:
        self.runs.land(now)  # spawns that finished since: their pids, before anything looks for them
        self._check_clock(now, self.boot)
        self._handle_signals(now)
        self._check_limits(now)
        self._ping(now)
        if self.web is not None:
            self.web.tick(self.config, now, stopping=self.stopping)
        if self.health.degraded:
            return
        if self.que_dirty:  # a store's wake-up: a pause or a cancel request may have come with it
            self.steer.forget()
        self.steer.cancels(self.stores, self.runs, now)
        self.stores.check()
        for tenant in self.stores.heartbeat(now, self.runs.write_status):
            self._reread_shared(tenant, now)
        self._fire_timers(now)
        if self.runs.collect(inside=True):  # the ends, their retries and the runs in their slots: one commit
            self._check_limits(now, run_ended=True)  # between jobs: a run just ended
        if not self.stopping:
            self._dispatch(now)  # what just came due goes first: its lateness counts

    def _step(self, work: Callable[[float], None], now: float) -> None:
        """One transaction of work; the runs it claimed are spawned only after it committed."""
        if self.health.degraded:
            self._recover(now)
        try:
            with self.stores.tx():
                work(now)
                if not self.health.degraded:  # after the ends: a run that ended has its pid written with it
                    self.runs.record_pids()
            self.runs.committed()
            self.runs.launch()
        except StoreError as exc:
            self.runs.abort()  # rolled back: nothing of it was spawned
            self.que_dirty = True
            self._fault(exc, now)

    def _collect(self) -> bool:
        freed = self.runs.collect()
        if self.runs.fault is not None:
            self._fault(self.runs.fault, time.time())
            self.runs.fault = None
        return freed

    def _fault(self, exc: StoreError, now: float) -> None:
        self.health.failed(exc, now)
        if self.once:  # cron mode: the next minute's start tries again
            self.stopping, self.exit_code = True, 1

    def _recover(self, now: float) -> None:
        """Retry a failed store: write back what can be, record the ends kept, open the stores held since
        they failed to open, re-read what is stored."""
        if not self.health.due(now):
            return
        try:
            self.stores.recover()
            self.runs.flush()
            self._open_held(now)
            with self.stores.tx():
                self._resync(now)
        except StoreError as exc:
            self.health.failed(exc, now)
            return
        self.unplanned.clear()
        self.health.recovered()

    def _open_held(self, now: float) -> None:
        """Open the stores held (``_hold``); StoreFault while one still cannot be opened."""
        for name in list(self.held):
            tenant = self.config.tenant(name)
            if tenant is not None and tenant.login is not None:
                try:
                    self._open_store(tenant, now)
                except StoreFault as exc:
                    self.held[name] = exc
                    raise
                except StoreError as exc:  # refused (corrupt, another daemon's): the others go on
                    log.error("tenant %s is not served: %s (%s)", name, exc.message, exc.hint)
            del self.held[name]

    def _resync(self, now: float) -> None:
        """After a fault, rebuild what waits from the store: whatever the failed transactions held in memory
        only is found again (the job's last due moves only together with a record). A tenant not planned
        since the start (held) catches up from its last due time as after downtime, its new jobs from the
        daemon's start."""
        self.pending.clear()
        self.que_dirty = True
        for name in self.stores:
            tenant = self.config.tenant(name)
            if tenant is not None and tenant.login is not None:
                self._plan_tenant(tenant, now, *self._cause(name))

    def _cause(self, tenant: str, otherwise: str = plans.STORE_DOWN) -> tuple[str, float | None]:
        """Why the tenant's due times since its last went unrun, and from when its new jobs count."""
        if tenant in self.unplanned:
            return plans.HELD, self.started
        return otherwise, None

    def _flush_at_exit(self) -> None:
        if not self.runs.unrecorded:
            return
        try:
            self.runs.flush()
        except StoreError as exc:
            log.error("exiting with %d run ends the store did not take: %s", len(self.runs.unrecorded), exc)

    def _st(self, tenant: str) -> Store:
        return self.stores.use(tenant)  # inside the wake-up's transaction

    def _work_left(self) -> bool:
        return bool(self.pending) or any(self.queued.values()) or self.que_dirty

    def _give_back(self) -> None:
        """Fallen idle after runs: the memory their bookkeeping freed goes back to the system."""
        if self.runs:
            self.ran = True
        elif self.ran and not self._work_left() and (mono := time.monotonic()) >= self.give_back_at:
            memory.give_back()
            self.ran, self.give_back_at = False, mono + memory.GIVE_BACK_EVERY

    def _sleep_time(self, now: float) -> float:
        if self.runs.refill and not self.stopping and not self.health.degraded:
            return 0.0  # a slot freed after its run's transaction: the next one waits for no other event
        wake = [now + MAX_SLEEP]
        if self.stores.shared:
            wake.append(self.stores.next_beat)
        if self.timers and not self.stopping and not self.health.degraded:
            wake.append(self.timers[0][0])
        retry = self.health.retry_at if self.health.degraded else None
        pids = self.runs.save_by if not self.health.degraded else None
        deadlines = (self.executor.next_deadline(), self.stop_deadline, self.end_at, self.next_ping, retry,
                     pids, self.web.wake_at() if self.web is not None else None)
        for t in deadlines:
            if t is not None:
                wake.append(t)
        return max(0.0, min(wake) - now)

    def _ping(self, now: float) -> None:
        if self.next_ping is not None and now >= self.next_ping and self.notifier:
            self.notifier.ping()
            interval = self.notifier.watchdog_interval() or MAX_SLEEP
            self.next_ping = now + interval

    def _fire_timers(self, now: float) -> None:
        """Take every timer that came; the due times they bring are claimed together at the end, one
        statement per 300 rows and tenant (1,000 jobs due at once took a statement each before the first
        of them could start)."""
        claims: dict[str, list[tuple[Key, float]]] = {}
        # what the fired jobs of one schedule share is worked out once (their ids: the config holds them)
        decided: dict[tuple[object, ...], plans.Decision] = {}
        same: dict[str, SameSchedule] = {}
        while self.timers and self.timers[0][0] <= now and not self.stopping:
            when, _, kind, tenant, job, gen, attempt, rid = heapq.heappop(self.timers)
            key = (tenant, job)
            if kind == "housekeeping":
                housekeeping.purge(self.stores, self.config, now)
                self._status()
                self._timer(now + housekeeping.INTERVAL, "housekeeping", "", "")
                continue
            if key not in self.jobs or self.gen[key] != gen:
                continue  # removed or changed by a reload since this timer was set
            waiting = self.pending.setdefault(key, deque())
            if kind == "fire":
                if tenant not in same:
                    same[tenant] = SameSchedule(self._st(tenant), self._tz(tenant), now)
                due_now = self._fire(key, when, now, waiting, same[tenant], decided)
                claims.setdefault(tenant, []).extend((key, due) for due in due_now)
            else:
                waiting.append((None, attempt, rid))
        for tenant, to_claim in claims.items():
            if not to_claim:
                continue
            rows = [(key[1], due, self.jobs[key].queue) for key, due in to_claim]
            for (key, due), got in zip(to_claim, self._st(tenant).claim_many(rows, now=now), strict=True):
                if got is not None:  # else this due time has its record already (caught up, or elsewhere)
                    self.pending.setdefault(key, deque()).append((due, 0, got))

    def _fire(self, key: Key, when: float, now: float, waiting: deque[Pending], same: SameSchedule,  # noqa: PLR0917
              decided: dict[tuple[object, ...], plans.Decision]) -> list[float]:
        """A job's timer fired: on time its due time is run; late, the job's catch-up policy decides.
        Returns the due times to run, which the caller claims in this wake-up's transaction before
        anything starts (their records exist before anything else).  ``same`` and ``decided``: the
        answers the jobs that fired with it share (their next due time, their decision)."""
        tz, store = same.tz, same.store  # the tenant's, looked up once per wake-up (_fire_timers)
        self._schedule_next(key, tz, now, when, same=same)
        dues = plans.overdue(store, self.jobs[key], when, tenant=key[0], tz=tz, now=now,
                             cause=self.clock.cause(when, now), shared=decided)
        if dues and (paused := self.steer.paused(*key)):
            store.missed(key[1], dues, now=now, note=paused)
            return []
        if waiting and dues:  # one due time already waits to start: never pile them up
            earlier = "a retry of an earlier run" if any(attempt for _, attempt, _ in waiting) else \
                "an earlier due time"
            note = ("the previous run was still going" if self.runs.job_busy(*key) else
                    f"{earlier} was still waiting for its queue or a free slot (max_parallel)")
            store.missed(key[1], dues, now=now, note=note)
            return []
        return dues

    def _check_clock(self, now: float, boot: float) -> None:
        """A wall clock set back leaves every timer in the future: move them (schedule.after_step_back).
        ``boot`` is CLOCK_BOOTTIME read together with ``now``: the two readings must not have a stall
        between them, or the stall is taken for a step."""
        step = self.clock.look(now, boot)
        if step == 0:
            return
        self._shift_elapsed(step)
        if step > 0:
            log.warning("the system clock was set forward by %.0f s: due times passed are caught up", step)
            return  # the timers come due now, and the jobs' catch-up policies decide
        log.warning("the system clock was set back by %.0f s: moving the timers", -step)
        moved = []
        for timer in self.timers:  # (when, seq, kind, tenant, job, ...): only the time changes
            new = self._moved(timer[0], timer[2], (timer[3], timer[4]), step, now)
            if new is not None:
                moved.append((new, *timer[1:]))
        heapq.heapify(moved)
        self.timers = moved
        for tenant in list(self.stores):
            self._st(tenant).rewind(now)  # no last due time stays in the future

    def _shift_elapsed(self, step: float) -> None:
        """Run timeouts, watchdog pings, the time limit and the stop timeout measure elapsed time: a clock
        step must neither end them early (a run killed as a timeout) nor delay them (a missed watchdog)."""
        for child in self.executor.children.values():
            child.deadline = child.deadline + step if child.deadline is not None else None
            child.kill_at = child.kill_at + step if child.kill_at is not None else None
        self.next_ping, self.end_at, self.stop_deadline = (
            t + step if t is not None else None for t in (self.next_ping, self.end_at, self.stop_deadline))

    def _moved(self, when: float, kind: str, key: Key, step: float, now: float) -> float | None:
        job = self.jobs.get(key)
        if kind != "fire" or job is None:
            return when + step  # housekeeping and retry backoffs are elapsed time
        due = schedule.after_step_back(job, self._tz(key[0]), _dt(when), timedelta(seconds=step), _dt(now))
        return due.timestamp() if due is not None else None

    # -- starting runs ------------------------------------------------------------------------------------
    def _slots(self) -> int:
        return self.config.server.max_parallel - len(self.runs)

    def _dispatch(self, now: float) -> None:
        """Pick what starts in the free slots (scheduled runs first, then queued tasks), then acquire the
        picked rows: one statement per tenant.  Slots freed by picks that did not start (a task that cannot
        start ends ERR at once, a row settled meanwhile) are filled in another round; each round takes its
        picks out of what waits, so the rounds end."""
        self.runs.refill = False
        while True:
            if self._dispatch_scheduled(now):
                self._dispatch_queued(now)
            if not self.runs.acquire_picked() or self._slots() <= 0:
                return

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
                if self.runs.job_busy(*key) or self.runs.queue_busy(key[0], job.queue):
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
                self.runs.expect_tasks(tenant, runs)  # their status files, if they came without, made ahead
                self.queued[tenant] = Waiting(runs)
        for tenant, waiting in self.queued.items():
            conf = self.config.tenant(tenant)
            if conf is None or conf.login is None:
                continue  # removed, or its login taken away by a reload: its tasks wait
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
        if schedule.in_window(job, tz, _dt(now)):
            return True
        if due is not None and attempt == 0 and now - due <= schedule.ON_TIME.total_seconds():
            return True  # due inside the window (next_fire), starting a moment after it closed
        if due is None or attempt > 0:
            opens = schedule.next_window_opening(job, tz, _dt(now))
            log.info("tenant %s job %s: retry %d waits for its window at %s", *key, attempt,
                     opens.isoformat(timespec="seconds"))
            self._timer(opens.timestamp(), "retry", *key, attempt=attempt, rid=rid)
        else:
            log.warning("tenant %s job %s: due %s, now outside its window: recorded missed", *key,
                        _dt(due).isoformat(timespec="seconds"))
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

    # -- signals, limits, reload ---------------------------------------------------------------------------
    def _handle_signals(self, now: float) -> None:
        sigs, self.signals = self.signals, []
        for sig in sigs:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(now, f"signal {signal.Signals(sig).name}")
            elif sig == signal.SIGUSR1:
                self.que_dirty = True
            elif sig == signal.SIGHUP:
                self._reload(now)

    def _stop(self, now: float, why: str) -> None:
        if self.stopping and self.stop_deadline is not None:
            self.executor.interrupt_all(now)  # asked twice: do not wait any longer
            return
        log.info("stopping (%s): %d runs still going", why, len(self.runs))
        self.stopping = self.executor.stopping = True
        self.stop_deadline = now + self.config.server.stop_timeout
        if self.notifier:
            self.notifier.stopping()

    def _check_limits(self, now: float, run_ended: bool = False) -> None:
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self.stop_deadline = None
            if self.runs:
                log.warning("stop timeout: interrupting %d runs", len(self.runs))
                self.executor.interrupt_all(now)
        if self.stopping:
            return
        if self.end_at is not None and now >= self.end_at:
            log.info("time limit reached: taking no new work")
            self.stopping = True
            self.end_at = None  # reached: no deadline to wake for any more (the loop spun on it)
        # Memory only after a run ended: checked at start-up too, a limit below the daemon's own size made
        # every start exit before any job ran (a restart loop the supervisor gives up on, no work done).
        # Read at most every RSS_EVERY seconds: a burst ends hundreds of runs a second; memory grows slowly.
        limit = self.config.server.memory_limit
        if not run_ended or limit is None or time.monotonic() < self.next_rss:  # (monotonic: clock steps)
            return
        self.next_rss = time.monotonic() + RSS_EVERY
        if (rss := rss_bytes()) > limit:
            log.warning("memory limit: %d bytes resident > %d: finishing, then exiting for a restart",
                        rss, limit)
            self.stopping = True

    def _reload(self, now: float) -> None:
        if self.config_loader is None:
            log.warning("SIGHUP: no way to reload the config here; ignored")
            return
        if self.notifier:
            self.notifier.reloading()
        try:
            new = self.config_loader()
        except Exception as exc:  # a bad edit must not kill a running server
            log.error("reload failed, keeping the running config: %s", exc)
        else:
            self._apply(new, now)
        if self.notifier:
            self.notifier.ready()

    def _apply(self, new: Config, now: float) -> None:
        change = plans.plan(self.config, new)
        for key in change.removed:
            self.jobs.pop(key, None)  # (a held tenant's jobs are not known yet)
            for _, _, rid in self.pending.pop(key, ()):  # its claimed due times will never run: say so
                self._st(key[0]).finish(rid, State.ERR, NO_SUCH_JOB, exit_code=None, output="", now=now,
                                        note="its job was removed from the config before it could run")
        self.config = new
        self.executor.output_tail = new.server.output_tail
        fresh = [t for t in new.tenants if t.login is not None and t.name not in self.stores]
        names = {t.name for t in fresh}
        self.held = {name: exc for name, exc in self.held.items() if name in names}  # (a tenant removed)
        for tenant in fresh:
            self._open_fresh(tenant, now)
        for tenant, job in change.added:
            if tenant not in fresh:
                self._st(tenant.name).remember_jobs([job.name], now=now)
                self._add_job(tenant, job, now)
        for tenant, job in change.changed:  # a run going on or waiting goes on; only the next due time moves
            key = (tenant.name, job.name)
            if key not in self.gen:  # its tenant is not served (held, or refused): planned when it is
                continue
            self.jobs[key] = job
            self.gen[key] += 1
            if self._scheduled(job):
                self._schedule_next(key, tenant.timezone, now)  # an interval goes on from its last due time
        log.info("reloaded %s: %s", new.path, change.summary())
        if pending := plans.restart_needed(self.start_only, new):
            log.warning("reload: changed settings that apply only after a restart: %s", ", ".join(pending))
        self.que_dirty = True
        self._expect_soon(now)
        self._status()

    def _open_fresh(self, tenant: TenantDef, now: float) -> None:
        """A tenant a reload brings, or one not served yet: opened and planned, held, or refused."""
        self.held.pop(tenant.name, None)
        try:
            self._open_store(tenant, now)
        except StoreFault as exc:  # held as at start (``_open_stores``)
            self._hold(tenant.name, exc, now)
            return
        except StoreError as exc:  # refused (corrupt, another daemon's): the tenants served go on
            log.error("reload: tenant %s is not served: %s (%s)", tenant.name, exc.message, exc.hint)
            return
        self._plan_tenant(tenant, now, *self._cause(tenant.name, plans.DOWN))

    def _expect_soon(self, now: float) -> None:
        """The jobs due soon or waiting to start: the status files they have not made yet are made ahead by
        a helper thread (runtime/spares.py), so that a burst of first runs does not create them one by one."""
        soon: dict[str, list[JobDef]] = {}
        keys = [(t[3], t[4]) for t in self.timers if t[2] == "fire" and t[0] - now < SOON]
        keys += self.pending
        for key in dict.fromkeys(keys):
            if key in self.jobs:
                soon.setdefault(key[0], []).append(self.jobs[key])
        for tenant, jobs in soon.items():
            self.runs.expect_jobs(tenant, jobs)

    def _status(self) -> None:
        if not self.health.degraded:
            self._say(f"{len(self.jobs)} jobs, {len(self.runs)} running")

    def _say(self, text: str) -> None:
        if self.notifier:
            self.notifier.status(text)

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
        self.alerts.close()  # pending notifications get a short grace (runtime/alert_proc.py)
        self.runs.close()
        self.sel.close()
        self.stores.close()


def wait_for_events(sel: selectors.BaseSelector, timeout: float) -> list[tuple[selectors.SelectorKey, int]]:
    """The loop's sleep: the events that came, or none after ``timeout`` seconds.

    - The kernel may end an epoll (or select) wait late by up to 0.1 % of its length (0.5 % for a niced
      process; at most 0.1 s: fs/select.c, select_estimate_accuracy), whatever the timer slack: a 12 s sleep
      ended up to 12 ms after the due time. So a long wait ends early by that much (``_wait``), and what
      is left is waited again, with a slack of microseconds.
    - epoll counts whole milliseconds, rounded up, which alone made every due run about half a millisecond
      late: the whole milliseconds are waited for there, the rest of the last one (at most FINE) is slept
      precisely, with no events watched that long (they are taken right after).
    - Relative, and the rest measured on the monotonic clock: a step of the wall clock during the sleep
      neither stretches nor cuts it."""
    end = time.monotonic() + timeout
    left = timeout
    while left > FINE:
        events = sel.select(_wait(left))
        left = end - time.monotonic()
        if events:
            return events
    events = sel.select(0.0) if timeout <= FINE else []  # (a longer wait has just looked)
    if events or left <= 0:
        return events
    # select() with no fds: microseconds, and no clock of its own to misread (time.sleep sleeps to an
    # absolute monotonic time, which a preloaded clock faker such as libfaketime refuses with EINVAL)
    with contextlib.suppress(OSError):
        select.select([], [], [], left)
    return []


def _wait(left: float) -> float:
    """The wait to ask the selector for with ``left`` (more than FINE) seconds left: it ends by then even
    when the kernel takes all its slack, in whole milliseconds (the selector rounds up: a hair less than
    them is asked), at least one (no spin)."""
    early = left - min(left / 200, 0.1)
    return max(0.001, int(early * 1000) / 1000) - 1e-7


def serve(config: Config, *, once: bool = False, time_limit: float | None = None,
          notifier: Notifier | None = None, config_loader: Callable[[], Config] | None = None,
          web: WebChild | None = None) -> int:
    """Run the daemon until stopped (0), ``once`` is done (0) or a limit is reached (0)."""
    if web is not None and once:  # cron mode ends within the minute: no web server
        web.stop()
        web = None
    daemon = Daemon(config, once=once, time_limit=time_limit, notifier=notifier, config_loader=config_loader,
                    web=web)
    caps.precise_timers()  # before the daemon's threads start: they inherit it
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    old_handlers = {sig: signal.signal(sig, lambda s, _f: daemon.signals.append(s)) for sig in HANDLED}
    daemon.sel.register(rfd, selectors.EVENT_READ, None)
    daemon.sig_r = rfd
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # held since before the pid file was taken
    try:
        with gc_paused():  # its jobs' timers and waiting lists: new long-lived objects, no garbage cycles
            daemon.start_up()
        if web is not None:  # after the stores are opened (and migrated) by the daemon
            web.start(daemon.sel, daemon.config, time.time())
        if notifier:
            notifier.ready()
        # after READY: the helper that makes the status files of the runs due soon (runtime/spares.py) takes
        # CPU the start-up needs itself (10,000 jobs caught up: 0.1 s of it, before READY)
        daemon._expect_soon(time.time())
        daemon._status()
        held = f"; runs of {', '.join(sorted(daemon.held))} held" if daemon.held else ""
        log.info("serving %d jobs for %d tenants%s%s", len(daemon.jobs), len(daemon.stores),
                 " (once)" if once else "", held)
        return daemon.loop()
    finally:
        if notifier:
            notifier.stopping()
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        daemon.close()
        os.close(rfd)
        os.close(wfd)
