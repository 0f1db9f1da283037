"""memory.give_back hands freed heap pages back to the system: a process whose heap holds many freed,
scattered chunks (what a burst of runs leaves) shrinks when it is called, as the daemon does once it falls
idle after runs."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
from taskserver.runtime import memory
keep = []
junk = [bytearray(3000) for _ in range(20000)]  # 60 MB in chunks the C heap holds (not mmap'd)
keep = junk[::8]  # one in eight stays: the freed ones lie between them, the heap cannot shrink from its top
del junk
before = memory.rss_bytes()
memory.give_back()
memory.give_back()  # a second call finds nothing more and does no harm
print(before, memory.rss_bytes(), len(keep))
"""


def test_freed_scattered_memory_is_given_back() -> None:
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    before, after, kept = (int(v) for v in out.split())
    assert kept == 2500
    assert before - after > 30 * 2**20, f"RSS {before / 2**20:.1f} MB -> {after / 2**20:.1f} MB"
