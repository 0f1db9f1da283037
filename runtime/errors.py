"""Errors a user can act on, shared by both command-line tools.

A ``UserError`` is reported as one line naming what was wrong (and where), followed by a hint, with exit code
2 for bad input; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TextIO

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


def report(prog: str, err: UserError, stream: TextIO | None = None) -> int:
    """Print ``err`` for a person and return the exit code to use."""
    out = stream if stream is not None else sys.stderr
    print(f"{prog}: error: {err.message}", file=out)
    if err.hint:
        print(f"{prog}: hint: {err.hint}", file=out)
    return err.exit_code


def run_command(prog: str, func: Callable[[], int], *, debug: bool) -> int:
    """Run a command-line entry point the way both tools do: a ``UserError`` becomes its one line and hint
    (a traceback only with ``--debug``), Ctrl-C exits 130, and a reader that closes the pipe early
    (``... | head -1``) ends the command quietly with 141."""
    try:
        return func()
    except UserError as err:
        if debug:
            logging.getLogger(prog).exception("details")
        return report(prog, err)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
