"""The run store contract: every backend (SQLite now, PostgreSQL next) provides ``Store``.

A run is one execution of a job or one enqueued task.  Its state moves QUE -> RUN -> OK | ERR; an ERR run
carries a reason (``exit code N``, ``timeout``, ``crashed``, ``interrupted``, ``missed``, ``reported``...).
Times are POSIX seconds (float, UTC).  The daemon core talks only to this protocol; it never imports a
backend module: backends register an opener in ``BACKENDS`` when imported (``load_backends``).

The contract is built on claims and leases, so one host (SQLite) and several (PostgreSQL) work alike:

- ``claim(job, due, attempt)`` inserts the one row a scheduled due time (or its retry) may ever have; the
  store enforces that with a unique key on (job, due, attempt), and a second claim returns None.  A claim is
  a QUE row: a due time waiting behind a running run, or a retry waiting for its backoff (``not_before``), is
  stored, survives restarts, and the job's ``last_due`` only ever moves together with such a record.
- ``acquire`` moves QUE rows to RUN for one daemon instance (by id, or the oldest queued tasks up to a limit:
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL).  The daemon commits its claims before it spawns anything.
- Each daemon instance holds a lease (``attach``, ``heartbeat``, ``detach``); ``instances`` and
  ``running`` let a starting daemon find the runs of instances that died.  Whether an instance or a run's
  process is alive is decided by evidence (runtime/liveness.py), not by the store.
- ``wakeup_fd``/``drain_wakeups``/``notify``: how a new queued task wakes the daemon without knowing its pid.

Storage faults (disk full, I/O errors, a locked, vanished or replaced store) raise ``StoreError``; a store
that must not be used (corrupt, unknown schema version, another live daemon) raises it at open or attach.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from .errors import UserError
from .model import State, TenantDef
from .store_errors import UNSERVED, NoStore, StoreBusy, StoreError, StoreFault, StoreLocked, fault

Verify = bool | Literal["unserved"]  # how a store is checked when opened: store_errors.UNSERVED says how

# the contract's errors live in their own module (runtime/cli_enqueue.py does without this one); named here
__all__ = ["UNSERVED", "NoStore", "StoreBusy", "StoreError", "StoreFault", "StoreLocked", "Verify", "fault"]

# Reasons an ERR run can carry besides "exit code N".
TIMEOUT = "timeout"
CRASHED = "crashed"
INTERRUPTED = "interrupted"
MISSED = "missed"
REPORTED = "reported"
SPAWN_FAILED = "spawn failed"
NO_SUCH_JOB = "no such job"
PAUSED = "paused by"  # + " NAME since TIME": the note of a due time a paused job let pass
CANCELLED = "cancelled by"  # + " NAME": stopped on request (`jobs cancel`, the web side)


def cancelled(who: str) -> str:
    """The reason of a run cancelled by ``who`` (a token's or a user's name)."""
    return f"{CANCELLED} {who}"


@dataclass(frozen=True)
class Run:
    id: int
    job: str  # "" for an enqueued task that belongs to no configured job
    queue: str | None
    state: State
    reason: str | None
    due: float | None
    created: float
    started: float | None
    finished: float | None
    pid: int | None
    instance: str | None  # the daemon instance that started it (tells a crash from a live run)
    exit_code: int | None
    attempt: int
    argv: tuple[str, ...] | None  # a task's command; None: the job's configured command
    output: str
    message: str | None  # a task's own report (`jobs finish --message`) or a note from the daemon
    queued: bool = False  # came in through the queue (`jobs enqueue`, `jobs run`), not from the schedule
    proc_start: int | None = None  # the process's start time (clock ticks after boot): pid reuse guard
    boot_id: str | None = None  # the kernel boot the pid belongs to
    not_before: float | None = None  # a waiting retry starts no earlier than this
    host: str | None = None  # the host whose daemon ran it (shared stores; None: this host's store)
    # what in the stored row was not a value of its column (runtime/sqlite_rows.py: a tenant's user may write
    # their own store file); the run then holds safe values in its place, and the daemon never starts it
    bad: str | None = None


Process = tuple[int, int | None, str | None]  # a run's process: pid, start (clock ticks after boot), boot id


@dataclass(frozen=True)
class Instance:
    """One daemon's lease on a store."""

    id: str
    host: str
    pid: int
    boot_id: str | None
    proc_start: int | None
    config: str
    started: float
    heartbeat: float
    expires: float


@dataclass(frozen=True)
class Pause:
    """A job whose schedule is paused: its due times are recorded missed (note "paused") until resumed."""

    job: str
    since: float
    who: str


@dataclass(frozen=True)
class Purged:
    count: int
    queued_ids: list[int]  # deleted runs that came in through the queue (they have a status file)


@dataclass(frozen=True)
class JobSummary:
    job: str
    state: State
    count: int
    duration_count: int  # ended runs that had started
    duration_sum: float
    duration_le: tuple[int, ...]  # cumulative, one per bucket bound
    lateness_count: int  # runs that had a due time
    lateness_sum: float
    lateness_le: tuple[int, ...]
    last_ok: float | None


def summary_row(row: Sequence[Any], buckets: int) -> JobSummary | None:
    """One row of a backend's summary query: job, state, count, ended count, duration sum, due count,
    lateness sum, last OK end, then ``buckets`` duration and ``buckets`` lateness counts.  None for a row of
    a state no run has (written past taskserver into a SQLite file, which keeps any value anywhere)."""
    if row[1] not in _STATE_VALUES:
        return None
    n = buckets
    last_ok = row[7] if type(row[7]) in (float, int) and math.isfinite(row[7]) else None
    return JobSummary(job=row[0] if isinstance(row[0], str) else str(row[0]), state=State(row[1]),
                      count=int(row[2]), duration_count=int(row[3] or 0), duration_sum=_sum(row[4]),
                      lateness_count=int(row[5] or 0), lateness_sum=_sum(row[6]), last_ok=last_ok,
                      duration_le=tuple(int(v or 0) for v in row[8:8 + n]),
                      lateness_le=tuple(int(v or 0) for v in row[8 + n:8 + 2 * n]))


_STATE_VALUES = frozenset(state.value for state in State)


def _sum(value: object) -> float:
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else 0.0


def check_report(run_id: int, state: str, reason: str | None) -> None:
    """A task's own report overrides an exit code, never what the server saw (timeout, crash, missed...)."""
    if state == "ERR" and reason not in (None, REPORTED) and not str(reason).startswith("exit code"):
        raise StoreError(f"run {run_id} already ended ERR {reason}; a report cannot change that",
                         hint="report from inside the task, before it exits", exit_code=2)


class Store(Protocol):
    """Persistent runs of one tenant."""

    exclusive: bool  # True: one daemon at a time (attach refuses others), so every other instance is dead
    # where it is, as its errors name it (StoreError.where): every StoreError it raises carries this, so the
    # daemon holds the tenants of the store that failed and no others
    where: str

    # -- scheduled runs: claims ----------------------------------------------------------------------------
    def claim(self, job: str, due: float | None, *, attempt: int = 0, queue: str | None = None,
              not_before: float | None = None, now: float) -> int | None:
        """Insert the QUE row of (job, due, attempt) and advance the job's last due; None if it exists."""

    def claim_many(self, claims: Sequence[tuple[str, float, str | None]], *, now: float) -> list[int | None]:
        """``claim`` for several scheduled due times in one write: ``(job, due, queue)`` each, attempt 0 (the
        runs a start-up's catch-up starts); the id of each in order, None where ``claim`` would give None."""

    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        """Record ERR missed for each due time not claimed yet (idempotent); advance the job's last due."""

    def missed_many(self, rows: Sequence[tuple[str, float, str | None]], *, now: float) -> None:
        """``missed`` for several jobs in one write: ``(job, due, note)`` each (a catch-up of 10,000 jobs
        after a downtime records about ten rows for each)."""

    def waiting(self) -> list[Run]:
        """Scheduled QUE rows (claimed due times and retries not started yet), by due time."""

    # -- queued tasks -----------------------------------------------------------------------------------
    def add(self, job: str, *, queue: str | None = None, argv: Sequence[str] | None = None,
            due: float | None = None, attempt: int = 0, now: float) -> int:
        """Insert a queued QUE run (`jobs enqueue`, `jobs run`) and return its id."""

    def queued(self) -> list[Run]:
        """Queued QUE runs (not scheduled ones), oldest first."""

    def notify(self) -> bool:
        """Wake the daemon serving this store; False when nobody listens."""

    # -- running ------------------------------------------------------------------------------------------
    def acquire(self, *, instance: str, now: float, ids: Sequence[int] | None = None,
                limit: int = 1) -> list[Run]:
        """QUE -> RUN for ``instance``: the rows ``ids`` still QUE, else the oldest queued tasks; at most
        ``limit``.  A row another instance acquired first is skipped, never taken twice."""

    def started(self, run_id: int, *, pid: int, proc_start: int | None, boot_id: str | None) -> None:
        """Record the process of a run just spawned (after the claim was committed)."""

    def finish(self, run_id: int, state: State, reason: str | None, *, exit_code: int | None, output: str,
               now: float, note: str | None = None, process: Process | None = None) -> Run | None:
        """RUN|QUE -> OK | ERR; a report the task made itself (``report``) wins. Returns the final run, or
        None when the run had ended already (another daemon settled it after this one's lease ran out, or
        it was cancelled while it waited): an end record is never written over, so nothing is written.
        ``process``: what ``started`` would have written, for a run that ended before it was (one statement
        for both)."""

    def report(self, run_id: int, ok: bool, message: str | None, *, now: float) -> Run:
        """The task's own outcome; applied at once if the run already ended."""

    def running(self, *, exclude: str) -> list[Run]:
        """RUN rows of every instance but ``exclude`` (at start: what dead daemons left)."""

    # -- steering from outside the daemon (`jobs pause|resume|cancel`, the web side) ----------------------
    def pause(self, job: str, *, who: str, now: float) -> bool:
        """Pause the job's schedule (kept across restarts, seen by every daemon of the store); False when
        it was paused already (the first pause's time and name are kept)."""

    def resume(self, job: str) -> bool:
        """End a pause; False when the job was not paused."""

    def paused(self) -> dict[str, Pause]:
        """The paused jobs, by name."""

    def cancel(self, run_id: int, *, who: str, now: float) -> Run | None:
        """A QUE run ends ERR ``cancelled by WHO`` at once; a RUN run is marked so that the daemon running it
        stops it (``cancelling``); an ended run is left as it is. Returns the run as it is now, None if
        there is no such run."""

    def cancelling(self) -> dict[int, str]:
        """RUN rows asked to stop, not ended yet: run id -> who asked."""

    # -- leases ----------------------------------------------------------------------------------------
    def attach(self, me: Instance) -> None:
        """Take a lease for ``me``; StoreBusy when the store allows one daemon and another live one has it."""

    def heartbeat(self, instance: str, *, now: float, expires: float) -> bool:
        """Renew the lease of ``instance`` (attached through this store); False when it had none any more
        (another daemon found it expired and settled its runs): it has one again, and the caller stops
        its runs that were settled meanwhile."""

    def instances(self) -> list[Instance]: ...

    def detach(self, instance: str) -> None:
        """Drop a lease (a clean exit, or a dead instance whose runs were settled)."""

    def wakeup_fd(self) -> int | None:
        """A file descriptor that becomes readable on ``notify`` (the daemon selects on it), or None."""

    def drain_wakeups(self) -> None: ...

    # -- bookkeeping and reading --------------------------------------------------------------------------
    def last_due(self, job: str) -> float | None: ...

    def last_dues(self) -> dict[str, float]:
        """Every known job's last due time, in one read (start-up plans 10,000 jobs without a query each)."""

    def rewind(self, now: float) -> None:
        """The wall clock was set back: no job's last due time may stay later than ``now``."""

    def remember_jobs(self, jobs: Iterable[str], *, now: float) -> None:
        """Give jobs seen for the first time a last due of ``now`` (catch-up starts from there)."""

    def get(self, run_id: int) -> Run | None: ...

    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        """Newest first."""

    def purge(self, *, ok_before: float, err_before: float) -> Purged:
        """Delete ended runs older than the limits."""

    def summary(self, buckets: Sequence[float]) -> list[JobSummary]:
        """Per (job, state): run count, and for ended runs cumulative counts of duration and lateness
        (start - due) at or below each bound in ``buckets`` (for metrics), plus the last OK's end."""

    def batch(self) -> AbstractContextManager[None]:
        """Group the calls made inside into one transaction; nests.  A failed commit raises StoreError
        and nothing of the batch is kept."""

    def no_wait(self) -> AbstractContextManager[None]:
        """Inside, what meets another writer's lock fails at once (StoreLocked) instead of waiting for it
        (a store without such locks: nothing changes)."""

    def check(self) -> None:
        """Raise StoreError if the store vanished or was replaced under us (cheap: called every wake-up)."""

    def recover(self) -> str | None:
        """After a fault, try to make the store usable again; a note of what was done, or None.  Raises
        StoreError at once, without waiting for another writer's lock, while it is still not writable: the
        daemon tries again and again while its loop serves the other tenants."""

    def close(self) -> None: ...


class Claim(Protocol):
    """A store's exclusive lock, taken before the store is opened (``claim_store``)."""

    def release(self) -> None: ...


# (tenant, state dir, create, verify, the claim taken before) -> store
Opener = Callable[[TenantDef, Path, bool, Verify, "Claim | None"], Store]
BACKENDS: dict[str, Opener] = {}  # kind -> opener; each backend module registers itself when imported
Claimer = Callable[[TenantDef, Path, Instance], Claim]  # (tenant, state dir, the daemon) -> its lock, taken
CLAIMERS: dict[str, Claimer] = {}  # kind -> claimer: only a store that allows one daemon (``exclusive``)
# kind -> module, imported on first use
MODULES = {"sqlite": "taskserver.runtime.sqlite_store", "postgresql": "taskserver.runtime.pg_store"}


def load_backends(kinds: Iterable[str] | None = None) -> None:
    """Import the backends of ``kinds`` now (default: every known one, as the daemon does before it drops
    privileges: a reload may name any). A command imports only those its config names: the PostgreSQL
    driver alone took longer to import than the rest of `jobs enqueue`."""
    for kind in MODULES if kinds is None else kinds:
        _load(kind)


def _load(kind: str) -> None:
    if kind not in BACKENDS and kind in MODULES:
        try:
            importlib.import_module(MODULES[kind])
        except ImportError as exc:  # a reload's first tenant of a kind, after the privilege drop
            raise StoreError(f"the {kind} store backend cannot be loaded: {exc}",
                             hint="install its driver, or restart the daemon if a reload added the first "
                                  f"{kind} tenant") from None


def open_store(tenant: TenantDef, state_dir: Path, *, create: bool = True, verify: Verify = False,
               claim: Claim | None = None) -> Store:
    """The tenant's store, by ``tenant.store.kind``; ``create`` False raises NoStore when it has none.

    ``verify``: check the whole store's integrity before anything is written: True for the daemon at start,
    UNSERVED for a command about to write (only while no live daemon serves the store; store_errors.py);
    costly on a large store, so readers do not ask for it. ``claim``: the daemon's lock on it
    (``claim_store``), which the store then holds through (``attach``); the daemon releases it
    (runtime/stores.py), not the store's ``close``."""
    _load(tenant.store.kind)
    opener = BACKENDS.get(tenant.store.kind)
    if opener is None:
        raise UserError(f"tenant {tenant.name!r}: store kind {tenant.store.kind!r} is not available",
                        hint=f"available: {', '.join(sorted(BACKENDS)) or 'none'}")
    return opener(tenant, state_dir, create, verify, claim)


def claim_store(tenant: TenantDef, state_dir: Path, me: Instance) -> Claim | None:
    """Before a daemon opens a store that allows one daemon: its lock, taken for ``me`` (StoreBusy while
    another live daemon holds it). Taken first, so that a store a storage fault keeps from opening (the
    daemon holds its runs and retries) is this daemon's all the same: a second daemon is refused at once,
    as it is from a store being served. None for a store shared by several daemons."""
    _load(tenant.store.kind)
    claimer = CLAIMERS.get(tenant.store.kind)
    return claimer(tenant, state_dir, me) if claimer is not None else None
