"""Errors a user can act on, shared by both command-line tools.

A ``UserError`` is reported as one line naming what was wrong (and where), followed by a hint, with exit code
2 for bad input; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .limits import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import Any, TextIO

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix. ``str()`` is the one-line message; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


MAX_LINE = 500  # characters of one message line; values in messages are cut far shorter (limits.clip)


def one_line(text: str) -> str:
    """``text`` as one printable line: control characters (newlines, ESC) escaped, cut to MAX_LINE."""
    text = printable(text)
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "..."


def report(prog: str, err: UserError, stream: TextIO | None = None) -> int:
    """Print ``err`` for a person and return the exit code to use."""
    out = stream if stream is not None else sys.stderr
    print(f"{prog}: error: {one_line(err.message)}", file=out)
    if err.hint:
        print(f"{prog}: hint: {one_line(err.hint)}", file=out)
    return err.exit_code


def _log(prog: str) -> Any:
    import logging  # noqa: PLC0415 - only on a failure: `status` need not load it

    return logging.getLogger(prog)


def run_command(prog: str, func: Callable[[], int], *, debug: bool) -> int:
    """Run a command-line entry point the way both tools do: a ``UserError`` becomes its one line and hint
    (a traceback only with ``--debug``), Ctrl-C exits 130, and a reader that closes the pipe early
    (``... | head -1``) ends the command quietly with 141."""
    try:
        return func()
    except UserError as err:
        if debug:
            _log(prog).exception("details")
        return report(prog, err)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        _to_devnull(sys.stdout)
        return 141
    except OSError as exc:  # the system refused something (a full disk, a permission): say what, no traceback
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return report(prog, UserError(f"{where}{exc.strerror or exc}", hint="check the path, its permissions "
                                      "and free space", exit_code=1))
    except Exception as exc:  # a defect: one line that says so; the traceback with --debug (and in -v logs)
        if debug:
            raise
        _log(prog).debug("details", exc_info=True)
        return report(prog, UserError(f"internal error: {type(exc).__name__}: {exc}",
                                      hint="run again with --debug for the details, and report it",
                                      exit_code=70))


def flushed(code: int) -> int:
    """``code`` after stdout and stderr are flushed, for a program's exit (both tools' console scripts): 141
    when stdout's reader is gone, as run_command says it (its further writes go nowhere, so the
    interpreter's own last flush does not print "Exception ignored" and exit 120), 120 when stdout fails
    otherwise, as the interpreter's exit does. Only a code that was 0 is changed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            _to_devnull(stream)
            code = 141 if stream is sys.stdout and code == 0 else code
        except (OSError, ValueError):
            code = 120 if stream is sys.stdout and code == 0 else code
    return code


def _to_devnull(stream: TextIO) -> None:
    """Point the stream's fd at /dev/null: its reader is gone, and the interpreter's last flush must not
    raise again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
