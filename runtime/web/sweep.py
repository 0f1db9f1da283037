"""Readings of every tenant's store, shared by the requests that want them (/healthz, /metrics).

Each /healthz read every tenant's store, in one of Starlette's 40 worker threads: 60 at once against 1,000
tenants kept every thread on stores, and an API call waited 35 s for one. Now a request that finds a
reading younger than ``max_age`` gets that one; one that finds a sweep going on waits for it, holding no
thread; only otherwise does it start the next sweep. However many clients ask, there is at most one sweep
of a kind at a time, and at most ``max_age`` apart; it runs in a thread of its own, never in the worker
threads the other requests use.

The dashboard reads every tenant the viewer may see, for that viewer: it cannot be shared, so it runs in
at most ``HEAVY`` threads of its own (``heavy()``), and a storm of it waits in line (holding no thread)
without starving an API call or a sweep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
HEAVY = 2  # threads for dashboards (each reads every tenant its viewer may see)


@dataclass(frozen=True)
class Reading(Generic[T]):
    value: T
    serial: int  # 1 for this server's first sweep of its kind, then counting: clients can tell them apart
    started: float  # when the sweep began (seconds since the epoch)


_limiter: list[anyio.CapacityLimiter] = []


def heavy() -> anyio.CapacityLimiter:
    """The threads for dashboards (made on first use: a limiter belongs to the running event loop)."""
    if not _limiter:
        _limiter.append(anyio.CapacityLimiter(HEAVY))
    return _limiter[0]


class Sweep(Generic[T]):
    def __init__(self, work: Callable[[], T], max_age: float) -> None:
        self.work, self.max_age = work, max_age
        self.serial = 0
        self.last: Reading[T] | None = None
        self.ended = float("-inf")  # monotonic time the last sweep ended
        self.running: asyncio.Task[Reading[T]] | None = None
        self.thread: anyio.CapacityLimiter | None = None  # its own: one sweep at a time needs one thread

    async def get(self) -> Reading[T]:
        if self.running is None:
            if self.last is not None and time.monotonic() - self.ended < self.max_age:
                return self.last
            self.running = asyncio.ensure_future(self._sweep())
            self.running.add_done_callback(_retrieved)
        # shielded: a client that goes away does not cancel the sweep the others wait for
        return await asyncio.shield(self.running)

    async def _sweep(self) -> Reading[T]:
        try:
            started = time.time()
            self.thread = self.thread or anyio.CapacityLimiter(1)
            value = await anyio.to_thread.run_sync(self.work, limiter=self.thread)
            self.serial += 1
            self.last = Reading(value, self.serial, started)
            self.ended = time.monotonic()
            return self.last
        finally:
            self.running = None


def _retrieved(task: asyncio.Task[T]) -> None:
    """A sweep that failed after its clients left: its error is theirs, not a warning of asyncio's."""
    if not task.cancelled():
        task.exception()
