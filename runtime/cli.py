"""The ``taskserver`` command: global options, then one subcommand.

Subcommands come from three modules: ``cli_config`` (check, init-config, tenants), ``cli_jobs`` (jobs ...)
and ``control`` (run, start, stop, restart, reload, status). Each registers its parsers with
``set_defaults(func=handler)``; ``handler(args) -> int`` is the exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from .errors import UserError, flushed, run_command

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    import argparse
    from typing import Any

PROG = "taskserver"


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


def build_parser(only_control: bool = False, only_jobs: bool = False) -> argparse.ArgumentParser:
    """The whole command line (runtime/cli_parser.py); ``only_control``/``only_jobs``: just that group."""
    from . import cli_parser  # noqa: PLC0415 - a plain `status` does without argparse's parsers

    return cli_parser.build_parser(only_control=only_control, only_jobs=only_jobs)


def _plain_globals(words: Sequence[str]) -> tuple[SimpleNamespace, list[str]]:
    """The global options of a plain command line (``[-v] [--debug] [-c PATH]``, hoisted to the front by
    _hoist_global_flags) as argparse would read them, and the words after them. The config's path is text
    here, a Path from argparse: the lean paths take either."""
    args = SimpleNamespace(config=None, verbose=False, debug=False)
    rest = list(words)
    while rest and rest[0] in GLOBAL_FLAGS:  # hoisted to the front (_hoist_global_flags)
        flag = rest.pop(0)
        args.debug = args.debug or flag == "--debug"
        args.verbose = args.verbose or flag != "--debug"
    if rest[:1] in (["-c"], ["--config"]) and len(rest) > 1 and not rest[1].startswith("-"):
        args.config, rest = rest[1], rest[2:]  # text: pathlib is not on the lean paths (runtime/confpath.py)
    elif os.environ.get("TASKSERVER_CONFIG"):
        args.config = os.environ["TASKSERVER_CONFIG"]
    return args, rest


def _plain_status(words: Sequence[str]) -> Any:
    """The arguments of a plain `taskserver [-c PATH] [-v] [--debug] status` (what monitoring runs every few
    seconds), read without argparse (the module and its parsers were a third of the command's time), as
    the namespace argparse would make. Any other form (None) goes through argparse, which also words every
    mistake."""
    from .cli_status import cmd_status  # noqa: PLC0415 - not the daemon's life cycle (control.py)

    args, rest = _plain_globals(words)
    args.command, args.func = "status", cmd_status
    return args if rest == ["status"] else None


def _plain_enqueue(words: Sequence[str]) -> Any:
    """A plain `jobs enqueue` (runtime/cli_enqueue.py), read without argparse; None for any other form."""
    from .cli_enqueue import plain  # noqa: PLC0415

    return plain(*_plain_globals(words))


def main(argv: Sequence[str] | None = None) -> int:
    return _main(argv)[0]


def console() -> None:
    """The ``taskserver`` program (the console script): main(), its output flushed (errors.flushed), then
    its exit. After a lean command (a plain `status`, a `jobs enqueue` that stayed on its lean path) the
    process ends at once (end_now): the interpreter's own teardown, which frees every module and object one
    by one, was a sixth of the wall time of such a command, and monitoring runs `status` every few seconds."""
    code, lean = _main(None)
    if lean:
        end_now(code)
    sys.exit(flushed(code))


def end_now(code: int) -> None:
    """End the process with ``code`` without the interpreter's teardown, after what an exit must still do:
    the atexit functions (logging's last flush among them), then stdout and stderr flushed
    (errors.flushed). The lean commands write their files with os-level calls and close them, and start
    no thread: this is for them only."""
    import atexit  # noqa: PLC0415 - built in

    atexit._run_exitfuncs()  # what the interpreter runs at exit, nothing more
    os._exit(flushed(code))


def _main(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit code, and whether the command was a lean one (see console)."""
    words = _hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    word = _command_word(words)
    args = _plain_status(words) if word == "status" else _plain_enqueue(words) if word == "jobs" else None
    if args is None:
        parser = build_parser(only_control=word in CONTROL_COMMANDS, only_jobs=word == "jobs")
        args = parser.parse_args(words)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2, False
    quiet = args.command == "status" or getattr(args, "lean", False)  # nothing to log (cli_enqueue: unless
    if not quiet or args.verbose or args.debug:  # it falls back to the full path, which sets it up then)
        from . import logs  # noqa: PLC0415 - logging is a fifth of a plain `status`

        logs.setup(verbose=args.verbose, debug=args.debug)
    code = run_command(PROG, lambda: int(_text_config(args).func(args)), debug=args.debug)
    return code, args.command == "status" or getattr(args, "lean", False)


def _text_config(args: Any) -> Any:
    """Refuse a config path that is not UTF-8 (its bytes come as lone surrogates): it names the pid file
    and the state dir and goes into the daemon's log and info file, none of which could hold it."""
    given = getattr(args, "config", None)
    if given is not None:
        try:
            os.fsdecode(given).encode()
        except UnicodeEncodeError:
            shown = os.fsdecode(given).encode("utf-8", "backslashreplace").decode()
            raise UserError(f"-c {shown}: the config file's path is not UTF-8 text",
                            hint="rename the file (or a directory on its path) to a UTF-8 name") from None
    return args


if __name__ == "__main__":
    console()
