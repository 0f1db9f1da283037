"""OpenRC: an ``openrc-run`` script /etc/init.d/NAME whose ``supervise-daemon`` runs the foreground daemon and
starts it again whenever it exits (``command_user`` is ``--run-as``), registered in the default runlevel with
``rc-update add NAME default`` and controlled with ``rc-service``. Live when OpenRC runs (``/run/openrc/
softlevel``); offline (``--root``, an image) the runlevel link is made directly, as rc-update makes it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runtime.errors import UserError
from .. import detect
from ..manifest import fs
from ..render import render, sh
from ..spec import ServiceSpec
from .base import Action, Backend, Capabilities, FileSpec, Found, Registered, cmd, links_to

if TYPE_CHECKING:
    from ..detect import Facts

RUNLEVEL = "default"


class OpenRC(Backend):
    name = "openrc"
    detect_order = 30
    registrars = ("rc-update",)
    caps = Capabilities(supervision=True)

    @classmethod
    def running(cls, facts: Facts) -> Found:
        if facts.comm in ("init", "openrc-init") and detect.exists(facts.root, "run/openrc/softlevel"):
            facts.ev.append("/run/openrc/softlevel exists: OpenRC is running")
            return cls.name, "rc-update"
        return None

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        if detect.which(facts.root, "openrc") or detect.which(facts.root, "rc-update"):
            facts.ev.append("OpenRC is installed (openrc or rc-update present)")
            return True
        return False

    def script(self, spec: ServiceSpec) -> Path:
        return Path("/etc/init.d") / spec.name

    def link(self, spec: ServiceSpec) -> Path:
        return Path("/etc/runlevels") / RUNLEVEL / spec.name

    def logs(self, spec: ServiceSpec) -> list[Path]:
        return [Path("/var/log") / f"{spec.name}.log"]

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        owner = ""
        if spec.run_as is not None:
            owner = " --owner " + sh(f"{spec.run_as.user}:{spec.run_as.group or spec.run_as.user}")
        text = render(
            spec,
            "openrc/taskserver.initd.j2",
            exec_args=["-c", spec.config, "run"],
            log=self.logs(spec)[0],
            owner_opt=owner,
        )
        return [FileSpec(self.script(spec), text, 0o755)]

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []  # openrc-run reads the script at every call

    def _link(self, spec: ServiceSpec) -> None:
        link, files = self.link(spec), fs(spec)
        if not files.is_dir(link.parent):
            raise UserError(
                f"no OpenRC runlevel {RUNLEVEL!r} in {spec.root} ({link.parent} is missing)",
                hint="is OpenRC installed there? (Debian: apt-get install openrc)",
            )
        if not self.is_enabled(spec):
            files.symlink(str(self.script(spec)), link)  # absolute, as rc-update makes it

    def enable(self, spec: ServiceSpec) -> list[Action]:
        if self.live:
            return [cmd(["rc-update", "add", spec.name, RUNLEVEL])]
        link = spec.target(self.link(spec))
        return [Action(f"ln -s {self.script(spec)} {link}", lambda: self._link(spec))]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        if self.live:
            return [cmd(["rc-update", "del", spec.name, RUNLEVEL], check=False)]
        link = self.link(spec)
        what = f"rm {spec.target(link)}  (when it leads to {self.script(spec)})"
        return [Action(what, lambda: self._unlink(spec))]

    def _unlink(self, spec: ServiceSpec) -> None:
        link, files = self.link(spec), fs(spec)
        if links_to(files.readlink(link), link, self.script(spec)):  # one an admin pointed elsewhere stays
            files.unlink(link)

    def after_remove(self, spec: ServiceSpec) -> list[Action]:
        # OpenRC caches every script's dependencies (deptree) and redoes the cache only when a file in
        # /etc/init.d is newer than it, by whole seconds: a script removed within the second of the
        # cache's last update stayed in it. `rc-update --update` redoes it now.
        return [cmd(["rc-update", "--update"], check=False)] if self.live else []

    def start(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "start"])] if self.live else []

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "stop"], check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "restart"])] if self.live else []

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        return self._foreign_link(spec, self.link(spec), self.script(spec))

    def is_enabled(self, spec: ServiceSpec) -> bool:
        st = fs(spec).lstat(self.link(spec))
        return st is not None and stat.S_ISLNK(st.st_mode)

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        if fs(spec).lstat(self.script(spec)) is None:
            return False
        res = cmd(["rc-service", spec.name, "status"], check=False).run()
        return getattr(res, "returncode", 3) == 0 and _child_alive(spec.name)


def _child_alive(name: str) -> bool:
    """supervise-daemon answers `status` with "started" while it starts again, every respawn_delay, a
    daemon that exits at once: the install's check took such a daemon for running. The child it started
    last (OpenRC keeps its pid as the service's ``child_pid``) must be alive too; an OpenRC that keeps no
    such record is taken at its word."""
    try:
        pid = int(Path(f"/run/openrc/options/{name}/child_pid").read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    try:  # the state after the command name, which may itself hold ") "
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # exited, not yet reaped by supervise-daemon
