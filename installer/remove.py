"""Take a service out again (``--uninstall``) and say how it stands (``--status``), from its manifest.

Uninstall undoes what the install did, and nothing else. A service an admin made their own since
(``theirs.not_ours``: a link or an edited file where a boot file was, a link in place of one of its own
directories, a registration changed by hand) is left exactly as it is — not stopped, not disabled (its
enable links stay), no file removed, no data purged — and the outcome says so; only this tool's own record
(the manifest) goes. ``force`` takes out a service whose files were only edited anyway (stopped, disabled,
removed); a link was never the installer's, so a service with one stays the admin's even then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from . import manifest as mf
from . import outside, theirs
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
    force: bool = False,
) -> Outcome:
    """Stop, disable, remove exactly the manifest's files and the directories it created, reload; then
    remove (``purge``) or name (without it) the service's data: state, logs, config (``installer.purge``).
    A service an admin made their own (``theirs.not_ours``) is left as it is; only the manifest goes."""
    old = mf.load(spec)
    if old is None:
        raise UserError(
            f"{spec.name} is not installed here (no manifest {spec.target(mf.manifest_path(spec))})",
            hint="check --name, --user and --root; --status shows what is installed",
        )
    out = Outcome(
        "uninstall", spec.name, backend.name, backend.live, dry_run, manifest=str(mf.manifest_path(spec))
    )
    admins = [t for t in theirs.not_ours(spec, backend, old) if t.link or not force]
    if admins:
        return _leave(spec, backend, old, out, admins)
    plan = backend.plan_uninstall(spec, old)
    files = mf.fs(spec)
    run_steps(plan.start, out, dry_run)
    run_steps(plan.enable, out, dry_run)
    for entry in old["files"]:
        out.files.append((entry["path"], _take_out(spec, files, entry, out)))
    found = leftovers.data_paths(spec, backend, old, purge_config)
    doomed = [k for k in found if purge and k.purge]
    if dry_run:
        out.notes += [f"would purge {k.path} ({k.what})" for k in doomed]
    else:
        out.notes += [leftovers.remove(spec, k) for k in doomed]
        _forget(spec, old)
    run_steps(backend.after_remove(spec), out, dry_run)
    kept = [k for k in found if not (purge and k.purge)]
    out.kept = [f"{k.path} ({k.what})" for k in kept]
    if kept:
        out.remove_kept = leftovers.removal_command(kept, spec.root)
    return out


def _forget(spec: ServiceSpec, old: dict[str, Any]) -> None:
    try:
        mf.remove(spec)
    except OSError as exc:
        raise cannot(spec, "remove", mf.manifest_path(spec), exc) from exc
    # the manifest dir is this tool's alone: gone with the last manifest, whichever install made it; a
    # directory that holds anything (an admin's files) or became a link stays
    mf.remove_empty_dirs(spec, [*old.get("dirs", []), str(mf.manifest_dir(spec))])


def _leave(
    spec: ServiceSpec, backend: Backend, old: dict[str, Any], out: Outcome, them: list[theirs.Theirs]
) -> Outcome:
    """The service is the admin's now: nothing of it is stopped, disabled, removed or purged; the manifest,
    this tool's own record, goes (and with it the directories it made, where empty)."""
    out.files = [(e["path"], "kept") for e in old["files"]]
    out.notes += [f"{t.why}: the admin's now" for t in them]
    left, forgot = ("would be left", "would forget") if out.dry_run else ("was left", "forgot")
    anyway = "" if any(t.link for t in them) else " (--uninstall --force takes it out anyway)"
    out.notes.append(f"{spec.name} {left} as the admin has it: not stopped, not disabled, no file removed, "
                     f"nothing purged; taskserver-install {forgot} it{anyway}")
    out.kept = [f"{k.path} ({k.what})" for k in leftovers.data_paths(spec, backend, old, False)]
    if not out.dry_run:
        _forget(spec, old)
    return out


def _take_out(spec: ServiceSpec, files: Tree, entry: dict[str, Any], out: Outcome) -> str:
    """Remove one file the manifest lists; its state for the outcome. A link install --force replaced is
    put back."""
    path, dry_run = Path(entry["path"]), out.dry_run
    data = files.read(path)
    if data is not None and mf.sha256(data) != entry["sha256"]:  # only with --force
        anyway = "would be removed anyway" if dry_run else "removed anyway"
        out.notes.append(f"{path} had been changed since install; {anyway} (--force)")
    restore = entry.get("replaced_link")
    if not dry_run:
        try:
            files.unlink(path)
        except OSError as exc:
            raise cannot(spec, "remove", path, exc) from exc
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


def status(spec: ServiceSpec, backend: Backend) -> dict[str, Any]:
    """installed / enabled / running / files changed since install, for ``--status``; ``notes``: why a path
    of a tree was not found, when a link on its way leads out of the tree (read inside it only)."""
    with outside.noticing() as seen:
        old = mf.load(spec)
        changed = []
        files = mf.fs(spec)
        for entry in (old or {}).get("files", []):
            state = theirs.entry_state(spec, backend, files, entry)
            if isinstance(state, theirs.Theirs):
                changed.append({"path": entry["path"], "state": state.state})
            elif state == "missing":
                changed.append({"path": entry["path"], "state": "missing"})
        enabled = backend.is_enabled(spec) if old is not None else False
        running = backend.is_active(spec) if old is not None else False
        # what registers it besides the files (an enable link, the crontab entry), when not the install's
        registered = backend.registration_state(spec, old) if old is not None else []
    return {
        "name": spec.name,
        "backend": backend.name,
        "installed": old is not None,
        "enabled": enabled,
        "running": running,
        "files_changed": changed,
        "registration_changed": [{"what": r.what, "state": r.state} for r in registered],
        "manifest": str(mf.manifest_path(spec)),
        "notes": [*seen, *(r.why for r in registered)],
    }
