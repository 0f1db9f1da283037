"""The manifest that records what an install wrote, and how an install reaches its files (``fs``).

The manifest lives at ``/var/lib/taskserver-install/<name>.json`` (system scope) or
``~/.local/state/taskserver-install/<name>.json`` (user scope), under ``--root`` when given. It lists every
file (target path, sha256, mode) and every directory the install created, so ``--uninstall`` removes exactly
those and ``--status`` can tell which files an admin changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from .safefs import AsUser, Tree
from .spec import ServiceSpec

MANIFEST_VERSION = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_dir(spec: ServiceSpec) -> Path:
    """The manifest directory as the target system sees it."""
    if spec.user_scope:
        return spec.home / ".local" / "state" / "taskserver-install"
    return Path("/var/lib/taskserver-install")


def manifest_path(spec: ServiceSpec) -> Path:
    return manifest_dir(spec) / f"{spec.name}.json"


def check_dir(spec: ServiceSpec) -> None:
    """Refuse a manifest directory reached through a symbolic link, wherever it leads: the manifests (and the
    maintainer scripts' record beside them) are read, written and removed there as root, so a link put in
    its place (to a directory a user owns, or out of a ``--root`` tree to the host) would make root use a
    record that someone else keeps. In a tree every directory on the way is checked (the tree's owner made
    them all); on this machine the directory itself (its parents are root's ``/var/lib``, or the home the
    home's owner works in with their own rights)."""
    files, where = fs(spec), manifest_dir(spec)
    on_the_way = [*reversed(where.parents[:-1]), where] if spec.offline_root else [where]
    for d in on_the_way:
        link = files.readlink(d)
        if link is None:
            continue
        what = "" if d == where else f" on the way to the manifest directory {files.where(where)}"
        raise UserError(
            f"{files.where(d)} is a symbolic link (to {link}){what}; not using install manifests through it",
            hint="the manifest directory is taskserver-install's own: move the link out of the way (a real "
            "directory is made in its place), then re-run",
            exit_code=1,
        )


def home_owner(spec: ServiceSpec) -> tuple[int, int] | None:
    """(uid, gid) of the home a user unit goes into, when root installs it for that (other) user."""
    if not (spec.user_scope and os.geteuid() == 0):
        return None
    st = Tree(spec.root).stat(spec.home)
    return None if st is None or st.st_uid == 0 else (st.st_uid, st.st_gid)


def fs(spec: ServiceSpec) -> Tree:
    """How the install reaches its files. A ``--root`` tree: resolved inside the tree (what it creates in a
    user's home there is given to that home's owner). Root's user unit for another user on this machine: as
    that user (nothing is chowned; the kernel refuses what the user could not do). Else: plainly."""
    owner = home_owner(spec)
    if owner is None:
        return Tree(spec.root)
    if spec.offline_root:
        return Tree(spec.root, owner)
    return AsUser(*owner)


def load(spec: ServiceSpec) -> dict[str, Any] | None:
    """The manifest of ``spec.name`` in its scope, or None when it is not installed. Its entries are checked
    before anything acts on them: a manifest may have been edited by whoever owns it."""
    check_dir(spec)
    path = manifest_path(spec)
    files = fs(spec)
    try:
        raw = files.read(path)
        if raw is None:
            return None
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise UserError(
            f"cannot read the install manifest {spec.target(path)}: {why}",
            hint="restore it, or remove the service's files by hand and delete the manifest",
            exit_code=1,
        ) from exc
    trusted = _check_owner(spec, files, path)
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise UserError(f"install manifest {path} is malformed", hint="restore it from a backup", exit_code=1)
    _check_entries(spec, path, data, trusted=trusted)
    return data


def _check_owner(spec: ServiceSpec, files: Tree, path: Path) -> bool:
    """Whether the manifest is root's own record (root-owned, writable by no one else). On this machine a
    system-scope manifest must be: one that someone else owns would let them name what root deletes."""
    st = files.stat(path)
    trusted = st is not None and st.st_uid == 0 and not st.st_mode & 0o022
    if trusted or spec.user_scope or spec.offline_root or os.geteuid() != 0:
        return trusted and not spec.user_scope
    raise UserError(
        f"install manifest {path} is owned by uid {st.st_uid if st else '?'} or writable by others: "
        "not trusted",
        hint=f"check who changed it; if it is genuine: chown root:root {path} && chmod 644 {path}",
        exit_code=1,
    )


def _check_entries(spec: ServiceSpec, manifest: Path, data: dict[str, Any], *, trusted: bool) -> None:
    """Uninstall deletes the files and removes the empty directories the manifest lists, as root (or as the
    home's owner). A listed path must be one an install could have written: absolute and normalized, inside
    the home for a user unit; a directory only as a parent of a listed file or of the manifest itself; and
    in a manifest someone else could edit, a file named for the service (NAME, NAME.*, or under a NAME/
    directory), as every backend names its files."""
    files = [_entry_path(spec, manifest, e, spec.user_scope) for e in data["files"]]
    for e in data["files"]:  # a symlink install --force replaced, which uninstall puts back
        link = e.get("replaced_link", "")
        if not (isinstance(link, str) and "\0" not in link):
            _refuse(spec, manifest, link)
    for f in files if not trusted else []:
        if not (f.name == spec.name or f.name.startswith(spec.name + ".") or spec.name in f.parts[:-1]):
            _refuse(spec, manifest, str(f))
    # a config the install wrote (config_written) is kept by uninstall but its directories are the install's
    config = [Path(str(data.get("config")))] if data.get("config_written") else []
    parents = {p for f in [*files, manifest, *config] for p in f.parents if p != Path("/")}
    for d in data.get("dirs", []):
        p = _entry_path(spec, manifest, {"path": d}, spec.user_scope and not spec.offline_root)
        if p not in parents:
            _refuse(spec, manifest, d)


def _entry_path(spec: ServiceSpec, manifest: Path, entry: object, in_home: bool) -> Path:
    text = entry.get("path") if isinstance(entry, dict) else None
    ok = isinstance(text, str) and text.startswith("/") and os.path.normpath(text) == text
    if ok and in_home:
        ok = Path(str(text)).is_relative_to(spec.home) and Path(str(text)) != spec.home
    if not ok:
        _refuse(spec, manifest, text)
    return Path(str(text))


def _refuse(spec: ServiceSpec, manifest: Path, text: object) -> None:
    raise UserError(
        f"install manifest {manifest} lists {text!r}, which no install of {spec.name} writes",
        hint="it was edited by hand: restore it, or remove the service's files by hand and delete it",
        exit_code=1,
    )


def save(spec: ServiceSpec, data: dict[str, Any], dirs: list[Path]) -> None:
    """Write the manifest atomically, listing ``dirs`` plus the directories created for the manifest itself
    (target paths). An identical manifest is left alone, so a re-run that changes nothing writes nothing."""
    check_dir(spec)
    path, files = manifest_path(spec), fs(spec)
    created = files.makedirs(path.parent)
    record = {"version": MANIFEST_VERSION, **data, "dirs": sorted({*map(str, dirs), *map(str, created)})}
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    try:
        if files.read(path) != body:
            files.write(path, body, 0o600 if spec.user_scope else 0o644)
    except BaseException:
        # no manifest (a full file system): the directories made for it would be nobody's record
        remove_empty_dirs(spec, [str(d) for d in created])
        raise


def remove(spec: ServiceSpec) -> None:
    check_dir(spec)
    fs(spec).unlink(manifest_path(spec))


def remove_empty_dirs(spec: ServiceSpec, dirs: list[str]) -> list[str]:
    """Remove the listed directories (innermost first) when empty; return those removed. One that now lies
    behind a symbolic link (/etc/sv/NAME linked to the admin's own directory) is not the one the install
    made, and stays."""
    removed, files, linked = [], fs(spec), {}
    for d in sorted(dirs, key=lambda s: s.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            for p in Path(d).parents:
                if p not in linked:
                    linked[p] = p != Path("/") and files.readlink(p) is not None
            if any(linked[p] for p in Path(d).parents):
                continue
            files.rmdir(Path(d))
            removed.append(d)
    return removed
