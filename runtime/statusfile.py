"""Per-run status files: line 1 is the state (QUE, RUN, OK or ERR), the next lines ``key=value`` parameters.

They let a person or a script watch a long task with nothing but ``head -1``.  A file is replaced
atomically (write a temporary file, rename), so a reader never sees half of one.  Files of queued tasks stay
until housekeeping purges the run from history; files of scheduled runs are removed when the run ends
(history keeps them), so 10,000 scheduled jobs do not fill a directory.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from .store import Run

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def status_dir(state_dir: Path, tenant: str) -> Path:
    return state_dir / "status" / _SAFE.sub("_", tenant)


def status_path(state_dir: Path, tenant: str, run_id: int) -> Path:
    return status_dir(state_dir, tenant) / str(run_id)


def _stamp(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def render(run: Run, tenant: str) -> str:
    """The file's text for ``run``; values are single-line (JSON for the command)."""
    state = run.state.value
    params = {
        "id": str(run.id),
        "tenant": tenant,
        "job": run.job,
        "queue": run.queue or "",
        "argv": json.dumps(list(run.argv)) if run.argv is not None else "",
        "reason": run.reason or "",
        "exit_code": "" if run.exit_code is None else str(run.exit_code),
        "message": json.dumps(run.message) if run.message else "",
        "created": _stamp(run.created),
        "started": _stamp(run.started),
        "finished": _stamp(run.finished),
    }
    return state + "\n" + "".join(f"{k}={v}\n" for k, v in params.items())


_made: set[Path] = set()  # directories known to exist: one mkdir per tenant, not one per run


def write(path: Path, text: str) -> None:
    if path.parent not in _made:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _made.add(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:  # the directory was removed under us: make it again
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(tmp, flags, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def update(state_dir: Path, tenant: str, run: Run) -> Path:
    path = status_path(state_dir, tenant, run.id)
    write(path, render(run, tenant))
    return path


def remove(state_dir: Path, tenant: str, run_id: int) -> None:
    status_path(state_dir, tenant, run_id).unlink(missing_ok=True)


def read_state(path: Path) -> str:
    """The first line (the state) of a status file."""
    with path.open() as f:
        return f.readline().strip()
