"""Carry out a backend's Plan: write files atomically, run the steps, verify, record the manifest, undo.

``install`` is idempotent (a re-run that changes nothing says "unchanged"), refuses to overwrite a file an
admin edited unless ``force`` (the diff is in the error; what counts as the admin's is ``installer.theirs``),
keeps an admin's ``disable`` across re-installs, and rolls back everything it wrote or ran when a later step
fails. Taking a service out again and reporting on it (``--uninstall``, ``--status``) is ``installer.remove``.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from . import manifest as mf
from . import outside, proc, theirs
from . import purge as leftovers
from .backends.base import Action, Backend, FileSpec, Plan
from .safefs import Tree
from .spec import ServiceSpec, installed_config

VERIFY_SECONDS = 15.0


@dataclass
class Outcome:
    """What happened (or, with dry_run, what would happen); the CLI prints it as text or JSON."""

    action: str  # "install" | "uninstall"
    name: str
    backend: str
    live: bool
    dry_run: bool = False
    files: list[tuple[str, str]] = field(
        default_factory=list
    )  # (target path, created|updated|replaced|unchanged|removed|restored|kept|already gone)
    ran: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    undo: str = ""
    manifest: str = ""
    kept: list[str] = field(default_factory=list)  # uninstall: data left in place, "PATH (what)"
    remove_kept: str = ""  # the command that removes what was kept
    verified: bool = False  # started (or found running) and seen still running a moment later

    @property
    def changed(self) -> bool:
        return bool(self.ran) or any(state != "unchanged" for _, state in self.files)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [{"path": p, "state": s} for p, s in self.files]
        data["changed"] = self.changed
        return data


class Failed(UserError):
    """A step failed after something was written; everything was rolled back (exit 1)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=1)


def undo_command(spec: ServiceSpec) -> str:
    parts = [str(spec.executable.parent / "taskserver-install"), "--uninstall", "--name", spec.name]
    if spec.user_scope:
        parts.append("--user")
    if spec.offline_root:
        parts += ["--root", str(spec.root)]
    return proc.quote(parts)


class _Journal:
    """What an install did so far, so a failure can undo it in reverse order."""

    def __init__(self, spec: ServiceSpec, backend: Backend) -> None:
        self.spec, self.backend = spec, backend
        self.undo: list[Callable[[], None]] = []
        self.kept: list[str] = []  # what a rolled-back start wrote and the rollback left (a log saying why)
        self.restarted = False  # a running service was restarted on the new files

    def write(self, f: FileSpec) -> list[Path]:
        try:
            return self._write(f)
        except OSError as exc:
            raise cannot(self.spec, "write", f.path, exc) from exc

    def _write(self, f: FileSpec) -> list[Path]:
        files, path = mf.fs(self.spec), f.path
        created = files.makedirs(path.parent)
        # undone even when the write below fails (a full file system): the directories made for it go too
        self.undo.append(lambda: _rmdirs(files, created))
        link = files.readlink(path)  # replaced with --force: a rollback puts the link back, not a copy
        before = files.read(path) if link is None else None
        st = files.lstat(path) if before is not None else None
        mode = st.st_mode & 0o7777 if st is not None else 0
        files.write(path, f.content.encode(), f.mode)

        def restore() -> None:
            if link is not None:
                relink(files, path, link)
            elif before is None:
                files.unlink(path)
            else:
                files.write(path, before, mode)

        self.undo.append(restore)
        return created

    def write_all(self, files: list[FileSpec]) -> None:
        for f in files:
            self.write(f)

    def rollback(self, first_install: bool) -> list[str]:
        """Undo everything, in reverse order; what could not be undone, one phrase each."""
        failed = []
        for fn in reversed(self.undo):
            try:
                fn()
            except Exception as exc:  # keep undoing the rest; say what could not be undone
                failed.append(_why(exc))
        backend, spec = self.backend, self.spec
        # a service restarted on the new files runs again on the old ones, once they are back and read
        again = backend.restart(spec) if self.restarted else []
        for act in [*(backend.after_remove(spec) if first_install else backend.reload(spec)), *again]:
            try:
                act()
            except Exception as exc:
                failed.append(f"{act.describe}: {_why(exc)}")
        return failed


def _rmdirs(files: Tree, dirs: list[Path]) -> None:
    for d in reversed(dirs):
        files.rmdir(d)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return exc.message if isinstance(exc, UserError) else str(exc)


def run_steps(actions: tuple[Action, ...] | list[Action], out: Outcome, dry_run: bool) -> None:
    for act in actions:
        out.ran.append(act.describe)
        if not dry_run:
            act()


def _run_quiet(actions: list[Action]) -> None:
    for act in actions:
        act()


def _verify(spec: ServiceSpec, backend: Backend, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if backend.is_active(spec):
            # still up a moment later: it did not just start and crash
            time.sleep(0.5)
            if backend.is_active(spec):
                return
        if time.monotonic() > deadline:
            raise Failed(
                f"{spec.name} was started but is not running after {seconds:.0f}s",
                hint="look at the service's log (journalctl -u NAME, /var/log) and the config it was given",
            )
        time.sleep(0.3)


def _enable_and_start(
    spec: ServiceSpec,
    backend: Backend,
    plan: Plan,
    out: Outcome,
    journal: _Journal,
    *,
    changed: bool,
    refresh: bool,
    first: bool,
    preset: bool,
) -> None:
    """Enable when asked and not yet enabled (or when the registration itself changed: ``refresh``), or as
    the presets say (``preset``); start when not running, restart when files changed."""
    # Each undo is recorded before its step runs: a registrar that fails part-way (`systemctl enable` made
    # one of two links, then exited 1) has registered something, and its undo must run like the others.
    dry_run = out.dry_run
    if first and plan.start and not dry_run:
        # what the service makes once registered and started (runsv starts it at the link): removed by a
        # rollback after the service was stopped and unregistered
        fresh = leftovers.absent(spec, backend)
        journal.undo.append(lambda: journal.kept.extend(leftovers.forget_fresh(spec, fresh)))
    if plan.enable and (refresh or not backend.is_enabled(spec)):
        journal.undo.append(put_back(spec, backend, backend.disable))
        run_steps(plan.enable, out, dry_run)
    elif not plan.enable and first and backend.is_enabled(spec):
        # asked not to enable, but the boot file alone registers it (upstart's job file): switch it off
        journal.undo.append(put_back(spec, backend, backend.enable))
        run_steps(backend.disable(spec), out, dry_run)
    if preset:
        _preset(spec, backend, out, journal)
    if not plan.start:
        return
    if not backend.is_active(spec):
        journal.undo.append(lambda: _run_quiet(backend.stop(spec)))
        run_steps(plan.start, out, dry_run)
    elif changed:
        journal.restarted = True
        run_steps(backend.restart(spec), out, dry_run)


def _preset(spec: ServiceSpec, backend: Backend, out: Outcome, journal: _Journal) -> None:
    """``systemctl preset`` enables or disables; its undo, recorded before it runs as every registering
    step's is, puts back the state before it (a preset that failed part-way has made links too)."""
    reverse = backend.enable if backend.is_enabled(spec) else backend.disable
    journal.undo.append(put_back(spec, backend, reverse))
    run_steps(backend.preset(spec), out, out.dry_run)


def put_back(spec: ServiceSpec, backend: Backend, reverse: Callable[[ServiceSpec], list[Action]]
             ) -> Callable[[], None]:
    """The undo of a registering step, made before it runs: the reverse steps (`update-rc.d -f NAME remove`
    after `update-rc.d NAME defaults`), completed or replaced by the backend (``keep_registration``: a copy
    of the crontab or of upstart's override put back as it was, systemd's new .wants directories removed)."""
    return backend.keep_registration(spec, lambda: _run_quiet(reverse(spec)))


def install(
    spec: ServiceSpec,
    backend: Backend,
    *,
    force: bool = False,
    dry_run: bool = False,
    enable: bool | None = None,
    start: bool = True,
    verify_seconds: float = VERIFY_SECONDS,
    preset: bool = False,
    records: Callable[[], list[FileSpec]] | None = None,
) -> Outcome:
    """Install ``spec`` with ``backend``. ``enable=None`` means: enable, unless an earlier install of the
    same name is disabled now (an admin's disable survives a re-install); True/False force it. ``preset``:
    then enable or not as the init system's presets say (a package's first install; pass enable=False,
    start=False). ``records``: files written last, from what the registration left (the maintainer
    scripts' record of the admin's choice). Both are undone with the rest when a step fails."""
    old = mf.load(spec)
    if old is not None and old.get("backend") not in (None, backend.name):
        raise UserError(
            f"{spec.name} is installed for {old.get('backend')}, not {backend.name}",
            hint=f"uninstall it first: {undo_command(spec)}",
        )
    want_enable = enable if enable is not None else (old is None or backend.is_enabled(spec))
    plan = backend.plan_install(spec, enable=want_enable, start=start)
    by_hand = theirs.edited_registration(spec, backend, plan, old, force)
    out = Outcome(
        "install",
        spec.name,
        backend.name,
        backend.live,
        dry_run,
        undo=undo_command(spec),
        manifest=str(mf.manifest_path(spec)),
        notes=list(plan.notes),
    )
    if old is not None and enable is None and not want_enable:
        out.notes.append(f"{spec.name} was disabled by an admin; left disabled (pass --enable to enable it)")
    theirs.own_dirs_are_dirs(spec, backend)
    theirs.registration_free(spec, backend, plan)
    states = [(f, theirs.file_state(spec, f, old, force)) for f in plan.files]
    links = {str(f.path): mf.fs(spec).readlink(f.path) for f, s in states if s == "replaced"}
    config = _config_to_write(spec, backend)
    out.files = [(str(f.path), s) for f, s in states]
    if config is not None:
        out.files.append((str(config.path), "created"))
    changed = any(s != "unchanged" for _, s in states)
    journal = _Journal(spec, backend)
    try:
        dirs = [] if dry_run else [d for f, s in states if s != "unchanged" for d in journal.write(f)]
        if config is not None and not dry_run:
            dirs += journal.write(config)
        if changed or old is None:
            run_steps(plan.reload, out, dry_run)
        # backend data outside files (the crontab entry) changed: registering again replaces it
        refresh = by_hand or (old is not None and old.get("extra", {}) != plan.extra)
        _enable_and_start(
            spec, backend, plan, out, journal, changed=changed, refresh=refresh, first=old is None,
            preset=preset,
        )
        if plan.start and not dry_run:
            _verify(spec, backend, verify_seconds)
            out.verified = True
        journal.write_all(records() if records is not None and not dry_run else [])
        if not dry_run:
            written = mf.sha256(config.content.encode()) if config else (old or {}).get("config_written")
            try:
                _record(spec, backend, plan, old, dirs, written, links)
            except OSError as exc:
                raise cannot(spec, "write", mf.manifest_path(spec), exc) from exc
    except BaseException as exc:
        left = [] if dry_run else journal.rollback(first_install=old is None)
        if isinstance(exc, OSError) and exc.strerror:  # the system refused something not worded yet
            exc = UserError(_why(exc), hint=_hint(exc))
        if isinstance(exc, UserError):
            raise _failed(exc, left, journal.kept) from exc
        raise
    if not backend.live and out.changed:
        done = "would be written, nothing would be" if dry_run else "were written, nothing was"
        out.notes.append(
            f"offline: the init system does not run here; files and boot links {done} started "
            "(it starts at the next boot)"
        )
    return out


def _failed(exc: UserError, left: list[str], kept: list[str]) -> Failed:
    """The one line of a rolled-back install: what failed, and what (if anything) could not be undone."""
    undone = "rolled back, except: " + "; ".join(left) if left else "rolled back everything this install did"
    if kept:
        undone += f" (kept what the service wrote: {', '.join(kept)})"
    return Failed(f"{exc.message} — {undone}", hint=exc.hint)


def _config_to_write(spec: ServiceSpec, backend: Backend) -> FileSpec | None:
    """A config naming ``run_as``, when the daemon itself must switch to it and no config exists yet.

    Recorded in the manifest by its hash but not as one of the boot files: uninstall keeps it (config is
    the admin's from then on), ``--purge`` removes it while unchanged."""
    if not backend.caps.run_as_by_daemon or spec.run_as is None:
        return None
    if mf.fs(spec).lstat(spec.config) is not None:
        return None
    return FileSpec(spec.config, installed_config(spec), 0o644)


def _record(  # noqa: PLR0917
    spec: ServiceSpec,
    backend: Backend,
    plan: Plan,
    old: dict[str, Any] | None,
    dirs: list[Path],
    config_written: str | None,
    links: dict[str, str | None],
) -> None:
    """Write the manifest; ``links``: boot files' paths where --force just replaced a symlink (its target).
    A replaced link stays recorded across re-installs until uninstall restores it."""
    prev_dirs = [Path(d) for d in (old or {}).get("dirs", [])]
    replaced = {e["path"]: e["replaced_link"] for e in (old or {}).get("files", []) if "replaced_link" in e}
    replaced.update({p: t for p, t in links.items() if t is not None})
    data = {
        "name": spec.name,
        "backend": backend.name,
        "scope": spec.scope,
        "executable": str(spec.executable),
        "config": str(spec.config),
        "run_as": spec.run_as.user if spec.run_as else None,
        "files": [
            {
                "path": str(f.path),
                "sha256": mf.sha256(f.content.encode()),
                "mode": oct(f.mode),
                **({"replaced_link": replaced[str(f.path)]} if str(f.path) in replaced else {}),
            }
            for f in plan.files
        ],
        "extra": plan.extra,
    }
    if config_written:
        data["config_written"] = config_written  # sha256 of the config this tool wrote
    mf.save(spec, data, [*prev_dirs, *dirs])


def relink(files: Tree, path: Path, target: str) -> None:
    files.unlink(path)
    files.symlink(target, path)


def cannot(spec: ServiceSpec, verb: str, path: Path, exc: OSError) -> UserError:
    """A file operation the target refused: in a user's home that is the user's own permission (a symlink
    there leads somewhere they may not write), in a tree a path that resolves to no usable place."""
    owner = mf.home_owner(spec)
    who = f" as uid {owner[0]} (the home's owner)" if owner and not spec.offline_root else ""
    lost = spec.offline_root and exc.errno in outside.NOT_FOUND
    why = outside.leads_out(mf.fs(spec), path) if lost else None
    if why is not None:
        return UserError(f"cannot {verb} {path}: {why}", hint="a tree's links are followed inside the tree "
                         "only: make that link lead to a place in the tree", exit_code=1)
    return UserError(f"cannot {verb} {spec.target(path)}{who}: {exc.strerror}", hint=_hint(exc), exit_code=1)


def _hint(exc: OSError) -> str:
    """What to do about a refused file operation: a full or read-only file system is not a link problem."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space or inodes on that file system (df -h, df -i), then re-run"
    if exc.errno == errno.EROFS:
        return "that file system is mounted read-only: remount it read-write, then re-run"
    return "check the directories on that path for symbolic links and their owners"
