"""Package maintainer-script hooks: what dpkg's and rpm's script arguments mean for the service.

``taskserver-install --maintscript deb postinst configure 0.1.0-1`` (or ``rpm post 2``) decides which steps
the package operation needs (``decide``, a pure table) and carries them out with the installer's own
backends (``carry_out``). The table follows the behaviour of debhelper's snippets (dh_installsystemd,
dh_installinit, deb-systemd-helper's was-enabled, deb-systemd-invoke/invoke-rc.d with policy-rc.d) and of
RPM's %systemd_post/%systemd_preun/%systemd_postun_with_restart:

- an admin's enable/disable survives upgrades and a remove + reinstall (kept in ``<name>.maint.json`` beside
  the install manifest until purge); a first install is enabled;
- upgrades restart the service only when it runs; it is never stopped before an upgrade (debhelper's
  restart-after-upgrade default), so a package upgrade is one restart;
- starting, restarting and stopping are skipped with a one-line note when no init system runs (chroot, image
  build), when ``DPKG_ROOT`` is set, or when ``/usr/sbin/policy-rc.d`` answers 101; a failed start or stop
  is reported on stderr and does not fail the package operation (debhelper's ``|| true``).

dpkg runs ``postrm`` (and rpm ``%postun``) after the package's files are gone, so a package whose payload
holds this tool cannot call it there: the deb ``prerm remove`` therefore also disables the service and
removes its boot files, and ``postrm purge`` falls back to the shell lines ``--emit-maintscripts`` renders
from ``purge_paths`` (see ``maintsnippets``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..runtime.errors import UserError
from . import apply, cli, maintsnippets, proc, remove, theirs
from . import manifest as mf
from .backends import base
from .backends.base import FileSpec
from .spec import SYSTEM, ServiceSpec, build_spec, check_value

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
POLICY_FORBIDDEN = 101
START_CHECK_SECONDS = 5.0
DONE = {"start": "started", "restart": "restarted", "stop": "stopped"}


class Step(StrEnum):
    WRITE = "write boot files; keep the admin's enabled/disabled choice (first install: enable)"
    PRESET = "enable or not as systemd presets say (first rpm install)"
    START = "start if enabled"
    TRY_RESTART = "restart if running"
    STOP = "stop"
    REMOVE = "remember enabled/disabled, disable, remove boot files and manifest"
    PURGE = "remove state, runtime and data directories of the service"
    PURGE_CONFIG = "remove the configuration file"


S = Step
USAGE = {
    "deb": "deb postinst configure|abort-upgrade|abort-remove|abort-deconfigure [VERSION], "
    "deb prerm remove|upgrade|deconfigure|failed-upgrade ..., "
    "deb postrm remove|purge|upgrade|failed-upgrade|abort-install|abort-upgrade|disappear ...",
    "rpm": "rpm post N, rpm preun N, rpm postun N (N = number of versions installed after the operation)",
}


def _usage(fmt: str, what: str) -> UserError:
    return UserError(f"--maintscript {what}", hint=f"the arguments dpkg/rpm pass: {USAGE[fmt]}")


def decide(fmt: str, script: str, args: list[str]) -> tuple[Step, ...]:
    """The steps a maintainer script invocation needs; UserError (exit 2) for arguments no dpkg/rpm passes."""
    if fmt == "deb":
        return _decide_deb(script, args)
    if fmt == "rpm":
        return _decide_rpm(script, args)
    raise UserError(f"--maintscript: unknown package format {fmt!r}", hint="deb or rpm")


def _decide_deb(script: str, args: list[str]) -> tuple[Step, ...]:
    action = args[0] if args else ""
    old_version = args[1] if len(args) > 1 else ""
    table: dict[str, dict[str, tuple[Step, ...]]] = {
        "postinst": {
            # configure with the previously configured version = an upgrade (or a reconfigure)
            "configure": (S.WRITE, S.TRY_RESTART) if old_version else (S.WRITE, S.START),
            "abort-upgrade": (S.WRITE, S.TRY_RESTART),  # prerm upgrade stopped nothing: refresh if running
            "abort-deconfigure": (S.WRITE, S.TRY_RESTART),
            "abort-remove": (S.WRITE, S.START),  # prerm remove had stopped and unregistered it: undo that
            "triggered": (),
        },
        "prerm": {
            "remove": (S.STOP, S.REMOVE),
            "upgrade": (),  # restart-after-upgrade: the new postinst restarts it if it runs
            "deconfigure": (),
            "failed-upgrade": (),
        },
        "postrm": {
            "remove": (S.REMOVE,),
            "purge": (S.REMOVE, S.PURGE, S.PURGE_CONFIG),
            **dict.fromkeys(("upgrade", "failed-upgrade", "abort-install", "abort-upgrade", "disappear"), ()),
        },
    }
    if script not in table:
        raise _usage("deb", f"deb: unknown maintainer script {script!r} (postinst, prerm or postrm)")
    if action not in table[script]:
        raise _usage("deb", f"deb {script}: unknown action {action!r}")
    return table[script][action]


def _decide_rpm(script: str, args: list[str]) -> tuple[Step, ...]:
    if len(args) != 1 or not args[0].isdigit():
        raise _usage("rpm", f"rpm {script}: expected one count N, got {' '.join(args) or 'nothing'}")
    n = int(args[0])
    if script == "post":
        return (S.WRITE, S.PRESET, S.START) if n == 1 else (S.WRITE, S.TRY_RESTART)
    if script == "preun":
        # erase (N=0): rpm has no purge, and %postun runs after the payload is gone: clean up now,
        # keeping the configuration (as rpm keeps an edited %config file)
        return (S.STOP, S.REMOVE, S.PURGE) if n == 0 else ()
    if script == "postun":
        return (S.TRY_RESTART,) if n >= 1 else ()
    raise _usage("rpm", f"rpm: unknown scriptlet {script!r} (post, preun or postun)")


# --- carrying the steps out ----------------------------------------------------------------------------


@dataclass
class Context:
    spec: ServiceSpec
    backend: base.Backend
    no_live_reason: str | None  # why nothing may be started/stopped here (None: it may)
    args: argparse.Namespace
    root: Path
    reinstalled: bool = False  # WRITE found no manifest: `prerm remove` had taken the service out


def state_path(spec: ServiceSpec) -> Path:
    """Our record of the admin's enabled/disabled choice, beside the install manifest (target path)."""
    return mf.manifest_dir(spec) / f"{spec.name}.maint.json"


def _load_state(spec: ServiceSpec) -> dict[str, Any]:
    mf.check_dir(spec)  # beside the manifest: never through a link either
    try:  # through mf.fs: resolved inside a DPKG_ROOT tree, like the manifest beside it
        data = json.loads((mf.fs(spec).read(state_path(spec)) or b"{}").decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _state_file(spec: ServiceSpec, enabled: bool) -> FileSpec:
    mf.check_dir(spec)  # beside the manifest: never through a link either
    return FileSpec(state_path(spec), json.dumps({"enabled": enabled}) + "\n", 0o644)


def _save_state(spec: ServiceSpec, enabled: bool) -> None:
    f = _state_file(spec, enabled)
    files = mf.fs(spec)
    files.makedirs(f.path.parent)
    files.write(f.path, f.content.encode(), f.mode)


def _policy_forbids(ctx: Context, action: str) -> bool:
    """invoke-rc.d's rule: /usr/sbin/policy-rc.d NAME ACTION exiting 101 forbids the action."""
    if not (POLICY_RC_D.is_file() and os.access(POLICY_RC_D, os.X_OK)):
        return False
    res = proc.run([str(POLICY_RC_D), ctx.spec.name, action], check=False, timeout=30)
    return res.returncode == POLICY_FORBIDDEN


def _note(message: str) -> None:
    print(f"taskserver-install: {message}", flush=True)


def _warn(message: str) -> None:
    print(f"taskserver-install: warning: {message}", file=sys.stderr, flush=True)


def _may_act(ctx: Context, action: str) -> bool:
    if ctx.no_live_reason:
        _note(f"not running '{action}' for {ctx.spec.name}: {ctx.no_live_reason}")
        return False
    if _policy_forbids(ctx, action):
        _note(f"not running '{action}' for {ctx.spec.name}: {POLICY_RC_D} forbids it (exit 101)")
        return False
    return True


def _run_actions(ctx: Context, action: str, actions: list[base.Action]) -> bool:
    """Run live steps; a failure is reported on stderr and does not fail the package operation."""
    try:
        for act in actions:
            act()
    except UserError as err:
        _warn(f"{action} of {ctx.spec.name} failed: {err.message}")
        return False
    _note(f"{DONE[action]} {ctx.spec.name}")
    return True


def _check_started(ctx: Context) -> None:
    deadline = time.monotonic() + START_CHECK_SECONDS
    while not ctx.backend.is_active(ctx.spec):
        if time.monotonic() > deadline:
            _warn(f"{ctx.spec.name} was started but is not running; see its log")
            return
        time.sleep(0.2)


def _write(ctx: Context, preset: bool) -> None:
    spec, backend = ctx.spec, ctx.backend
    enable: bool | None = None  # apply.install: enable a first install, keep an admin's choice on re-install
    remembered = _load_state(spec).get("enabled")
    ctx.reinstalled = mf.load(spec) is None
    if ctx.reinstalled and isinstance(remembered, bool):
        enable = remembered  # reinstall after remove: the choice recorded then
    preset = preset and backend.caps.presets
    if preset:
        enable = False  # the init system's presets decide, below
    # the preset and the record of the choice are steps of the install: one that fails undoes them all
    out = apply.install(spec, backend, enable=enable, start=False, preset=preset,
                        records=lambda: [_state_file(spec, backend.is_enabled(spec))])
    for line in out.ran:
        _note(f"ran: {line}")


def _start(ctx: Context) -> None:
    if not ctx.backend.is_enabled(ctx.spec):
        _note(f"{ctx.spec.name} is disabled: not starting it")
        return
    if _may_act(ctx, "start") and _run_actions(ctx, "start", ctx.backend.start(ctx.spec)):
        _check_started(ctx)


def _try_restart(ctx: Context) -> None:
    if ctx.reinstalled:
        # dpkg passes the last configured version to a reinstall after `dpkg -r` too (the package stayed in
        # config-files state), but `prerm remove` had stopped the service: start it if enabled, as
        # deb-systemd-invoke's restart of a stopped, enabled unit does
        _start(ctx)
        return
    if ctx.no_live_reason is None and not ctx.backend.is_active(ctx.spec):
        return  # not running: nothing to restart (disabled and stopped stays so)
    if _may_act(ctx, "restart") and _run_actions(ctx, "restart", ctx.backend.restart(ctx.spec)):
        _check_started(ctx)


def _stop(ctx: Context) -> None:
    if ctx.no_live_reason is None and ctx.backend.is_active(ctx.spec) is False:
        return
    old = mf.load(ctx.spec)
    admins = theirs.not_ours(ctx.spec, ctx.backend, old) if old is not None else []
    if admins:  # an admin's own unit under the service's name: REMOVE leaves it, and it keeps running
        _note(f"not stopping {ctx.spec.name}: {admins[0].why}, an admin's")
        return
    if _may_act(ctx, "stop"):
        _run_actions(ctx, "stop", ctx.backend.stop(ctx.spec))


def _remove(ctx: Context) -> None:
    if mf.load(ctx.spec) is None:
        return
    spec, backend = cli.from_manifest(ctx.args, ctx.root)  # what was installed, for the init it was for
    _save_state(spec, backend.is_enabled(spec))
    # uninstall stops a live service; when stopping is not allowed here, unregister without live steps
    if ctx.no_live_reason or _policy_forbids(ctx, "stop"):
        backend = type(backend)(live=False, registrar=backend.registrar)
    out = remove.uninstall(spec, backend)
    for path, state in out.files:
        _note(f"{state}: {path}")


def purge_paths(spec: ServiceSpec, config: bool) -> list[Path]:
    """Everything of ours that outlives the boot files: our state, the daemon's state/runtime dirs, config."""
    paths = [state_path(spec), mf.manifest_path(spec), spec.state_dir, spec.runtime_dir]
    if config:
        paths.append(spec.config)
    return paths


def purge_dirs(spec: ServiceSpec, config: bool) -> list[Path]:
    """Directories purge removes only when nothing else is left in them."""
    return [mf.manifest_dir(spec), *([spec.config.parent] if config else [])]


def _purge(ctx: Context, config: bool) -> None:
    spec, files = ctx.spec, mf.fs(ctx.spec)  # resolved inside a DPKG_ROOT tree, never through its links
    mf.check_dir(spec)  # its record and manifest are removed there: not through a link to elsewhere
    for path in purge_paths(spec, config):
        link = files.readlink(path)
        if link is not None:  # kept elsewhere by the admin: removing the link would purge nothing
            _note(f"kept {path}: a symbolic link (to {link}), an admin's; remove it by hand")
        elif files.remove_tree(path):
            _note(f"purged {path}")
    for d in purge_dirs(spec, config):
        with contextlib.suppress(OSError):
            files.rmdir(d)  # only when empty: it may hold other services' files


def carry_out(ctx: Context, steps: tuple[Step, ...]) -> None:
    for step in steps:
        if step is S.WRITE:
            _write(ctx, preset=S.PRESET in steps)
        elif step is S.START:
            _start(ctx)
        elif step is S.TRY_RESTART:
            _try_restart(ctx)
        elif step is S.STOP:
            _stop(ctx)
        elif step is S.REMOVE:
            _remove(ctx)
        elif step is S.PURGE:
            _purge(ctx, config=S.PURGE_CONFIG in steps)


def _context(args: argparse.Namespace) -> Context:
    """Spec and backend as for a normal install; DPKG_ROOT (dpkg --root) makes the install offline."""
    dpkg_root = check_value("DPKG_ROOT", os.environ.get("DPKG_ROOT", ""))
    root = Path(os.path.abspath(dpkg_root or check_value("--root", args.root)))
    if args.executable is None and dpkg_root:
        # the tool runs from inside the tree; the boot files must name the path the target system sees
        exe = Path(sys.executable).parent / "taskserver"
        with contextlib.suppress(ValueError):
            args.executable = str(Path("/") / exe.relative_to(root))
    spec, backend = cli.resolve(args, root)
    reason = None
    if dpkg_root:
        reason = f"DPKG_ROOT is set ({dpkg_root}): installing into another root"
    elif not backend.live:
        reason = "no init system runs here (chroot or image build); it starts at the next boot"
    return Context(spec, backend, reason, args, root)


def main(fmt: str, script: str, rest: list[str], args: argparse.Namespace) -> int:
    """``--maintscript FORMAT SCRIPT ARGS...`` from ``installer.cli``.

    dpkg's and rpm's arguments never start with ``-``; options given after them (``--name X``), which
    argparse's REMAINDER handed over too, are parsed as if they had come first."""
    first_opt = next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))
    rest, options = rest[:first_opt], rest[first_opt:]
    if options:
        cli.build_parser().parse_args(options, namespace=args)
    steps = decide(fmt, script, rest)
    if args.user:
        raise UserError("--maintscript installs the system service; --user does not apply",
                        hint="drop --user: dpkg and rpm run maintainer scripts as root for the system")
    if args.json:
        # its output is dpkg's/rpm's log for a person to read; text that is not the JSON asked for would
        # break whatever parses it
        raise UserError("--maintscript prints notes for the package log; --json does not apply",
                        hint="drop --json (--status --json reports the service's state)")
    if not steps:
        return 0
    carry_out(_context(args), steps)
    return 0


def emit(fmt: str, args: argparse.Namespace) -> int:
    """``--emit-maintscripts deb|rpm``: print the snippets for a package's maintainer scripts."""
    if fmt not in ("deb", "rpm"):
        raise UserError(f"--emit-maintscripts: unknown package format {fmt!r}", hint="deb or rpm")
    venv = Path(sys.prefix)
    spec = build_spec(name=args.name, config=args.config, scope=SYSTEM, executable=venv / "bin/taskserver")
    purge, dirs = purge_paths(spec, True), purge_dirs(spec, True)
    if args.json:
        scripts = maintsnippets.sections(fmt, args, venv, purge, dirs)
        print(json.dumps({"format": fmt, "name": spec.name, "scripts": scripts}, indent=2))
        return 0
    print(maintsnippets.render(fmt, args, venv, purge, dirs), end="")
    return 0
