"""cron, for hosts without a supervisor (webhosters): a crontab entry that runs
``taskserver -c CONFIG run --once --time-limit 55`` every minute. The entry is preceded by a comment naming
the instance; it is added and removed with ``crontab -l`` / ``crontab -`` and every other line of the
user's crontab is kept byte for byte."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runtime.errors import UserError
from .. import proc
from ..render import render
from ..spec import ServiceSpec
from .base import Action, Backend, Capabilities, FileSpec, Plan, Registered, instance_dir

if TYPE_CHECKING:
    from ..detect import Detection

MARK = "# taskserver-install: "


class Cron(Backend):
    name = "cron"
    detect_order = 100  # never detected as the init system: chosen with --init cron
    registrars = ("crontab",)
    caps = Capabilities(live_start=False, own_account=True, offline_root=False)

    @classmethod
    def live_here(cls, det: Detection, root: Path, user_scope: bool) -> bool:
        return root == Path("/")  # a cron daemon reads crontabs on any running system, whatever its init

    def state_dir(self, spec: ServiceSpec) -> Path:
        # the entry runs as the crontab's owner, with the daemon's own default state dir
        if spec.run_as is not None and spec.run_as.uid != 0:
            return instance_dir(spec.run_as.home / ".local" / "state" / "taskserver", spec)
        if spec.user_scope:
            return instance_dir(spec.home / ".local" / "state" / "taskserver", spec)
        return instance_dir(Path("/var/lib/taskserver"), spec)

    def user(self, spec: ServiceSpec) -> str | None:
        """The crontab's owner when it is not the caller's own (``crontab -u``)."""
        if spec.run_as and spec.run_as.uid != os.geteuid():
            return spec.run_as.user
        return None

    def _crontab(self, spec: ServiceSpec) -> list[str]:
        user = self.user(spec)
        return ["crontab", "-u", user] if user else ["crontab"]

    def block(self, spec: ServiceSpec) -> str:
        return render(
            spec,
            "cron/crontab.j2",
            exec_start=[spec.executable, "-c", spec.config, "run", "--once", "--time-limit", "55"],
        )

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        if spec.offline_root:
            raise UserError(
                "--init cron cannot install into --root: a crontab belongs to a running system's cron daemon",
                hint="run taskserver-install --init cron on the machine itself, as the crontab's owner",
            )
        return []

    def rendered(self, spec: ServiceSpec) -> list[FileSpec]:
        return [FileSpec(Path("/crontab"), self.block(spec))]  # a line of the owner's crontab, no file

    def plan_install(self, spec: ServiceSpec, *, enable: bool = True, start: bool = True) -> Plan:
        plan = super().plan_install(spec, enable=enable, start=start)
        owner = self.user(spec) or pwd.getpwuid(os.geteuid()).pw_name
        return replace(plan, extra={"crontab_user": owner, "entry": self.block(spec)})

    def read(self, spec: ServiceSpec) -> str:
        return self._current(spec) or ""

    def _current(self, spec: ServiceSpec) -> str | None:
        """The owner's crontab, or None when they have none (not even an empty one)."""
        res = proc.run([*self._crontab(spec), "-l"], check=False)
        if res.ok:
            return res.stdout
        if "no crontab" in res.stderr.lower():
            return None
        raise proc.CommandFailed(res)

    def keep_registration(self, spec: ServiceSpec, reverse: Callable[[], None]) -> Callable[[], None]:
        """Enabling rewrites the whole crontab (an entry of ours replaced, a missing newline added): a
        rollback writes back the text it had, or removes the crontab the owner did not have."""
        before = self._current(spec)

        def put_back() -> None:
            if self._current(spec) == before:
                return
            if before is None:
                proc.run([*self._crontab(spec), "-r"])
            else:
                self.write(spec, before)

        return put_back

    def without_ours(self, spec: ServiceSpec, text: str) -> str:
        """``text`` minus our marker line and the entry right after it."""
        lines = text.splitlines(keepends=True)
        out: list[str] = []
        skip = False
        for line in lines:
            if skip:
                skip = False
                continue
            if line.startswith(f"{MARK}{spec.name} "):
                skip = True
                continue
            out.append(line)
        return "".join(out)

    def changed_by_hand(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[str]:
        """Our marker line and the entry after it are the registration: edited since (another schedule, an
        option), they are the admin's, and uninstall leaves them."""
        entry = manifest.get("extra", {}).get("entry")
        if not isinstance(entry, str):
            return []
        lines = self.read(spec).splitlines(keepends=True)
        at = [i for i, line in enumerate(lines) if line.startswith(f"{MARK}{spec.name} ")]
        if at and "".join(lines[at[0] : at[0] + 2]).rstrip("\n") != entry.rstrip("\n"):
            return [f"the crontab's {spec.name} entry is not the one taskserver-install wrote"]
        return []

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        """The recorded entry as the crontab has it now: as written (nothing), edited after our marker line,
        kept without the marker (both the admin's now), or gone."""
        entry = manifest.get("extra", {}).get("entry")
        if not isinstance(entry, str):
            return []
        what = f"the crontab of {manifest.get('extra', {}).get('crontab_user', '?')}: the {spec.name} entry"
        lines = self.read(spec).splitlines()
        at = [i for i, line in enumerate(lines) if line.startswith(f"{MARK}{spec.name} ")]
        wanted = entry.rstrip("\n").splitlines()
        if at and lines[at[0] : at[0] + len(wanted)] == wanted:
            return []
        if at:
            why = f"{what} is not the one taskserver-install wrote (edited by hand): the admin's now"
            return [Registered(what, "changed", why)]
        if wanted[-1] in lines:
            why = f"{what} is there without its taskserver-install line (kept by hand): the admin's now"
            return [Registered(what, "changed", why)]
        return [Registered(what, "missing", f"{what} is missing (removed by hand): cron does not run it")]

    def write(self, spec: ServiceSpec, text: str) -> None:
        proc.run([*self._crontab(spec), "-"], input=text)

    def _add(self, spec: ServiceSpec) -> None:
        text = self.without_ours(spec, self.read(spec))
        if text and not text.endswith("\n"):
            text += "\n"
        self.write(spec, text + self.block(spec))

    def _remove(self, spec: ServiceSpec) -> None:
        current = self.read(spec)
        text = self.without_ours(spec, current)
        if text != current:
            self.write(spec, text)

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []

    def enable(self, spec: ServiceSpec) -> list[Action]:
        what = proc.quote([*self._crontab(spec), "-"])
        return [
            Action(f"{what}  (adds the {spec.name} entry, keeps the other lines)", lambda: self._add(spec))
        ]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        what = proc.quote([*self._crontab(spec), "-"])
        return [
            Action(
                f"{what}  (removes the {spec.name} entry, keeps the other lines)", lambda: self._remove(spec)
            )
        ]

    def start(self, spec: ServiceSpec) -> list[Action]:
        return []  # cron starts it within the minute

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return []

    def is_enabled(self, spec: ServiceSpec) -> bool:
        if spec.offline_root:
            return False
        return any(line.startswith(f"{MARK}{spec.name} ") for line in self.read(spec).splitlines())

    def is_active(self, spec: ServiceSpec) -> bool | None:
        return None  # nothing runs between the minutes; cron's log shows the runs
