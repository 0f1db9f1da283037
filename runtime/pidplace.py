"""Where a daemon's pid file lives: decided by the config file and the user alone, never by the caller's
environment, so ``start`` under sudo, cron, a SysV script or systemd and ``stop`` from a login shell all look
in the same place.

- root: ``/run/taskserver``, a directory root creates (0755) and that must stay root's.
- another user U: ``/run/taskserver/u<U>`` when root (or systemd's ``RuntimeDirectory=taskserver/u<U>``) made
  it for U; else ``/tmp/taskserver-<U>``, which U creates 0700 (as tmux does with /tmp/tmux-UID).

Each place has an owner. A file in it is believed only as far as that owner could act alone: root signals a
process found through a place of U only when that process is entirely U's (see ``pidfile.Daemon``).
Directories are opened without following symlinks; the directory and every ancestor must belong to root or
the owner and must not be writable by group or others (sticky ones like /tmp excepted).
"""

from __future__ import annotations

import collections
import errno
import os
import stat

from .confpath import parents
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from typing import NamedTuple

# Text paths, not pathlib's (runtime/confpath.py: the lean commands do without it)
ROOT_DIR = "/run/taskserver"
USER_TMP = "/tmp"  # for a per-uid directory whose owner and mode are verified on every open


# typing.NamedTuple at run time is collections.namedtuple plus the typing module: the fields for mypy, the
# same class at run time (equality, unpacking, repr, _replace) without typing (runtime/cli_enqueue.py: lean)
if TYPE_CHECKING:
    class _Place(NamedTuple):
        dir: str
        owner: int
        creatable: bool  # may its owner create it? (/run/taskserver/u<U> only root or systemd makes)
        optional: bool = False  # another's place, looked at in passing: one that fails the checks is skipped
else:
    _Place = collections.namedtuple("Place", "dir owner creatable optional", defaults=(False,))


class Place(_Place):
    """A directory for pid files and the one uid that must own it (and may be signalled through it)."""

    __slots__ = ()


def own_places(uid: int) -> list[Place]:
    """Where a daemon started by ``uid`` keeps its pid file, in order of preference."""
    if uid == 0:
        return [Place(ROOT_DIR, 0, True)]
    return [Place(f"{ROOT_DIR}/u{uid}", uid, False), Place(f"{USER_TMP}/taskserver-{uid}", uid, True)]


def lookup_places(uid: int) -> list[Place]:
    """Every place a command run by ``uid`` looks for a running daemon. Root also sees the daemons a
    supervisor started directly as another user (``/run/taskserver/u<U>``); another user also sees root's
    daemons (which may have dropped to that user: a job's `jobs enqueue` wakes the daemon that runs it)."""
    places = own_places(uid)
    if uid != 0:
        # not root's (say, handed to a user by an old unit's RuntimeDirectory=): no root daemon is there
        return [*places, Place(ROOT_DIR, 0, False, optional=True)]
    try:
        names = sorted(os.listdir(ROOT_DIR))
    except OSError:
        names = []
    users = [n for n in names if n[:1] == "u" and n[1:].isdigit()]
    return places + [Place(f"{ROOT_DIR}/{n}", int(n[1:]), False) for n in users]


def home_place(uid: int) -> Place:
    """The place a starting daemon takes: the first that exists or can be created."""
    places = own_places(uid)
    return next((p for p in places if p.creatable or os.path.isdir(p.dir)), places[-1])


def open_dir(place: Place, *, create: bool) -> int | None:
    """An fd on the place's directory after the ownership checks; None when it does not exist."""
    if create and place.creatable:
        _mkdir(place)
    try:
        fd = os.open(place.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            msg = f"unsafe pid file directory {place.dir}: not a directory (a symlink?)"
            raise UserError(msg, hint=f"remove it; taskserver creates {place.dir} itself") from exc
        raise UserError(f"cannot open {place.dir}: {exc.strerror}", hint="check its permissions") from exc
    try:
        _check(place.dir, os.fstat(fd), place.owner)
        _check_ancestors(place)
    except UserError:
        os.close(fd)
        raise
    return fd


def _mkdir(place: Place) -> None:
    try:
        os.mkdir(place.dir, 0o755 if place.owner == 0 else 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        msg = f"cannot create the pid file directory {place.dir}: {exc.strerror}"
        raise UserError(msg, hint="create its parent directory or run as its owner") from exc


def _check(path: str, st: os.stat_result, owner: int) -> None:
    if st.st_uid != owner or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "root" if owner == 0 else f"uid {owner}"
        raise UserError(
            f"unsafe pid file directory {path}: owned by uid {st.st_uid}, mode {stat.filemode(st.st_mode)}",
            hint=f"it must belong to {who} and not be writable by group or others; remove it and start "
            "again (a directory someone else can write lets them steer which process root signals)",
        )


def _check_ancestors(place: Place) -> None:
    """Whoever can rename an ancestor can swap the directory: the whole chain must be safe."""
    for parent in parents(place.dir):
        st = os.stat(parent)
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, place.owner) or writable:
            raise UserError(
                f"unsafe pid file directory {place.dir}: its parent {parent} is owned by uid {st.st_uid}, "
                f"mode {stat.filemode(st.st_mode)}",
                hint="every parent must belong to root (or the daemon's user) and not be writable by others",
            )
