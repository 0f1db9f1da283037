"""systemd: a unit in /etc/systemd/system (or ~/.config/systemd/user with --user), Type=notify on
``taskserver run``. Live: registered over D-Bus with pystemd when importable (system scope), else with
``systemctl``. Offline: ``systemctl --root=DIR enable`` writes the enable links; nothing is started."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import detect
from ..manifest import fs, home_owner
from ..render import render
from ..safefs import Tree
from ..spec import ServiceSpec, config_writable
from .base import Action, Backend, Capabilities, FileSpec, Found, Registered, cmd, instance_dir, links_to

if TYPE_CHECKING:
    from ..detect import Detection, Facts

log = logging.getLogger("taskserver.installer")


class Systemd(Backend):
    name = "systemd"
    detect_order = 10
    registrars = ("pystemd", "systemctl")
    caps = Capabilities(user_scope=True, supervision=True, presets=True)

    @classmethod
    def running(cls, facts: Facts) -> Found:
        if detect.is_dir(facts.root, "run/systemd/system"):
            facts.ev.append("/run/systemd/system exists: systemd is running (sd_booted)")
            return cls.name, detect.systemd_registrar(facts.ev)
        return None

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        if detect.which(facts.root, "systemctl"):
            facts.ev.append("systemd is installed (systemctl present)")
            return True
        return False

    @classmethod
    def find_registrar(cls, facts: Facts) -> str | None:
        return "systemctl"  # offline: `systemctl --root` writes the links; D-Bus needs a running systemd

    @classmethod
    def live_here(cls, det: Detection, root: Path, user_scope: bool) -> bool:
        if not super().live_here(det, root, user_scope):
            return False
        if not user_scope:
            return True
        # the user's own manager must be reachable, else only the files and links are written
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        return bool(xdg) and Path(xdg, "systemd", "private").exists()

    def prepare(self, spec: ServiceSpec) -> ServiceSpec:
        # ProtectSystem=strict: what the config makes the daemon write must be in ReadWritePaths=
        return replace(spec, writable_paths=spec.writable_paths + config_writable(spec))

    def state_dir(self, spec: ServiceSpec) -> Path:
        if spec.user_scope:  # no StateDirectory= in a user unit: the daemon's own default
            return instance_dir(spec.home / ".local" / "state" / "taskserver", spec)
        return Path("/var/lib") / spec.name

    def preset(self, spec: ServiceSpec) -> list[Action]:
        return [self._ctl(spec, "preset", self.unit_name(spec))]

    def unit_name(self, spec: ServiceSpec) -> str:
        return f"{spec.name}.service"

    def unit_dir(self, spec: ServiceSpec) -> Path:
        if spec.user_scope:
            return spec.home / ".config" / "systemd" / "user"
        return Path("/etc/systemd/system")

    def unit_path(self, spec: ServiceSpec) -> Path:
        return self.unit_dir(spec) / self.unit_name(spec)

    def wants_link(self, spec: ServiceSpec) -> Path:
        target = "default.target" if spec.user_scope else "multi-user.target"
        return self.unit_dir(spec) / f"{target}.wants" / self.unit_name(spec)

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        writable = [*spec.writable_paths]
        if spec.working_dir and spec.working_dir not in writable:
            writable.append(spec.working_dir)
        text = render(
            spec,
            "systemd/taskserver.service.j2",
            exec_start=[spec.executable, "-c", spec.config, "run"],
            reload_cmd=["/bin/kill"],
            writable=writable,
        )
        return [FileSpec(self.unit_path(spec), text, 0o644)]

    def notes(self, spec: ServiceSpec) -> list[str]:
        if not spec.user_scope:
            return []
        user = spec.home.name if spec.run_as is None else spec.run_as.user
        user = os.environ.get("USER", user) if spec.run_as is None else user
        if Tree(spec.root).stat(Path("/var/lib/systemd/linger") / user) is None:  # the target's, not ours
            return [
                f"linger is off for {user}: the unit starts only while {user} is logged in; to start it at "
                f"boot run: loginctl enable-linger {user}"
            ]
        return []

    # --- commands -----------------------------------------------------------------------------------
    def _ctl(self, spec: ServiceSpec, *args: str, check: bool = True) -> Action:
        base = ["systemctl"]
        owner = home_owner(spec) if not spec.offline_root else None
        if owner is not None:
            # root acting in another user's home: `systemctl --user` follows that user's symlinks, so it
            # runs as them (a link planted in ~/.config/systemd/user must not make root write elsewhere)
            base = ["setpriv", f"--reuid={owner[0]}", f"--regid={owner[1]}", "--init-groups", "--", *base]
        if spec.user_scope:
            base.append("--user")
        if not self.live or spec.offline_root:
            base.append(f"--root={spec.root}")
        return cmd([*base, *args], check=check)

    def _dbus(self, spec: ServiceSpec) -> bool:
        return (
            self.live
            and not spec.user_scope
            and self.registrar == "pystemd"
            and importlib.util.find_spec("pystemd") is not None
        )

    def reload(self, spec: ServiceSpec) -> list[Action]:
        if not self.live:
            return []
        if self._dbus(spec):
            return [
                Action("D-Bus: org.freedesktop.systemd1.Manager.Reload()", lambda: _manager_call("Reload"))
            ]
        return [self._ctl(spec, "daemon-reload")]

    def _link_user_unit(self, spec: ServiceSpec) -> None:
        # through the manifest's file access: resolved inside the tree, chowned only what it creates
        link, files = self.wants_link(spec), fs(spec)
        files.makedirs(link.parent)
        st = files.lstat(link)
        if st is None or not stat.S_ISLNK(st.st_mode):
            files.symlink(f"../{self.unit_name(spec)}", link)

    def _unlink_user_unit(self, spec: ServiceSpec) -> None:
        link, files = self.wants_link(spec), fs(spec)
        if not links_to(files.readlink(link), link, self.unit_path(spec)):
            return  # not the link enable made (an admin pointed it at another unit)
        files.unlink(link)
        with contextlib.suppress(OSError):  # not empty (other units' links), or gone
            files.rmdir(link.parent)

    def keep_registration(self, spec: ServiceSpec, reverse: Callable[[], None]) -> Callable[[], None]:
        """`systemctl enable` makes a ``.wants`` directory before the link in it: when the link then fails
        (no inode left), `disable` finds no link and leaves the directory. The undo runs the reverse steps
        and then removes every such directory that was not there before, when empty."""
        files, unit_dir = fs(spec), self.unit_dir(spec)
        listed = files.listdir(unit_dir)
        had = set(listed[1]) if listed is not None else set()

        def put_back() -> None:
            reverse()
            now = files.listdir(unit_dir)
            for name in sorted(set(now[1] if now is not None else []) - had):
                if name.endswith((".wants", ".requires", ".upholds")):
                    with contextlib.suppress(OSError):  # not empty: another unit's links are in it now
                        files.rmdir(unit_dir / name)

        return put_back

    def enable(self, spec: ServiceSpec) -> list[Action]:
        unit = self.unit_name(spec)
        if spec.user_scope and spec.offline_root:
            # `systemctl --user --root=DIR` refuses to work ("Invalid argument"); the WantedBy= link is
            # all that `enable` would create for a user unit.
            link = spec.target(self.wants_link(spec))
            return [Action(f"ln -s ../{unit} {link}", lambda: self._link_user_unit(spec))]
        if self._dbus(spec):
            return [
                Action(
                    f"D-Bus: EnableUnitFiles([{unit}], runtime=false, force=true)",
                    lambda: _manager_call("EnableUnitFiles", [unit.encode()], False, True),
                )
            ]
        return [self._ctl(spec, "enable", unit)]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        unit = self.unit_name(spec)
        if spec.user_scope and spec.offline_root:
            link = spec.target(self.wants_link(spec))
            return [Action(f"rm {link}", lambda: self._unlink_user_unit(spec))]
        if self._dbus(spec):
            return [
                Action(
                    f"D-Bus: DisableUnitFiles([{unit}], runtime=false)",
                    lambda: _manager_call("DisableUnitFiles", [unit.encode()], False),
                )
            ]
        return [self._ctl(spec, "disable", unit)]

    def start(self, spec: ServiceSpec) -> list[Action]:
        if not self.live:
            return []
        unit = self.unit_name(spec)
        if self._dbus(spec):
            return [Action(f"D-Bus: StartUnit({unit}, replace)", lambda: _unit_job("StartUnit", unit))]
        return [self._ctl(spec, "start", unit)]

    def stop(self, spec: ServiceSpec) -> list[Action]:
        if not self.live:
            return []
        unit = self.unit_name(spec)
        if self._dbus(spec):
            return [Action(f"D-Bus: StopUnit({unit}, replace)", lambda: _unit_job("StopUnit", unit))]
        return [self._ctl(spec, "stop", unit, check=False)]

    def restart(self, spec: ServiceSpec) -> list[Action]:
        if not self.live:
            return []
        unit = self.unit_name(spec)
        if self._dbus(spec):
            return [Action(f"D-Bus: RestartUnit({unit}, replace)", lambda: _unit_job("RestartUnit", unit))]
        return [self._ctl(spec, "restart", unit)]

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        return self._foreign_link(spec, self.wants_link(spec), self.unit_path(spec))

    # --- queries ------------------------------------------------------------------------------------
    def is_enabled(self, spec: ServiceSpec) -> bool:
        # The WantedBy= link is what `enable` creates and `disable` removes, live or offline alike.
        st = fs(spec).lstat(self.wants_link(spec))
        return st is not None and stat.S_ISLNK(st.st_mode)

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        res = self._ctl(spec, "is-active", self.unit_name(spec), check=False).run()
        return getattr(res, "stdout", "").strip() in ("active", "reloading")


def _manager_call(method: str, *args: object) -> object:
    from pystemd.systemd1 import Manager  # noqa: PLC0415 - optional dependency, imported when used

    with Manager() as manager:
        return getattr(manager.Manager, method)(*args)


def _unit_job(method: str, unit: str) -> object:
    """Queue a start/stop/restart job and wait until systemd finished it (like `systemctl start`)."""
    from pystemd.systemd1 import Unit  # noqa: PLC0415 - optional dependency, imported when used

    _manager_call(method, unit.encode(), b"replace")
    with Unit(unit.encode()) as u:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = u.Unit.ActiveState
            if state not in (b"activating", b"deactivating", b"reloading"):
                return state
            time.sleep(0.2)
    return None
