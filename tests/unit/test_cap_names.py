"""The capability names the daemon logs (runtime/caps.py ``names``) are the kernel's own, read from the kernel
headers of this machine (linux/capability.h, installed with the C library's headers), bit for bit."""

from __future__ import annotations

import re
from pathlib import Path

from taskserver.runtime import caps

HEADER = Path("/usr/include/linux/capability.h")


def _kernel_names() -> dict[int, str]:
    text = HEADER.read_text()
    return {int(bit): name for name, bit in re.findall(r"^#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", text, re.M)
            if name != "CAP_LAST_CAP"}


def test_every_capability_the_kernel_headers_name_is_logged_by_its_name() -> None:
    kernel = _kernel_names()
    assert len(kernel) >= 41  # CAP_CHOWN (0) .. CAP_CHECKPOINT_RESTORE (40) at least
    for bit, name in kernel.items():
        assert caps.names(1 << bit) == [name]


def test_a_bit_no_name_is_known_for_is_logged_by_its_number() -> None:
    assert caps.names(1 << 63) == ["cap63"]
    assert caps.names((1 << caps.CAP_KILL) | (1 << caps.CAP_CHOWN)) == ["CAP_CHOWN", "CAP_KILL"]
