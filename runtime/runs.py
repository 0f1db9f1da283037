"""Runs in progress: each is a store row, a status file and a child process.

``Runs`` starts them (the stored row acquired and committed first, then status file, environment,
child), notes what is busy (a job never overlaps itself, a queue runs one at a time) and ends them
(outcome into the store, status file kept for queued tasks, the job's file for scheduled runs).  The
daemon decides what to start and when to retry.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from . import liveness
from .errors import UserError
from .executor import DEFAULT_SIGNALS, Executor, Outcome, job_argv
from .launcher import Launcher
from .limits import argv_problem
from .model import Config, JobDef, State, storable
from .run_files import StatusFiles
from .runplace import Places
from .store import NO_SUCH_JOB, SPAWN_FAILED, Process, Run, Store, StoreError

log = logging.getLogger(__name__)
REFUSED = "refused"  # the root rule (or the tenant's identity) kept the run from starting

PID_DELAY = 0.2  # seconds a spawned run's pid may wait to ride on another transaction or its end


@dataclass
class Active:
    """A run in progress."""

    tenant: str
    job: str  # "" for an enqueued task
    queue: str | None
    run_id: int
    queued: bool  # came through the queue (it has a status file of its own)
    jobdef: JobDef | None
    attempt: int
    due: float | None = None  # a scheduled run's due time


class Runs:
    def __init__(self, *, config: Callable[[], Config], store: Callable[[str], Store], instance: str,
                 sel: selectors.BaseSelector, aside: Collection[str] = frozenset()) -> None:
        self.config = config
        self.aside = aside  # tenants whose store failed (runtime/stores.py): their ends wait in memory
        self.store = store
        self.instance = instance
        self.sel = sel
        server = config().server
        self.executor = Executor(output_tail=server.output_tail, cwd=server.install_dir)
        self.executor.on_close = self._forget_fd
        self.executor.launcher = Launcher.create(DEFAULT_SIGNALS)  # spawns off the loop (runtime/launcher.py)
        if self.executor.launcher is not None:  # data None: the loop only drains it; ``land`` looks
            sel.register(self.executor.launcher.wake_r, selectors.EVENT_READ, None)
        self.launching: dict[int, Active] = {}  # handed to the launcher, by id(child); pid not known yet
        self.spawn_failed: list[tuple[Active, Outcome, float]] = []  # landed with an error: ends to record
        self.active: dict[int, Active] = {}  # by child pid
        self.busy_jobs: set[tuple[str, str]] = set()
        self.busy_queues: set[tuple[str, str]] = set()
        self.on_end: Callable[[Active, Run], None] | None = None  # in the transaction recording the end
        self.claimed: list[tuple[Active, Run, list[str], float | None]] = []  # acquired, not spawned yet
        self.unrecorded: list[tuple[Active, Outcome, float]] = []  # ended while the store failed
        # ends written in the daemon's open transaction (``collect(inside=True)``), and their final rows:
        # status files follow its commit, a failed commit keeps them in ``unrecorded``
        self.recording: list[tuple[Active, Outcome, float]] = []
        self.finals: list[tuple[Active, Run | None]] = []
        # committed ends whose files wait for the spawns
        self.after_launch: list[tuple[Active, Run | None]] = []
        self.faults: dict[str, StoreError] = {}  # tenants whose ends could not be written (``_record``)
        # a claimed run could not be started after its transaction committed (refused, spawn failed in the
        # loop): its slot is free now, and the daemon's next wake-up, at once, fills it
        self.refill = False
        # (tenant, run id) -> (pid, process start, boot id) of runs spawned but not yet written; being written
        self.unsaved: dict[tuple[str, int], Process] = {}
        self.saving: dict[tuple[str, int], Process] = {}
        self.picked: dict[str, list[Active]] = {}  # to acquire in the open transaction, by tenant
        # scheduled runs not acquired because their job or queue runs on another host (shared store): they
        # still wait, and go back to the daemon's waiting list after its dispatch (``take_blocked``)
        self.blocked: list[Active] = []
        self._picked = 0
        self.save_by: float | None = None  # when the daemon must wake to write them at the latest
        self.boot = liveness.boot_id()  # read once: a process outlives no boot
        self.places = Places(instance)  # what a tenant's runs share, per config (runtime/runplace.py)
        self.files = StatusFiles(config, self.places)  # the runs' status files (runtime/run_files.py)

    def __len__(self) -> int:  # a picked or claimed run takes its slot before it is spawned
        return len(self.active) + len(self.claimed) + len(self.launching) + self._picked

    def job_busy(self, tenant: str, job: str) -> bool:
        return (tenant, job) in self.busy_jobs

    def queue_busy(self, tenant: str, queue: str | None) -> bool:
        return queue is not None and (tenant, queue) in self.busy_queues

    # -- starting -------------------------------------------------------------------------------------
    # A run exists durably before its process: start_* pick a stored row (its slot, job and queue busy at
    # once); ``acquire_picked`` acquires the picked rows of each tenant (QUE -> RUN) in one statement inside
    # the daemon's open transaction; ``launch`` spawns them all after that transaction committed (one commit
    # for a whole wake-up), then records their pids.  ``abort`` forgets them when the commit failed.
    def start_scheduled(self, tenant: str, job: JobDef, due: float | None, attempt: int, run_id: int) -> None:
        """Start the claimed row ``run_id`` of ``job`` (nothing starts if it is no longer QUE)."""
        self._pick(Active(tenant, job.name, job.queue, run_id, False, job, attempt, due))

    def start_queued(self, tenant: str, run: Run, job: JobDef | None) -> None:
        self._pick(Active(tenant, run.job, run.queue, run.id, True, job, run.attempt))

    def _pick(self, act: Active) -> None:
        self.picked.setdefault(act.tenant, []).append(act)
        self._picked += 1
        self._busy(act, True)

    def acquire_picked(self) -> bool:
        """Inside the daemon's transaction: QUE -> RUN for the rows picked since the last call, one statement
        per tenant; a row no longer QUE (settled by hand, taken by another daemon) frees what it held, and so
        does a task that cannot start (ended ERR at once). True when any slot was freed so: the daemon picks
        again for it."""
        picked, self.picked, self._picked = self.picked, {}, 0
        before = len(self.claimed)
        for tenant, acts in picked.items():
            now = time.time()  # when they really start (the wake-up may have had other work first)
            got = self.store(tenant).acquire(instance=self.instance, now=now, ids=[a.run_id for a in acts],
                                             limit=len(acts))
            rows = {run.id: run for run in got}
            for act in acts:
                run = rows.get(act.run_id)
                if run is None:
                    self._busy(act, False)
                    if not act.queued and self._still_waits(act):
                        self.blocked.append(act)
                elif run.bad is not None:  # written past our checks (runtime/sqlite_rows.py): never started
                    self._busy(act, False)
                    why = f"the stored row is not one this daemon wrote or can start: {run.bad}\n"
                    self._end(act, Outcome(State.ERR, SPAWN_FAILED, None, why), now)
                elif act.queued:
                    self._acquired_task(act, run, now)
                else:
                    assert act.jobdef is not None
                    self.claimed.append((act, run, job_argv(act.jobdef), act.jobdef.timeout))
        return len(self.claimed) - before < sum(len(acts) for acts in picked.values())

    def _still_waits(self, act: Active) -> bool:
        """A scheduled row not acquired is still QUE: its job or queue runs elsewhere (a shared store)."""
        if self.store(act.tenant).exclusive:
            return False  # nothing runs elsewhere: the row was settled (cancelled, ended by hand)
        run = self.store(act.tenant).get(act.run_id)
        return run is not None and run.state is State.QUE

    def take_blocked(self) -> list[Active]:
        blocked, self.blocked = self.blocked, []
        return blocked

    def _acquired_task(self, act: Active, run: Run, now: float) -> None:
        if run.argv is not None:
            problem = argv_problem(run.argv)  # a row written past `jobs enqueue`'s checks must not stop us
            if problem is None:
                self.claimed.append((act, run, list(run.argv), None))
                return
            outcome = Outcome(State.ERR, SPAWN_FAILED, None, problem)
        elif act.jobdef is not None:
            self.claimed.append((act, run, job_argv(act.jobdef), act.jobdef.timeout))
            return
        else:
            outcome = Outcome(State.ERR, NO_SUCH_JOB, None, f"no job {run.job!r} in the config")
        self._busy(act, False)
        self._end(act, outcome, now)

    def abort(self, tenants: Collection[str] | None = None) -> None:
        """The transaction holding the claims failed (``tenants``: only the stores of these; None: all):
        nothing of theirs was spawned, nothing of theirs is busy; the ends it was to record are kept in
        memory and the pids it was to record wait for the next one."""
        def mine(tenant: str) -> bool:
            return tenants is None or tenant in tenants

        for act, *_ in self.claimed:
            if mine(act.tenant):
                self._busy(act, False)
        self.claimed = [c for c in self.claimed if not mine(c[0].tenant)]
        for tenant in [t for t in self.picked if mine(t)]:
            for act in self.picked.pop(tenant):
                self._busy(act, False)
                self._picked -= 1
        self.unrecorded += [e for e in self.recording if mine(e[0].tenant)]
        self.recording = [e for e in self.recording if not mine(e[0].tenant)]
        self.finals = [f for f in self.finals if not mine(f[0].tenant)]
        for key in [k for k in self.saving if mine(k[0])]:
            self.unsaved.setdefault(key, self.saving.pop(key))
        self._pids_by(time.time())

    def launch(self) -> None:
        """Spawn every run claimed in the transaction that just committed.  Their processes (pid, start
        time, boot) are written PID_DELAY later, in whatever transaction is open then (``record_pids``), or
        with their end if they ended before: in the same statement.  Until then a restarted daemon finds
        them by their environment (runtime/liveness.py)."""
        claimed, self.claimed = self.claimed, []
        try:
            for act, run, argv, timeout in claimed:
                pid = self._spawn(act, run, argv, timeout, run.started or time.time())
                if pid:  # its start time is read when it is written (see record_pids)
                    self.unsaved[act.tenant, act.run_id] = (pid, None, self.boot)
        finally:
            self.executor.hand_over()
            ended, self.after_launch = self.after_launch, []
            for act, final in ended:
                self._ended(act, final)
        self._pids_by(time.time())

    def _pids_by(self, now: float) -> None:
        """A process not written yet (or a spawn whose pid has not come back) sets when the daemon wakes to
        write it at the latest; the launcher does not wake the loop for a pid (runtime/launcher.py)."""
        if self.save_by is None and (self.unsaved or self.launching):
            self.save_by = now + PID_DELAY

    def record_pids(self) -> None:
        """Inside the daemon's transaction, after its ends: once ``save_by`` has come, the processes of the
        runs launched since the last time and still running.  Before it, they wait: a run that ends by then
        has its process written with its end, in the same statement, and a burst of short runs writes no
        process on its own (a restarted daemon finds a run by its environment meanwhile: liveness.py)."""
        now = time.time()
        if self.save_by is None or now < self.save_by:
            return
        unsaved, self.unsaved, self.save_by = self.unsaved, {}, None
        for (tenant, run_id), proc in unsaved.items():
            if tenant in self.aside:  # written once its store is back (or with its end)
                self.unsaved[tenant, run_id] = proc
                continue
            pid, start, boot = self.saving[tenant, run_id] = _timed(proc, self.active)
            self.store(tenant).started(run_id, pid=pid, proc_start=start, boot_id=boot)
        self._pids_by(now)  # spawns still landing

    def committed(self) -> None:
        """The transaction committed: its ends' status files are written.  Those not shared with a run
        about to start wait until it was spawned (``launch``): a freed slot is filled first.  A job's own
        file takes its end before its next run's RUN text."""
        self.saving, self.recording = {}, []
        finals, self.finals = self.finals, []
        starting = {(act.tenant, act.job) for act, *_ in self.claimed if not act.queued}
        for act, run in finals:
            if not act.queued and (act.tenant, act.job) in starting:
                self._ended(act, run)
            else:
                self.after_launch.append((act, run))

    def _spawn(self, act: Active, run: Run, argv: list[str], timeout: float | None, now: float) -> int | None:
        place = self.places(self.config(), act.tenant)
        status = place.status_path(run)
        self.files.write(place, run, status, keep=True)  # its end is written through the same fd
        try:  # the root rule, at every spawn: a reload or a task queued into any tenant meets it too
            ident = place.identity()
            env = place.environment(act.job, act.jobdef, act.run_id, status)
        except UserError as exc:
            log.error("tenant %s run %d: %s", act.tenant, act.run_id, exc.message)
            self._fail(act, Outcome(State.ERR, REFUSED, None, f"{exc.message} ({exc.hint})\n"), now)
            return None
        try:
            child = self.executor.spawn(act, argv, env, timeout, now, ident=ident)
        except (OSError, ValueError) as exc:  # ValueError: what exec cannot take (a NUL byte)
            why = f"{argv[0][:200]}: {getattr(exc, 'strerror', None) or exc}"
            self._fail(act, Outcome(State.ERR, SPAWN_FAILED, None, why), now)
            return None
        if child.fd is not None:
            self.sel.register(child.fd, selectors.EVENT_READ, child)
        if not child.pid:  # handed to the launcher: its pid comes with ``land``
            self.launching[id(child)] = act
            return None
        self.active[child.pid] = act
        return child.pid

    def land(self, now: float) -> None:
        """Take the launcher's spawns that finished (at the top of every wake-up: a cancel or a stop then
        finds their pids): running ones wait for their pid to be written, failed ones for ``collect`` to
        record them like any end."""
        for child, error in self.executor.landed():
            act = self.launching.pop(id(child))
            if error is not None:
                self._busy(act, False)
                why = f"{error.filename or ''}: {error.strerror or error}"
                self.spawn_failed.append((act, Outcome(State.ERR, SPAWN_FAILED, None, why), now))
                continue
            self.active[child.pid] = act
            self.unsaved[act.tenant, act.run_id] = (child.pid, None, self.boot)
        self._pids_by(now)

    def _fail(self, act: Active, outcome: Outcome, now: float) -> None:
        """A claimed run that could not be started: recorded like any end (kept in memory if the store
        fails right now), outside the transaction that claimed it, which has committed."""
        self._busy(act, False)
        self.refill = True
        self._record([(act, outcome, now)])

    def _busy(self, act: Active, busy: bool) -> None:
        jobs, queues = self.busy_jobs, self.busy_queues
        if busy:
            if act.job:
                jobs.add((act.tenant, act.job))
            if act.queue is not None:
                queues.add((act.tenant, act.queue))
            return
        jobs.discard((act.tenant, act.job))
        if act.queue is not None:
            queues.discard((act.tenant, act.queue))

    def stop_settled(self, tenant: str, now: float) -> None:
        """This daemon had lost its lease on the tenant's store (it could not renew it: stopped, or cut off
        from the server), and another daemon settled its runs there as lost: their processes here are
        stopped, as a dead daemon's are (runtime/orphans.py), for the job may run elsewhere now and
        nobody records them any more. Their records stay as the other daemon wrote them."""
        store = self.store(tenant)
        for pid, act in list(self.active.items()):
            run = store.get(act.run_id) if act.tenant == tenant else None
            if run is None or (run.state is State.RUN and run.instance == self.instance):
                continue
            if self.executor.interrupt(pid, now):
                log.warning("tenant %s run %d (%s): recorded %s %s by another daemon while this one's lease "
                            "had run out: stopping its process here, so that the job does not run twice",
                            tenant, act.run_id, act.job or "task", run.state.value, run.reason or "")

    # -- ending ---------------------------------------------------------------------------------------
    def _forget_fd(self, fd: int) -> None:
        with contextlib.suppress(KeyError):  # (one lookup, not a look at the map first)
            self.sel.unregister(fd)

    def collect(self, *, inside: bool = False) -> bool:
        """Record every child that exited; True if any did (a slot, a job, a queue may be free).

        Each tenant's ends are one transaction, with what ``on_end`` writes for each (its retry): an end and
        its retry are kept together or not at all.  An end the store cannot take now is kept in memory
        (``unrecorded``) and written by ``flush`` once the store is writable again.

        ``inside``: the daemon's wake-up transaction is open, and the ends are written in it: one commit
        for the ends, their retries and the runs started in the slots they freed.  Their status files are
        written once it committed (``committed``); if it fails, ``abort`` keeps them in ``unrecorded``.
        """
        now = time.time()
        self.land(now)
        ends, self.spawn_failed = self.spawn_failed, []
        for child, outcome in self.executor.reap(any_child=True):
            act = self.active.pop(child.pid)
            self._busy(act, False)
            ends.append((act, outcome, now))
        freed = bool(ends)
        if inside:
            if self.aside:  # their store failed: kept in memory until it can be written
                self.unrecorded += [e for e in ends if e[0].tenant in self.aside]
                ends = [e for e in ends if e[0].tenant not in self.aside]
            self.recording += ends
            for act, outcome, at in ends:
                proc = self.unsaved.pop((act.tenant, act.run_id), None)  # written with its end
                if proc is not None:
                    self.saving[act.tenant, act.run_id] = proc  # back to unsaved if this transaction fails
                self.finals.append((act, self._finish(act, outcome, at, proc)))
        else:
            self._record(ends)
        return freed

    def flush(self, tenant: str) -> None:
        """Write the tenant's ends kept while its store failed; raises StoreError if it still fails."""
        ends = [e for e in self.unrecorded if e[0].tenant == tenant]
        if not ends:
            return
        self.unrecorded = [e for e in self.unrecorded if e[0].tenant != tenant]
        self._record(ends)
        fault = self.faults.pop(tenant, None)  # raised here: not a second time by the next collect
        if any(e[0].tenant == tenant for e in self.unrecorded):
            raise fault or StoreError(f"tenant {tenant}: the run store is still not writable")

    def _record(self, ends: list[tuple[Active, Outcome, float]]) -> None:
        for tenant in dict.fromkeys(act.tenant for act, _, _ in ends):
            mine = [e for e in ends if e[0].tenant == tenant]
            if tenant in self.aside:  # its store failed: kept until it is back
                self.unrecorded += mine
                continue
            try:
                with self.store(tenant).batch():
                    finals = [(act, self._finish(act, outcome, at)) for act, outcome, at in mine]
            except StoreError as exc:
                log.warning("tenant %s: could not record the end of %d runs (kept until the store is "
                          "writable again): %s", tenant, len(mine), exc)
                self.faults[tenant] = exc
                self.unrecorded += mine
                continue
            for act, run in finals:
                self._ended(act, run)

    def _end(self, act: Active, outcome: Outcome, now: float) -> None:
        self._ended(act, self._finish(act, outcome, now))

    def _finish(self, act: Active, outcome: Outcome, now: float, proc: Process | None = None) -> Run | None:
        """Record the end and what ``on_end`` writes with it (a retry); the final row. A run that another
        daemon ended first (it found this daemon's lease run out) keeps that record and gets no retry here:
        its row is returned as it is."""
        store = self.store(act.tenant)
        run = store.finish(act.run_id, outcome.state, outcome.reason and storable(outcome.reason), now=now,
                           exit_code=outcome.exit_code, output=storable(outcome.output), process=proc)
        if run is not None:
            if self.on_end is not None:
                self.on_end(act, run)
            return run
        run = store.get(act.run_id)
        log.warning("tenant %s run %d (%s): it had been recorded %s before its process here ended (%s); "
                    "that record stays", act.tenant, act.run_id, act.job or "task",
                    f"{run.state.value} {run.reason or ''}".strip() if run else "ended",
                    f"{outcome.state.value} {outcome.reason or ''}".strip())
        return run

    def _ended(self, act: Active, run: Run | None) -> None:
        if run is None:  # purged meanwhile: nothing to show
            return
        self.files.write_for(act.tenant, run)
        level = logging.DEBUG if run.state is State.OK else logging.WARNING
        log.log(level, "tenant %s run %d (%s): %s%s", act.tenant, run.id, act.job or "task", run.state.value,
                f" {run.reason}" if run.reason else "")

    def close(self) -> None:
        self.files.close()
        if self.executor.launcher is not None:
            self.executor.launcher.close()



def _timed(unsaved: Process, active: dict[int, Active]) -> Process:
    """The process's start time (the pid reuse guard), read when it is written instead of right after the
    spawn: reading /proc/PID/stat waits while the child is still in exec, a millisecond per run under load.
    Only a child not reaped yet is read: its pid cannot have been reused.  A reaped one keeps None, which
    liveness.same_process never takes for a live process (its end is recorded anyway)."""
    pid, start, boot = unsaved
    if start is None and pid in active:
        start = liveness.start_time(pid)
    return pid, start, boot
