"""The daemon's queued tasks offered to its slots (runtime/waiting.py): the same tasks start, in the same
order, and the same ones are left waiting, as by walking every waiting task in id order, which is the
queue rule itself (a named queue one task at a time, in order; a busy job holds its task back).  Checked
against that walk over many random cases."""

from __future__ import annotations

import random

import pytest

from taskserver.runtime.model import State
from taskserver.runtime.store import Run
from taskserver.runtime.waiting import Waiting


def task(rid: int, queue: str | None, job: str) -> Run:
    return Run(id=rid, job=job, queue=queue, state=State.QUE, reason=None, due=None, created=0.0,
               started=None, finished=None, pid=None, instance=None, exit_code=None, attempt=0,
               argv=("/bin/true",), output="", message=None, queued=True)


class Slots:
    """Busy queues and jobs and a slot count, as the daemon's ``Runs`` keeps them."""

    def __init__(self, slots: int, busy_queues: set[str], busy_jobs: set[str]) -> None:
        self.left, self.queues, self.jobs = slots, set(busy_queues), set(busy_jobs)
        self.started: list[int] = []

    def start(self, run: Run) -> bool:
        if (run.queue is not None and run.queue in self.queues) or (run.job and run.job in self.jobs):
            return False
        self.started.append(run.id)
        self.left -= 1
        if run.queue is not None:
            self.queues.add(run.queue)
        if run.job:
            self.jobs.add(run.job)
        return True


def walk_every_task(runs: list[Run], slots: Slots) -> list[Run]:
    """The rule stated as a walk over every waiting task, oldest first; returns those left waiting."""
    left = []
    blocked: set[str] = set()
    for at, run in enumerate(runs):
        if slots.left <= 0:
            return left + runs[at:]
        if run.queue is not None and run.queue in blocked:
            left.append(run)
            continue
        if not slots.start(run):
            if run.queue is not None:
                blocked.add(run.queue)
            left.append(run)
    return left


@pytest.mark.parametrize("seed", range(400))
def test_the_same_tasks_start_in_the_same_order_as_by_the_queue_rule(seed: int) -> None:
    rnd = random.Random(seed)
    runs = [task(i, rnd.choice([None, None, "a", "b", "c"]), rnd.choice(["", "", "j1", "j2"]))
            for i in rnd.sample(range(1, 1000), rnd.randint(0, 40))]
    runs.sort(key=lambda r: r.id)
    busy_q = {q for q in "abc" if rnd.random() < 0.3}
    busy_j = {j for j in ("j1", "j2") if rnd.random() < 0.3}
    slots = rnd.randint(0, 12)
    want_slots, got_slots = Slots(slots, busy_q, busy_j), Slots(slots, busy_q, busy_j)
    left = walk_every_task(runs, want_slots)
    waiting = Waiting(rnd.sample(runs, len(runs)))  # any order in: the store's order is by id anyway
    more = waiting.offer(got_slots.start, lambda: got_slots.left)
    assert got_slots.started == want_slots.started
    assert [r.id for r in waiting] == [r.id for r in left]
    assert len(waiting) == len(left) and bool(waiting) == bool(left)
    assert more == (got_slots.left > 0)


def test_a_long_serial_queue_is_offered_by_its_head_only() -> None:
    runs = [task(i, "serial", "") for i in range(1, 10_001)]
    waiting = Waiting(runs)
    offered: list[int] = []

    def start(run: Run) -> bool:
        offered.append(run.id)
        return False  # its queue is busy: nothing behind it may start

    assert waiting.offer(start, lambda: 4)
    assert offered == [1]
    assert len(waiting) == 10_000
