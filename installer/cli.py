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
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError, run_command
from . import apply, detect
from . import manifest as mf
from .backends import base
from .spec import (
    SYSTEM,
    USER,
    ServiceSpec,
    build_spec,
    check_abs,
    check_run_as_in_config,
    config_writable,
)

PROG = "taskserver-install"
INITS = ("systemd", "sysv", "upstart", "cron")
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
    mode.add_argument("--uninstall", action="store_true", help="stop, disable and remove what was installed")
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
    p.add_argument("--init", help="init system to install for: " + ", ".join(INITS) + " (default: detected)")
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
        "--force", action="store_true", help="replace boot files an admin changed (without it: show the diff)"
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
    root = Path(os.path.abspath(args.root))
    if not root.is_dir():
        raise UserError(f"--root {args.root}: not a directory", hint="create the tree first")
    if args.detect:
        return print_detection(detect.detect(root), args.json)
    if args.status:
        return print_json_or_text(status(args, root), args.json)
    if args.uninstall:
        spec, backend = from_manifest(args, root)
        check_privileges(spec, backend, args)
        return print_outcome(apply.uninstall(spec, backend, dry_run=args.dry_run), args.json)
    spec, backend = resolve(args, root)
    check_privileges(spec, backend, args)
    out = apply.install(
        spec, backend, force=args.force, dry_run=args.dry_run, enable=args.enable, start=not args.no_start
    )
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
            hint="pick one with --init " + "|".join(INITS),
        )
    base.load_all()
    if init is None and name not in base.Backend.registry:
        raise UserError(
            f"{name} runs here, but taskserver-install has no {name} backend yet",
            hint="pick one explicitly: --init " + "|".join(INITS) + " (cron works on any host with cron)",
        )
    cls = base.get(name)
    live = det.live and det.init == name and root == Path("/")
    if name == "cron":
        live = root == Path("/")
    if live and name == "systemd" and args.user:
        # the user's own manager must be reachable, else only the files and links are written
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        live = bool(xdg) and Path(xdg, "systemd", "private").exists()
    registrar = det.registrar if det.target == name else None
    if name == "sysv" and registrar is None:
        registrar = detect.sysv_registrar(root, det.distro_id, det.distro_like, [])
    return cls(live=live, registrar=registrar)


def resolve(args: argparse.Namespace, root: Path) -> tuple[ServiceSpec, base.Backend]:
    if args.init is not None and args.init not in INITS and args.init not in ("openrc", "runit"):
        raise UserError(f"unknown init system {args.init!r}", hint="use --init " + "|".join(INITS))
    backend = choose_backend(args, root, args.init)
    if args.user and not backend.supports_user_scope:
        raise UserError(
            f"--user works only with systemd, not {backend.name}",
            hint="drop --user, or use --init systemd --user (or --init cron without root)",
        )
    if args.user and args.run_as:
        # a user manager cannot switch users: User= in a user unit fails at every start (216/GROUP)
        raise UserError(
            "--run-as does not apply with --user: a user unit runs as the user who owns it",
            hint="drop --run-as (install as that user), or drop --user for a system service run as it",
        )
    executable = args.executable
    if executable is not None:
        exe = root / check_abs("--executable", executable).relative_to("/")
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise UserError(
                f"--executable {executable}: not an executable file", hint="give the installed path"
            )
    # cron belongs to a user: without root the manifest and default config are the caller's own
    own_cron = backend.name == "cron" and os.geteuid() != 0
    spec = build_spec(
        name=args.name,
        config=args.config,
        scope=USER if args.user or own_cron else SYSTEM,
        run_as=args.run_as,
        root=root,
        executable=executable,
        working_dir=args.workdir,
        env_file=args.env_file,
        writable_paths=tuple(args.writable),
        watchdog=getattr(args, "watchdog", None),
    )
    if backend.name == "systemd":
        spec = replace(spec, writable_paths=spec.writable_paths + config_writable(spec))
    if backend.name == "sysv":
        check_run_as_in_config(spec)
    return spec, backend


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
        return apply.status(*from_manifest(args, root))
    return {
        "name": args.name,
        "backend": None,
        "installed": False,
        "enabled": False,
        "running": False,
        "files_changed": [],
        "manifest": str(mf.manifest_path(probes[0])),
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
    spec = build_spec(
        name=args.name,
        scope=data.get("scope", probes[0].scope),
        root=root,
        executable=data["executable"],
        config=data["config"],
        run_as=data.get("run_as"),
    )
    return spec, choose_backend(args, root, data["backend"])


def check_privileges(spec: ServiceSpec, backend: base.Backend, args: argparse.Namespace) -> None:
    if args.dry_run or spec.user_scope or spec.offline_root or os.geteuid() == 0:
        return
    if backend.name == "cron" and not args.run_as:
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
            print(f"{key}: {value}")
    return 0


def print_outcome(out: apply.Outcome, as_json: bool) -> int:
    if as_json:
        print(json.dumps(out.to_json(), indent=2))
        return 0
    where = "live" if out.live else "offline"
    verb = "would " + out.action if out.dry_run else out.action
    print(f"{PROG}: {verb} {out.name} with {out.backend} ({where})")
    for path, state in out.files:
        print(f"  {state:<10} {path}")
    for line in out.ran:
        print(f"  {'would run' if out.dry_run else 'ran'}: {line}")
    if out.verified:
        print(f"  verified: {out.name} is running")
    for note in out.notes:
        print(f"  note: {note}")
    if out.action == "install" and not out.changed:
        print(f"{PROG}: unchanged: {out.name} is installed as asked")
    if out.undo:
        print(f"undo with: {out.undo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
