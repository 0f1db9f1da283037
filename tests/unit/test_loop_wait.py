"""The daemon's sleep (runtime/daemon.py ``wait_for_events``): whole milliseconds in epoll, the rest slept
precisely.  It never comes back before its time without an event, and an event ends it at once.  (That a
step of the wall clock neither stretches nor cuts it is proven with a real daemon under faketime in
tests/system/test_clock_steps.py.)"""

from __future__ import annotations

import os
import selectors
import time

import pytest

from taskserver.runtime.daemon import wait_for_events


@pytest.mark.parametrize("ahead", [-0.5, 0.0, 0.0002, 0.0009, 0.001, 0.0013, 0.0027, 0.0101, 0.05])
def test_it_never_wakes_before_its_deadline(ahead: float) -> None:
    with selectors.DefaultSelector() as sel:
        for _ in range(5):
            until = time.monotonic() + ahead
            assert wait_for_events(sel, ahead) == []
            assert time.monotonic() >= until


def test_an_event_ends_the_wait() -> None:
    r, w = os.pipe()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ, "pipe")
            os.write(w, b"x")
            events = wait_for_events(sel, 30)
            assert [key.data for key, _ in events] == ["pipe"]
    finally:
        os.close(r)
        os.close(w)
