"""Atomic file writes and the manifest that records what an install wrote.

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
import tempfile
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
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


def load(spec: ServiceSpec) -> dict[str, Any] | None:
    """The manifest of ``spec.name`` in its scope, or None when it is not installed."""
    path = spec.target(manifest_path(spec))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot read the install manifest {path}: {exc}",
            hint="restore it, or remove the service's files by hand and delete the manifest",
            exit_code=1,
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise UserError(f"install manifest {path} is malformed", hint="restore it from a backup", exit_code=1)
    for entry in data["files"]:
        _check_entry(spec, path, entry, in_home=spec.user_scope)
    for d in data.get("dirs", []):  # only ever rmdir'ed when empty; may lie above a home the install made
        _check_entry(spec, path, {"path": d}, in_home=False)
    return data


def _check_entry(spec: ServiceSpec, manifest: Path, entry: object, *, in_home: bool) -> None:
    """Uninstall deletes the files the manifest lists, as root: a listed path must be one an install could
    have written — absolute and normalized, and for a user unit inside that user's home (whose owner can
    edit the manifest there)."""
    text = entry.get("path") if isinstance(entry, dict) else None
    ok = isinstance(text, str) and text.startswith("/") and os.path.normpath(text) == text
    if ok and in_home:
        ok = Path(str(text)).is_relative_to(spec.home)
    if not ok:
        raise UserError(
            f"install manifest {manifest} lists {text!r}, which no install of {spec.name} writes",
            hint="it was edited by hand: restore it, or remove the service's files by hand and delete it",
            exit_code=1,
        )


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p`` that returns the directories it created, outermost first (for exact removal)."""
    missing: list[Path] = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
    return list(reversed(missing))


def home_owner(spec: ServiceSpec) -> tuple[int, int] | None:
    """(uid, gid) that user-scope files must belong to when root writes them into someone's home."""
    if not spec.user_scope or os.geteuid() != 0:
        return None
    try:
        st = spec.target(spec.home).stat()
    except OSError:
        return None
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def adopt(spec: ServiceSpec, paths: list[Path]) -> None:
    """Give ``paths`` (on this machine) to the home's owner, for user units root installs for a user."""
    owner = home_owner(spec)
    if owner is not None:
        for p in paths:
            os.lchown(p, *owner)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + fsync + rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save(spec: ServiceSpec, data: dict[str, Any], dirs: list[str]) -> None:
    """Write the manifest atomically, listing ``dirs`` plus the directories created for the manifest itself
    (target paths). An identical manifest is left alone, so a re-run that changes nothing writes nothing."""
    path = spec.target(manifest_path(spec))
    created = [str(Path("/") / d.relative_to(spec.root)) for d in make_dirs(path.parent)]
    record = {"version": MANIFEST_VERSION, **data, "dirs": sorted({*dirs, *created})}
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    if read_bytes(path) != body:
        atomic_write(path, body, 0o600 if spec.user_scope else 0o644)
        adopt(spec, [path, *(spec.target(Path(d)) for d in created)])


def remove(spec: ServiceSpec) -> None:
    with contextlib.suppress(FileNotFoundError):
        spec.target(manifest_path(spec)).unlink()


def remove_empty_dirs(spec: ServiceSpec, dirs: list[str]) -> list[str]:
    """Remove the listed directories (innermost first) when empty; return those removed."""
    removed = []
    for d in sorted(dirs, key=lambda s: s.count("/"), reverse=True):
        with contextlib.suppress(FileNotFoundError, OSError):
            spec.target(Path(d)).rmdir()
            removed.append(d)
    return removed
