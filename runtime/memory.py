"""Resident memory of this process, for the daemon's ``memory_limit``, and giving freed memory back."""

from __future__ import annotations

import ctypes
import functools
import os
import resource
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")
GIVE_BACK_EVERY = 60.0  # seconds: the daemon gives freed memory back at most this often (see give_back)


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


def give_back() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing where the C
    library has none).  A burst of runs leaves the heap full of freed, scattered chunks the allocator keeps:
    a daemon whose 10,000 jobs had each run once held 44 MB, 40 MB after this; it costs a millisecond or a
    few, so the daemon does it when it falls idle after runs, at most once per GIVE_BACK_EVERY."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    return getattr(ctypes.CDLL(None), "malloc_trim", None)
