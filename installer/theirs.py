"""What on the target is an admin's, not this tool's: checked before an install writes and before an
uninstall removes.

The installer writes regular files, in directories of the service's own it makes itself, and registers them
in ways the manifest records. Anything else found in their place is an admin's: a symbolic link where a boot
file goes (``systemctl link`` of their own unit), a file whose bytes are not the manifest's (edited), a
link in place of one of the service's own directories (runit's /etc/sv/NAME, ``Backend.own_dirs``), or a
registration changed by hand (the crontab entry, ``Backend.changed_by_hand``). Install replaces such a thing
only with ``--force`` (a directory link not even then); uninstall leaves a service that has one as it is.
"""

from __future__ import annotations

import difflib
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from . import manifest as mf
from .backends.base import Backend, FileSpec, Plan
from .safefs import Tree
from .spec import ServiceSpec


def file_state(spec: ServiceSpec, f: FileSpec, old: dict[str, Any] | None, force: bool) -> str:
    """created | updated | replaced | unchanged; raise when an admin changed a file (or put a link there)
    and ``force`` is not set."""
    files = mf.fs(spec)
    recorded = {e["path"]: e["sha256"] for e in (old or {}).get("files", [])}
    link = files.readlink(f.path)
    if link is not None:
        return _link_state(f, link, str(f.path) in recorded, force)
    try:
        current = files.read(f.path)
    except OSError as exc:  # a directory or a FIFO where the boot file goes
        raise UserError(
            f"cannot use {files.where(f.path)} for the boot file: {exc.strerror}",
            hint="move what is there out of the way, then re-run",
            exit_code=1,
        ) from exc
    wanted = f.content.encode()
    if current is None:
        return "created"
    if current == wanted:
        st = files.lstat(f.path)
        mode = st.st_mode & 0o7777 if st is not None and stat.S_ISREG(st.st_mode) else -1
        return "unchanged" if mode == f.mode else "updated"  # same bytes, wrong mode: ours
    if recorded.get(str(f.path)) == mf.sha256(current) or force:
        return "updated"
    diff = "".join(
        difflib.unified_diff(
            current.decode(errors="replace").splitlines(True),
            f.content.splitlines(True),
            f"{f.path} (on disk)",
            f"{f.path} (would install)",
        )
    )
    # on stderr with the error it explains: stdout stays the outcome (one JSON object with --json)
    print(diff, end="", file=sys.stderr)
    why = (
        "was changed since it was installed"
        if str(f.path) in recorded
        else "exists and was not installed by us"
    )
    raise UserError(
        f"{f.path} {why}; not overwriting it (diff above)",
        hint="keep your edit (move it to an override template), or re-run with --force to replace it",
        exit_code=1,
    )


def own_dirs_are_dirs(spec: ServiceSpec, backend: Backend) -> None:
    """The service's own directories (runit's /etc/sv/NAME) are made by the install: a symbolic link there,
    wherever it leads, is an admin's directory, which the install neither writes into nor replaces."""
    files = mf.fs(spec)
    for d in backend.own_dirs(spec):
        link = files.readlink(d)
        if link is not None:
            raise UserError(
                f"{d} is a symbolic link (to {link}), not a directory taskserver-install made; not writing "
                "into it",
                hint="it is an admin's: move it out of the way (a real directory in its place is used), then "
                "re-run",
                exit_code=1,
            )


def _link_state(f: FileSpec, link: str, listed: bool, force: bool) -> str:
    """A symlink where a boot file goes. The installer writes regular files only, so a link there is never
    its own, whatever it leads to (an admin's unit kept elsewhere, a copy of ours, nothing): like an admin's
    file it is replaced only with ``force``, and then the manifest keeps its target so that uninstall puts
    the link back."""
    if force:
        return "replaced"
    why = "was replaced by a symbolic link since it was installed" if listed else "is a symbolic link"
    raise UserError(
        f"{f.path} {why} (to {link}), not a file taskserver-install wrote; not replacing it",
        hint="keep it (put your unit in an override template instead), or re-run with --force to replace"
        " it (uninstall then restores the link)",
        exit_code=1,
    )


def registration_free(spec: ServiceSpec, backend: Backend, plan: Plan) -> None:
    """An install that would register the service refuses while an admin's entry holds that place
    (``Backend.in_the_way``): it stays as it is, and the service is not reported as registered."""
    if not plan.enable or backend.is_enabled(spec):
        return
    found = backend.in_the_way(spec)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"{found[0]}{more}; not registering {spec.name} beside it", exit_code=1,
                        hint="move it out of that directory (keep it elsewhere), install under another "
                        "--name, or pass --no-enable to install without registering")


def edited_registration(
    spec: ServiceSpec, backend: Backend, plan: Plan, old: dict[str, Any] | None, force: bool
) -> bool:
    """Whether the registration outside the files (a crontab entry) is not the one this tool wrote: an
    admin's, like an edited boot file, refused unless ``force`` (then registered again, replacing it)."""
    by_hand = backend.changed_by_hand(spec, old if old is not None else {"extra": plan.extra})
    if by_hand and not force:
        raise UserError(f"{by_hand[0]}; not replacing it", exit_code=1,
                        hint="keep it, or re-run with --force to replace it")
    return bool(by_hand)


@dataclass(frozen=True)
class Theirs:
    """One way the installed service is no longer what this tool wrote."""

    path: str  # the manifest's entry (or the registration) it concerns
    why: str  # what the operator is told
    link: bool  # a symbolic link: never the installer's, so not taken out even with --force
    state: str = "changed"  # what --status says of the entry


def entry_state(spec: ServiceSpec, backend: Backend, files: Tree, entry: dict[str, Any]) -> Theirs | str:
    """``ours`` / ``missing`` for a manifest entry, or how it became the admin's."""
    path = Path(entry["path"])
    for d in (d for d in backend.own_dirs(spec) if path.is_relative_to(d)):
        link = files.readlink(d)
        if link is not None:
            why = f"{d} is a symbolic link (to {link}), not the directory installed"
            return Theirs(str(path), why, True, f"below {d}, a symbolic link (to {link})")
    link = files.readlink(path)
    if link is not None:
        why = f"{path} is a symbolic link (to {link}), not the file installed"
        return Theirs(str(path), why, True, "replaced by a symbolic link")
    data = files.read(path)
    if data is None:
        return "missing"
    if mf.sha256(data) != entry["sha256"]:
        return Theirs(str(path), f"{path} was changed since it was installed", False)
    return "ours"


def not_ours(spec: ServiceSpec, backend: Backend, manifest: dict[str, Any]) -> list[Theirs]:
    """Everything of the installed service that an admin made their own since the install."""
    files = mf.fs(spec)
    found = [s for e in manifest["files"] if isinstance(s := entry_state(spec, backend, files, e), Theirs)]
    return found + [Theirs(spec.name, why, False) for why in backend.changed_by_hand(spec, manifest)]
