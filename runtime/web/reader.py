"""What the web side shows and does, from the config and the tenants' stores (no HTTP here).

Every store is opened per request and closed again: SQLite's WAL lets this process read while the daemon
writes, and a request never holds a lock the daemon waits for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import cli_jobs, cli_steer, schedule
from ..client import queue_problem
from ..control import read_pid
from ..limits import argv_problem
from ..model import Config, JobDef, State, TenantDef
from ..store import NoStore, Pause, Run, Store, StoreError, open_store

RUN_SCAN = 5000  # runs read per request at most when filtering (newest first)
OVERDUE_GRACE = 120.0  # seconds a scheduled job may be late before /healthz reports it


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


def stamp(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def run_dict(run: Run, *, output: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": run.id, "job": run.job or None, "queue": run.queue, "state": run.state.value,
        "reason": run.reason, "due": stamp(run.due), "created": stamp(run.created),
        "started": stamp(run.started), "finished": stamp(run.finished), "exit_code": run.exit_code,
        "attempt": run.attempt, "argv": list(run.argv) if run.argv is not None else None,
        "message": run.message, "duration": duration(run),
    }
    if output:
        d["output"] = run.output
    return d


def duration(run: Run) -> float | None:
    if run.started is None:
        return None
    end = run.finished if run.finished is not None else time.time()
    return round(max(0.0, end - run.started), 3)


@dataclass
class Reader:
    config: Config

    def tenant(self, name: str) -> TenantDef:
        t = self.config.tenant(name)
        if t is None:
            raise NotFound(f"no tenant {name!r}")
        return t

    @contextlib.contextmanager
    def store(self, tenant: TenantDef) -> Iterator[Store]:
        """The tenant's store, never created here (the daemon or the first action makes it, as its user);
        a tenant with none yet reads as empty."""
        try:
            s = open_store(tenant, self.config.tenant_dir(tenant.name), create=False)
        except NoStore:
            yield Empty()  # type: ignore[misc]
            return
        try:
            yield s
        finally:
            s.close()

    def daemon_pid(self) -> int | None:
        return read_pid(self.config.path)

    # -- reading ---------------------------------------------------------------------------------------
    def tenants(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "login": t.login, "runs_jobs": t.login is not None, "timezone": t.timezone,
                 "jobs": len(t.jobs)} for t in self.config.tenants]

    def jobs(self, name: str) -> list[dict[str, Any]]:
        tenant = self.tenant(name)
        now = datetime.now(UTC)
        with self.store(tenant) as store:
            paused = store.paused()
            return [self._job(tenant, job, store, now, paused.get(job.name)) for job in tenant.jobs]

    def _job(self, tenant: TenantDef, job: JobDef, store: Store, now: datetime,
             pause: Pause | None) -> dict[str, Any]:
        last = store.history(job.name, limit=1)
        return {"name": job.name, "schedule": job.trigger_text(), "enabled": job.enabled, "queue": job.queue,
                "next_due": stamp(self.next_due(tenant, job, store, now)),
                "paused": pause is not None, "paused_by": pause.who if pause else None,
                "paused_since": stamp(pause.since) if pause else None,
                "last": run_dict(last[0]) if last else None}

    def next_due(self, tenant: TenantDef, job: JobDef, store: Store, now: datetime) -> float | None:
        """As the daemon counts it (schedule.next_due): an interval goes on on its grid from the last due."""
        if not job.enabled or job.trigger is None or tenant.login is None:
            return None
        last = store.last_due(job.name)
        since = datetime.fromtimestamp(last, UTC) if last is not None else None
        nxt = schedule.next_due(job, tenant.timezone, since, now)
        return nxt.timestamp() if nxt is not None else None

    def runs(self, name: str, *, job: str | None = None, state: str | None = None, since: float | None = None,
             until: float | None = None, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if state is not None and state not in State.__members__:
            raise BadRequest(f"state must be one of {', '.join(State.__members__)}")
        tenant = self.tenant(name)
        with self.store(tenant) as store:
            found = []
            for run in store.history(job, limit=RUN_SCAN):
                if (before is not None and run.id >= before) or (state and run.state.value != state):
                    continue
                if (since is not None and run.created < since) or (
                        until is not None and run.created >= until):
                    continue
                found.append(run_dict(run))
                if len(found) >= limit:
                    break
        return found

    def run(self, name: str, run_id: int) -> dict[str, Any]:
        tenant = self.tenant(name)
        with self.store(tenant) as store:
            run = store.get(run_id)
        if run is None:
            raise NotFound(f"tenant {name!r} has no run {run_id}")
        return run_dict(run, output=True)

    def queues(self, name: str) -> list[dict[str, Any]]:
        """Queued and running tasks, by queue."""
        tenant = self.tenant(name)
        with self.store(tenant) as store:
            waiting = store.queued()
            running = [r for r in store.history(None, limit=RUN_SCAN) if r.state is State.RUN]
        out: dict[str, dict[str, Any]] = {}
        for run in sorted(running + waiting, key=lambda r: r.id):
            q = out.setdefault(run.queue or "-", {"queue": run.queue or "-", "QUE": [], "RUN": []})
            q[run.state.value].append(run_dict(run))
        return list(out.values())

    def health(self) -> list[str]:
        """Reasons the server is not healthy; empty when it is."""
        busy = [t for t in self.config.tenants if t.login is not None and t.jobs]
        reasons = []
        if busy and self.daemon_pid() is None:
            reasons.append(f"no taskserver daemon is running for {self.config.path}")
        now = datetime.now(UTC)
        for tenant in busy:
            try:
                reasons += self._overdue(tenant, now)
            except StoreError as exc:  # one tenant's store is a reason, not a failed health check
                reasons.append(f"tenant {tenant.name}: its store cannot be read: {exc.message}")
        return reasons

    def _overdue(self, tenant: TenantDef, now: datetime) -> list[str]:
        reasons = []
        with self.store(tenant) as store:
            for job in tenant.jobs:
                nxt = self.next_due(tenant, job, store, now)
                if nxt is not None and now.timestamp() - nxt > OVERDUE_GRACE:
                    reasons.append(f"tenant {tenant.name} job {job.name}: overdue since {stamp(nxt)}")
        return reasons

    # -- acting ----------------------------------------------------------------------------------------
    def enqueue(self, name: str, argv: Any, queue: Any) -> tuple[int, list[str]]:
        tenant = self._runnable(name)
        argv = check_argv(argv)
        queue = check_queue("default" if queue is None else queue)
        return self._add(tenant, "", queue, argv)

    def run_now(self, name: str, job_name: str) -> tuple[int, list[str]]:
        tenant = self._runnable(name)
        job = next((j for j in tenant.jobs if j.name == job_name), None)
        if job is None:
            raise NotFound(f"tenant {name!r} has no job {job_name!r}")
        return self._add(tenant, job.name, job.queue, None)

    def cancel(self, name: str, run_id: int, who: str) -> dict[str, Any]:
        """A queued run ends at once; a running one is stopped by its daemon (the reply says RUN, and the
        run ends ``ERR cancelled by WHO``); an ended run: 409. ``warnings``: what could not be done after
        the store's commit (a status file not written); the cancel stands."""
        tenant = self.tenant(name)
        if self.run(name, run_id)["state"] in ("OK", "ERR"):
            raise Conflict(f"run {run_id} has ended: nothing to cancel")
        run, warning = cli_steer.cancel_run(self.config, tenant, run_id, who)
        return {**run_dict(run), "warnings": [warning] if warning else []}

    def pause(self, name: str, job: str, who: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a job's schedule (the path of `taskserver jobs pause|resume`)."""
        tenant = self.tenant(name)
        if all(j.name != job for j in tenant.jobs):
            raise NotFound(f"tenant {name!r} has no job {job!r}")
        return cli_steer.set_paused(self.config, tenant, job, who, paused)

    def _runnable(self, name: str) -> TenantDef:
        tenant = self.tenant(name)
        if tenant.login is None:
            raise Conflict(f"tenant {name!r} has no login, so it runs nothing")
        return tenant

    def _add(self, tenant: TenantDef, job: str, queue: str | None,
             argv: list[str] | None) -> tuple[int, list[str]]:
        """The same path as `taskserver jobs enqueue|run`: as the tenant's user, its status file, and the
        store's wake-up (else a signal to the verified daemon). The run id, and the warnings after its
        commit (its status file not written): the run is queued all the same."""
        run_id, warning = cli_jobs._queued(self.config, tenant, job, queue, argv)
        return run_id, [warning] if warning else []


class Conflict(Exception):
    pass


class Empty:
    """What a tenant without a store yet reads as: no runs, nothing paused."""

    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        return []

    def queued(self) -> list[Run]:
        return []

    def get(self, run_id: int) -> Run | None:
        return None

    def last_due(self, job: str) -> float | None:
        return None

    def paused(self) -> dict[str, Pause]:
        return {}

    def summary(self, buckets: object) -> list[Any]:
        return []


def check_argv(argv: Any) -> list[str]:
    """The one command check of runtime/limits.py (the config, the CLI and the daemon use it too)."""
    problem = argv_problem(argv)
    if problem:
        raise BadRequest(f"argv: {problem}")
    return list(argv)


def check_queue(queue: Any) -> str:
    problem = queue_problem(queue)
    if problem:
        raise BadRequest(f"queue: {problem}")
    return str(queue)
