"""The daemon's sleep (runtime/daemon.py ``wait_for_events``): whole milliseconds in epoll, the rest slept
precisely.  It never comes back before its time without an event, and an event ends it at once.  (That a
step of the wall clock neither stretches nor cuts it is proven with a real daemon under faketime in
tests/system/test_clock_steps.py.)"""

from __future__ import annotations

import math
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clocklab import faketime_env

from taskserver.runtime import daemon
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


def test_the_precise_part_works_under_a_preloaded_clock_faker(tmp_path: Path) -> None:
    """libfaketime (as tests/system/test_clock_steps.py preloads it) makes time.sleep fail with EINVAL; the
    loop's sleep must neither fail nor return early there."""
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    code = ("import selectors, time\nfrom taskserver.runtime.daemon import wait_for_events\n"
            "with selectors.DefaultSelector() as sel:\n"
            "    for ahead in (0.0002, 0.0009, 0.0013, 0.0027):\n"
            "        until = time.monotonic() + ahead\n"
            "        assert wait_for_events(sel, ahead) == []\n"
            "        assert time.monotonic() >= until\n"
            "print('ok')\n")
    env = {**os.environ, **faketime_env(rc)}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert got.returncode == 0 and got.stdout == "ok\n", got


def test_the_daemons_timers_have_no_slack() -> None:
    """caps.precise_timers (called by the daemon before its threads start): the kernel's slack of 50 us on
    every timer is taken away from the calling thread and the threads it starts; asked back from the
    kernel (PR_GET_TIMERSLACK) in each."""
    code = ("import ctypes, threading\nfrom taskserver.runtime import caps\nlibc = ctypes.CDLL(None)\n"
            "print(libc.prctl(30, 0, 0, 0, 0))\ncaps.precise_timers()\n"
            "def slack():\n    print(libc.prctl(30, 0, 0, 0, 0))\n"
            "slack()\nt = threading.Thread(target=slack)\nt.start()\nt.join()\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, *after = got.stdout.split()
    assert int(before) > 1 and after == ["1", "1"], got


def _kernel_late(wait: float) -> float:
    """How late the kernel may end an epoll or select wait of ``wait`` seconds (fs/select.c,
    select_estimate_accuracy): 0.1 % of it, 0.5 % for a niced process, at most 0.1 s."""
    return min(wait / 200, 0.1)


def _asked(timeout: float) -> float:
    """What epoll is asked for when the selector is given ``timeout``: whole milliseconds, rounded up."""
    return math.ceil(round(timeout * 1e3, 6)) / 1e3


@pytest.mark.parametrize("left", [0.0016, 0.002, 0.0101, 0.05, 0.2, 1.0, 5.0, 12.0, 59.9, 60.0, 3600.0])
def test_a_long_wait_leaves_room_for_the_kernels_slack(left: float) -> None:
    """Each wait the loop asks epoll for ends by the deadline even when the kernel takes all the slack it may
    (a 12 s sleep ended up to 12 ms late, its due runs with it), and each leaves less to wait than before
    (at most a few waits, never a spin)."""
    rounds = 0
    while left > daemon.FINE:
        asked = _asked(daemon._wait(left))
        assert asked >= 0.001 and asked + _kernel_late(asked) <= left, (left, asked)
        left -= asked  # the earliest the wait can end: what is left then is waited again
        rounds += 1
    assert rounds <= 8


def test_a_real_wait_asks_epoll_only_for_what_its_slack_allows() -> None:
    """The waits a real 2.5 s sleep asks for, recorded at the selector (the kernel does the waiting)."""
    asked: list[tuple[float, float]] = []  # (seconds left until the deadline, the wait asked for)

    class Recording(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            asked.append((deadline - time.monotonic(), _asked(timeout or 0.0)))
            return super().select(timeout)  # type: ignore[no-any-return]

    with Recording() as sel:
        deadline = time.monotonic() + 2.5
        assert daemon.wait_for_events(sel, 2.5) == []
        assert time.monotonic() >= deadline
    assert len(asked) >= 2  # the first wait ends early by its slack; the rest is waited again
    for left, wait in asked:
        assert wait + _kernel_late(wait) <= left + 0.0002, asked  # (the call itself: a fraction of a ms)
