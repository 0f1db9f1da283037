"""`taskserver jobs ...`: enqueue long tasks, finish them, list jobs and show run history."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import UserError


def register(sub: Any) -> None:
    """Add the `jobs` command group to ``sub`` (an argparse subparsers action)."""
    jobs: argparse.ArgumentParser = sub.add_parser("jobs", help="list, run and enqueue jobs; show history")
    jobs.set_defaults(func=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    raise UserError("`jobs` is not implemented yet", hint="use a later build")
