"""Take a service out again (``--uninstall``) and say how it stands (``--status``), from its manifest.

``uninstall`` stops, disables and removes exactly what the manifest lists; ``status`` compares the live state
and the files with the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from . import manifest as mf
from . import outside
from . import purge as leftovers
from .apply import Outcome, cannot, relink, run_steps
from .backends.base import Backend
from .safefs import Tree
from .spec import ServiceSpec


def uninstall(
    spec: ServiceSpec,
    backend: Backend,
    *,
    dry_run: bool = False,
    purge: bool = False,
    purge_config: bool = False,
) -> Outcome:
    """Stop, disable, remove exactly the manifest's files and the directories it created, reload; then
    remove (``purge``) or name (without it) the service's data: state, logs, config (``installer.purge``)."""
    old = mf.load(spec)
    if old is None:
        raise UserError(
            f"{spec.name} is not installed here (no manifest {spec.target(mf.manifest_path(spec))})",
            hint="check --name, --user and --root; --status shows what is installed",
        )
    plan = backend.plan_uninstall(spec, old)
    out = Outcome(
        "uninstall", spec.name, backend.name, backend.live, dry_run, manifest=str(mf.manifest_path(spec))
    )
    files = mf.fs(spec)
    # links put where the boot files were since install: the admin's now (systemctl disable removes one)
    links = {e["path"]: files.readlink(Path(e["path"])) for e in old["files"]}
    run_steps(plan.start, out, dry_run)
    run_steps(plan.enable, out, dry_run)
    for entry in old["files"]:
        out.files.append((entry["path"], _take_out(spec, files, entry, out, links[entry["path"]])))
    found = leftovers.data_paths(spec, backend, old, purge_config)
    doomed = [k for k in found if purge and k.purge]
    if dry_run:
        out.notes += [f"would purge {k.path} ({k.what})" for k in doomed]
    else:
        out.notes += [leftovers.remove(spec, k) for k in doomed]
        try:
            mf.remove(spec)
        except OSError as exc:
            raise cannot(spec, "remove", mf.manifest_path(spec), exc) from exc
        # the manifest dir is this tool's alone: gone with the last manifest, whichever install made it
        mf.remove_empty_dirs(spec, [*old.get("dirs", []), str(mf.manifest_dir(spec))])
    run_steps(backend.after_remove(spec), out, dry_run)
    kept = [k for k in found if not (purge and k.purge)]
    out.kept = [f"{k.path} ({k.what})" for k in kept]
    if kept:
        out.remove_kept = leftovers.removal_command(kept, spec.root)
    return out


def _take_out(spec: ServiceSpec, files: Tree, entry: dict[str, Any], out: Outcome, link: str | None) -> str:
    """Remove one file the manifest lists; its state for the outcome. ``link``: a symlink found there before
    uninstall began, which is not the file that was installed (the installer writes none; an admin put it
    there since): it stays, put back if disabling took it away. A link install --force replaced is put
    back."""
    path, dry_run = Path(entry["path"]), out.dry_run
    if link is not None:
        if not dry_run and files.readlink(path) != link:
            relink(files, path, link)
        left = "would be left" if dry_run else "left"
        out.notes.append(f"{path} is a symbolic link (to {link}), not the file installed; {left} in place")
        return "kept"
    data = files.read(path)
    if data is not None and mf.sha256(data) != entry["sha256"]:
        anyway = "would be removed anyway" if dry_run else "removed anyway"
        out.notes.append(f"{path} had been changed since install; {anyway} (it was ours)")
    restore = entry.get("replaced_link")
    if not dry_run:
        _remove(spec, files, path)
        if restore is not None:
            try:
                relink(files, path, restore)
            except OSError as exc:
                raise cannot(spec, "restore the symbolic link", path, exc) from exc
    if restore is None:
        return "removed" if data is not None else "already gone"
    put = "would put" if dry_run else "put"
    out.notes.append(f"{path}: {put} back the symbolic link to {restore} that install --force replaced")
    return "restored"


def _remove(spec: ServiceSpec, files: Tree, path: Path) -> None:
    try:
        files.unlink(path)
    except OSError as exc:
        raise cannot(spec, "remove", path, exc) from exc


def status(spec: ServiceSpec, backend: Backend) -> dict[str, Any]:
    """installed / enabled / running / files changed since install, for ``--status``; ``notes``: why a path
    of a tree was not found, when a link on its way leads out of the tree (read inside it only)."""
    with outside.noticing() as seen:
        old = mf.load(spec)
        changed = []
        files = mf.fs(spec)
        for entry in (old or {}).get("files", []):
            if files.readlink(Path(entry["path"])) is not None:  # not the file installed, whatever it is
                changed.append({"path": entry["path"], "state": "replaced by a symbolic link"})
                continue
            data = files.read(Path(entry["path"]))
            if data is None or mf.sha256(data) != entry["sha256"]:
                changed.append({"path": entry["path"], "state": "missing" if data is None else "changed"})
        enabled = backend.is_enabled(spec) if old is not None else False
        running = backend.is_active(spec) if old is not None else False
    return {
        "name": spec.name,
        "backend": backend.name,
        "installed": old is not None,
        "enabled": enabled,
        "running": running,
        "files_changed": changed,
        "manifest": str(mf.manifest_path(spec)),
        "notes": seen,
    }
