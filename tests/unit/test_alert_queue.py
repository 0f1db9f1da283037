"""The delivery threads' queue (runtime/alert_queue.py) with real threads: one key's items in order and one
at a time, other keys in parallel meanwhile, a bound, and what a close leaves undelivered."""

from __future__ import annotations

import threading

from taskserver.runtime.alert_queue import InOrder


def test_a_keys_items_leave_in_order_and_other_keys_pass_a_held_one() -> None:
    q: InOrder[str] = InOrder(100)
    for item in ("a1", "a2", "a3"):
        assert q.put("a", item)
    assert q.put("b", "b1")
    first = q.get()
    assert first == ("a", "a1")
    assert q.get() == ("b", "b1")  # a2 waits for a1; b does not
    taken: list[object] = []
    worker = threading.Thread(target=lambda: taken.append(q.get()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and not taken  # nothing of key a may start while a1 is out
    q.done("a")
    worker.join(10)
    assert taken == [("a", "a2")]
    q.done("b")
    q.done("a")
    assert q.get() == ("a", "a3")
    q.done("a")
    assert q.wait_empty(1.0)


def test_the_bound_and_what_close_leaves() -> None:
    q: InOrder[int] = InOrder(3)
    assert all(q.put(k, k) for k in (1, 2, 3))
    assert not q.put(4, 4)  # full: refused, not queued
    assert q.get() == (1, 1)
    assert not q.wait_empty(0.05)
    assert sorted(q.close()) == [1, 2, 3]  # 2 and 3 waited, 1 was being delivered
    assert q.get() is None and not q.put(5, 5)


def test_many_threads_keep_each_keys_order() -> None:
    q: InOrder[tuple[int, int]] = InOrder(10_000)
    seen: dict[int, list[int]] = {k: [] for k in range(8)}
    lock = threading.Lock()

    def work() -> None:
        while (got := q.get()) is not None:
            key, (k, n) = got
            with lock:
                seen[k].append(n)
            q.done(key)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(200):
        for k in range(8):
            assert q.put(k, (k, n))
    assert q.wait_empty(30)
    q.close()
    for t in threads:
        t.join(10)
    assert all(seen[k] == list(range(200)) for k in range(8))
