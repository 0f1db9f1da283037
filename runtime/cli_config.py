"""The configuration subcommands: ``check``, ``init-config``, ``tenants list|enable|disable``."""

from __future__ import annotations

import argparse

from . import config


def _check(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    state = "" if cfg.exists else " (missing: embedded default used)"
    print(f"{cfg.path}: OK{state}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommands to the main parser's subparsers."""
    p = sub.add_parser("check", help="validate the configuration file (exit 0 valid, 2 invalid)")
    p.set_defaults(func=_check)
