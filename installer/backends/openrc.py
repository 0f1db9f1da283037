"""OpenRC: an ``openrc-run`` script /etc/init.d/NAME whose ``supervise-daemon`` runs the foreground daemon and
starts it again whenever it exits (``command_user`` is ``--run-as``), registered in the default runlevel with
``rc-update add NAME default`` and controlled with ``rc-service``. Live when OpenRC runs (``/run/openrc/
softlevel``); offline (``--root``, an image) the runlevel link is made directly, as rc-update makes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...runtime.errors import UserError
from .. import detect
from ..render import render, sh
from ..spec import ServiceSpec
from .base import Action, Backend, Capabilities, FileSpec, Found, cmd

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
        if facts.comm in ("init", "openrc-init") and (facts.root / "run/openrc/softlevel").exists():
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
        link = spec.target(self.link(spec))
        if not link.parent.is_dir():
            raise UserError(
                f"no OpenRC runlevel {RUNLEVEL!r} in {spec.root} ({self.link(spec).parent} is missing)",
                hint="is OpenRC installed there? (Debian: apt-get install openrc)",
            )
        if not link.is_symlink():
            os.symlink(self.script(spec), link)  # absolute, as rc-update makes it

    def enable(self, spec: ServiceSpec) -> list[Action]:
        if self.live:
            return [cmd(["rc-update", "add", spec.name, RUNLEVEL])]
        link = spec.target(self.link(spec))
        return [Action(f"ln -s {self.script(spec)} {link}", lambda: self._link(spec))]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        if self.live:
            return [cmd(["rc-update", "del", spec.name, RUNLEVEL], check=False)]
        link = spec.target(self.link(spec))
        return [Action(f"rm {link}", lambda: link.unlink(missing_ok=True))]

    def start(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "start"])] if self.live else []

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "stop"], check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["rc-service", spec.name, "restart"])] if self.live else []

    def is_enabled(self, spec: ServiceSpec) -> bool:
        return spec.target(self.link(spec)).is_symlink()

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        if not spec.target(self.script(spec)).exists():
            return False
        res = cmd(["rc-service", spec.name, "status"], check=False).run()
        return getattr(res, "returncode", 3) == 0
