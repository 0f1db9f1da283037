"""libfaketime for tests that step the clock of a real process (scripts/test.sh installs it)."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


def faketime_env(rc: Path) -> dict[str, str]:
    """The environment that preloads libfaketime with its offset read from ``rc`` at every clock read (the
    monotonic clock left alone); skips the test where libfaketime is not installed."""
    if not LIBFAKETIME:
        pytest.skip("libfaketime is not installed (scripts/test.sh installs it)")
    return {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(rc), "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
