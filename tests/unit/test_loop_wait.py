"""The daemon's sleep (runtime/daemon.py ``wait_until``): whole milliseconds in epoll, the rest slept
precisely.  It never comes back before its deadline without an event, and an event ends it at once."""

from __future__ import annotations

import os
import selectors
import time

import pytest

from taskserver.runtime.daemon import wait_until


@pytest.mark.parametrize("ahead", [-0.5, 0.0, 0.0002, 0.0009, 0.001, 0.0013, 0.0027, 0.0101, 0.05])
def test_it_never_wakes_before_its_deadline(ahead: float) -> None:
    with selectors.DefaultSelector() as sel:
        for _ in range(5):
            until = time.time() + ahead
            assert wait_until(sel, until) == []
            assert time.time() >= until


def test_an_event_ends_the_wait() -> None:
    r, w = os.pipe()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ, "pipe")
            os.write(w, b"x")
            events = wait_until(sel, time.time() + 30)
            assert [key.data for key, _ in events] == ["pipe"]
    finally:
        os.close(r)
        os.close(w)
