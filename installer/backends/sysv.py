"""SysV init: one LSB init script in /etc/init.d built on ``taskserver start|stop|status|reload``, registered
with update-rc.d (Debian family), insserv (SUSE family, or when update-rc.d is missing) or chkconfig (RHEL
family) — whichever detection chose from the evidence and the distribution. Offline (``--root``) the
registrar runs inside the tree with ``chroot`` when the tree has it; nothing is started."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...runtime.errors import UserError
from ...runtime.pidfile import pidfile_name
from .. import detect
from ..detect import BIN_DIRS, which
from ..manifest import fs
from ..render import render
from ..spec import ServiceSpec
from .base import (
    Action,
    Backend,
    Capabilities,
    FileSpec,
    Found,
    Registered,
    cmd,
    instance_dir,
    links_to,
)

if TYPE_CHECKING:
    from ..detect import Facts

RC_DIRS = ("etc/rc{n}.d", "etc/rc.d/rc{n}.d", "etc/init.d/rc{n}.d")


class SysV(Backend):
    name = "sysv"
    detect_order = 90  # the least specific: PID 1 `init` with /etc/init.d is also OpenRC's and upstart's
    registrars = ("update-rc.d", "insserv", "chkconfig")
    caps = Capabilities(run_as_by_daemon=True)

    @classmethod
    def running(cls, facts: Facts) -> Found:
        if not facts.wsl and facts.comm == "init" and detect.is_dir(facts.root, "etc/init.d"):
            facts.ev.append("PID 1 is init with /etc/init.d and no other manager: SysV init is running")
            return cls.name, cls.find_registrar(facts)
        return None

    @classmethod
    def installed(cls, facts: Facts) -> bool:
        if detect.is_dir(facts.root, "etc/init.d"):
            facts.ev.append("/etc/init.d exists: SysV-style scripts")
            return True
        return False

    @classmethod
    def find_registrar(cls, facts: Facts) -> str | None:
        return detect.sysv_registrar(facts.root, facts.did, facts.like, facts.ev)

    def state_dir(self, spec: ServiceSpec) -> Path:
        return instance_dir(Path("/var/lib/taskserver"), spec)  # the daemon's own default as root

    def logs(self, spec: ServiceSpec) -> list[Path]:
        # `taskserver start` appends the daemon's output to <state dir>/<instance>.log (runtime/control.py)
        from ...runtime.config import instance_name  # noqa: PLC0415 - the runtime's own rule, loaded on use

        return [self.state_dir(spec) / f"{instance_name(spec.config)}.log"]

    def script(self, spec: ServiceSpec) -> Path:
        return Path("/etc/init.d") / spec.name

    def pidfile(self, spec: ServiceSpec) -> Path:
        # where `taskserver start` as root keeps it, whatever the environment (runtime/pidplace.py)
        return Path("/run/taskserver") / pidfile_name(spec.config)

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        text = render(spec, "sysv/taskserver.init.j2", pidfile=self.pidfile(spec))
        return [FileSpec(self.script(spec), text, 0o755)]

    def _registrar(self, spec: ServiceSpec) -> str:
        if self.registrar is None:
            raise UserError(
                f"no SysV registrar (update-rc.d, insserv, chkconfig) found in {spec.root}",
                hint="install one (e.g. apt-get install init-system-helpers) or use --init systemd",
            )
        return self.registrar

    def _reg(self, spec: ServiceSpec, *args: str, check: bool = True) -> Action:
        argv = [self._registrar(spec), *args]
        if spec.offline_root:
            # update-rc.d/insserv/chkconfig have no reliable --root: run the tree's own copy inside it.
            if which(spec.root, argv[0]) is None:
                raise UserError(f"{argv[0]} is not installed in {spec.root}", hint="install it there first")
            roots_own_tree(spec.root, argv[0])
            argv = ["chroot", str(spec.root), *argv]
        return cmd(argv, check=check)

    def _no_registrar(self, spec: ServiceSpec, program: str | None) -> str | None:
        """Why ``program`` cannot register in this tree (missing, or in a tree root alone could not have
        made), or None when it can (and always on the running system, whose registrar is used)."""
        if not spec.offline_root:
            return None
        if program is None:
            return f"no SysV registrar (update-rc.d, insserv, chkconfig) in {spec.root}"
        if which(spec.root, program) is None:
            return f"{program} is not installed in {spec.root}"
        try:
            roots_own_tree(spec.root, program)
        except UserError as err:
            return err.message
        return None

    def own_rc_links(self, spec: ServiceSpec) -> list[Path]:
        """The rc links (``S20NAME``, ``K01NAME`` in every runlevel) that lead to the service's own script,
        named so or pointing there by a path of the tree (RHEL's ``../init.d/NAME`` from rc.d/rcN.d): what
        a registrar made for it. A file, or a link to another script, is not."""
        files, script = fs(spec), self.script(spec)
        ours = _identity(files.stat(script))
        found = []
        for entry in self.rc_entries(spec, "0123456S", "SK"):
            link = files.readlink(entry)
            same = ours is not None and _identity(files.stat(entry)) == ours
            if link is not None and (links_to(link, entry, script) or same):
                found.append(entry)
        return found

    def _admins_there(self, spec: ServiceSpec) -> str | None:
        """Why the registrar may not take the service out here: it would delete an admin's entry named for
        it (``update-rc.d -f NAME remove`` and a plain ``insserv`` remove every ``[SK]??NAME``)."""
        found = self.admins_rc_entries(spec)
        return f"{found[0]} is an admin's, which the registrar would delete" if found else None

    def _unlink_rc(self, spec: ServiceSpec) -> None:
        for entry in self.own_rc_links(spec):
            fs(spec).unlink(entry)

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []

    def after_remove(self, spec: ServiceSpec) -> list[Action]:
        # Adding our script made insserv (also behind update-rc.d) renumber other scripts' links
        # (K01sendsigs -> K02sendsigs); removing it does not renumber them back. A plain `insserv` run
        # recomputes every link from the headers, which restores the numbering from before the install.
        if self.registrar not in ("update-rc.d", "insserv") or which(spec.root, "insserv") is None:
            return []
        if self._no_registrar(spec, "insserv") is not None or self._admins_there(spec) is not None:
            # not run in a tree it could leave, nor where it would delete an admin's entry: the numbering
            # stays as the removal left it
            return []
        argv = ["insserv"]
        if spec.offline_root:
            argv = ["chroot", str(spec.root), *argv]
        return [cmd(argv, check=False)]

    def admins_rc_entries(self, spec: ServiceSpec) -> list[Path]:
        """The entries named for the service (``S20NAME``, ``K01NAME``) that are not links to its script: a
        file, or a link to another script; an admin's. Boot runs them in place of the script."""
        ours = set(self.own_rc_links(spec))
        return [e for e in self.rc_entries(spec, "0123456S", "SK") if e not in ours]

    def in_the_way(self, spec: ServiceSpec) -> list[str]:
        # registering beside them is not possible: insserv (behind update-rc.d too) deletes every entry
        # named for the service that is not its own link
        return [f"{e} is not a link to {self.script(spec)} but an admin's entry for {spec.name} (the "
                "registrar would delete it)" for e in self.admins_rc_entries(spec)]

    def enable(self, spec: ServiceSpec) -> list[Action]:
        reg = self._registrar(spec)
        args = {
            "update-rc.d": [spec.name, "defaults"],
            "insserv": [spec.name],
            "chkconfig": ["--add", spec.name],
        }
        step = self._reg(spec, *args[reg])

        def register() -> object:
            done = step()
            self._check_links(spec, reg)
            return done

        return [Action(step.describe, register)]

    def _check_links(self, spec: ServiceSpec, registrar: str) -> None:
        """The links the script's header asks for (start in 2 3 4 5, stop in 0 1 6) are there, in every
        runlevel directory the tree has: insserv (also behind update-rc.d) exits 0 when it could not make a
        link (no inode left), and the service then never started in that runlevel."""
        ours = {(e.parent.name, e.name[0]) for e in self.own_rc_links(spec)}
        files, missing = fs(spec), []
        for levels, kind in (("2345", "S"), ("016", "K")):
            for n in levels:
                dirs = [Path("/") / p.format(n=n) for p in RC_DIRS]
                have = [d for d in dirs if files.listdir(d) is not None]
                if have and not any((d.name, kind) in ours for d in have):
                    missing.append(f"{kind} in {have[0]}")
        if missing:
            raise UserError(f"{registrar} exited 0 but made no link for {spec.name} ({', '.join(missing)})",
                            hint="free space and inodes where the rc directories are, then install again")

    def disable(self, spec: ServiceSpec) -> list[Action]:
        why = self._no_registrar(spec, self.registrar) or self._admins_there(spec)
        if why is not None:
            # a tree without a registrar it may run: what one made for our script are its rc links, and
            # removing them is all `update-rc.d -f NAME remove` does
            links = " ".join(map(str, self.own_rc_links(spec))) or "nothing"
            what = f"rm {links}  (the rc links to {self.script(spec)}, removed directly: {why})"
            return [Action(what, lambda: self._unlink_rc(spec))]
        reg = self._registrar(spec)
        args = {
            # -f: the script still exists at this point (it is removed after the links)
            "update-rc.d": ["-f", spec.name, "remove"],
            "insserv": ["-r", spec.name],
            "chkconfig": ["--del", spec.name],
        }
        return [self._reg(spec, *args[reg])]

    def _action(self, spec: ServiceSpec, verb: str, check: bool = True) -> Action:
        return cmd([str(spec.target(self.script(spec))), verb], check=check)

    def start(self, spec: ServiceSpec) -> list[Action]:
        return [self._action(spec, "start")] if self.live else []

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [self._action(spec, "stop", check=False)] if self.live else []

    def restart(self, spec: ServiceSpec) -> list[Action]:
        return [self._action(spec, "restart")] if self.live else []

    def rc_entries(self, spec: ServiceSpec, levels: str, kinds: str) -> list[Path]:
        """The entries named for the service (``S20NAME``, ``K01NAME``) in the runlevel directories of
        ``levels``, as the target names them. Listed inside the target (``safefs``): a tree's
        ``etc/rc2.d -> /etc/rc2.d`` is the tree's own (a loop, so nothing), never this machine's. A
        directory reached under two names (RHEL's ``/etc/rc2.d -> rc.d/rc2.d``) is listed once."""
        files, seen, found = fs(spec), set(), []
        named = re.compile(f"[{kinds}][0-9][0-9]{re.escape(spec.name)}")
        for n in levels:
            for pattern in RC_DIRS:
                d = Path("/") / pattern.format(n=n)
                listed = files.listdir(d)
                if listed is None or (listed[0].st_dev, listed[0].st_ino) in seen:
                    continue
                seen.add((listed[0].st_dev, listed[0].st_ino))
                found += [d / name for name in sorted(listed[1]) if named.fullmatch(name)]
        return found

    def registration_state(self, spec: ServiceSpec, manifest: dict[str, Any]) -> list[Registered]:
        """An rc entry named for the service that is not a link to its script (a file, a link to another
        script): an admin's."""
        script = self.script(spec)
        return [Registered(str(e), "changed", f"{e} is not a link to {script}: the admin's now (not this "
                           "install's registration)")
                for e in self.admins_rc_entries(spec)]

    def is_enabled(self, spec: ServiceSpec) -> bool:
        """A start link to the service's own script in a runlevel of 2-5: an admin's file named
        ``S20NAME`` starts the admin's program, not this script."""
        starts = {f"rc{n}.d" for n in "2345"}
        return any(e.parent.name in starts and e.name.startswith("S") for e in self.own_rc_links(spec))

    def is_active(self, spec: ServiceSpec) -> bool | None:
        if not self.live:
            return None
        script = spec.target(self.script(spec))
        if not script.exists():
            return False
        res = self._action(spec, "status", check=False).run()
        return getattr(res, "returncode", 3) == 0


def _identity(st: os.stat_result | None) -> tuple[int, int] | None:
    return None if st is None else (st.st_dev, st.st_ino)


# what a program run in the tree (and its loader and libraries) comes from
_RUN_FROM = ("", *BIN_DIRS, "lib", "lib64", "usr", "usr/lib", "usr/lib64", "lib/x86_64-linux-gnu",
             "usr/lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "etc")


def roots_own_tree(root: Path, program: str) -> None:
    """Run a tree's own program (``chroot TREE update-rc.d``) only where root alone could have put it: the
    tree and the directories above it on this machine, the tree's program directories and libraries and
    the program itself belong to root and are not writable by others. A tree another user built may hold
    any program, and a program run as root in a chroot can leave it (an audit's update-rc.d did)."""
    import stat  # noqa: PLC0415

    from ..safefs import Tree  # noqa: PLC0415

    def refuse(where: str, why: str) -> UserError:
        return UserError(f"not running {program} of the tree {root}: {where} {why}",
                         hint=f"make the tree root's (chown -R root {root}, chmod go-w), or register the "
                         "script by hand")

    def judge(st: os.stat_result, where: str) -> None:
        if st.st_uid != 0:
            raise refuse(where, f"belongs to uid {st.st_uid}")
        if st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
            raise refuse(where, "is writable by group or others")

    for d in [root, *root.parents]:
        judge(os.stat(d), str(d))
    files = Tree(root)
    for rel in [*_RUN_FROM, *(f"{d}/{program}" for d in BIN_DIRS)]:
        st = files.stat(Path("/" + rel))
        if st is not None:
            judge(st, str(root / rel))
