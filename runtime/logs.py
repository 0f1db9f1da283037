"""Logging to stderr: levels always, timestamps unless journald is reading us.

When stderr is the stream systemd connected to the journal (``$JOURNAL_STREAM`` names its device:inode),
each line starts with a syslog priority prefix (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>``
debug) and carries no timestamp: journald parses the prefix and stamps the line itself. Anywhere else
(a terminal, the daemon's log file) lines carry an ISO timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<N>name: message`` — the sd-daemon(3) prefix convention."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # every line of a multi-line message (a traceback) must carry the prefix, or it becomes <6>
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def stream_is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the very file systemd attached to the journal."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def setup(verbose: bool = False, debug: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger once per process (again after daemonizing, to re-check the stream)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    if stream_is_journal(out):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if (verbose or debug) else logging.INFO)
