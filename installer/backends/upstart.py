"""upstart: a job file /etc/init/NAME.conf that execs the foreground daemon (respawn with a limit);
the daemon starts as root and drops to the config's ``run_as`` itself (upstart's ``setuid`` would apply to
every job process, pre-start too, so nothing could prepare a pid-file directory for a non-root daemon);
``initctl reload-configuration`` and ``initctl start`` when upstart runs. The job file itself is the boot
registration; disabled means /etc/init/NAME.override holds a ``manual`` line (upstart's own switch, which
an admin uses too): ``disable`` adds that line, ``enable`` and uninstall take it out again, keeping any other
stanzas an admin put into the override."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runtime.errors import UserError
from .. import detect
from .. import manifest as mf
from ..render import render
from ..spec import ServiceSpec
from .base import Action, Backend, Capabilities, FileSpec, Found, Plan, cmd, instance_dir

if TYPE_CHECKING:
    from ..detect import Facts

MANUAL = "manual"


class Upstart(Backend):
    name = "upstart"
    detect_order = 20
    registrars = ("initctl",)
    caps = Capabilities(supervision=True, run_as_by_daemon=True)

    @classmethod
    def running(cls, facts: Facts) -> Found:
        if not detect.upstart_runs(facts):
            return None
        if detect.upstart_on_rhel(facts):
            facts.ev.append("RHEL-family upstart runs the SysV rc scripts: registering an init script")
            return "sysv", detect.sysv_registrar(facts.root, facts.did, facts.like, facts.ev)
        return cls.name, "initctl"

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        if detect.which(facts.root, "initctl") and detect.is_dir(facts.root, "etc/init"):
            facts.ev.append("upstart is installed (initctl and /etc/init)")
            return True
        return False

    def state_dir(self, spec: ServiceSpec) -> Path:
        return instance_dir(Path("/var/lib/taskserver"), spec)  # the daemon's own default as root

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

    def _linked(self, spec: ServiceSpec, strict: bool) -> bool:
        """An override that is a symbolic link is an admin's file kept elsewhere: never written through or
        replaced. Changing it is refused (``strict``: install's --enable/--no-enable) or left (uninstall)."""
        link = mf.fs(spec).readlink(self.override(spec))
        if link is not None and strict:
            raise UserError(
                f"{self.override(spec)} is a symbolic link (to {link}), an admin's file: not changing it",
                hint=f"add or remove its '{MANUAL}' line by hand (it disables {spec.name} at boot)",
                exit_code=1,
            )
        return link is not None

    def _manual_out(self, spec: ServiceSpec, strict: bool) -> None:
        lines = self._lines(spec)
        if lines is None or MANUAL not in (line.strip() for line in lines) or self._linked(spec, strict):
            return
        kept = [line for line in lines if line.strip() != MANUAL]
        if kept:
            mf.fs(spec).write(self.override(spec), ("\n".join(kept) + "\n").encode(), 0o644)
        else:
            mf.fs(spec).unlink(self.override(spec))

    def keep_registration(self, spec: ServiceSpec, reverse: Callable[[], None]) -> Callable[[], None]:
        """The override is an admin's file too (its other stanzas, where the `manual` line stood): a rollback
        writes back its bytes and mode, or removes the one enable or disable made; a link is never written."""
        files, path = mf.fs(spec), self.override(spec)
        if files.readlink(path) is not None:
            return lambda: None
        before = files.read(path)
        st = files.lstat(path) if before is not None else None
        mode = st.st_mode & 0o7777 if st is not None else 0o644

        def put_back() -> None:
            if files.read(path) == before:
                return
            if before is None:
                files.unlink(path)
            else:
                files.write(path, before, mode)

        return put_back

    def enable(self, spec: ServiceSpec) -> list[Action]:
        """The job file's `start on` registers it; enabling = no `manual` line in the override."""
        return [Action(f"remove '{MANUAL}' from {self.override(spec)}", lambda: self._manual_out(spec, True))]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        path = self.override(spec)

        def run() -> None:
            lines = self._lines(spec) or []
            if MANUAL not in (line.strip() for line in lines) and not self._linked(spec, True):
                mf.fs(spec).write(path, ("\n".join([*lines, MANUAL]) + "\n").encode(), 0o644)

        return [Action(f"write '{MANUAL}' into {self.override(spec)}", run)]

    def plan_uninstall(self, spec: ServiceSpec, manifest: dict[str, Any]) -> Plan:
        """Stop, then take our `manual` line out again (an override naming a removed job is our leftover),
        unless the override is a link (an admin's file elsewhere)."""
        what = f"remove '{MANUAL}' from {self.override(spec)}  (not a symbolic link: an admin's)"
        return Plan(
            backend=self.name,
            start=tuple(self.stop(spec)) if self.live else (),
            enable=(Action(what, lambda: self._manual_out(spec, False)),),
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
