"""The run store contract: every backend (SQLite now, PostgreSQL later) provides ``Store``.

A run is one execution of a job or one enqueued task.  Its state moves QUE -> RUN -> OK | ERR; an ERR run
carries a reason (``exit code N``, ``timeout``, ``crashed``, ``interrupted``, ``missed``, ``reported``...).
Times are POSIX seconds (float, UTC).  The daemon core talks only to this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import UserError
from .model import State, TenantDef

# Reasons an ERR run can carry besides "exit code N".
TIMEOUT = "timeout"
CRASHED = "crashed"
INTERRUPTED = "interrupted"
MISSED = "missed"
REPORTED = "reported"
SPAWN_FAILED = "spawn failed"
NO_SUCH_JOB = "no such job"


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


class Store(Protocol):
    """Persistent runs of one tenant."""

    def add(self, job: str, *, queue: str | None = None, argv: Sequence[str] | None = None,
            due: float | None = None, attempt: int = 0, now: float) -> int:
        """Insert a QUE run and return its id."""

    def start(self, job: str, *, due: float | None, attempt: int, pid: int, instance: str,
              queue: str | None, now: float) -> int:
        """Insert a run directly in RUN (a scheduled run needs no QUE row); advances the job's last due."""

    def claim(self, run_id: int, *, pid: int, instance: str, now: float) -> bool:
        """QUE -> RUN for a queued run; False if it is no longer QUE."""

    def finish(self, run_id: int, state: State, reason: str | None, *, exit_code: int | None,
               output: str, now: float) -> Run:
        """RUN -> OK | ERR; a report the task made itself (``report``) wins. Returns the final run."""

    def report(self, run_id: int, ok: bool, message: str | None, *, now: float) -> Run:
        """The task's own outcome; applied at once if the run already ended."""

    def missed(self, job: str, dues: Iterable[float], *, now: float, note: str | None = None) -> None:
        """Record ERR missed runs for ``dues`` and advance the job's last due."""

    def crash_orphans(self, instance: str, *, now: float) -> list[int]:
        """Mark every RUN row not started by ``instance`` ERR crashed; returns their ids."""

    def last_due(self, job: str) -> float | None: ...

    def rewind(self, now: float) -> None:
        """The wall clock was set back: no job's last due time may stay later than ``now``."""

    def remember_jobs(self, jobs: Iterable[str], *, now: float) -> None:
        """Give jobs seen for the first time a last due of ``now`` (catch-up starts from there)."""

    def queued(self) -> list[Run]:
        """QUE runs, oldest first."""

    def get(self, run_id: int) -> Run | None: ...

    def history(self, job: str | None = None, *, limit: int = 50) -> list[Run]:
        """Newest first."""

    def purge(self, *, ok_before: float, err_before: float) -> Purged:
        """Delete ended runs older than the limits."""

    def set_pid(self, run_id: int, pid: int) -> None: ...

    def summary(self, buckets: Sequence[float]) -> list[JobSummary]:
        """Per (job, state): run count, and for ended runs cumulative counts of duration and lateness
        (start - due) at or below each bound in ``buckets`` (for metrics), plus the last OK's end."""

    def batch(self) -> AbstractContextManager[None]:
        """Group the calls made inside into one transaction; nests."""

    def close(self) -> None: ...


Opener = Callable[[TenantDef, Path], Store]
BACKENDS: dict[str, Opener] = {}  # kind -> opener; each backend module registers itself when imported


def open_store(tenant: TenantDef, state_dir: Path) -> Store:
    """The tenant's store, by ``tenant.store.kind``."""
    opener = BACKENDS.get(tenant.store.kind)
    if opener is None:
        raise UserError(f"tenant {tenant.name!r}: store kind {tenant.store.kind!r} is not available",
                        hint=f"available: {', '.join(sorted(BACKENDS)) or 'none'}")
    return opener(tenant, state_dir)
