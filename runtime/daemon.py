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
ending it (runtime/health.py): the tenants of the store that failed are set aside (nothing of theirs starts,
what can be kept is kept, and they resume when their store does) while every other tenant's runs go on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import selectors
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import caps, memory, rehearse, stores
from .clock import boottime
from .daemon_change import Changes
from .executor import Child
from .isolate import gc_paused
from .launcher import drain
from .memory import rss_bytes
from .model import Config
from .notify import Notifier
from .store import StoreError

if TYPE_CHECKING:
    from .httpd import WebChild


log = logging.getLogger(__name__)

FINE = 0.0015  # seconds of a sleep that are slept precisely (the end of the last epoll millisecond)
MAX_SLEEP = stores.MAX_SLEEP  # re-read the wall clock at least this often (it may be stepped while we sleep)
RSS_EVERY = 0.1  # seconds between two looks at the daemon's memory (memory_limit)
HANDLED = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class Daemon(Changes):
    def loop(self) -> int:
        while True:
            now, self.boot = time.time(), boottime()
            self._step(self._wake_up, now)
            # The wake-up recorded the ends in its own transaction; a child that ended since is the next
            # wake-up's (its SIGCHLD is already waiting): not a second commit for it now.
            self.executor.enforce(now)
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
        timer = self.timers[0] if self.timers and not self.stopping else None
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
        if key in self.jobs and self.gen[key] == gen and end - time.monotonic() >= rehearse.LEAD / 2 \
                and tenant not in self.stores.aside:
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
        if self.que_dirty:  # a store's wake-up: a pause or a cancel request may have come with it
            self.steer.forget()
        self.steer.cancels(self.stores, self.runs, now)
        self.stores.check()
        lost = functools.partial(self.runs.stop_settled, now=now)  # a lease we had lost: stop what was taken
        for tenant in self.stores.heartbeat(now, self.runs.files.write_for, lost):
            self._reread_shared(tenant, now)
        self._fire_timers(now)
        if self.runs.collect(inside=True):  # the ends, their retries and the runs in their slots: one commit
            self._check_limits(now, run_ended=True)  # between jobs: a run just ended
        if not self.stopping:
            self._dispatch(now)  # what just came due goes first: its lateness counts

    def _step(self, work: Callable[[float], None], now: float) -> None:
        """One transaction of work per store; the runs it claimed are spawned only after it committed. A
        store that failed holds its tenants' runs (their work in it undone), the others' go on."""
        if self.health.degraded:
            self._recover(now)
        try:
            with self.stores.tx(eager=True):
                for tenant in self.stores.resumed:  # its lock was let go: what ended meanwhile first
                    self.runs.flush(tenant)
                    self.que_dirty = True  # (its queued tasks were left out of the last reading)
                work(now)
                self.runs.record_pids()  # after the ends: a run that ended has its pid written with it
        except StoreError as exc:
            self._undone(exc, now)
            return
        finally:
            self._locked_too_long(now)
        if failed := self.stores.failed:
            self.runs.abort(failed)  # rolled back: nothing of theirs was spawned
            for tenant, why in list(failed.items()):
                self._forget(tenant)
                self._fault(tenant, why, now)
        self.runs.committed()
        self.runs.launch()
        faults, self.runs.faults = self.runs.faults, {}  # a run that could not start, not recorded
        for tenant, why in faults.items():
            self._fault(tenant, why, now)

    def _undone(self, exc: StoreError, now: float) -> None:
        """A store failed inside the work itself: every store's work was rolled back. The store that
        failed (the error names it: StoreError.where; every one served only when it does not) holds its
        tenants' runs; the others are planned again from their stores at once, for what this work held in
        memory only is gone."""
        self.runs.abort()
        self.que_dirty = True
        failed = dict(self.stores.failed)
        if not any(why is exc for why in failed.values()):
            failed.update(dict.fromkeys(self.stores.of(exc), exc))
        for tenant, why in failed.items():
            self._forget(tenant)
            self._fault(tenant, why, now)
        self._plan_each(list(self.stores), now)
        # what their plan claimed again (the due times that fired in the undone work, say) starts at once,
        # not at the next timer: waiting that long, the next due time of the same job was recorded missed
        self.runs.refill = True

    def _flush_at_exit(self) -> None:
        if not self.runs.unrecorded:
            return
        for tenant in dict.fromkeys(act.tenant for act, _, _ in self.runs.unrecorded):
            if tenant in self.stores.aside and tenant in self.stores.names():
                self.stores.take_back(tenant)  # a last try: the daemon exits, nothing else is written
            try:
                self.runs.flush(tenant)
            except StoreError as exc:
                log.error("tenant %s: exiting with run ends its store did not take: %s", tenant, exc)

    def _give_back(self) -> None:
        """Fallen idle after runs: the memory their bookkeeping freed goes back to the system."""
        if self.runs:
            self.ran = True
        elif self.ran and not self._work_left() and (mono := time.monotonic()) >= self.give_back_at:
            memory.give_back()
            self.ran, self.give_back_at = False, mono + memory.GIVE_BACK_EVERY

    def _sleep_time(self, now: float) -> float:
        if self.runs.refill and not self.stopping:
            return 0.0  # a slot freed after its run's transaction: the next one waits for no other event
        wake = [now + MAX_SLEEP]
        if self.stores.shared:
            wake.append(self.stores.next_beat)
        if self.timers and not self.stopping:
            wake.append(self.timers[0][0])
        web = self.web.wake_at() if self.web is not None else None
        deadlines = (self.executor.next_deadline(), self.stop_deadline, self.end_at, self.next_ping,
                     self.health.retry_at, self.runs.save_by, web, self.stores.lock_retry_at(now))
        for t in deadlines:
            if t is not None:
                wake.append(t)
        return max(0.0, min(wake) - now)

    def _ping(self, now: float) -> None:
        if self.next_ping is not None and now >= self.next_ping and self.notifier:
            self.notifier.ping()
            interval = self.notifier.watchdog_interval() or MAX_SLEEP
            self.next_ping = now + interval

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
