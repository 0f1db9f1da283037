"""Resident memory of this process, for the daemon's ``memory_limit``."""

from __future__ import annotations

import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size in bytes (from /proc/self/statm; peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in KiB on Linux; a peak is a safe over-estimate for a limit check
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
