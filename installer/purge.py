"""What outlives a service's boot files, and ``--uninstall --purge`` removing it.

Uninstall removes exactly the manifest's files. The service's data is not among them: its state directory
(job history), its logs and its configuration. Plain ``--uninstall`` keeps them and names each with the
command that removes it; ``--purge`` removes the state and the logs, and the config only when this tool
wrote it and nobody changed it since (an admin's config goes only with ``--purge-config``).

Every path is removed without following a symlink in any of its components: a state dir in a user's home
(cron) is that user's to replace with a link to somewhere root's removal must never reach.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import manifest as mf
from . import proc
from .backends.base import Backend
from .spec import ServiceSpec

# Other services' state under a shared base dir (SysV's /var/lib/taskserver): runtime.config.instance_name
OTHER_INSTANCE = re.compile(r"^taskserver-[A-Za-z0-9_-]{0,40}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Kept:
    path: Path  # as the target system sees it
    what: str  # state | log | runtime | config ... (shown to the operator)
    purge: bool  # removed by --purge


def data_paths(
    spec: ServiceSpec, backend: Backend, manifest: dict[str, Any], purge_config: bool
) -> list[Kept]:
    """The service's data that exists on the target, each marked whether --purge removes it."""
    found = [Kept(p, what, True) for p, what in backend.data_paths(spec)]
    data = mf.read_bytes(spec.target(spec.config))
    if data is not None:
        ours = manifest.get("config_written") == mf.sha256(data)
        what = "config written by taskserver-install" if ours else "config"
        found.append(Kept(spec.config, what, ours or purge_config))
    return [k for k in found if os.path.lexists(spec.target(k.path))]


def safe_path(spec: ServiceSpec, path: Path) -> bool:
    """No component of ``path`` below the target's / is a symlink (so removal stays where it is named)."""
    cur = spec.root
    for part in path.relative_to("/").parts[:-1]:
        cur = cur / part
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                return False
        except FileNotFoundError:
            return True
    return True


def parent_owner(spec: ServiceSpec, path: Path) -> tuple[int, int] | None:
    """(uid, gid) of the first directory above ``path`` that is not root's (a home), or None."""
    cur = spec.root
    for part in path.relative_to("/").parts[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return None
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    return None


def remove(spec: ServiceSpec, kept: Kept) -> str:
    """Remove one path; returns what happened, for the outcome.

    Below a directory another user owns (their home), that user could swap a directory for a symlink
    between any check and the removal: there the removal runs in a child that has become that user, so it
    can remove nothing the user could not remove alone."""
    if not safe_path(spec, kept.path):
        return f"kept {kept.path} ({kept.what}): a directory above it is a symlink; remove it by hand"
    owner = parent_owner(spec, kept.path)
    if owner is not None and os.geteuid() == 0:
        return _as_user(owner, lambda: _remove(spec, kept))
    return _remove(spec, kept)


def _as_user(owner: tuple[int, int], fn: Callable[[], str]) -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the owner for good, then remove
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
            os.write(write, fn().encode())
            code = 0
        except BaseException as exc:  # reported by the parent
            os.write(write, f"kept: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        said = fh.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return said


def _remove(spec: ServiceSpec, kept: Kept) -> str:
    target = spec.target(kept.path)
    if target.is_symlink() or not target.is_dir():
        target.unlink(missing_ok=True)
    elif kept.what == "state" and kept.path.name == "taskserver" and _others(target):
        # the base dir holds other services' state too: remove only what is this service's
        for child in target.iterdir():
            if not OTHER_INSTANCE.match(child.name):
                _rm(child)
        return f"purged {kept.path} ({kept.what}; other services' state under it kept)"
    else:
        shutil.rmtree(target)  # rmtree does not follow symlinks inside the tree
    if kept.what == "state" and target.parent.name == "taskserver":
        # a config other than the default keeps its state in a subdir of the shared base: the base goes
        # too once no other service's state is left in it
        with contextlib.suppress(OSError):
            target.parent.rmdir()
    return f"purged {kept.path} ({kept.what})"


def _others(path: Path) -> bool:
    return any(OTHER_INSTANCE.match(c.name) and c.is_dir() for c in path.iterdir())


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def removal_command(kept: list[Kept]) -> str:
    """The exact command that removes what plain uninstall kept."""
    return proc.quote(["rm", "-rf", "--", *(str(k.path) for k in kept)])
