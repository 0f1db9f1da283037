"""The one way the installer runs external commands.

Every command is an argv list (never a shell string), runs with a clean environment (``LANG=C.UTF-8`` and a
fixed PATH, so nothing from the caller's environment leaks into boot-time state), is logged as ``+ cmd`` at
debug level, and a failure is reported once with the quoted command and its exit code.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..runtime.errors import UserError

log = logging.getLogger("taskserver.installer")

ERROR_WORDS = re.compile(r"fail|error|cannot|can't|denied|no space|not found|no such|invalid", re.IGNORECASE)
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandFailed(UserError):
    def __init__(self, result: Result) -> None:
        detail = (result.stderr or result.stdout).strip().splitlines()
        # the error, not a warning printed after it (systemctl ends its "Failed to enable" with one)
        said = [line for line in detail if ERROR_WORDS.search(line)] or detail
        tail = f": {said[-1]}" if said else ""
        super().__init__(
            f"command failed with exit code {result.returncode}: {quote(result.argv)}{tail}",
            hint="run it by hand to see the whole output, or re-run with --debug",
            exit_code=1,
        )
        self.result = result


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": CLEAN_PATH}
    # The user's session bus and runtime dir are what `systemctl --user` needs; nothing else is passed on.
    for key in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "HOME", "USER", "LOGNAME"):
        if key in os.environ:
            env[key] = os.environ[key]
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = 120,
) -> Result:
    """Run ``argv`` and capture its output; raise ``CommandFailed`` when ``check`` and it fails."""
    args = tuple(str(a) for a in argv)
    log.debug("+ %s", quote(args))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=clean_env(env),
            input=input,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise UserError(
            f"command not found: {args[0]}", hint="install the tool that provides it, or pick another --init"
        ) from exc
    result = Result(args, proc.returncode, proc.stdout, proc.stderr)
    if not result.ok:
        log.debug("exit %d: %s", result.returncode, result.stderr.strip())
        if check:
            raise CommandFailed(result)
    return result
