"""A bounded queue for the delivery threads: each key's items leave in the order they came, one at a time,
while items of different keys go in parallel.

The key is a notification's (tenant, job, channel): a receiver hears a job's ``failure`` before its
``recovered`` even when several threads deliver, and a slow receiver holds up only its own job's next
notification, not the other jobs'.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrder(Generic[T]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.waiting: dict[Hashable, deque[T]] = {}
        self.ready: deque[Hashable] = deque()  # keys whose next item may start now
        self.busy: dict[Hashable, T] = {}  # the item of each key being delivered
        self.count = 0  # items waiting or busy
        self.closed = False

    def put(self, key: Hashable, item: T) -> bool:
        """Queue ``item``; False (nothing queued) when ``limit`` items wait already."""
        with self.cond:
            if self.count >= self.limit or self.closed:
                return False
            self.count += 1
            items = self.waiting.setdefault(key, deque())
            items.append(item)
            if key not in self.busy and len(items) == 1:
                self.ready.append(key)
                self.cond.notify()
            return True

    def get(self) -> tuple[Hashable, T] | None:
        """The next item whose key is free (blocks); None once closed."""
        with self.cond:
            while not self.ready and not self.closed:
                self.cond.wait()
            if self.closed:
                return None
            key = self.ready.popleft()
            item = self.waiting[key].popleft()
            if not self.waiting[key]:
                del self.waiting[key]
            self.busy[key] = item
            return key, item

    def done(self, key: Hashable) -> None:
        """The item ``get`` gave for ``key`` is delivered: the key's next one may start."""
        with self.cond:
            self.busy.pop(key, None)
            self.count -= 1
            if key in self.waiting:
                self.ready.append(key)
            self.cond.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count == 0, timeout)

    def close(self) -> list[T]:
        """Take no more, hand out no more; returns what was not delivered (waiting and being delivered)."""
        with self.cond:
            self.closed = True
            left = [i for items in self.waiting.values() for i in items] + list(self.busy.values())
            self.waiting.clear()
            self.ready.clear()
            self.cond.notify_all()
            return left
