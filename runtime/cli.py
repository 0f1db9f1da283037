"""The ``taskserver`` command: global options, then one subcommand.

Subcommands come from three modules: ``cli_config`` (check, init-config, tenants), ``cli_jobs`` (jobs ...)
and ``control`` (run, start, stop, restart, reload, status). Each registers its parsers with
``set_defaults(func=handler)``; ``handler(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

from . import control, logs
from .errors import one_line, run_command

PROG = "taskserver"
log = logging.getLogger(__name__)


# Commands of the daemon's life cycle; for these the other command groups (and their imports: the YAML
# parser, SQLite, time zones) are not loaded, so `taskserver status` answers in a few tens of milliseconds.
CONTROL_COMMANDS = frozenset({"run", "start", "stop", "restart", "reload", "status"})


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (skipping the global options), if any."""
    words = iter(argv)
    for word in words:
        if word in ("-c", "--config"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


GLOBAL_FLAGS = frozenset({"-v", "--verbose", "--debug"})


def _hoist_global_flags(words: Sequence[str]) -> list[str]:
    """Accept the global flags after the subcommand too (``taskserver run --once -v``).

    Words after ``--`` belong to an enqueued command and are never touched.
    """
    end = words.index("--") if "--" in words else len(words)
    head = list(words[:end])
    flags = [w for w in head if w in GLOBAL_FLAGS]
    return flags + [w for w in head if w not in GLOBAL_FLAGS] + list(words[end:])


class _Parser(argparse.ArgumentParser):
    """argparse, with its error line kept to one printable line (it echoes the bad value as given)."""

    def error(self, message: str) -> NoReturn:
        super().error(one_line(message))


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


def _plain_status(words: Sequence[str]) -> argparse.Namespace | None:
    """The arguments of a plain `taskserver [-c PATH] [-v] [--debug] status` (what monitoring runs every few
    seconds), read without argparse: building its parsers was a third of the command's time. Any other
    form (None) goes through argparse, which also words every mistake."""
    args = argparse.Namespace(config=None, verbose=False, debug=False, command="status",
                              func=control.cmd_status)
    rest = list(words)
    while rest and rest[0] in GLOBAL_FLAGS:  # hoisted to the front (_hoist_global_flags)
        flag = rest.pop(0)
        args.debug = args.debug or flag == "--debug"
        args.verbose = args.verbose or flag != "--debug"
    if rest[:1] in (["-c"], ["--config"]) and len(rest) > 1 and not rest[1].startswith("-"):
        args.config, rest = Path(rest[1]), rest[2:]
    elif os.environ.get("TASKSERVER_CONFIG"):
        args.config = Path(os.environ["TASKSERVER_CONFIG"])
    return args if rest == ["status"] else None


def main(argv: Sequence[str] | None = None) -> int:
    words = _hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    word = _command_word(words)
    args = _plain_status(words) if word == "status" else None
    if args is None:
        parser = build_parser(only_control=word in CONTROL_COMMANDS, only_jobs=word == "jobs")
        args = parser.parse_args(words)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
    logs.setup(verbose=args.verbose, debug=args.debug)
    return run_command(PROG, lambda: int(args.func(args)), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
