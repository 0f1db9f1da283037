"""``taskserver-install``: detect, install, uninstall, status (and the package maintainer-script hooks).

Exit codes: 0 ok; 2 bad input (one line + hint, nothing written); 1 an operation failed or was refused
(rolled back). Output says what was written, what ran, and the exact command that undoes it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError, flushed, run_command
from . import apply, detect, outside, remove
from . import manifest as mf
from .backends import base
from .safefs import Tree
from .spec import SYSTEM, USER, ServiceSpec, build_spec, check_abs, check_run_as, check_value

PROG = "taskserver-install"
log = logging.getLogger("taskserver.installer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Put the taskserver daemon into this machine's boot process (and take it out again).\n\n"
            "Without a mode option it installs: detects the init system that runs (or uses --init), writes\n"
            "the boot file atomically, records it in a manifest, enables and starts the service, checks it\n"
            "runs, and prints what it wrote, what it ran and the command that undoes it. Re-running the\n"
            "same install changes nothing; a boot file an admin edited is only replaced with --force."
        ),
        epilog=(
            "files:\n"
            "  config    /etc/taskserver/taskserver.yaml (--user: ~/.config/taskserver/taskserver.yaml)\n"
            "  manifest  /var/lib/taskserver-install/NAME.json (--user: ~/.local/state/taskserver-install/)\n"
            "  override  templates/<init>/ next to the config replaces a packaged template\n"
            "exit codes: 0 done; 2 bad input (nothing written); 1 an operation failed (rolled back)\n"
            "examples:\n"
            f"  {PROG} --detect\n"
            f"  {PROG} --dry-run\n"
            f"  {PROG} --name ts-b --config /etc/taskserver/b.yaml --run-as ts\n"
            f"  {PROG} --init systemd --user\n"
            f"  {PROG} --root /srv/image --init sysv        (offline: files and links, nothing started)\n"
            f"  {PROG} --uninstall --name ts-b"
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detect", action="store_true", help="print the running init system and the evidence")
    mode.add_argument(
        "--uninstall",
        action="store_true",
        help="stop, disable and remove what was installed (state, logs and config are kept and named)",
    )
    mode.add_argument("--status", action="store_true", help="installed? enabled? running? files changed?")
    mode.add_argument(
        "--maintscript",
        nargs=argparse.REMAINDER,
        metavar="FORMAT ACTION",
        help="for package scripts: deb postinst|prerm|postrm ARGS..., rpm post|preun|postun N",
    )
    mode.add_argument(
        "--emit-maintscripts",
        metavar="FORMAT",
        choices=("deb", "rpm"),
        help="print the maintainer script snippets for a package format",
    )
    p.add_argument(
        "--init", help="init system to install for: " + ", ".join(base.names()) + " (default: detected)"
    )
    p.add_argument(
        "--purge",
        action="store_true",
        help="with --uninstall: also remove the state dir, the logs and a config this tool wrote (unchanged)",
    )
    p.add_argument(
        "--purge-config",
        action="store_true",
        help="with --uninstall --purge: remove the config file too, even one an admin wrote or changed",
    )
    p.add_argument("--user", action="store_true", help="install a systemd user unit for the calling user")
    p.add_argument(
        "--name", default="taskserver", help="service name (one per config file; default: %(default)s)"
    )
    p.add_argument("--config", help="configuration file the service runs with (default: see below)")
    p.add_argument("--run-as", metavar="USER[:GROUP]", help="user (and group) the daemon runs as (root)")
    p.add_argument(
        "--root", default="/", metavar="DIR", help="target system's / (image, chroot): files and links only"
    )
    p.add_argument(
        "--writable",
        action="append",
        default=[],
        metavar="PATH",
        help="a path jobs must write (systemd ReadWritePaths=); repeatable",
    )
    p.add_argument("--env-file", metavar="PATH", help="environment file (systemd default: none)")
    p.add_argument("--workdir", metavar="DIR", help="working directory of the daemon")
    p.add_argument(
        "--executable",
        metavar="PATH",
        help="taskserver executable the boot file calls (default: this installation's, resolved now)",
    )
    p.add_argument("--watchdog", type=int, metavar="SECONDS", help="systemd WatchdogSec= (default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, commands); change nothing")
    p.add_argument(
        "--json", action="store_true", help="print the outcome as one JSON object (not with --maintscript)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace boot files an admin changed (without it: show the diff); with --uninstall: take out a "
        "service whose boot files an admin edited (without it: left as it is)",
    )
    en = p.add_mutually_exclusive_group()
    en.add_argument(
        "--no-enable", dest="enable", action="store_false", default=None, help="do not enable at boot"
    )
    en.add_argument(
        "--enable", dest="enable", action="store_true", help="enable even if an admin disabled it"
    )
    p.add_argument("--no-start", action="store_true", help="do not start it now")
    p.add_argument("--debug", action="store_true", help="log every command and show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s")
    return run_command(PROG, lambda: dispatch(args), debug=args.debug)


def console() -> None:
    """The ``taskserver-install`` program: main(), its output flushed by itself (runtime/errors.flushed)."""
    sys.exit(flushed(main()))


def dispatch(args: argparse.Namespace) -> int:
    if args.maintscript is not None:
        if len(args.maintscript) < 2:
            raise UserError(
                "--maintscript needs FORMAT ACTION [ARGS...]",
                hint="e.g. --maintscript deb postinst configure",
            )
        fmt, action, *rest = args.maintscript
        return int(_maintscript().main(fmt, action, list(rest), args))
    if args.emit_maintscripts:
        return int(_maintscript().emit(args.emit_maintscripts, args))
    root = Path(os.path.abspath(check_value("--root", args.root)))
    if not root.is_dir():
        raise UserError(f"--root {args.root}: not a directory", hint="create the tree first")
    if args.detect:
        return print_detection(detect.detect(root), args.json)
    if args.status:
        with outside.noticing() as seen:  # the manifest is looked for before apply.status notices
            data = status(args, root)
        data["notes"] = [*seen, *(n for n in data["notes"] if n not in seen)]
        return print_json_or_text(data, args.json)
    if (args.purge or args.purge_config) and not args.uninstall:
        raise UserError("--purge and --purge-config go with --uninstall", hint="add --uninstall")
    if args.purge_config and not args.purge:
        raise UserError("--purge-config goes with --purge", hint="use --uninstall --purge --purge-config")
    with outside.noticing() as seen:  # a tree's link leading out of it, which made a lookup find nothing
        if args.uninstall:
            spec, backend = from_manifest(args, root)
            check_privileges(spec, backend, args)
            out = remove.uninstall(spec, backend, dry_run=args.dry_run, purge=args.purge,
                                   purge_config=args.purge_config, force=args.force)
        else:
            spec, backend = resolve(args, root)
            check_privileges(spec, backend, args)
            out = apply.install(spec, backend, force=args.force, dry_run=args.dry_run, enable=args.enable,
                                start=not args.no_start)
    out.notes += seen
    return print_outcome(out, args.json)


def _maintscript() -> Any:
    # Imported only for the package hooks (installer/maintscript.py is the packaging engineer's module).
    return importlib.import_module(".maintscript", __package__)


def choose_backend(args: argparse.Namespace, root: Path, init: str | None) -> base.Backend:
    """The backend for ``init`` (or the detected one), live only when that init runs here."""
    det = detect.detect(root)
    name = init or det.target
    if name is None:
        raise UserError(
            "no init system found to install for (none runs, none is installed)",
            hint="pick one with --init " + "|".join(base.names()),
        )
    cls = base.get(name)
    registrar = det.registrar if det.target == name else None
    if registrar is None:
        facts = detect.Facts(root, "", det.wsl, det.distro_id, det.distro_like, [])
        registrar = cls.find_registrar(facts)
    return cls(live=cls.live_here(det, root, bool(args.user)), registrar=registrar)


def resolve(args: argparse.Namespace, root: Path) -> tuple[ServiceSpec, base.Backend]:
    if args.init is not None and args.init not in base.names():
        raise UserError(f"unknown init system {args.init!r}", hint="use --init " + "|".join(base.names()))
    backend = choose_backend(args, root, args.init)
    if args.user and not backend.caps.user_scope:
        with_user = [cls.name for cls in base.ordered() if cls.caps.user_scope]
        raise UserError(
            f"--user works only with {', '.join(with_user)}, not {backend.name}",
            hint=f"drop --user, or use --init {with_user[0]} --user (or --init cron without root)",
        )
    if args.user and args.run_as:
        # a user manager cannot switch users: User= in a user unit fails at every start (216/GROUP)
        raise UserError(
            "--run-as does not apply with --user: a user unit runs as the user who owns it",
            hint="drop --run-as (install as that user), or drop --user for a system service run as it",
        )
    executable = args.executable
    if executable is not None:
        # looked up inside the target: a tree's link to this machine's program does not make it the tree's
        st = Tree(root).stat(check_abs("--executable", executable))
        if st is None or not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            where = f" in {root}" if root != Path("/") else ""
            raise UserError(
                f"--executable {executable}: not an executable file{where}", hint="give the installed path"
            )
    # a crontab belongs to a user: without root the manifest and default config are the caller's own
    own_account = backend.caps.own_account and os.geteuid() != 0
    spec = build_spec(
        name=args.name,
        config=args.config,
        scope=USER if args.user or own_account else SYSTEM,
        run_as=args.run_as,
        root=root,
        executable=executable,
        working_dir=args.workdir,
        env_file=args.env_file,
        writable_paths=tuple(args.writable),
        watchdog=getattr(args, "watchdog", None),
    )
    check_run_as(spec, backend.name, backend.caps.run_as_by_daemon)
    return backend.prepare(spec), backend


def _scope_probes(args: argparse.Namespace, root: Path) -> list[ServiceSpec]:
    """Specs to look for a manifest with: the system one first unless --user (a user's own, without root)."""
    scopes = [USER] if args.user else [SYSTEM, USER] if os.geteuid() != 0 else [SYSTEM]
    return [
        build_spec(name=args.name, scope=scope, root=root, executable="/bin/true", config=args.config)
        for scope in scopes
    ]


def status(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """--status: from the manifest; without one, "not installed" (the init system may not even be known)."""
    probes = _scope_probes(args, root)
    if any(mf.load(p) for p in probes):
        return remove.status(*from_manifest(args, root))
    return {
        "name": args.name,
        "backend": None,
        "installed": False,
        "enabled": False,
        "running": False,
        "files_changed": [],
        "registration_changed": [],
        "manifest": str(mf.manifest_path(probes[0])),
        "notes": [],
    }


def from_manifest(args: argparse.Namespace, root: Path) -> tuple[ServiceSpec, base.Backend]:
    """Uninstall/status act on what was installed: the manifest names the backend and the paths."""
    probes = _scope_probes(args, root)
    for probe in probes:
        data = mf.load(probe)
        if data is not None:
            break
    if data is None:
        where = probes[0].target(mf.manifest_path(probes[0]))
        raise UserError(
            f"{args.name} is not installed here (no manifest {where})",
            hint="check --name, --user and --root; --status shows what is installed",
        )
    # the scope is where the manifest was found, never what it says: a user's manifest is the user's to
    # write, and "scope": "system" in it made root's `--user --uninstall` remove the system service
    backend = choose_backend(args, root, data["backend"])
    if probe.user_scope and not (backend.caps.user_scope or backend.caps.own_account):
        raise UserError(
            f"the manifest {probe.target(mf.manifest_path(probe))} names the {backend.name} backend, "
            "which installs no user services",
            hint="it was changed since it was written; remove the user's files by hand",
        )
    spec = build_spec(
        name=args.name,
        scope=probe.scope,
        root=root,
        executable=data["executable"],
        config=data["config"],
        run_as=data.get("run_as"),
    )
    return spec, backend


def check_privileges(spec: ServiceSpec, backend: base.Backend, args: argparse.Namespace) -> None:
    if args.dry_run or spec.user_scope or spec.offline_root or os.geteuid() == 0:
        return
    if backend.caps.own_account and not args.run_as:
        return
    raise UserError(
        f"installing a system service ({backend.name}) needs root",
        hint="run it with sudo, or use --user (systemd) / --init cron for your own account",
    )


def print_detection(det: detect.Detection, as_json: bool) -> int:
    if as_json:
        print(json.dumps(det.to_json(), indent=2))
        return 0
    state = det.init if det.live else f"offline (installed: {det.target or 'none'})"
    print(f"init system: {state}")
    print(f"registrar:   {det.registrar or '-'}")
    print(f"distribution: {det.distro_id or 'unknown'} {det.distro_version} (like: {det.distro_like or '-'})")
    for line in det.evidence:
        print(f"  evidence: {line}")
    return 0


def print_json_or_text(data: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            if key != "notes":
                print(f"{key}: {value}")
        for note in data.get("notes", []):
            print(f"note: {note}")
    return 0


# A dry run's text says what each file would go through: nothing was created or removed. (--json keeps the
# state the file would end in, next to "dry_run": true, so a script reads one vocabulary in both.)
WOULD = {
    "created": "would create",
    "updated": "would update",
    "replaced": "would replace",
    "removed": "would remove",
    "restored": "would restore",
    "kept": "would keep",
}


def print_outcome(out: apply.Outcome, as_json: bool) -> int:
    if as_json:
        print(json.dumps(out.to_json(), indent=2))
        return 0
    where = "live" if out.live else "offline"
    verb = "would " + out.action if out.dry_run else out.action
    print(f"{PROG}: {verb} {out.name} with {out.backend} ({where})")
    states = [(path, WOULD.get(state, state) if out.dry_run else state) for path, state in out.files]
    width = max([10, *(len(state) for _, state in states)])
    for path, state in states:
        print(f"  {state:<{width}} {path}")
    for line in out.ran:
        print(f"  {'would run' if out.dry_run else 'ran'}: {line}")
    if out.verified:
        print(f"  verified: {out.name} is running")
    for note in out.notes:
        print(f"  note: {note}")
    for line in out.kept:
        print(f"  {'would keep' if out.dry_run else 'kept'}: {line}")
    if out.remove_kept:
        print(f"remove what {'would be' if out.dry_run else 'was'} kept with: {out.remove_kept}")
    if out.action == "install" and not out.changed:
        print(f"{PROG}: unchanged: {out.name} is installed as asked")
    if out.undo:
        print(f"undo with: {out.undo}")
    return 0


if __name__ == "__main__":
    console()
