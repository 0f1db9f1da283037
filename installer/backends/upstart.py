"""upstart: a job file /etc/init/NAME.conf that execs the foreground daemon (respawn with a limit);
``initctl reload-configuration`` and ``initctl start`` when upstart runs. The job file itself is the boot
registration; an admin disables it with /etc/init/NAME.override containing ``manual``."""

from __future__ import annotations

from pathlib import Path

from ..render import render
from ..spec import ServiceSpec
from .base import Action, Backend, FileSpec, cmd


class Upstart(Backend):
    name = "upstart"

    def job(self, spec: ServiceSpec) -> Path:
        return Path("/etc/init") / f"{spec.name}.conf"

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        text = render(
            spec, "upstart/taskserver.conf.j2", exec_start=[spec.executable, "-c", spec.config, "run"]
        )
        return [FileSpec(self.job(spec), text, 0o644)]

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["initctl", "reload-configuration"])] if self.live else []

    def enable(self, spec: ServiceSpec) -> list[Action]:
        return []  # the job file's `start on` is the registration

    def disable(self, spec: ServiceSpec) -> list[Action]:
        return []

    def start(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["initctl", "start", spec.name])] if self.live else []

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["initctl", "stop", spec.name], check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [*self.stop(spec), *self.start(spec)]

    def is_enabled(self, spec: ServiceSpec) -> bool:
        override = spec.target(Path("/etc/init") / f"{spec.name}.override")
        if override.exists() and "manual" in override.read_text(errors="replace").split():
            return False
        return spec.target(self.job(spec)).exists()

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        res = cmd(["initctl", "status", spec.name], check=False).run()
        return "start/running" in getattr(res, "stdout", "")
