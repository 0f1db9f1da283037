"""Per-run status files: line 1 is the state (QUE, RUN, OK or ERR), the next lines ``key=value`` parameters.

They let a person or a script watch a long task with nothing but ``head -1``.

- A queued task (``jobs enqueue``, ``jobs run``) has its own file, ``<state>/status/<tenant>/<run id>``,
  created atomically (temporary file + rename) when it is queued; it stays until housekeeping purges the
  run from history.
- A scheduled run uses its job's file, ``<state>/status/<tenant>/<job>.job`` (a job never overlaps itself),
  so 10,000 scheduled jobs cannot fill the directory. History keeps every run.

Once a file exists it is rewritten in place with one write (then truncated to the new length): creating,
renaming or removing a file per state change cost about a millisecond each on a busy ext4 here, half of a
run's whole cost, while an in-place write costs microseconds. A reader racing a rewrite could in theory
read a mix of the old and new text; the first line is written first and a state word is all it holds, so
`head -1` sees QUE, RUN, OK or ERR (read again if it ever sees anything else). A text longer than the
room the file already has (a long message) is written as a new file and renamed instead: on a full disk the
in-place write would stop part-way, and the file would hold half of the new text.

Every value is one line: a value with a control character in it is written as a JSON string
(``queue="a\nb"``), so whatever a client stored, the file has exactly the lines listed in ``render``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import stat
import time
from datetime import UTC, datetime

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:  # the commands write status files too: they need not import the daemon's helper thread
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Protocol

    from .confpath import StrPath
    from .spares import Spares


if TYPE_CHECKING:  # only annotations name it (a Protocol class needs typing at run time)
    class RunView(Protocol):
        """What a status file shows of a run: a store's ``Run``, or the row the lean `jobs enqueue` has just
        written (runtime/cli_enqueue.py, which does without the store contract's dataclasses)."""

        @property
        def id(self) -> int: ...
        @property
        def job(self) -> str: ...
        @property
        def queue(self) -> str | None: ...
        @property
        def state(self) -> str: ...  # model.State is a StrEnum
        @property
        def reason(self) -> str | None: ...
        @property
        def created(self) -> float: ...
        @property
        def started(self) -> float | None: ...
        @property
        def finished(self) -> float | None: ...
        @property
        def exit_code(self) -> int | None: ...
        @property
        def argv(self) -> Sequence[str] | None: ...
        @property
        def message(self) -> str | None: ...
        @property
        def queued(self) -> bool: ...


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


# Paths are text here (a Path is taken too): the lean `jobs enqueue` writes a status file without pathlib
# (runtime/confpath.py says why). The state dir comes normalised (a config's Path, or its text).
@functools.lru_cache(maxsize=256)  # asked three times per run: the path arithmetic cost more than the write
def status_dir(state_dir: str | Path, tenant: str) -> str:
    return os.path.join(state_dir, "status", _SAFE.sub("_", tenant))


def status_path(state_dir: str | Path, tenant: str, run_id: int) -> str:
    """A queued task's own status file."""
    return os.path.join(status_dir(state_dir, tenant), str(run_id))


def job_status_path(state_dir: str | Path, tenant: str, job: str) -> str:
    """The status file of a scheduled job's current (or last) run."""
    return os.path.join(status_dir(state_dir, tenant), job_status_name(job))


def job_status_name(job: str) -> str:
    """That file's name in the tenant's status directory (no path arithmetic: asked for every job at once)."""
    return _SAFE.sub("_", job) + ".job"


def path_of(state_dir: str | Path, tenant: str, run: RunView) -> str:
    if run.queued or not run.job:
        return status_path(state_dir, tenant, run.id)
    return job_status_path(state_dir, tenant, run.job)


_seconds: dict[float, str] = {}  # whole seconds stamped lately -> their text up to the seconds
_stamps: dict[float, str] = {}  # times stamped lately -> their text: a run's file is written twice, and its
# creation and start times are in both


def _stamp(t: float | None) -> str:
    if t is None:
        return ""
    got = _stamps.get(t)
    if got is None:
        if len(_stamps) >= 256:
            _stamps.clear()
        got = _stamps[t] = _stamp_of(t)
    return got


def _stamp_of(t: float) -> str:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")``, in a fifth of its time: the
    same rounding (the fraction to the nearest microsecond, ties to even, then cut to milliseconds), and
    the date and time of day worked out once per second (a burst's runs share a few)."""
    frac, whole = math.modf(t)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1.0, micro - 1_000_000
    if micro < 0 or whole < 0:  # before 1970: never a run's time, but exactly as datetime says it
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    second = _seconds.get(whole)
    if second is None:
        if len(_seconds) >= 64:
            _seconds.clear()
        second = _seconds[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{second}.{micro // 1000:03d}+00:00"


def render(run: RunView, tenant: str) -> str:
    """The file's text for ``run``; values are single-line (JSON for the command).  Written twice per run:
    only the free-text values go through ``_one_line`` (numbers, times and JSON text are one line already:
    JSON escapes every control and non-ASCII character)."""
    argv = _argv_text(run.argv) if run.argv is not None else ""
    exit_code = "" if run.exit_code is None else str(run.exit_code)
    message = json.dumps(run.message) if run.message else ""
    return (f"{run.state}\nid={run.id}\ntenant={_one_line(tenant)}\njob={_one_line(run.job)}\n"
            f"queue={_one_line(run.queue or '')}\nargv={argv}\nreason={_one_line(run.reason or '')}\n"
            f"exit_code={exit_code}\nmessage={message}\ncreated={_stamp(run.created)}\n"
            f"started={_stamp(run.started)}\nfinished={_stamp(run.finished)}\n")


_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_KEEP = 4096  # texts remembered below: names, reasons and commands repeat from run to run
_lines: dict[str, str] = {}
_argvs: dict[tuple[str, ...], str] = {}


def _one_line(value: str) -> str:
    """A value as one line: one holding a line break or another control character (a queue name handed in
    as ``x\nstate=OK``) is written as a JSON string, so no value can add a line of its own."""
    got = _lines.get(value)
    if got is None:
        got = json.dumps(value) if _BREAKS.search(value) else value
        if len(_lines) < _KEEP:
            _lines[value] = got
    return got


def _argv_text(argv: Sequence[str]) -> str:
    key = argv if isinstance(argv, tuple) else tuple(argv)  # a run's argv is a tuple; a view's may be a list
    got = _argvs.get(key)
    if got is None:
        got = json.dumps(list(key))
        if len(_argvs) < _KEEP:
            _argvs[key] = got
    return got


_made: dict[str, int] = {}  # directory -> mode of the files made in it: one mkdir per tenant, not per run


def _prepare(directory: str) -> int:
    """Make the status directory; returns the mode for new files in it.

    Not readable by others: 0750 directories, 0640 files. Inside a tenant's own group-writable directory (a
    tenant with run_as, see tenancy.py) the tenant's user and the daemon's user both write status files:
    there the directories are the tenant directory's, its user's in the daemon's group, 0770, and the files
    0660. Only the daemon (as the tenant's user, in its own group) and root (tenancy.status_dirs) can make
    them so: a `jobs` command of either user that finds one missing does not make it in a group of its own,
    which would shut the other user out (the daemon makes it at the run's next status file).
    """
    status = os.path.dirname(directory)  # <state>/status
    top = os.path.dirname(status)
    os.makedirs(top, exist_ok=True)
    st = os.stat(top)
    shared = bool(st.st_mode & stat.S_IWGRP)
    old_umask = os.umask(0o007 if shared else 0o027)
    try:
        for d in (status, directory):
            _mkdir(d, 0o770 if shared else 0o750, st if shared else None)
    finally:
        os.umask(old_umask)
    _made[directory] = mode = 0o660 if shared else 0o640
    return mode


def _mkdir(path: str, mode: int, tenant_dir: os.stat_result | None) -> None:
    """``mkdir``; inside a shared tenant directory (``tenant_dir``: its stat) only a directory with that
    directory's owner and group is kept."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    st = os.stat(path, follow_symlinks=False)
    if tenant_dir is not None and (st.st_uid, st.st_gid) != (tenant_dir.st_uid, tenant_dir.st_gid):
        with contextlib.suppress(OSError):
            os.rmdir(path)
        why = "missing; the daemon or root makes it (the tenant's user's, in the daemon's group)"
        raise PermissionError(errno.EACCES, why, path)


def prepare(directory: StrPath) -> int:
    """Make the status directory if it is not there yet; returns the mode of the files in it."""
    directory = os.fspath(directory)
    return _made.get(directory) or _prepare(directory)


# every open of a file in a status directory, which a tenant with run_as may write: no link followed, and
# never a wait (a FIFO put there in place of a file would hold the daemon's loop in open(): ENXIO instead)
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def write(path: StrPath, text: str, spares: Spares | None = None, *, keep: bool = False) -> int | None:
    """Create the file atomically (a filled spare, or a temporary file, renamed into place).  ``keep``: a
    spare filled stays open, and its fd is returned (see ``rewrite``)."""
    path = os.fspath(path)
    directory = os.path.dirname(path)
    spare = spares.take(directory) if spares is not None else None
    if spare is not None and (fd := _fill(spare, path, text)) is not None:
        if keep:
            return fd
        os.close(fd)
        return None
    mode = _made.get(directory) or _prepare(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    flags = _WRITE | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, mode)
    except FileNotFoundError:  # the directory was removed under us: make it again
        mode = _prepare(directory)
        fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # not the umask's choice: the other user of a shared directory must write it
            _write_all(fd, text.encode(), path)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no empty temporary file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return None


def _fill(spare: str, path: str, text: str) -> int | None:
    """Write ``text`` into a spare (runtime/spares.py) and rename it to ``path``; its open fd, None if the
    spare is gone.  A spare is handed out empty (made with O_TRUNC, or emptied when taken over from a daemon
    that died): the write alone makes the file's whole text."""
    try:
        fd = os.open(spare, _WRITE)
    except OSError:  # gone, or not a file any more: the caller creates the file itself
        return None
    try:
        _write_all(fd, text.encode(), path)
        os.replace(spare, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):  # taken from the pool: nobody else would remove it
            os.unlink(spare)
        raise
    return fd


def _write_all(fd: int, data: bytes, path: str, offset: int = 0) -> None:
    """``data`` at ``offset``, or OSError: a full disk can take part of a write and return its length, and a
    file renamed into place with part of its text would say less than the store does."""
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def rewrite(path: StrPath, text: str, spares: Spares | None = None, *, keep: bool = False) -> int | None:
    """Overwrite in place (no new inode, no directory change); a file not there yet is created atomically
    (from a spare when one is ready).  ``keep``: the file stays open and its fd is returned, so that the
    run's next text (its end) is written without looking the path up again (``rewrite_open``)."""
    path = os.fspath(path)
    try:
        fd = os.open(path, _WRITE)
    except (FileNotFoundError, PermissionError):
        # the tenant's user and the daemon's user share a status directory; a file one of them made (in a
        # group of its own) the other replaces, as the directory lets both
        return write(path, text, spares, keep=keep)
    try:
        written = _overwrite(fd, text.encode(), path)
    except BaseException:
        os.close(fd)
        raise
    if not written:
        os.close(fd)
        return write(path, text, spares, keep=keep)
    if keep:
        return fd
    os.close(fd)
    return None


def rewrite_open(fd: int, path: StrPath, text: str, spares: Spares | None = None) -> None:
    """``rewrite`` through the fd ``rewrite(keep=True)`` returned (closed here).  A file removed or replaced
    since (no link left to what the fd holds) is written by its path instead, as ``rewrite`` would."""
    try:
        st = os.fstat(fd)  # one look for all: still linked, how long the text there is, the room it has
        done = st.st_nlink != 0 and _overwrite(fd, text.encode(), os.fspath(path), st)
    finally:
        os.close(fd)
    if not done:
        rewrite(path, text, spares)


def _overwrite(fd: int, data: bytes, path: str, st: os.stat_result | None = None) -> bool:
    """``data`` from the start of the file; ``st``: its stat before, when the caller has looked.  False,
    with nothing written, when the text needs more room than the file holds: on a full disk that write
    would stop part-way and leave half of the new text (the caller writes a new file and renames it)."""
    st = st or os.fstat(fd)
    if len(data) > max(st.st_size, st.st_blocks * 512):  # st_blocks: 512-byte units, whatever the fs
        return False
    _write_all(fd, data, path)
    if st.st_size > len(data):  # the text got shorter (a fstat costs a third of a truncate)
        os.ftruncate(fd, len(data))  # after the write: truncating to zero first costs a flush on ext4
    return True


def update(state_dir: str | Path, tenant: str, run: RunView, spares: Spares | None = None) -> str:
    path = path_of(state_dir, tenant, run)
    rewrite(path, render(run, tenant), spares)
    return path


def remove(state_dir: str | Path, tenant: str, run_id: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(status_path(state_dir, tenant, run_id))


def read_state(path: StrPath) -> str:
    """The first line (the state) of a status file."""
    with open(path) as f:
        return f.readline().strip()
