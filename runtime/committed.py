"""What every `jobs` command does once the store has committed a change to a run: the run's status file,
the wake-up of the daemon serving the store, the run id printed.

The lean `jobs enqueue` (runtime/cli_enqueue.py), the full path (runtime/cli_jobs.py), `jobs finish` and
`jobs cancel` (runtime/cli_steer.py) and the web side (through them) share it, so the store is the truth
alike everywhere: a failure after the commit is a warning, never an error a caller would answer by asking
again (and queueing the task twice). Each warning is printed and returned too, so that a caller that is
not a terminal (the web API's answer, runtime/web/reader.py) can hand it on. Lean: the standard library's
small modules, statusfile and limits.
"""

from __future__ import annotations

import sys

from . import limits, statusfile
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .confpath import StrPath


def after_commit(config_path: StrPath, where: tuple[str | Path, str], run_id: int,
                 get: Callable[[], statusfile.RunView | None], notify: Callable[[], bool]) -> str | None:
    """A queued run's status file (``where``: the tenant's directory and name) and the daemon's wake-up;
    failures are warnings (the run is queued). Returns the status file's warning, if any."""
    tenant_dir, tenant = where
    warning = None
    try:
        run = get()
        if run is not None:
            statusfile.update(tenant_dir, tenant, run)
    except (OSError, UserError) as exc:
        warning = unwritten(run_id, "queued", statusfile.status_path(tenant_dir, tenant, run_id), exc)
    try:
        woken = wake(config_path, notify)
    except (OSError, UserError):
        woken = False
    if not woken:
        print(f"taskserver: note: no daemon is running; run {run_id} waits for `taskserver run`",
              file=sys.stderr)
    return warning


def update_after_commit(where: tuple[str | Path, str], run: statusfile.RunView, what: str) -> str | None:
    """The status file of a run whose change the store has committed (``what``: its new state, for the
    warning).  The store is the truth and the command did what it was asked: a file that cannot be written
    is a warning, never an error a caller would answer by asking again. Returns that warning, if any."""
    tenant_dir, tenant = where
    try:
        statusfile.update(tenant_dir, tenant, run)
    except (OSError, UserError) as exc:
        return unwritten(run.id, what, statusfile.path_of(tenant_dir, tenant, run), exc)
    return None


def unwritten(run_id: int, what: str, path: str, exc: OSError | UserError) -> str:
    """One line on stderr: the run's committed state, the status file not written, and why (returned too,
    without the "taskserver: warning: " before it)."""
    text = unwritten_text(run_id, what, path, reason(exc))
    print(f"taskserver: warning: {text}", file=sys.stderr)
    return text


def unwritten_text(run_id: int, what: str, path: str, why: str) -> str:
    """The warning's words, wherever it is said (stderr, the web API's answer, the Python client's log)."""
    return f"run {run_id} is {what}, but its status file was not written ({limits.printable(path)}: {why})"


def reason(exc: OSError | UserError) -> str:
    """Why a status file was not written, as the warning says it: "No space left on device"."""
    return exc.message if isinstance(exc, UserError) else exc.strerror or str(exc)


def wake(config_path: StrPath, notify: Callable[[], bool],
         warn: Callable[[str], object] | None = None) -> bool:
    """Through the store's own wake-up, else SIGUSR1 to the daemon of this config (only to a verified
    daemon; an older daemon listens only for that).  ``warn``: where a wake-up that could not be sent is
    said (default: a line on stderr; the Python client logs it, as a library must not print)."""
    if notify():
        return True
    import signal  # noqa: PLC0415 - imported with pidsignal, before any change of user

    from .pidsignal import signal_daemon  # noqa: PLC0415

    try:
        return signal_daemon(config_path, signal.SIGUSR1) is not None
    except UserError as exc:  # the task is stored either way; it waits for the daemon's next wake-up
        text = f"not waking the daemon: {exc.message}"
        if warn is None:
            print(f"taskserver: warning: {text}", file=sys.stderr)
        else:
            warn(text)
        return True


def print_id(as_json: bool, tenant_dir: str | Path, tenant: str, run_id: int) -> None:
    if as_json:  # a queued run's status file is its own (a scheduled run writes its job's)
        import json  # noqa: PLC0415

        status = statusfile.status_path(tenant_dir, tenant, run_id)
        print(json.dumps({"id": run_id, "tenant": tenant, "status_file": status}))
    else:
        print(run_id)
