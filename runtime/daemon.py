"""The daemon loop: sleep until the next due time, a child's exit or a signal; start what is due.

No fixed tick: a heap holds every job's next due time, and ``selectors`` waits on the signal wake-up pipe
(SIGCHLD, SIGUSR1 for enqueue, SIGHUP, SIGTERM, SIGINT) and the running children's output pipes, with a
timeout that ends at the next due time, timeout or watchdog ping.  A job never overlaps itself: a due time
that comes while the job runs waits (one at most; another is recorded missed).  Scheduled runs go straight
to RUN in the store; enqueued tasks and `jobs run` are QUE rows read back on SIGUSR1.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import selectors
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from . import housekeeping, plans, schedule, tenancy
from . import sqlite_store as _sqlite_backend  # noqa: F401  (registers "sqlite": see below)
from .clock import ClockWatch, boottime
from .memory import rss_bytes
from .model import Config, JobDef, State, TenantDef
from .notify import Notifier
from .runs import Runs
from .store import INTERRUPTED, Run, Store, open_store

# Store backends are imported with this module, that is before the privilege drop, on purpose: after it,
# the interpreter's own modules (sqlite3) may be out of the dropped user's reach.

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # re-read the wall clock at least this often (it may be stepped while we sleep)
HANDLED = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
Key = tuple[str, str]  # (tenant, job)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Daemon:
    def __init__(self, config: Config, *, once: bool, time_limit: float | None, notifier: Notifier | None,
                 config_loader: Callable[[], Config] | None) -> None:
        self.config = config
        self.once = once
        self.notifier = notifier
        self.config_loader = config_loader
        self.instance = uuid.uuid4().hex
        self.started = time.time()
        self.clock = ClockWatch.start(self.started, boottime())
        self.end_at = self.started + time_limit if time_limit is not None else None
        self.stores: dict[str, Store] = {}
        self.jobs: dict[Key, JobDef] = {}
        self.gen: dict[Key, int] = {}
        self.timers: list[tuple[float, int, str, str, str, int, int]] = []  # when, seq, kind, t, j, gen, try
        self.seq = 0
        self.pending: dict[Key, deque[tuple[float | None, int]]] = {}  # due, attempt
        self.queued: dict[str, list[Run]] = {}
        self.que_dirty = True
        self.sel = selectors.DefaultSelector()
        self.runs = Runs(config=lambda: self.config, store=self._st, instance=self.instance, sel=self.sel)
        self.executor = self.runs.executor
        self.stopping = False
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self.next_ping: float | None = None
        self.signals: list[int] = []
        self.tx: contextlib.ExitStack | None = None
        self.tx_open: set[str] = set()
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
        for tenant in config.tenants:
            if tenant.login is None:
                log.info("tenant %s has no login: it runs nothing (%d jobs)", tenant.name, len(tenant.jobs))
                continue
            store = self._open_store(tenant, now)
            store.remember_jobs([j.name for j in tenant.jobs if self._scheduled(j)], now=now)
            for job in tenant.jobs:
                self._add_job(tenant, job, now)

    def _open_store(self, tenant: TenantDef, now: float) -> Store:
        """Open a tenant's store; runs a dead daemon left in RUN are found here and marked ERR crashed."""
        # a tenant with run_as: its directory, store and status files are its user's (tenancy.open_as)
        where = self.config.tenant_dir(tenant.name)
        store = tenancy.open_as(self.config, tenant, lambda: open_store(tenant, where))
        self.stores[tenant.name] = store
        for run_id in store.crash_orphans(self.instance, now=now):
            log.warning("tenant %s: run %d was left running by a dead daemon: ERR crashed",
                        tenant.name, run_id)
            self.runs.write_status(tenant.name, store.get(run_id))
        return store

    def _scheduled(self, job: JobDef) -> bool:
        return job.enabled and job.trigger is not None

    def _add_job(self, tenant: TenantDef, job: JobDef, now: float) -> None:
        key = (tenant.name, job.name)
        self.jobs[key] = job
        self.gen[key] = self.gen.get(key, 0) + 1
        if not self._scheduled(job):
            return
        for due in plans.catch_up(self._st(tenant.name), tenant, job, now):
            self.pending.setdefault(key, deque()).append((due, 0))
        if not self.once:
            self._schedule_next(key, tenant.timezone, now)

    def _schedule_next(self, key: Key, tz: str, now: float, last: float | None = None) -> None:
        """Set the job's timer to its first due time after ``now`` (an interval goes on from due time
        ``last``, by default the stored last due time: see schedule.next_due)."""
        nxt = plans.next_due(self._st(key[0]), self.jobs[key], tz, now, last)
        if nxt is not None:
            self._timer(nxt, "fire", *key)

    def _timer(self, when: float, kind: str, tenant: str, job: str, attempt: int = 0) -> None:
        self.seq += 1
        gen = self.gen.get((tenant, job), 0)
        heapq.heappush(self.timers, (when, self.seq, kind, tenant, job, gen, attempt))

    def _tz(self, tenant: str) -> str:
        t = self.config.tenant(tenant)
        return t.timezone if t is not None else "UTC"

    # -- the loop ----------------------------------------------------------------------------------------
    def loop(self) -> int:
        while True:
            with self._transactions():
                now = time.time()
                self._check_clock(now)
                self._handle_signals(now)
                self._check_limits(now)
                self._fire_timers(now)
                if not self.stopping:
                    self._dispatch(now)  # what just came due goes first: its lateness counts
                freed = self.runs.collect()
                self._retry()
                self.executor.enforce(now)
                if freed:
                    self._check_limits(now, run_ended=True)  # between jobs: a run just ended
                    if not self.stopping:
                        self._dispatch(now)
            if not self.runs and (self.stopping or (self.once and not self._work_left())):
                return self.exit_code
            for key, _ in self.sel.select(self._sleep_time(now)):
                if key.data is None:
                    _drain(key.fd)  # the signal wake-up pipe; the handlers already noted the signals
                else:
                    self.executor.read(key.data)

    @contextlib.contextmanager
    def _transactions(self) -> Iterator[None]:
        """Everything one wake-up writes goes into one transaction per tenant: one commit for many runs.

        Closed before the daemon sleeps, so `jobs enqueue` never waits on a sleeping daemon's lock.
        """
        with contextlib.ExitStack() as stack:
            self.tx, self.tx_open = stack, set()
            try:
                yield
            finally:
                self.tx = None

    def _st(self, tenant: str) -> Store:
        store = self.stores[tenant]
        if self.tx is not None and tenant not in self.tx_open:
            self.tx.enter_context(store.batch())
            self.tx_open.add(tenant)
        return store

    def _work_left(self) -> bool:
        return bool(self.pending) or any(self.queued.values()) or self.que_dirty

    def _sleep_time(self, now: float) -> float:
        wake = [now + MAX_SLEEP]
        if self.timers and not self.stopping:
            wake.append(self.timers[0][0])
        for t in (self.executor.next_deadline(), self.stop_deadline, self.end_at, self.next_ping):
            if t is not None:
                wake.append(t)
        return max(0.0, min(wake) - now)

    def _fire_timers(self, now: float) -> None:
        if self.next_ping is not None and now >= self.next_ping and self.notifier:
            self.notifier.ping()
            interval = self.notifier.watchdog_interval() or MAX_SLEEP
            self.next_ping = now + interval
        while self.timers and self.timers[0][0] <= now and not self.stopping:
            when, _, kind, tenant, job, gen, attempt = heapq.heappop(self.timers)
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
                self._fire(key, when, now, waiting)
            else:
                waiting.append((None, attempt))

    def _fire(self, key: Key, when: float, now: float, waiting: deque[tuple[float | None, int]]) -> None:
        """A job's timer fired: on time its due time is run; late, the job's catch-up policy decides."""
        tz, store = self._tz(key[0]), self._st(key[0])
        self._schedule_next(key, tz, now, when)
        dues = plans.overdue(store, self.jobs[key], when, tenant=key[0], tz=tz, now=now,
                             cause=self.clock.cause(when, now))
        if waiting and dues:  # one due time already waits to start: never pile them up
            note = ("the previous run was still going" if self.runs.job_busy(*key) else
                    "an earlier due time was still waiting for its queue or a free slot (max_parallel)")
            store.missed(key[1], dues, now=now, note=note)
            return
        waiting.extend((due, 0) for due in dues)

    def _check_clock(self, now: float) -> None:
        """A wall clock set back leaves every timer in the future: move them (schedule.after_step_back)."""
        step = self.clock.look(now, boottime())
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
        for key in list(self.pending):
            if self._slots() <= 0:
                return
            job = self.jobs.get(key)
            if job is None:
                del self.pending[key]
                continue
            if self.runs.job_busy(*key) or self.runs.queue_busy(key[0], job.queue):
                continue
            due, attempt = self.pending[key].popleft()
            if not self.pending[key]:
                del self.pending[key]
            if self._window_allows(key, job, due, attempt, now):
                self.runs.start_scheduled(key[0], job, due, attempt)
        self._dispatch_queued(now)

    def _dispatch_queued(self, now: float) -> None:
        if self.que_dirty:
            self.que_dirty = False
            self.queued = {t: s.queued() for t, s in self.stores.items()}
        for tenant, runs in self.queued.items():
            conf = self.config.tenant(tenant)
            if conf is None or conf.login is None:
                continue  # removed, or its login taken away by a reload: its tasks wait
            blocked: set[str] = set()  # queues whose head cannot start yet: the rest wait behind it
            for run in list(runs):
                if self._slots() <= 0:
                    return
                queue = run.queue
                if queue is not None and (queue in blocked or self.runs.queue_busy(tenant, queue)):
                    blocked.add(queue)
                    continue
                if run.job and self.runs.job_busy(tenant, run.job):
                    if queue is not None:
                        blocked.add(queue)
                    continue
                runs.remove(run)
                self.runs.start_queued(tenant, run, self.jobs.get((tenant, run.job)) if run.job else None)

    def _window_allows(self, key: Key, job: JobDef, due: float | None, attempt: int, now: float) -> bool:
        """A scheduled run starts only inside one of its job's windows, whatever made it late.

        next_fire() only yields due times inside a window, but a catch-up run after downtime, a due time
        that waited for the job's previous run, or a retry after its backoff can come up outside: a due
        time is then recorded missed (ON_TIME late is still on time), a retry waits for the next opening.
        """
        tz = self._tz(key[0])
        if schedule.in_window(job, tz, _dt(now)):
            return True
        if due is not None and now - due <= schedule.ON_TIME.total_seconds():
            return True  # due inside the window (next_fire), starting a moment after it closed
        if due is None:
            opens = schedule.next_window_opening(job, tz, _dt(now))
            log.info("tenant %s job %s: retry %d waits for its window at %s", *key, attempt,
                     opens.isoformat(timespec="seconds"))
            self._timer(opens.timestamp(), "retry", *key, attempt)
        else:
            log.warning("tenant %s job %s: due %s, now outside its window: recorded missed", *key,
                        _dt(due).isoformat(timespec="seconds"))
            self._st(key[0]).missed(key[1], [due], now=now, note="outside the job's window when it could run")
        return False

    def _retry(self) -> None:
        """Schedule a retry, with backoff, of each failed run of a job that has retries left."""
        ended, self.runs.ended = self.runs.ended, []
        for act, run in ended:
            job = act.jobdef
            if job is None or run.state is not State.ERR or run.reason == INTERRUPTED or self.once:
                continue
            if act.attempt < job.retry.count:
                delay = job.retry.backoff * 2 ** act.attempt
                log.info("tenant %s job %s: retry %d in %.0f s", act.tenant, act.job, act.attempt + 1, delay)
                self._timer(time.time() + delay, "retry", act.tenant, act.job, act.attempt + 1)

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
        # Memory only after a run ended: checked at start-up too, a limit below the daemon's own size made
        # every start exit before any job ran (a restart loop the supervisor gives up on, no work done).
        limit = self.config.server.memory_limit
        if run_ended and limit is not None and (rss := rss_bytes()) > limit:
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
            del self.jobs[key]
            self.pending.pop(key, None)
        self.config = new
        self.executor.output_tail = new.server.output_tail
        for tenant in new.tenants:
            if tenant.login is not None and tenant.name not in self.stores:
                self._open_store(tenant, now)
        for tenant, job in change.added:
            self._st(tenant.name).remember_jobs([job.name], now=now)
            self._add_job(tenant, job, now)
        for tenant, job in change.changed:  # a run going on or waiting goes on; only the next due time moves
            key = (tenant.name, job.name)
            self.jobs[key] = job
            self.gen[key] += 1
            if self._scheduled(job):
                self._schedule_next(key, tenant.timezone, now)  # an interval goes on from its last due time
        log.info("reloaded %s: %s", new.path, change.summary())
        if pending := plans.restart_needed(self.start_only, new):
            log.warning("reload: changed settings that apply only after a restart: %s", ", ".join(pending))
        self.que_dirty = True
        self._status()

    def _status(self) -> None:
        if self.notifier:
            self.notifier.status(f"{len(self.jobs)} jobs, {len(self.runs)} running")

    def close(self) -> None:
        self.sel.close()
        for store in self.stores.values():
            store.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def serve(config: Config, *, once: bool = False, time_limit: float | None = None,
          notifier: Notifier | None = None, config_loader: Callable[[], Config] | None = None) -> int:
    """Run the daemon until stopped (0), ``once`` is done (0) or a limit is reached (0)."""
    daemon = Daemon(config, once=once, time_limit=time_limit, notifier=notifier, config_loader=config_loader)
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    old_handlers = {sig: signal.signal(sig, lambda s, _f: daemon.signals.append(s)) for sig in HANDLED}
    daemon.sel.register(rfd, selectors.EVENT_READ, None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # held since before the pid file was taken
    try:
        daemon.start_up()
        if notifier:
            notifier.ready()
        daemon._status()
        log.info("serving %d jobs for %d tenants%s", len(daemon.jobs), len(daemon.stores),
                 " (once)" if once else "")
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
