"""Who controls a config file, and which file in which state it is: in plain text paths.

Shared by every load (runtime/config.py re-exports it) and by the lean `jobs enqueue`
(runtime/cli_enqueue.py), which keeps pathlib off its path (runtime/confpath.py says why).
"""

from __future__ import annotations

import os
import stat

from .confpath import parents
from .errors import UserError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    from .confpath import StrPath


def _refuse_writable(what: StrPath, mode: int, where: str) -> None:
    if mode & 0o022:
        raise UserError(f"{what}: refusing a config {where}writable by group or others (mode {mode:04o})",
                        hint=f"chmod go-w {what}")


def _ancestors(path: StrPath) -> list[str]:
    """Every directory above the file, on the path as given and on the path its symlinks lead to (both are
    absolute and normalised, so their ancestors are pathlib's ``parents``)."""
    return list(dict.fromkeys([*parents(os.path.abspath(path)), *parents(os.path.realpath(path))]))


def check_trust(path: StrPath, st: os.stat_result) -> int:
    """Who controls the config at ``path`` (``st``: the opened file's stat): 0 for root alone, else a uid.

    As sshd's StrictModes and sudo do: the file and every directory above it (also those its symlinks lead
    to) must belong to root or to the file's owner, and none may be writable by group or others (a sticky
    directory such as /tmp excepted: there nobody can replace another user's entry). Anyone who could
    change or swap the file decides what runs, so a second non-root owner anywhere on the way is refused.
    Run by someone other than root, a config must belong to root or to that user.
    """
    _refuse_writable(path, stat.S_IMODE(st.st_mode), "")
    owner = st.st_uid
    if os.geteuid() != 0 and owner not in (0, os.geteuid()):
        raise UserError(f"{path}: refusing a config owned by uid {owner}; it must belong to root or to you",
                        hint=f"chown root {path} (anyone who can edit it decides what runs)")
    for directory in _ancestors(path):
        dst = os.stat(directory)
        if dst.st_uid not in (0, owner):
            raise UserError(f"{directory}: refusing a config below a directory owned by uid {dst.st_uid}, "
                            f"neither root nor the config's owner (uid {owner})",
                            hint="keep the config where only root or its owner can change the directories")
        if not dst.st_mode & stat.S_ISVTX:
            _refuse_writable(directory, stat.S_IMODE(dst.st_mode), "in a directory ")
    return owner


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """Which file, in which state: a change of its text changes its ctime (no one can set that back)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def directory_owner(path: StrPath) -> int:
    """Who will control a config written at ``path``, judged by the directories above it that exist (as
    ``check_trust`` judges a config): 0 when only root can change them, else the one user who owns some of
    them. Root writes a file there as that user (``init-config``): the directories are theirs to swap."""
    owner = 0
    for directory in _ancestors(path):
        try:
            dst = os.stat(directory)
        except FileNotFoundError:
            continue
        if dst.st_uid not in (0, owner):
            if owner:
                raise UserError(f"{directory}: refusing to write a config below directories of two users "
                                f"(uid {owner} and uid {dst.st_uid})",
                                hint="choose a directory only root, or only one user, can change")
            owner = dst.st_uid
        if not dst.st_mode & stat.S_ISVTX:
            _refuse_writable(directory, stat.S_IMODE(dst.st_mode), "in a directory ")
    return owner
