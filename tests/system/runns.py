"""A private /run/taskserver for the whole test session, so tests never touch the host's pid files.

The pid file's place follows from the user alone (root: /run/taskserver), not from the environment, so a
test cannot redirect it with a variable. As root, every `taskserver` a test runs enters one private mount
namespace (``nsenter -m``) in which /run/taskserver is a fresh tmpfs; the test reads it through
/proc/PID/root. Other users keep their pid files in /tmp/taskserver-UID, which is theirs anyway.
"""

from __future__ import annotations

import atexit
import os
import subprocess
from pathlib import Path

_holder: list[subprocess.Popen[bytes]] = []


def _ns_pid() -> int:
    if not _holder or _holder[0].poll() is not None:
        Path("/run/taskserver").mkdir(mode=0o755, exist_ok=True)  # the mount point (root's own place)
        script = "mount -t tmpfs -o mode=0755 tstest /run/taskserver && echo ready && exec sleep infinity"
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n", "no mount namespace"
        _holder[:] = [proc]
        atexit.register(proc.kill)
    return _holder[0].pid


def prefix() -> list[str]:
    """What to put before a `taskserver` argv so it sees the private /run/taskserver."""
    return ["nsenter", "-t", str(_ns_pid()), "-m", "--"] if os.geteuid() == 0 else []


def run_dir() -> Path:
    """The directory holding the pid files of daemons started by this user, as seen from here."""
    if os.geteuid() != 0:
        return Path(f"/tmp/taskserver-{os.geteuid()}")
    return Path(f"/proc/{_ns_pid()}/root/run/taskserver")
