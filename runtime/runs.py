"""Runs in progress: each is a store row, a status file and a child process.

``Runs`` starts them (RUN row, status file, environment, child), notes what is busy (a job never overlaps
itself, a queue runs one at a time) and ends them (outcome into the store, status file kept for queued
tasks, the job's file for scheduled runs).  The daemon decides what to start and when to retry.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import jobenv, privs, statusfile, tenancy
from .errors import UserError
from .executor import Executor, Outcome, job_argv
from .limits import argv_problem
from .model import Config, JobDef, State
from .store import NO_SUCH_JOB, SPAWN_FAILED, Run, Store

log = logging.getLogger(__name__)
REFUSED = "refused"  # the root rule (or the tenant's identity) kept the run from starting


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


class Runs:
    def __init__(self, *, config: Callable[[], Config], store: Callable[[str], Store], instance: str,
                 sel: selectors.BaseSelector) -> None:
        self.config = config
        self.store = store
        self.instance = instance
        self.sel = sel
        server = config().server
        self.executor = Executor(output_tail=server.output_tail, cwd=server.install_dir)
        self.executor.on_close = self._forget_fd
        self.active: dict[int, Active] = {}  # by child pid
        self.busy_jobs: set[tuple[str, str]] = set()
        self.busy_queues: set[tuple[str, str]] = set()
        self.ended: list[tuple[Active, Run]] = []  # since the daemon last looked

    def __len__(self) -> int:
        return len(self.active)

    def job_busy(self, tenant: str, job: str) -> bool:
        return (tenant, job) in self.busy_jobs

    def queue_busy(self, tenant: str, queue: str | None) -> bool:
        return queue is not None and (tenant, queue) in self.busy_queues

    # -- starting -------------------------------------------------------------------------------------
    def start_scheduled(self, tenant: str, job: JobDef, due: float | None, attempt: int) -> None:
        now = time.time()  # when it really starts (the wake-up may have had others to start first)
        run_id = self.store(tenant).start(job.name, due=due, attempt=attempt, pid=0, instance=self.instance,
                                          queue=job.queue, now=now)
        act = Active(tenant, job.name, job.queue, run_id, False, job, attempt)
        run = Run(id=run_id, job=job.name, queue=job.queue, state=State.RUN, reason=None, due=due,
                  created=now, started=now, finished=None, pid=None, instance=self.instance,
                  exit_code=None, attempt=attempt, argv=None, output="", message=None)
        self._spawn(act, run, job_argv(job), job.timeout, now)

    def start_queued(self, tenant: str, run: Run, job: JobDef | None) -> None:
        now = time.time()
        if not self.store(tenant).claim(run.id, pid=0, instance=self.instance, now=now):
            return  # settled by hand (`jobs finish`) while it waited
        act = Active(tenant, run.job, run.queue, run.id, True, job, run.attempt)
        run = replace(run, state=State.RUN, started=now, instance=self.instance)  # queued=True already
        if run.argv is not None:
            problem = argv_problem(run.argv)  # a row written past `jobs enqueue`'s checks must not stop us
            if problem is not None:
                self._end(act, Outcome(State.ERR, SPAWN_FAILED, None, problem), now)
                return
            self._spawn(act, run, list(run.argv), None, now)
        elif job is not None:
            self._spawn(act, run, job_argv(job), job.timeout, now)
        else:
            self._end(act, Outcome(State.ERR, NO_SUCH_JOB, None, f"no job {run.job!r} in the config"), now)

    def _spawn(self, act: Active, run: Run, argv: list[str], timeout: float | None, now: float) -> None:
        config = self.config()
        tenant = config.tenant(act.tenant)
        status = statusfile.path_of(config.tenant_dir(act.tenant), act.tenant, run)
        own = {"TASKSERVER_TENANT": act.tenant, "TASKSERVER_JOB": act.job,
               "TASKSERVER_RUN_ID": str(act.run_id), "TASKSERVER_STATUS_FILE": str(status),
               "TASKSERVER_LOGIN": (tenant.login if tenant else None) or "",
               "TASKSERVER_CONFIG": str(config.path.absolute())}
        self.write_status(act.tenant, run)
        try:  # the root rule, at every spawn: a reload or a task queued into any tenant meets it too
            if tenant is None:
                raise UserError(f"tenant {act.tenant!r} is no longer in the config", hint="reload")
            ident = privs.run_identity(config, tenant)
            user = jobenv.RunUser.of_uid(ident.uid if ident is not None else os.geteuid())
            env = jobenv.build(user, tenant, act.jobdef, own)
        except UserError as exc:
            log.error("tenant %s run %d: %s", act.tenant, act.run_id, exc.message)
            self._end(act, Outcome(State.ERR, REFUSED, None, f"{exc.message} ({exc.hint})\n"), now)
            return
        try:
            child = self.executor.spawn(act, argv, env, timeout, now, ident=ident)
        except (OSError, ValueError) as exc:  # ValueError: what exec cannot take (a NUL byte)
            why = f"{argv[0][:200]}: {getattr(exc, 'strerror', None) or exc}"
            self._end(act, Outcome(State.ERR, SPAWN_FAILED, None, why), now)
            return
        self.store(act.tenant).set_pid(act.run_id, child.pid)
        if child.fd is not None:
            self.sel.register(child.fd, selectors.EVENT_READ, child)
        self.active[child.pid] = act
        if act.job:
            self.busy_jobs.add((act.tenant, act.job))
        if act.queue is not None:
            self.busy_queues.add((act.tenant, act.queue))

    # -- ending ---------------------------------------------------------------------------------------
    def _forget_fd(self, fd: int) -> None:
        if fd in self.sel.get_map():
            self.sel.unregister(fd)

    def collect(self) -> bool:
        """Record every child that exited; True if any did (a slot, a job, a queue may be free)."""
        now = time.time()
        done = self.executor.reap(any_child=True)
        for child, outcome in done:
            act = self.active.pop(child.pid)
            self.busy_jobs.discard((act.tenant, act.job))
            if act.queue is not None:
                self.busy_queues.discard((act.tenant, act.queue))
            self._end(act, outcome, now)
        return bool(done)

    def _end(self, act: Active, outcome: Outcome, now: float) -> None:
        run = self.store(act.tenant).finish(act.run_id, outcome.state, outcome.reason,
                                            exit_code=outcome.exit_code, output=outcome.output, now=now)
        self.write_status(act.tenant, run)
        level = logging.DEBUG if run.state is State.OK else logging.WARNING
        log.log(level, "tenant %s run %d (%s): %s%s", act.tenant, run.id, act.job or "task", run.state.value,
                f" {run.reason}" if run.reason else "")
        self.ended.append((act, run))

    def write_status(self, tenant: str, run: Run | None) -> None:
        if run is None:
            return
        config = self.config()
        conf = config.tenant(tenant)
        try:
            with privs.fs_identity(tenancy.file_identity(config, conf) if conf is not None else None):
                statusfile.update(config.tenant_dir(tenant), tenant, run)
        except (OSError, UserError) as exc:
            log.warning("status file of run %d: %s", run.id, exc)
