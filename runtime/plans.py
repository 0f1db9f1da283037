"""What the daemon must do when it learns about a job: catch up after downtime, follow a reload.

``catch_up`` records the runs missed while the daemon was down (bounded: a long downtime is summarised in
one row) and returns the due times to run now, per the job's catch-up policy (``schedule.catch_up``).
``overdue`` does the same for a timer that fired: on time it returns just its due time; late (the daemon was
stopped or starved, the clock was set forward) the due times that passed meanwhile go through the same
policy, so a stall or a forward step is handled exactly like downtime. Every missed record carries a note
saying why the time passed unrun (its cause) and why it was not run late (the policy), both true.

``plan`` compares two configs: jobs added, changed and removed. Only tenants with a login count (the others
run nothing). A job counts as changed when anything that decides how or when it runs differs, its tenant's
time zone included, but not where it stands in the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from . import schedule
from .model import CatchUp, Config, JobDef, TenantDef
from .store import Store

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, job)


@dataclass
class ReloadPlan:
    added: list[tuple[TenantDef, JobDef]] = field(default_factory=list)
    changed: list[tuple[TenantDef, JobDef]] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)

    def summary(self) -> str:
        def names(keys: list[Key]) -> str:
            return ", ".join(f"{t}/{j}" for t, j in keys) or "none"

        return (f"added {names([(t.name, j.name) for t, j in self.added])}; "
                f"changed {names([(t.name, j.name) for t, j in self.changed])}; "
                f"removed {names(self.removed)}")


def running_jobs(config: Config) -> dict[Key, tuple[TenantDef, JobDef]]:
    return {(t.name, j.name): (t, j) for t in config.tenants if t.login is not None for j in t.jobs}


def plan(old: Config, new: Config) -> ReloadPlan:
    before, after = running_jobs(old), running_jobs(new)
    result = ReloadPlan(removed=[k for k in before if k not in after])
    for key, (tenant, job) in after.items():
        if key not in before:
            result.added.append((tenant, job))
            continue
        old_tenant, old_job = before[key]
        if replace(old_job, loc=None) != replace(job, loc=None) or old_tenant.timezone != tenant.timezone:
            result.changed.append((tenant, job))
    return result


DOWN = "the daemon was stopped or the job was not configured"


STORE_DOWN = "the run store could not be written (a storage fault or a lost database connection)"


# a tenant whose store could not be opened at the daemon's start: its due times since its last run passed
# while the daemon was stopped, or while it held them
HELD = "the daemon was stopped, or started while the run store could not be written"


Records = list[tuple[float, str]]  # (due time, note) of one job's missed records, in the order written


@dataclass(frozen=True, slots=True)
class Decision:
    """What a catch-up decided for a job: the missed records, the due times to run now, how many were
    missed in all (the listed ones and those counted in the summary row)."""

    records: Records
    run: list[float]
    count: int


@dataclass
class Batch:
    """The catch-up of all of a tenant's jobs at once (a start-up): their last due times read in one query
    (``lasts``, store.last_dues()), their missed records kept in ``rows`` and written in one go by
    ``write`` (before any of their runs is claimed, as for a single job), one log line for all of them.

    A decision depends only on the job's schedule, windows, zone, policy and max_late, its last due time,
    ``now`` and the cause: after a downtime the jobs of one cron line share all of them, so it is made once
    per such group (``shared``) and its records are copied under each job's name. The key holds the
    schedule objects by identity (the config shares a repeated schedule between its jobs; comparing them by
    value costs more than the decision) and ``keep`` holds those objects, so an id is never reused while
    the batch lives."""

    lasts: dict[str, float]
    rows: list[tuple[str, float, str | None]] = field(default_factory=list)  # (job, due, note)
    jobs: int = 0
    runs: int = 0
    shared: dict[tuple[object, ...], Decision] = field(default_factory=dict)
    keep: list[object] = field(default_factory=list)

    def decide(self, tenant: TenantDef, job: JobDef, now: float, cause: str) -> list[float]:
        last = self.lasts.get(job.name)
        if last is None or job.trigger is None:
            return []
        tz = tenant.timezone
        key = decision_key(job, tz, last, now, cause)
        got = self.shared.get(key)
        if got is None:
            got = self.shared[key] = decide(job, _dt(last), tz=tz, now=now, cause=cause)
            self.keep.append((job.trigger, job.windows))
        name = job.name
        self.rows += [(name, due, note) for due, note in got.records]
        if got.count:
            self.jobs, self.runs = self.jobs + 1, self.runs + got.count
            log.debug("tenant %s job %s: %d missed runs recorded (%s)", tenant.name, name, got.count, cause)
        return list(got.run)

    def write(self, store: Store, tenant: str, cause: str, now: float) -> None:
        store.missed_many(self.rows, now=now)
        if self.jobs:
            log.warning("tenant %s: %d missed runs recorded for %d jobs (%s)", tenant, self.runs, self.jobs,
                        cause)


def decision_key(job: JobDef, tz: str, since: float, now: float, cause: str) -> tuple[object, ...]:
    """What a catch-up decision depends on (``since``: the due time it goes on from), the schedule objects
    by identity: jobs with the same key share one decision (``Batch``, ``overdue``; the caller keeps the
    objects alive while it keeps the decisions)."""
    return id(job.trigger), id(job.windows), job.timezone or tz, job.catch_up, job.max_late, since, now, cause


def catch_up(store: Store, tenant: TenantDef, job: JobDef, now: float, cause: str = DOWN, *,
             batch: Batch | None = None) -> list[float]:
    """Record what was missed since the job's last due time; return the due times to run now. ``cause``:
    why they were not run on time (the daemon was down, or its store was). With ``batch`` the last due
    time is the batch's and the missed records go into it (the caller writes them)."""
    if batch is not None:
        return batch.decide(tenant, job, now, cause)
    last = store.last_due(job.name)
    since = _dt(last) if last is not None else None
    return _decide(store, job, since, tenant=tenant.name, tz=tenant.timezone, now=now, cause=cause)


def overdue(store: Store, job: JobDef, due: float, *, tenant: str, tz: str, now: float, cause: str,
            shared: dict[tuple[object, ...], Decision] | None = None) -> list[float]:
    """A timer set for due time ``due`` fired at ``now``: the due times in [due, now] are split by the job's
    policy (record the missed ones with ``cause``); return the due times to run now.  ``shared``: the
    decisions of the timers that fired in the same wake-up, by ``decision_key``: 1,000 jobs of one
    schedule due at once are decided once."""
    if shared is None:
        return _decide(store, job, schedule.just_before(job, _dt(due)), tenant=tenant, tz=tz, now=now,
                       cause=cause)
    key = decision_key(job, tz, due, now, cause)
    got = shared.get(key)
    if got is None:
        got = shared[key] = decide(job, schedule.just_before(job, _dt(due)), tz=tz, now=now, cause=cause)
    return _record(store, job, got, tenant=tenant, now=now, cause=cause)


def next_due(store: Store, job: JobDef, tz: str, now: float, last: float | None = None) -> float | None:
    """The job's next due time after ``now``, going on from ``last`` (default: the stored last due time)."""
    if last is None:
        last = store.last_due(job.name)
    nxt = schedule.next_due(job, tz, _dt(last) if last is not None else None, _dt(now))
    return nxt.timestamp() if nxt is not None else None


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _decide(store: Store, job: JobDef, since: datetime | None, *, tenant: str, tz: str, now: float,
            cause: str) -> list[float]:
    return _record(store, job, decide(job, since, tz=tz, now=now, cause=cause), tenant=tenant, now=now,
                   cause=cause)


def _record(store: Store, job: JobDef, got: Decision, *, tenant: str, now: float, cause: str) -> list[float]:
    """Write a decision's missed records under the job's name; the due times it runs now."""
    if got.count:
        log.warning("tenant %s job %s: %d missed runs recorded (%s)", tenant, job.name, got.count, cause)
    by_note: dict[str, list[float]] = {}
    for due, note in got.records:
        by_note.setdefault(note, []).append(due)
    for note, dues in by_note.items():
        store.missed(job.name, dues, now=now, note=note)
    return list(got.run)  # (a shared decision's own list stays as it is)


def decide(job: JobDef, since: datetime | None, *, tz: str, now: float, cause: str) -> Decision:
    """Split the due times after ``since`` by the job's policy (schedule.catch_up): the summary row of the
    older ones first, then the listed ones grouped by why each was not run late."""
    todo = schedule.catch_up(job, tz, since, _dt(now))
    records: Records = []
    if todo.omitted and todo.omitted_last is not None:
        omitted = f"{todo.omitted}{'' if todo.omitted_exact else '+'}"
        records.append((todo.omitted_last.timestamp(), f"{omitted} due times from {todo.omitted_first} to "
                        f"{todo.omitted_last} missed (summarised): {cause}"))
    for why, dues in _policy_reasons(job, todo.missed, now).items():
        records += [(due, f"{cause}; {why}") for due in dues]
    count = len(todo.missed) + todo.omitted if todo.missed else 0
    return Decision(records, [d.timestamp() for d in todo.run], count)


def _policy_reasons(job: JobDef, missed: list[datetime], now: float) -> dict[str, list[float]]:
    """Why each missed due time was not run late after all, grouped: max_late, else the catch_up policy."""
    policy = {CatchUp.SKIP: "catch_up: skip runs nothing more than 60 s late",
              CatchUp.LATEST: "catch_up: latest runs only the newest",
              CatchUp.ALL: "catch_up: all runs at most the newest 100"}[job.catch_up]
    out: dict[str, list[float]] = {}
    for due in missed:
        too_late = job.max_late is not None and now - due.timestamp() > job.max_late
        why = f"later than max_late ({job.max_late:g} s)" if too_late else policy
        out.setdefault(why, []).append(due.timestamp())
    return out


# Settings the daemon reads only when it starts: a reload cannot apply a change to them (the privilege drop,
# the working and state directories, the log level, each tenant's open store).
RESTART_ONLY = ("run_as", "state_dir", "install_dir", "debug", "http")


def restart_settings(config: Config) -> dict[str, str]:
    """The start-only settings of ``config``, as text (they go into the pid file's info as JSON)."""
    got = {f"task_server.{k}": str(getattr(config.server, k)) for k in RESTART_ONLY}
    for t in config.tenants:
        got[f"tenants.{t.name}.store"] = str(t.store)
    return got


def restart_needed(running: dict[str, str], new: Config) -> list[str]:
    """The start-only settings whose value in ``new`` differs from what the daemon runs with."""
    wanted = restart_settings(new)
    return sorted(k for k, value in wanted.items() if k in running and running[k] != value)
