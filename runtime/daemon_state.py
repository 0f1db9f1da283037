"""The daemon's state and the few helpers every part of it uses.

The daemon is one object in layers, each its own module: this state; set-up and planning
(runtime/daemon_plan.py); firing timers and starting runs (runtime/daemon_dispatch.py); clock steps and
reloads (runtime/daemon_change.py); the loop, signals and limits (runtime/daemon.py).  Each layer uses
only what the ones below it define.
"""

from __future__ import annotations

import heapq
import os
import selectors
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import alerts, plans, steering, stores
from .clock import ClockWatch, boottime
from .health import Health
from .model import Config, JobDef
from .notify import Notifier
from .runs import Active, Runs
from .store import Run, Store, StoreError, StoreFault
from .waiting import Waiting

if TYPE_CHECKING:
    from .httpd import WebChild

Key = tuple[str, str]  # (tenant, job)
Pending = tuple[float | None, int, int]  # due, attempt, the claimed row's id


def as_utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class DaemonState:
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
        # jobs whose waiting due time the last dispatch could not start because the job or its queue ran on
        # another host (a shared store): a due time that comes meanwhile is missed for that, not for a slot
        self.held_elsewhere: set[Key] = set()
        self.queued: dict[str, Waiting] = {}  # queued tasks by tenant (runtime/waiting.py)
        self.que_dirty = True
        self.runs = Runs(config=lambda: self.config, store=self._st, instance=self.instance, sel=self.sel,
                         aside=self.stores.aside)
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

    def _retry_one(self, act: Active, run: Run) -> None:
        """A run ended (``Runs.on_end``): a failed one's retry is claimed (runtime/daemon_dispatch.py)."""
        raise NotImplementedError

    def _st(self, tenant: str) -> Store:
        return self.stores.use(tenant)  # inside the wake-up's transaction

    def _timer(self, when: float, kind: str, tenant: str, job: str, *, attempt: int = 0,
               rid: int = 0) -> None:
        self.seq += 1
        gen = self.gen.get((tenant, job), 0)
        heapq.heappush(self.timers, (when, self.seq, kind, tenant, job, gen, attempt, rid))

    def _tz(self, tenant: str) -> str:
        t = self.config.tenant(tenant)
        return t.timezone if t is not None else "UTC"

    def _scheduled(self, job: JobDef) -> bool:
        return job.enabled and job.trigger is not None

    def _fault(self, tenant: str, exc: StoreError, now: float) -> None:
        """The tenant's store failed: its runs are held (the store set aside), the other tenants' go on."""
        self.stores.set_aside(tenant, exc)
        self.health.failed(tenant, exc, now)
        if self.once:  # cron mode: the next minute's start tries again
            self.stopping, self.exit_code = True, 1

    def _say(self, text: str) -> None:
        if self.notifier:
            self.notifier.status(text)

    def _status(self) -> None:
        if not self.health.degraded:
            self._say(f"{len(self.jobs)} jobs, {len(self.runs)} running")

    def _slots(self) -> int:
        return self.config.server.max_parallel - len(self.runs)

    def _work_left(self) -> bool:
        return bool(self.pending) or any(self.queued.values()) or self.que_dirty
