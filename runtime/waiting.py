"""One tenant's queued tasks as the daemon offers them to its free slots.

The rule is the queue's: tasks start in the order they were queued (by id); a task without a queue starts
whenever a slot is free and its job (if it names one) is not running; a named queue runs one task at a time,
so only its oldest task can be next, and while that one cannot start (its queue or its job busy) nothing
behind it in that queue can either.

Walking every waiting task on each wake-up made a queue of thousands of tasks cost milliseconds per run (a
serial queue walked all of them to start one).  Here each named queue is offered by its head only, and the
tasks without a queue in order until the slots run out: a wake-up's work no longer grows with what waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from .store import Run


class Waiting:
    def __init__(self, runs: Iterable[Run]) -> None:
        self.free: list[Run] = []  # no queue: each may start on its own
        self.queues: dict[str, deque[Run]] = {}
        for run in sorted(runs, key=lambda r: r.id):
            if run.queue is None:
                self.free.append(run)
            else:
                self.queues.setdefault(run.queue, deque()).append(run)

    def __bool__(self) -> bool:
        return bool(self.free) or bool(self.queues)

    def __len__(self) -> int:
        return len(self.free) + sum(len(q) for q in self.queues.values())

    def __iter__(self) -> Iterator[Run]:
        """Every waiting task, in id order."""
        yield from sorted([*self.free, *(run for q in self.queues.values() for run in q)], key=lambda r: r.id)

    def offer(self, start: Callable[[Run], bool], slots: Callable[[], int]) -> bool:
        """Offer the tasks that may be next, oldest first, to ``start`` (True: it took the task) while
        ``slots()`` is above 0.  A task taken leaves the waiting ones.  False when the slots ran out."""
        heads = sorted((q[0].id, name) for name, q in self.queues.items())
        taken: set[int] = set()  # positions in ``free``: taken out after the walk, one slice for a burst
        at, h = 0, 0
        try:
            while at < len(self.free) or h < len(heads):
                if slots() <= 0:
                    return False
                if h >= len(heads) or (at < len(self.free) and self.free[at].id < heads[h][0]):
                    if start(self.free[at]):
                        taken.add(at)
                    at += 1
                    continue
                name = heads[h][1]
                h += 1
                if start(self.queues[name][0]):
                    self.queues[name].popleft()
                    if not self.queues[name]:
                        del self.queues[name]
            return slots() > 0
        finally:
            self._take_out(taken)

    def _take_out(self, positions: set[int]) -> None:
        if not positions:
            return
        if len(positions) == max(positions) + 1:
            del self.free[:len(positions)]
        else:
            self.free = [run for at, run in enumerate(self.free) if at not in positions]
