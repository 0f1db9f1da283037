"""upstart: a job file /etc/init/NAME.conf that execs the foreground daemon (respawn with a limit);
``initctl reload-configuration`` and ``initctl start`` when upstart runs. The job file itself is the boot
registration; disabled means /etc/init/NAME.override holds a ``manual`` line (upstart's own switch, which
an admin uses too): ``disable`` adds that line, ``enable`` and uninstall take it out again, keeping any other
stanzas an admin put into the override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import manifest as mf
from ..render import render
from ..spec import ServiceSpec
from .base import Action, Backend, FileSpec, Plan, cmd

MANUAL = "manual"


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

    def override(self, spec: ServiceSpec) -> Path:
        return Path("/etc/init") / f"{spec.name}.override"

    def _lines(self, spec: ServiceSpec) -> list[str] | None:
        data = mf.fs(spec).read(self.override(spec))
        return None if data is None else data.decode(errors="replace").splitlines()

    def enable(self, spec: ServiceSpec) -> list[Action]:
        """The job file's `start on` registers it; enabling = no `manual` line in the override."""
        path = self.override(spec)

        def run() -> None:
            lines = self._lines(spec)
            if lines is None or MANUAL not in (line.strip() for line in lines):
                return
            kept = [line for line in lines if line.strip() != MANUAL]
            if kept:
                mf.fs(spec).write(path, ("\n".join(kept) + "\n").encode(), 0o644)
            else:
                mf.fs(spec).unlink(path)

        return [Action(f"remove '{MANUAL}' from {self.override(spec)}", run)]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        path = self.override(spec)

        def run() -> None:
            lines = self._lines(spec) or []
            if MANUAL not in (line.strip() for line in lines):
                mf.fs(spec).write(path, ("\n".join([*lines, MANUAL]) + "\n").encode(), 0o644)

        return [Action(f"write '{MANUAL}' into {self.override(spec)}", run)]

    def plan_uninstall(self, spec: ServiceSpec, manifest: dict[str, Any]) -> Plan:
        """Stop, then take our `manual` line out again (an override naming a removed job is our leftover)."""
        return Plan(
            backend=self.name,
            start=tuple(self.stop(spec)) if self.live else (),
            enable=tuple(self.enable(spec)),
        )

    def start(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["initctl", "start", spec.name])] if self.live else []

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [cmd(["initctl", "stop", spec.name], check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [*self.stop(spec), *self.start(spec)]

    def is_enabled(self, spec: ServiceSpec) -> bool:
        lines = self._lines(spec) or []
        if MANUAL in (word for line in lines for word in line.split()):
            return False
        return mf.fs(spec).lstat(self.job(spec)) is not None

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        res = cmd(["initctl", "status", spec.name], check=False).run()
        return "start/running" in getattr(res, "stdout", "")
