"""Changes from outside the daemon: the wall clock set forward or back, and a reloaded config.
"""

from __future__ import annotations

import heapq
import logging
from datetime import timedelta

from . import plans, schedule, stores
from .daemon_dispatch import Dispatching
from .daemon_state import Key, as_utc
from .model import Config, JobDef, State, TenantDef
from .store import NO_SUCH_JOB, StoreError, StoreFault

log = logging.getLogger(__package__ + ".daemon")  # the daemon's one name in the log, whichever layer writes
SOON = 60.0  # jobs due within this many seconds of a (re)start get their first status file made ahead


class Changes(Dispatching):
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
        for tenant in list(self.stores):  # no last due time stays in the future (on a shared store: far)
            if self.stores[tenant].exclusive or -step > stores.SHARED_SKEW:
                self._st(tenant).rewind(now)

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
        due = schedule.after_step_back(job, self._tz(key[0]), as_utc(when), timedelta(seconds=step),
                                       as_utc(now))
        return due.timestamp() if due is not None else None

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
        # a tenant whose store is locked for a moment is held from now, as a failed one: both are planned
        # from the new config when their store is back (``_recover``)
        self._locked_too_long(now, every=True)
        change = plans.plan(self.config, new)
        aside = self.stores.aside  # (their stores failed: planned from the new config when they are back)
        for key in change.removed:
            self.jobs.pop(key, None)  # (a held tenant's jobs are not known yet)
            if key[0] in aside:
                continue
            for _, _, rid in self.pending.pop(key, ()):  # its claimed due times will never run: say so
                self._st(key[0]).finish(rid, State.ERR, NO_SUCH_JOB, exit_code=None, output="", now=now,
                                        note="its job was removed from the config before it could run")
        self.config = new
        self.executor.output_tail = new.server.output_tail
        fresh = [t for t in new.tenants if t.login is not None and t.name not in self.stores]
        names = {t.name for t in fresh}
        for name in [name for name in self.held if name not in names]:  # (a tenant removed, or its login)
            del self.held[name]
            self.stores.release(name)  # no longer claimed: another daemon may serve it
        for tenant in fresh:
            self._open_fresh(tenant, now)
        for tenant, job in change.added:
            if tenant not in fresh and tenant.name not in aside:
                self._st(tenant.name).remember_jobs([job.name], now=now)
                self._add_job(tenant, job, now)
        for tenant, job in change.changed:  # a run going on or waiting goes on; only the next due time moves
            key = (tenant.name, job.name)
            if key not in self.gen or tenant.name in aside:  # not served (held, refused, failed): planned
                continue  # when it is
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
            self.runs.files.expect_jobs(tenant, jobs)
