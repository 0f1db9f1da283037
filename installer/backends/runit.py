"""runit: a service directory /etc/sv/NAME (``run`` execs the foreground daemon, through ``chpst -u`` for
``--run-as``; ``log/run`` keeps its output with svlogd), enabled by linking it into the distribution's
service directory (/etc/service on Debian, /var/service on Void, /run/runit/service on Artix), where
runsvdir starts a ``runsv`` for it within five seconds; controlled with ``sv``. Uninstall takes the link
away, waits until runsv let go of the directory, and removes what runsv wrote there (supervise/)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runtime.errors import UserError
from .. import detect, proc
from ..manifest import fs
from ..render import render
from ..safefs import Tree
from ..spec import ServiceSpec
from .base import Action, Backend, Capabilities, FileSpec, Found, Plan, Registered, cmd, links_to

if TYPE_CHECKING:
    from ..detect import Facts

SERVICE_DIRS = ("etc/service", "var/service", "run/runit/service", "service")
SV_DIRS = ("etc/sv", "etc/runit/sv")
SCAN_SECONDS = 15.0  # runsvdir rescans every 5 s; runsv answers once it opened supervise/
STOP_WAIT = "95"  # seconds `sv` waits for a stop: the daemon's stop_timeout plus its own cleanup


class Runit(Backend):
    name = "runit"
    detect_order = 40
    registrars = ("ln",)
    caps = Capabilities(supervision=True)

    @classmethod
    def running(cls, facts: Facts) -> Found:
        if facts.comm in ("runit", "runit-init"):
            facts.ev.append("PID 1 is runit")
            return cls.name, "ln"
        return None

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        """runit is the init at the next boot: /sbin/init leads to runit-init (Debian keeps it in
        /lib/runit). The runit package alone is also a supervisor under systemd or SysV: not enough."""
        init = resolve_in(facts.root, Path("/sbin/init"))
        if init.name == "runit-init" or detect.which(facts.root, "runit-init"):
            facts.ev.append(f"runit is installed as the init (/sbin/init leads to {init})")
            return True
        return False

    # --- where things are -----------------------------------------------------------------------------
    def sv_dir(self, spec: ServiceSpec) -> Path:
        base = next((d for d in SV_DIRS if fs(spec).is_dir(Path("/") / d)), SV_DIRS[0])
        return Path("/") / base / spec.name

    def link(self, spec: ServiceSpec) -> Path:
        """The enable link as the target names it. Every operation on it goes through ``safefs``: Debian's
        /etc/service leads through /etc/runit/runsvdir/current, an absolute link that, followed from here
        under --root, would name this machine's own service directory; resolved inside the tree, it does
        not."""
        files = fs(spec)
        for d in SERVICE_DIRS:
            if files.is_dir(Path("/") / d):
                return Path("/") / d / spec.name
        raise UserError(
            f"no runit service directory in {spec.root} (looked for /{', /'.join(SERVICE_DIRS)})",
            hint="is runit installed there? (Debian: apt-get install runit-init)",
        )

    def logs(self, spec: ServiceSpec) -> list[Path]:
        return [Path("/var/log") / spec.name]

    def own_dirs(self, spec: ServiceSpec) -> list[Path]:
        return [self.sv_dir(spec), self.sv_dir(spec) / "log"]

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        group = (spec.run_as.group or spec.run_as.user) if spec.run_as else ""
        argv = [spec.executable, "-c", spec.config, "run"]
        if spec.run_as is not None:
            argv = ["chpst", "-u", f"{spec.run_as.user}:{group}", *argv]  # runsv starts ./run as root
        run = render(spec, "runit/run.j2", exec_start=argv, group=group)
        log = render(spec, "runit/log-run.j2", log_dir=self.logs(spec)[0])
        d = self.sv_dir(spec)
        return [FileSpec(d / "run", run, 0o755), FileSpec(d / "log" / "run", log, 0o755)]

    # --- steps ------------------------------------------------------------------------------------------
    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []  # runsv runs ./run afresh at every start

    def _sv(self, spec: ServiceSpec, *args: str, check: bool = True) -> Action:
        return cmd(["sv", "-w", STOP_WAIT, *args, str(self.link(spec))], check=check)

    def _link(self, spec: ServiceSpec) -> None:
        if not self.is_enabled(spec):
            fs(spec).symlink(str(self.sv_dir(spec)), self.link(spec))  # absolute: the target's path

    def enable(self, spec: ServiceSpec) -> list[Action]:
        link = self.link(spec)
        return [Action(f"ln -s {self.sv_dir(spec)} {link}", lambda: self._link(spec))]

    def _unlink(self, spec: ServiceSpec) -> None:
        link, files = self.link(spec), fs(spec)
        if links_to(files.readlink(link), link, self.sv_dir(spec)):  # one an admin pointed elsewhere stays
            files.unlink(link)

    def keep_registration(self, spec: ServiceSpec, reverse: Callable[[], None]) -> Callable[[], None]:
        """Once linked, runsv writes supervise/ into the service directory: undoing the link (a start that
        failed) waits until runsv let go and removes it, as uninstall does, so that the directory the
        install made can go too."""

        def put_back() -> None:
            reverse()
            if not self.is_enabled(spec):
                self._release(spec)

        return put_back

    def disable(self, spec: ServiceSpec) -> list[Action]:
        link = self.link(spec)
        return [Action(f"rm {link}  (when it leads to {self.sv_dir(spec)})", lambda: self._unlink(spec))]

    def plan_uninstall(self, spec: ServiceSpec, manifest: dict[str, Any]) -> Plan:
        """Stop, take the link away, then wait for runsv to exit and remove what it wrote (supervise/)."""
        plan = super().plan_uninstall(spec, manifest)
        let_go = Action(
            f"wait until runsv let go of {self.sv_dir(spec)}, then remove its supervise/ directories (not a "
            "symbolic link there: an admin's)",
            lambda: self._release(spec),
        )
        return Plan(backend=self.name, start=plan.start, enable=(*plan.enable, let_go))

    def _supervised(self, spec: ServiceSpec) -> bool:
        """runsv holds supervise/ok open for reading while it runs; `sv status` fails once it is gone."""
        if not self.live:
            return False
        res = proc.run(["sv", "status", str(self.sv_dir(spec))], check=False, timeout=10)
        return res.ok

    def _release(self, spec: ServiceSpec) -> None:
        if self._supervised(spec):
            # without its link runsvdir would stop runsv at its next scan (within 5 s); `sv exit` asks now
            proc.run(["sv", "exit", str(self.sv_dir(spec))], check=False, timeout=30)
        deadline = time.monotonic() + SCAN_SECONDS
        while self._supervised(spec):
            if time.monotonic() > deadline:
                raise UserError(
                    f"runsv still supervises {self.sv_dir(spec)} {SCAN_SECONDS:.0f}s after its link went",
                    hint="is runsvdir running? stop it with: sv force-stop " + str(self.sv_dir(spec)),
                )
            time.sleep(0.25)
        files = fs(spec)
        for sub in ("supervise", "log/supervise"):
            # what runsv made is a directory; a link there (Debian's packages point it into /run) is not
            if files.readlink(self.sv_dir(spec) / sub) is None:
                files.remove_tree(self.sv_dir(spec) / sub)

    def _wait_supervised(self, spec: ServiceSpec) -> None:
        deadline = time.monotonic() + SCAN_SECONDS
        while not self._supervised(spec):
            if time.monotonic() > deadline:
                raise UserError(
                    f"runsvdir did not pick up {self.link(spec)} within {SCAN_SECONDS:.0f}s",
                    hint="is runsvdir running on that service directory?",
                )
            time.sleep(0.25)
        self._sv(spec, "up").run()

    def start(self, spec: ServiceSpec) -> list[Action]:
        if not self.live:
            return []
        what = f"sv up {self.link(spec)}  (once runsvdir picked up the link)"
        return [Action(what, lambda: self._wait_supervised(spec))]

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [self._sv(spec, "force-stop", check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [self._sv(spec, "force-restart")] if self.live else []

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        return self._foreign_link(spec, self.link(spec), self.sv_dir(spec))

    def in_the_way(self, spec: ServiceSpec) -> list[str]:
        # runsvdir runs what /etc/service/NAME names: one name, one service; the link cannot go beside it
        link, files = self.link(spec), fs(spec)
        if files.lstat(link) is None or self.is_enabled(spec):
            return []
        target = files.readlink(link)
        what = f"a symbolic link to {target}" if target is not None else "not a symbolic link"
        return [f"{link} is the admin's ({what}), not a link to {self.sv_dir(spec)}: runsvdir runs it"]

    # --- queries ------------------------------------------------------------------------------------
    def is_enabled(self, spec: ServiceSpec) -> bool:
        """The link leads to the service's own directory (by its path, or to the same directory by another
        one, resolved inside the target): a link to another directory runs that instead."""
        link, files, sv = self.link(spec), fs(spec), self.sv_dir(spec)
        target = files.readlink(link)
        if target is None:
            return False
        here, ours = files.stat(link), files.stat(sv)
        return links_to(target, link, sv) or (here is not None and ours is not None
                                              and (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino))

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        if not self.is_enabled(spec):
            return False
        res = proc.run(["sv", "status", str(self.link(spec))], check=False, timeout=10)
        return res.ok and res.stdout.startswith("run:")


def resolve_in(root: Path, path: Path) -> Path:
    """``path`` (absolute, as the target names it) with its symlinks resolved as inside ``root``: an
    absolute link target starts again at ``root``, never at this machine's /."""
    parts, cur, hops, files = list(path.relative_to("/").parts), Path("/"), 0, Tree(root)
    while parts:
        part = parts.pop(0)
        link = files.readlink(cur / part) if part not in (".", "..") else None  # each link read in the tree
        if part == "..":
            cur = cur.parent
        elif link is not None:
            hops += 1
            if hops > 40:
                where = root / path.relative_to("/")
                raise UserError(f"too many symlinks under {where}", hint="fix the links")
            target = Path(link)
            parts = [*target.parts[target.is_absolute() :], *parts]
            cur = Path("/") if target.is_absolute() else cur
        elif part != ".":
            cur = cur / part
    return cur
