"""The stated bounds on everything a file, a command line or a client hands in (docs/configuration.md).

Each limit keeps one command fast and its memory small whatever it is given; an input above one is refused
with an error that names the limit. ``clip`` keeps a hostile value from flooding an error message.
"""

from __future__ import annotations

import re

# the configuration file
MAX_FILE_BYTES = 1 << 20  # 1 MiB: 10,000 jobs in block style take about 800 KB
MAX_LINES = 65_536
MAX_NODES = 100_000  # YAML values (every key, value and list item counts)
MAX_ENTRIES = 10_000  # keys of one mapping, items of one list (the jobs of a tenant are one mapping)
MAX_DEPTH = 32  # mappings and lists inside each other
MAX_ALIASES = 1_000  # *alias uses
MAX_VALUE_CHARS = 65_536  # one key or value
MAX_PATH_CHARS = 4_096  # PATH_MAX
MAX_TENANTS = 1_000
MAX_JOBS = 10_000  # all tenants together
MAX_ERRORS = 100  # mistakes listed for one file; the count of the rest is still reported

# values
MAX_DURATION = 10 * 366 * 86400.0  # ten years, in seconds
MIN_DURATION = 0.001  # 1 ms: the finest a duration other than 0 may be (the grain the server waits in)
MAX_SIZE = 1 << 50  # 1 PiB
# the smallest memory_limit: the daemon alone is about 22 MB resident (34 MB with 10,000 jobs), so a limit
# below this ended every start after its first run, a restart loop under a supervisor (runtime/memory.py)
MIN_MEMORY_LIMIT = 32 << 20
MAX_OUTPUT_TAIL = 64 << 20  # bytes of output kept per run (held in the daemon's memory)
MAX_COUNT = 1_000_000  # retries, max_parallel: any whole number a person would write

# what clients hand in (`jobs enqueue`, `jobs finish`, run ids)
MAX_ARGV_ITEMS = 4_096
MAX_ARGV_BYTES = 128 * 1024  # the whole command, as the kernel's per-argument limit allows
MAX_MESSAGE_CHARS = 4_096
MAX_RUN_ID = (1 << 63) - 1  # SQLite's INTEGER
MAX_HISTORY = 100_000

CLIP_CHARS = 60

# a tenant's, a job's or a queue's name (here, not in config_values: the lean `jobs enqueue` checks names too)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_HINT = "names use letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` cut to ``limit`` characters for a message, saying how long it really was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object, limit: int = CLIP_CHARS) -> str:
    """``repr`` of a value for an error message: control characters escaped, cut to a readable length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return clip(repr(value), limit)


def has_control(text: str) -> bool:
    """True if ``text`` holds a control character (NUL, newline, ESC, ...)."""
    return _CONTROL.search(text) is not None


def printable(text: str) -> str:
    """``text`` with each control character written as an escape, for a one-line message to a terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def argv_problem(argv: object) -> str | None:
    """What makes ``argv`` unstartable (None: it can be handed to exec). Checked where a command comes in
    (the config, `jobs enqueue`) and again just before a stored one is started."""
    if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
        return "the command is not a list of text"
    if not argv or not argv[0]:
        return "the command is empty (no program to run)"
    if len(argv) > MAX_ARGV_ITEMS:
        return f"the command has {len(argv)} arguments (at most {MAX_ARGV_ITEMS})"
    problem = _bad_argument(argv)
    if problem is not None:
        return problem
    size = sum(len(a.encode(errors="surrogateescape")) + 1 for a in argv)
    if size > MAX_ARGV_BYTES:
        return f"the command is {size} bytes long (at most {MAX_ARGV_BYTES})"
    return None


def _bad_argument(argv: list[str] | tuple[str, ...]) -> str | None:
    """An argument exec cannot pass: one with a NUL, or one that is not text (a surrogate that is not the
    escape of an undecodable byte of a command line, which has no UTF-8 form)."""
    for i, arg in enumerate(argv):
        if "\0" in arg:
            return f"argument {i} of the command holds a NUL character (exec cannot pass it)"
        try:
            arg.encode(errors="surrogateescape")
        except UnicodeEncodeError:
            return f"argument {i} of the command is not valid text (a lone surrogate)"
    return None
