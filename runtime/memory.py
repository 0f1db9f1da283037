"""Resident memory of this process, for the daemon's ``memory_limit``."""

from __future__ import annotations

import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size in bytes (from /proc/self/statm; peak RSS where /proc is missing)."""
    try:  # read at every wake-up: one open and one read, no file object around them
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fields = os.read(fd, 256).split()
        finally:
            os.close(fd)
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in KiB on Linux; a peak is a safe over-estimate for a limit check
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
