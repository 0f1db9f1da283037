"""The ``taskserver`` command line as argparse parsers: the global options and each command group's.

Built only for the command about to run (runtime/cli.py): a plain `status` never builds them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, cast

from .errors import one_line

PROG = "taskserver"


class _Parser(argparse.ArgumentParser):
    """argparse, with its error line kept to one printable line (it echoes the bad value as given), and its
    help formatters given their width (``columns``)."""

    def error(self, message: str) -> NoReturn:
        super().error(one_line(message))

    def _get_formatter(self) -> argparse.HelpFormatter:
        # every formatter takes a width; typeshed's protocol names only prog
        return self.formatter_class(prog=self.prog, width=columns())  # type: ignore[call-arg]


def columns() -> int:
    """The width argparse's formatters take by default: ``shutil.get_terminal_size().columns`` less 2.
    Worked out here because argparse imports shutil for it, even to build the parsers, and shutil brings
    bz2, lzma and zlib: half a megabyte of the daemon's memory for good (tests/unit/test_which.py compares
    the two)."""
    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        width = 0
    if width <= 0:
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            width = 0
        width = width or 80
    return width - 2


def build_parser(only_control: bool = False, only_jobs: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``only_control``/``only_jobs``: just the group about to run (a `jobs enqueue`
    in a loop of an application's shell script must not load the config editor and the web side)."""
    parser = _Parser(
        prog=PROG,
        description="Run scheduled and queued jobs for one or more tenants, as a daemon or in the foreground",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `taskserver COMMAND --help` for the options of one command.",
    )
    env_cfg = os.environ.get("TASKSERVER_CONFIG")
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(env_cfg) if env_cfg else None,
        metavar="PATH",
        help="configuration file (default: $TASKSERVER_CONFIG, else /etc/taskserver/taskserver.yaml as root, "
        "else ~/.config/taskserver/taskserver.yaml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages too (default: info)")
    parser.add_argument("--debug", action="store_true", help="debug logging, tracebacks on errors")
    # every subcommand's parser is a _Parser too (argparse makes them of the parent's class)
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(title="commands", dest="command", metavar="COMMAND"))
    if not only_jobs:  # a `jobs` command in an application's loop builds its own group alone
        from . import control  # noqa: PLC0415 - the daemon's life cycle, with its imports

        control.register(sub)
    if not only_control:
        from . import cli_jobs  # noqa: PLC0415 - see CONTROL_COMMANDS

        if not only_jobs:
            from . import cli_config  # noqa: PLC0415

            cli_config.register(sub)
        cli_jobs.register(sub)
        if not only_jobs:
            from . import cli_store, cli_web  # noqa: PLC0415

            cli_store.register(sub)
            cli_web.register(sub)
    return parser
