"""Why a path of a ``--root`` tree is not there: a symbolic link on its way that leads out of the tree.

``safefs`` resolves every path of a tree inside it, as the tree's own boot would: a link
``TREE/etc/rc2.d -> /etc/rc2.d`` is the tree's own ``/etc/rc2.d`` (itself, a loop), never this machine's.
That keeps the host out of reach, but silently: ``--status`` said "enabled: False" without a word about the
link. While ``noticing()`` is active, every lookup in a tree that finds nothing because a link on its way
leads out of the tree (and, taken inside it, nowhere) adds one sentence saying so, which ``--status``,
``--detect``, install and uninstall print as notes. A tree whose absolute links work inside it (Debian's
``/etc/service -> /etc/runit/runsvdir/current``) gets no note: only a lookup that failed is explained.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .safefs import Tree

NOT_FOUND = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
MAX_HOPS = 40  # as many links as the kernel follows in one lookup

_seen: ContextVar[list[str] | None] = ContextVar("taskserver_installer_outside", default=None)


@contextlib.contextmanager
def noticing() -> Iterator[list[str]]:
    """The sentences of the lookups inside the block that a link leading out of their tree made fail."""
    seen: list[str] = []
    token = _seen.set(seen)
    try:
        yield seen
    finally:
        _seen.reset(token)


def notice(tree: Tree, path: Path, exc: OSError) -> None:
    """``path`` could not be looked up in ``tree``: while noticing, say why when a link is why."""
    seen = _seen.get()
    if seen is None or exc.errno not in NOT_FOUND or tree.root == Path("/"):
        return
    token = _seen.set(None)  # the explanation looks paths up in the tree too
    try:
        why = leads_out(tree, path)
    finally:
        _seen.reset(token)
    if why is not None and f"{why}: nothing was found through it" not in seen:
        seen.append(f"{why}: nothing was found through it")


def leads_out(tree: Tree, path: Path) -> str | None:
    """The first symbolic link on ``path`` that leads out of ``tree`` on this machine and, taken inside the
    tree, nowhere, as a sentence (one per link, whichever path below it was looked up); None when no such
    link is on the way."""
    root = Path(os.path.abspath(tree.root))
    parts, cur, hops = list(path.relative_to("/").parts), Path("/"), 0
    while parts and hops <= MAX_HOPS:
        part = parts.pop(0)
        if part in (".", ".."):
            cur = cur.parent if part == ".." else cur
            continue
        here = cur / part
        link = _readlink(tree, here)
        if link is None:
            cur = here
            continue
        hops += 1
        target = Path(link)
        host = Path(os.path.normpath(tree.where(cur) / target))  # how this machine would take it
        if not host.is_relative_to(root) and _nowhere(tree, here):
            return (f"{tree.where(here)} is a symbolic link to {link}, outside the tree; taken inside the "
                    "tree (as its own boot takes it) it leads nowhere")
        parts = [*target.parts[target.is_absolute():], *parts]
        cur = Path("/") if target.is_absolute() else cur
    return None


def _readlink(tree: Tree, path: Path) -> str | None:
    try:
        return tree.readlink(path)
    except OSError:
        return None


def _nowhere(tree: Tree, path: Path) -> bool:
    try:
        return tree.stat(path) is None
    except OSError:
        return True
