"""Durations ("90s", "1h30m", plain numbers = seconds) and sizes ("512M" = 512 MiB, plain numbers = bytes)."""

from __future__ import annotations

import re

# re.ASCII: \d would also take other scripts' digits, which float() then reads as numbers
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|ms|m|s)", re.ASCII)
_DURATION_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

DURATION_HINT = "write a duration like 90s, 5m, 1h30m, 2d (or a plain number of seconds)"
SIZE_HINT = "write a size like 100K, 512M, 1G (1024-based) or a plain number of bytes"


def parse_duration(value: object) -> float:
    """Seconds in ``value``; raises ValueError for anything else (bools, negatives, unknown units)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text, re.ASCII):
        return float(text)
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"not a duration: {value!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty duration")
    return total


def parse_size(value: object) -> int:
    """Bytes in ``value``; K/M/G/T are powers of 1024."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size, got {type(value).__name__}")
    m = _SIZE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"not a size: {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
