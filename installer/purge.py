"""What outlives a service's boot files, and ``--uninstall --purge`` removing it.

Uninstall removes exactly the manifest's files. The service's data is not among them: its state directory
(job history), its logs and its configuration. Plain ``--uninstall`` keeps them and names each with the
command that removes it; ``--purge`` removes the state and the logs, and the config only when this tool
wrote it and nobody changed it since (an admin's config goes only with ``--purge-config``).

Removal goes through ``safefs``: every path resolved inside the target, a symlink removed, never followed.
Below a directory another user owns (a crontab user's state in their home), that user could swap a
directory for a symlink at any moment: there the removal runs as that user (``safefs.as_user``), so it can
remove nothing the user could not remove alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import manifest as mf
from . import proc
from .backends.base import Backend
from .safefs import Tree, as_user
from .spec import ServiceSpec

# Other services' state under a shared base dir (SysV's /var/lib/taskserver): runtime.config.instance_name
OTHER_INSTANCE = re.compile(r"^taskserver-[A-Za-z0-9_-]{0,40}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Kept:
    path: Path  # as the target system sees it
    what: str  # state | log | config ... (shown to the operator)
    purge: bool  # removed by --purge


def data_paths(
    spec: ServiceSpec, backend: Backend, manifest: dict[str, Any], purge_config: bool
) -> list[Kept]:
    """The service's data that exists on the target, each marked whether --purge removes it."""
    files = mf.fs(spec)
    found = [Kept(p, what, True) for p, what in backend.data_paths(spec)]
    data = files.read(spec.config) if files.lstat(spec.config) is not None else None
    if data is not None:
        ours = manifest.get("config_written") == mf.sha256(data)
        what = "config written by taskserver-install" if ours else "config"
        found.append(Kept(spec.config, what, ours or purge_config))
    # a log inside the state directory (SysV's) goes and stays with it: named once, removed once
    return [k for k in found if files.lstat(k.path) is not None and not _inside_another(k, found)]


def _inside_another(k: Kept, found: list[Kept]) -> bool:
    return any(o.path != k.path and k.path.is_relative_to(o.path) for o in found)


def absent(spec: ServiceSpec, backend: Backend) -> list[Kept]:
    """The service's data paths that do not exist yet: what a first install's start may make, and its
    rollback removes again (``forget_fresh``)."""
    files = mf.fs(spec)
    return [Kept(p, what, True) for p, what in backend.data_paths(spec) if files.lstat(p) is None]


def forget_fresh(spec: ServiceSpec, fresh: list[Kept]) -> list[str]:
    """Remove what the service made of ``fresh`` (absent before the install) while a rolled-back install
    ran it; a log that holds anything stays (it says why the start failed), also one inside a directory
    that goes (SysV's daemon logs into its state directory): the rest of that directory goes around it.
    What stays, for the error."""
    files, kept = mf.fs(spec), []
    for k in fresh:
        if files.lstat(k.path) is None:
            continue
        says_why = k.what == "log" and _holds_bytes(files, k.path)
        logs = _logs_below(files, k, fresh)
        if logs and not says_why:
            if not _remove_around(spec, k, logs):
                kept.append(str(k.path))
        elif says_why or not remove(spec, k).startswith("purged "):
            kept.append(str(k.path))
    return kept


def _logs_below(files: Tree, k: Kept, fresh: list[Kept]) -> set[Path]:
    """The logs of ``fresh`` below ``k`` that hold anything."""
    below = [o.path for o in fresh if o.what == "log" and o.path != k.path and o.path.is_relative_to(k.path)]
    return {log for log in below if _holds_bytes(files, log)}


def _remove_around(spec: ServiceSpec, k: Kept, logs: set[Path]) -> bool:
    """Remove everything below the directory ``k`` but ``logs`` and the directories on the way to them;
    False when something could not go (a symbolic link on the way is left, as ``remove`` leaves one)."""
    files = mf.fs(spec)
    if files.readlink(k.path) is not None or not files.is_dir(k.path):
        return False
    done = True
    for name in _names(files, k.path):
        child = k.path / name
        if child in logs:
            continue
        if any(log.is_relative_to(child) for log in logs):
            done = _remove_around(spec, Kept(child, k.what, True), logs) and done
        else:
            done = remove(spec, Kept(child, k.what, True)).startswith("purged ") and done
    return done


def _holds_bytes(files: Tree, path: Path) -> bool:
    st = files.lstat(path)
    if st is None or stat.S_ISLNK(st.st_mode):
        return False
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size > 0
    listed = files.listdir(path)
    return listed is not None and any(_holds_bytes(files, path / name) for name in listed[1])


def _parents(path: Path) -> list[Path]:
    return list(reversed(path.parents))[1:]  # below /, outermost first


def safe_path(files: Tree, path: Path) -> bool:
    """No directory on the way to ``path`` is a symlink (so removal stays where the path names)."""
    for d in _parents(path):
        st = files.lstat(d)
        if st is None:
            return True
        if stat.S_ISLNK(st.st_mode):
            return False
    return True


def parent_owner(files: Tree, path: Path) -> tuple[int, int] | None:
    """(uid, gid) of the first directory above ``path`` that is not root's (a home), or None."""
    for d in _parents(path):
        st = files.lstat(d)
        if st is None:
            return None
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    return None


def remove(spec: ServiceSpec, kept: Kept) -> str:
    """Remove one path; returns what happened, for the outcome."""
    files = Tree(spec.root)
    link = files.readlink(kept.path)
    if link is not None:  # the data lives where the admin pointed it: removing the link purges nothing
        return f"kept {kept.path} ({kept.what}): a symbolic link (to {link}), an admin's; remove it by hand"
    if not safe_path(files, kept.path):
        return f"kept {kept.path} ({kept.what}): a directory above it is a symlink; remove it by hand"
    owner = parent_owner(files, kept.path)
    if owner is None and spec.user_scope:  # a user's manifest names it (their file): removed as the user
        home = files.stat(spec.home)
        owner = (home.st_uid, home.st_gid) if home is not None and home.st_uid != 0 else None
    try:
        if owner is not None and os.geteuid() == 0:
            return as_user(*owner, lambda: _remove(files, kept))
        return _remove(files, kept)
    except OSError as exc:
        return f"kept {kept.path} ({kept.what}): {exc.strerror}"


def _remove(files: Tree, kept: Kept) -> str:
    path = kept.path
    if kept.what == "state" and path.name == "taskserver" and files.is_dir(path) and _others(files, path):
        # the base dir holds other services' state too: remove only what is this service's
        for name in _names(files, path):
            if not OTHER_INSTANCE.match(name):
                files.remove_tree(path / name)
        return f"purged {path} ({kept.what}; other services' state under it kept)"
    files.remove_tree(path)
    if kept.what == "state" and path.parent.name == "taskserver":
        # a config other than the default keeps its state in a subdir of the shared base: the base goes
        # too once no other service's state is left in it
        with contextlib.suppress(OSError):
            files.rmdir(path.parent)
    return f"purged {path} ({kept.what})"


def _names(files: Tree, path: Path) -> list[str]:
    fd = files.open_dir(path)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _others(files: Tree, path: Path) -> bool:
    return any(OTHER_INSTANCE.match(n) and files.is_dir(path / n) for n in _names(files, path))


def removal_command(kept: list[Kept], root: Path = Path("/")) -> str:
    """The exact command that removes what plain uninstall kept, run on this machine: with --root the kept
    paths are the tree's (/var/lib/taskserver of the tree is TREE/var/lib/taskserver here), never the
    host's own directories of the same name."""
    return proc.quote(["rm", "-rf", "--", *(str(root / str(k.path).lstrip("/")) for k in kept)])
