"""The daemon's set-up and planning: open the tenants' stores, catch up after downtime, claim the due times
to run, set the jobs' timers; after a storage fault, open the stores held and plan again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable

from . import housekeeping, plans, stores, tenancy
from .daemon_state import DaemonState, Key
from .model import Config, JobDef, State, TenantDef
from .samesched import SameSchedule
from .store import NO_SUCH_JOB, Claim, Instance, Store, StoreError, StoreFault, claim_store, open_store

log = logging.getLogger(__package__ + ".daemon")  # the daemon's one name in the log, whichever layer writes
CLOCK_SLACK = 1.0  # a last due time further after now is a clock's doing (hosts of a store differ a little)


class Planning(DaemonState):
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
        self.health.failed(tenant, exc, now)  # (not opened: nothing of it is served to set aside)
        if self.once:
            self.stopping, self.exit_code = True, 1

    def _plan_start(self, tenants: list[TenantDef], now: float) -> None:
        """The start's plan of the opened tenants, one transaction per store; a storage fault in one holds
        that tenant (nothing of its plan is kept; ``_recover`` plans it again), not the daemon."""
        for tenant in tenants:
            try:
                with self.stores.tx():
                    self._plan_tenant(tenant, now)
                failed = self.stores.failed.get(tenant.name)
            except StoreError as exc:
                failed = exc
            if failed is not None:
                self._forget(tenant.name)
                self.unplanned.add(tenant.name)
                self._fault(tenant.name, failed, now)

    def _plan_each(self, names: list[str], now: float) -> None:
        """Plan these served tenants again from their stores, each in a transaction of its own (the ends
        their undone work was to record first)."""
        for name in names:
            try:
                self.runs.flush(name)
                with self.stores.tx():
                    self._resync(name, now)
                failed = self.stores.failed.get(name)
            except StoreError as exc:
                failed = exc
            if failed is not None:
                self._forget(name)
                self._fault(name, failed, now)

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
        does when it sees the clock set back (``_check_clock``). On a shared store, one a little after
        now is another host's, whose clock is a little ahead: moved back, it started a second grid of due
        times for every interval job, so each ran twice per interval (schedule.next_due goes on from it)."""
        lasts = store.last_dues()
        slack = CLOCK_SLACK if store.exclusive else stores.SHARED_SKEW
        ahead = sum(last > now + slack for last in lasts.values())
        if not ahead:
            return lasts
        log.warning("tenant %s: %d jobs were last due after now (the clock was set back while the daemon "
                    "was down, or ran ahead): their due times go on from now", tenant, ahead)
        store.rewind(now)
        return store.last_dues()

    def _open_store(self, tenant: TenantDef, now: float) -> Store:
        """Claim and open a tenant's store under this instance's lease; dead daemons' runs are settled there.
        A tenant with run_as: its directory, store and status files (and the store's lock) are its user's
        (tenancy.open_as). A store held (a storage fault) stays claimed: see ``Stores.open``."""
        where = self.config.tenant_dir(tenant.name)

        def claimer(me: Instance) -> Claim | None:
            return tenancy.as_tenant(self.config, tenant, lambda: claim_store(tenant, where, me))

        def opener(claim: Claim | None) -> Store:
            store = tenancy.open_as(self.config, tenant,
                                    lambda: open_store(tenant, where, verify=True, claim=claim))
            return self.alerts.observe(tenant.name, store)  # run ends may notify (runtime/alerts.py)

        return self.stores.open(tenant, opener, now, lambda run: self.runs.files.write_for(tenant.name, run),
                                claimer, owner=tenancy.run_uid(self.config, tenant))

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
        # run ids are per store, and one daemon serves several tenants: only this tenant's are known here
        known = {rid for key, waiting in self.pending.items() if key[0] == tenant for _, _, rid in waiting}
        for run in self.stores[tenant].waiting():
            key = (tenant, run.job)
            job = self.jobs.get(key)
            if run.id in known or job is None or not job.enabled:
                continue  # ours already, or for a job this daemon does not know (another config version)
            if run.not_before is None or run.not_before <= now:
                self.pending.setdefault(key, deque()).append((run.due, run.attempt, run.id))
        self.que_dirty = True

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

    def _locked_too_long(self, now: float, *, every: bool = False) -> None:
        """A store another writer has held locked longer than the daemon lets a lock wait (``every``: any
        store locked now) is a fault: its tenant is held, planned again from its store when it is back."""
        if not self.stores.locked:  # (at every wake-up: nothing to look at, nearly always)
            return
        late = self.stores.overdue(every=every)
        for tenant, why in late.items():
            self._forget(tenant)
            self._fault(tenant, why, now)

    def _recover(self, now: float) -> None:
        """Retry the failed stores whose time came, each on its own: mend it, record the ends kept, open it
        if it was held since it failed to open, re-read what is stored; then its runs go on."""
        for name in self.health.due(now):
            now = time.time()  # (a store that failed may have made the one before wait)
            try:
                self._recover_one(name, now)
            except StoreError as exc:
                self._fault(name, exc, now)
                continue
            self.unplanned.discard(name)
            self.health.recovered(name)

    def _recover_one(self, name: str, now: float) -> None:
        if name in self.held:
            self._open_held(name, now)
            if name not in self.stores.names():
                self.stores.take_back(name)
                return  # refused or no longer configured: nothing to plan
        elif name not in self.stores.names():
            return  # a reload took it out meanwhile
        else:
            self.stores.recover(name, now)
        self.stores.take_back(name)
        try:
            self.runs.flush(name)
            with self.stores.tx():
                self._resync(name, now)
        except BaseException:
            self._forget(name)
            raise
        if name in self.stores.failed:  # its commit failed
            self._forget(name)
            raise self.stores.failed[name]

    def _open_held(self, name: str, now: float) -> None:
        """Open a store held (``_hold``); StoreFault while it still cannot be opened."""
        tenant = self.config.tenant(name)
        if tenant is not None and tenant.login is not None:
            try:
                self._open_store(tenant, now)
            except StoreFault as exc:
                self.held[name] = exc
                raise
            except StoreError as exc:  # refused (corrupt, another daemon's): the others go on
                log.error("tenant %s is not served: %s (%s)", name, exc.message, exc.hint)
        else:  # (a reload took it out, or its login)
            self.stores.release(name)
        del self.held[name]

    def _forget(self, tenant: str) -> None:
        """What waits of the tenant in memory only: re-read from its store when it is planned again."""
        for key in [k for k in self.pending if k[0] == tenant]:
            del self.pending[key]
        self.queued.pop(tenant, None)

    def _resync(self, name: str, now: float) -> None:
        """After a fault of the tenant's store, rebuild what waits from it: whatever the failed transactions
        held in memory only is found again (the job's last due moves only together with a record). A
        tenant not planned since the start (held) catches up from its last due time as after downtime, its
        new jobs from the daemon's start."""
        self._forget(name)
        self.que_dirty = True
        tenant = self.config.tenant(name)
        if tenant is not None and tenant.login is not None:
            self._plan_tenant(tenant, now, *self._cause(name))

    def _cause(self, tenant: str, otherwise: str = plans.STORE_DOWN) -> tuple[str, float | None]:
        """Why the tenant's due times since its last went unrun, and from when its new jobs count."""
        if tenant in self.unplanned:
            return plans.HELD, self.started
        return otherwise, None
