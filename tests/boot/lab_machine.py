"""A container booted from an Overlay with systemd-nspawn, and the ways to talk to it.

The host has no systemd as PID 1, so machinectl / systemctl -M do not work: commands run inside through
nsenter on the container's PID 1 ("leader"), which is the child of the nspawn process once it has exec'd
the root's init.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lab
from lab import CLEAN_PATH, LabError, Overlay, mounts

_serial = itertools.count(1)
EXIT_REBOOT = 133  # what systemd-nspawn exits with when the container rebooted
SHUTDOWN_RETRY_S = 30.0  # a shutdown not under way by then is asked for again
INNER_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb", "SYSTEMD_PAGER": ""}


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll cond until true; the timeout is a safety net, not the thing measured."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


class Container:
    """One machine: boot it, run commands in it, reboot/poweroff it. terminate() in teardown, always."""

    def __init__(self, overlay: Overlay, name: str, log_dir: Path,
                 binds_ro: Mapping[str, Path] | None = None) -> None:
        self.overlay, self.name, self.log_dir = overlay, name, log_dir
        self.binds_ro = dict(binds_ro or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.boots = 0
        self.log = log_dir / f"{name}.boot0.log"

    # --- lifecycle ----------------------------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> None:
        """Start the root's init; returns once PID 1 inside is the init (not yet "ready": see wait_ready)."""
        if self.running:
            raise LabError(f"{self.name} is already running")
        self.overlay.remount()  # a fresh, writable mount for every boot
        if mounts().get(str(self.overlay.root)) != "overlay":
            raise LabError(f"refusing to boot {self.overlay.root}: not an overlay mount")
        self.boots += 1
        self.log = self.log_dir / f"{self.name}.boot{self.boots}.log"
        argv = ["systemd-nspawn", "-q", "-b", "-D", str(self.overlay.root), "--register=no", "--keep-unit",
                "-M", self.name, "--console=read-only", "--private-network"]
        argv += [f"--bind-ro={host}:{inner}" for inner, host in self.binds_ro.items()]
        with self.log.open("wb") as out:
            # start_new_session: nspawn in its own session (setsid), so no terminal signals reach it.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        nspawn = self.proc.pid
        nspawn_exe = _exe(nspawn)

        def leader_found() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"systemd-nspawn exited {self.proc.returncode} while booting:\n"
                               + self.console())
            for kid in _children(nspawn):
                exe = _exe(kid)
                if exe and exe != nspawn_exe:
                    self.leader = kid
                    return True
            return False

        wait_until(leader_found, timeout, f"the init of {self.name} to start")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def init(self) -> str:
        """"systemd", "init" (sysvinit, also under OpenRC) or "runit": the name of PID 1 inside."""
        return Path(f"/proc/{self.leader}/comm").read_text().strip()

    def wait_ready(self, timeout: float = 120, file: str | None = None) -> str:
        """Wait until boot finished: systemd reports running/degraded; SysV finished its runlevel scripts.

        With file=, also wait until that path exists inside (e.g. something a service writes).
        Returns the state reached ("running", "degraded" or the SysV runlevel line).
        """
        if self.init == "systemd":
            wait_until(lambda: self.exists("/run/systemd/private"), timeout, "systemd's private socket")
            state = self.sh(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
            result = state.stdout.strip()
            if result not in ("running", "degraded"):
                raise LabError(f"{self.name}: system state {result!r}\n"
                               + self.sh(["systemctl", "--failed", "--no-legend"], check=False).stdout)
        elif self.init == "runit":
            # stage 2 ends in runsvdir, which then starts every linked service
            wait_until(self._runit_booted, timeout, f"{self.name} to reach runit's stage 2")
            result = "runsvdir"
        else:
            wait_until(self._sysv_booted, timeout, f"{self.name} to finish its runlevel scripts")
            result = self.sh(["runlevel"]).stdout.strip()
        if file is not None:
            wait_until(lambda: self.exists(file), timeout, f"{file} inside {self.name}")
        return result

    def _runit_booted(self) -> bool:
        return self.sh(["pgrep", "-x", "runsvdir"], check=False).returncode == 0

    def _sysv_booted(self) -> bool:
        # init records the new runlevel before it runs "/etc/init.d/rc N"; done when rc is gone too.
        level = self.sh(["runlevel"], check=False).stdout.split()
        if len(level) != 2 or level[1] not in "2345":
            return False
        return self.sh(["pgrep", "-f", "^/bin/sh /etc/init.d/rc "], check=False).returncode == 1

    def reboot(self, timeout: float = 90) -> int:
        """Reboot from inside; nspawn then exits (133) instead of restarting. Returns nspawn's exit code."""
        argv = ["systemctl", "reboot"] if self.init == "systemd" else ["/sbin/reboot"]
        return self._shutdown(argv, timeout)

    def poweroff(self, timeout: float = 90) -> int:
        return self._shutdown(["systemctl", "poweroff"] if self.init == "systemd" else ["/sbin/poweroff"],
                              timeout)

    def _shutdown(self, argv: Sequence[str], timeout: float) -> int:
        assert self.proc is not None and self.running, f"{self.name} is not running"
        deadline = time.monotonic() + timeout
        # runit can miss a reboot asked for right as stage 2 starts (seen once in many boots: stage 3 never
        # began); asking again is harmless for every init, so ask until it goes down
        while time.monotonic() < deadline:
            with contextlib.suppress(LabError):  # it may go down between the check and the call
                self.sh(argv, check=False, timeout=30)
            try:
                return self.proc.wait(timeout=min(SHUTDOWN_RETRY_S, max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                continue
        self.terminate()
        raise TimeoutError(f"{self.name} did not shut down within {timeout:.0f}s "
                           f"after {' '.join(argv)}:\n{self.console()}")

    def terminate(self) -> None:
        """Stop the container whatever state it is in: SIGKILL to its PID 1 ends the whole namespace.

        No graceful shutdown: the overlay is thrown away, and sysvinit ignores the signal nspawn would
        forward, which cost 10 s per SysV teardown.
        """
        if self.proc is None or not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.leader, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # --- inside -------------------------------------------------------------------------------------------

    def sh(self, argv: Sequence[str], check: bool = True, timeout: float = 120, input: str | None = None,
           env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside (all namespaces of PID 1). For shell snippets pass ["sh", "-c", ...]."""
        if not self.running:
            raise LabError(f"{self.name} is not running; cannot run {list(argv)}")
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--", *argv]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              env={**INNER_ENV, **(env or {})}, check=False,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise LabError(f"in {self.name}: {list(argv)} exited {proc.returncode}\n"
                           f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")
        return proc

    def path(self, inner: str) -> Path:
        """The host's view of a path inside the running container (its mounts, /run included)."""
        return Path(f"/proc/{self.leader}/root") / inner.lstrip("/")

    def exists(self, inner: str) -> bool:
        return self.running and os.path.lexists(self.path(inner))

    def console(self, lines: int = 40) -> str:
        """The tail of this boot's console log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Machines:
    """Creates overlays and containers for one test and tears all of them down, also on failure."""

    def __init__(self, log_dir: Path, test_name: str) -> None:
        self.log_dir = log_dir
        self.slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[-24:].strip("-")
        self.overlays: list[lab.Overlay] = []
        self.containers: list[Container] = []

    def overlay(self, lowers: Sequence[Path]) -> lab.Overlay:
        ov = lab.Overlay(lowers, tag=self.slug or "test")
        self.overlays.append(ov)
        return ov

    def container(self, lowers_or_overlay: Sequence[Path] | lab.Overlay,
                  wheels: Path | None = None) -> Container:
        """A machine (not yet booted) on a new overlay of lowers, or on an overlay made before."""
        if isinstance(lowers_or_overlay, lab.Overlay):
            ov = lowers_or_overlay
        else:
            ov = self.overlay(lowers_or_overlay)
        name = f"ts{os.getpid()}-{next(_serial)}-{self.slug}"[:64].rstrip("-")
        binds = {"/wheels": wheels} if wheels is not None else None
        c = Container(ov, name, self.log_dir, binds_ro=binds)
        self.containers.append(c)
        return c

    def teardown(self) -> None:
        for c in self.containers:
            if c.proc is not None:
                print(f"--- console of {c.name} (boot {c.boots}, {c.log}) ---\n{c.console()}")
            c.terminate()
        for ov in self.overlays:
            ov.cleanup()
