"""The daemon's sleep (runtime/daemon.py ``wait_for_events``): whole milliseconds in epoll, the rest slept
precisely.  It never comes back before its time without an event, and an event ends it at once.  (That a
step of the wall clock neither stretches nor cuts it is proven with a real daemon under faketime in
tests/system/test_clock_steps.py.)"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clocklab import faketime_env

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
