"""The .deb and .rpm built by packaging/build.sh, installed, upgraded, removed and purged on booted roots.

Each scenario runs dpkg (or rpm) inside a systemd or SysV root booted under systemd-nspawn on an overlay, and
checks what the init system itself says (systemctl is-enabled / rc links, the daemon's pid, what comes up
after a reboot) and, after purge, the overlay's upper dir: the exact record of what changed on the machine.
Three versions (0.1.0-1, -2, -3) are built from the same tree and the lab's wheels (the `packages` fixture),
so upgrades are real.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import lab
import pytest
from lab_machine import EXIT_REBOOT, Container, Machines, wait_until

pytestmark = pytest.mark.boot

VERSIONS = lab.PACKAGE_VERSIONS
PKGS = "/wheels"  # the lab binds the package directory read-only here
DAEMON = f"{lab.VENV}/bin/taskserver -c "  # in every daemon command line, on both init systems


def deb(version: str) -> str:
    return f"{PKGS}/taskserver_{version}_amd64.deb"


def pids(m: Container) -> list[int]:
    out = m.sh(["pgrep", "-f", DAEMON], check=False).stdout
    return sorted(int(p) for p in out.split())


def running_pid(m: Container) -> int:
    """The daemon's one pid, once it runs (its start may still be settling)."""
    wait_until(lambda: len(pids(m)) == 1, 30, "exactly one taskserver daemon")
    return pids(m)[0]


def enabled(m: Container) -> bool:
    if m.init == "systemd":
        state = m.sh(["systemctl", "is-enabled", "taskserver.service"], check=False).stdout.strip()
        return state == "enabled"
    links = m.sh(["sh", "-c", "ls /etc/rc2.d /etc/rc3.d"]).stdout.split()
    return "S01taskserver" in links or any(n.startswith("S") and n[3:] == "taskserver" for n in links)


def dpkg(m: Container, *args: str, env: dict[str, str] | None = None) -> str:
    proc = m.sh(["dpkg", *args], check=False, timeout=180, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"dpkg {' '.join(args)} exited {proc.returncode}:\n{out}"
    return out


def admin_disable(m: Container) -> None:
    if m.init == "systemd":
        m.sh(["systemctl", "disable", "--now", "taskserver.service"])
    else:
        m.sh(["update-rc.d", "taskserver", "disable"])
        m.sh(["/etc/init.d/taskserver", "stop"])


def admin_enable(m: Container) -> None:
    if m.init == "systemd":
        m.sh(["systemctl", "enable", "--now", "taskserver.service"])
    else:
        m.sh(["update-rc.d", "taskserver", "enable"])
        m.sh(["/etc/init.d/taskserver", "start"])


def reboot(m: Container) -> None:
    assert m.reboot() == EXIT_REBOOT, m.console()
    m.boot()
    m.wait_ready()


def ours_left(m: Container) -> list[str]:
    """What the upper dir still records beyond the init system's churn: anything naming the service, and any
    other change (a deleted directory shows as a whiteout; other services' rc links renumbered by insserv
    show too), except files rewritten with their old content."""

    def same_as_lower(path: str) -> bool:
        new = m.overlay.upper / path.lstrip("/")
        for low in m.overlay.lowers:
            old = low / path.lstrip("/")
            if old.exists() or old.is_symlink():
                return new.is_file() and old.is_file() and new.read_bytes() == old.read_bytes()
        return False

    return sorted(p for p in lab.leftovers(m.overlay) if not same_as_lower(p))


@pytest.mark.parametrize("init", ["systemd", "sysv"])
def test_deb_install_upgrade_keeps_disable_remove_purge(init: str, variant: lab.Roots, packages: Path,
                                                        machines: Machines) -> None:
    m = machines.container(variant(init), wheels=packages)
    m.boot()
    m.wait_ready()

    out = dpkg(m, "-i", deb(VERSIONS[0]))  # first install: enabled and started
    assert enabled(m), out
    first = running_pid(m)

    admin_disable(m)
    wait_until(lambda: not pids(m), 30, "the daemon to stop")
    out = dpkg(m, "-i", deb(VERSIONS[1]))  # upgrade: the admin's disable is kept, nothing started
    assert not enabled(m), out
    assert pids(m) == [], out

    admin_enable(m)
    before = running_pid(m)
    assert before != first
    out = dpkg(m, "-i", deb(VERSIONS[2]))  # upgrade of a running service: restarted
    assert enabled(m), out
    after = running_pid(m)
    assert after != before, f"not restarted by the upgrade:\n{out}"

    out = dpkg(m, "-r", "taskserver")  # remove: stopped, and not started at the next boot
    assert pids(m) == [], out
    reboot(m)
    assert pids(m) == [], "started at boot after dpkg -r"
    assert not enabled(m)

    dpkg(m, "-P", "taskserver")
    assert m.poweroff() == 0
    left = ours_left(m)
    assert left == [], "\n".join(left)


@pytest.mark.parametrize(("init", "how"), [("systemd", "chroot"), ("sysv", "chroot"),
                                           ("systemd", "dpkg-root"), ("sysv", "dpkg-root")])
def test_deb_into_unbooted_root_starts_at_next_boot(init: str, how: str, variant: lab.Roots, packages: Path,
                                                    machines: Machines) -> None:
    """An image build: dpkg in a chroot, or the host's dpkg --root with chrootless scripts (DPKG_ROOT set)."""
    ov = machines.overlay(variant(init))
    package = packages / Path(deb(VERSIONS[0])).name
    if how == "chroot":
        target = ov.root / "var/tmp/taskserver.deb"
        shutil.copy(package, target)
        argv = ["chroot", str(ov.root), "dpkg", "-i", "/var/tmp/taskserver.deb"]
        expected = "no init system runs here"
    else:
        target = package
        argv = ["dpkg", "--root", str(ov.root), "--force-script-chrootless", "-i", str(package)]
        expected = "DPKG_ROOT is set"
    res = subprocess.run(argv, capture_output=True, text=True, env=lab.CLEAN_ENV, check=False)
    if how == "chroot":
        target.unlink()
    assert res.returncode == 0, res.stdout + res.stderr
    assert expected in res.stdout, res.stdout
    unit = ov.root / "etc/systemd/system/taskserver.service"
    if unit.exists():  # the boot file names the path the booted system sees, not the image's place here
        assert 'ExecStart="/opt/taskserver/bin/taskserver"' in unit.read_text()
    host_daemons = subprocess.run(["pgrep", "-f", DAEMON], capture_output=True, text=True, check=False).stdout
    for pid in host_daemons.split():
        assert Path(f"/proc/{pid}/root").resolve() != ov.root, "a daemon was started inside the chroot"

    m = machines.container(ov)
    m.boot()
    m.wait_ready()
    assert enabled(m)
    running_pid(m)


def test_deb_remove_reinstall_keeps_disable_until_purge(variant: lab.Roots, packages: Path,
                                                        machines: Machines) -> None:
    """As deb-systemd-helper's state: a disable survives remove + reinstall; purge forgets it."""
    m = machines.container(variant("systemd"), wheels=packages)
    m.boot()
    m.wait_ready()
    dpkg(m, "-i", deb(VERSIONS[0]))
    running_pid(m)
    admin_disable(m)
    dpkg(m, "-r", "taskserver")
    out = dpkg(m, "-i", deb(VERSIONS[1]))
    assert not enabled(m), out
    assert pids(m) == [], out
    dpkg(m, "-P", "taskserver")
    out = dpkg(m, "-i", deb(VERSIONS[1]))
    assert enabled(m), out
    running_pid(m)


@pytest.mark.parametrize("init", ["systemd", "sysv"])
def test_deb_abort_remove_puts_the_service_back(init: str, variant: lab.Roots, packages: Path,
                                                machines: Machines) -> None:
    """dpkg's error unwind: when a removal fails after `prerm remove`, dpkg calls `postinst abort-remove`.
    The package's own scripts are run here with exactly those arguments."""
    m = machines.container(variant(init), wheels=packages)
    m.boot()
    m.wait_ready()
    dpkg(m, "-i", deb(VERSIONS[0]))
    before = running_pid(m)
    m.sh(["/var/lib/dpkg/info/taskserver.prerm", "remove"])
    assert pids(m) == [] and not enabled(m)
    out = m.sh(["/var/lib/dpkg/info/taskserver.postinst", "abort-remove"]).stdout
    assert enabled(m), out
    assert running_pid(m) != before, out


def test_deb_policy_rc_d_101_forbids_start(variant: lab.Roots, packages: Path, machines: Machines) -> None:
    m = machines.container(variant("systemd"), wheels=packages)
    m.boot()
    m.wait_ready()
    m.sh(["sh", "-c", "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d"])
    m.sh(["chmod", "755", "/usr/sbin/policy-rc.d"])
    out = dpkg(m, "-i", deb(VERSIONS[0]))
    assert "policy-rc.d forbids it (exit 101)" in out, out
    assert enabled(m), out
    assert pids(m) == []
    assert m.sh(["systemctl", "is-active", "taskserver.service"], check=False).stdout.strip() == "inactive"


@pytest.mark.parametrize("init", ["systemd", "sysv"])
def test_deb_failed_start_does_not_fail_the_package(init: str, variant: lab.Roots, packages: Path,
                                                    machines: Machines) -> None:
    """A config the daemon refuses (world-writable) makes the start fail: dpkg succeeds, stderr says so."""
    m = machines.container(variant(init), wheels=packages)
    m.boot()
    m.wait_ready()
    m.sh(["sh", "-c", "mkdir -p /etc/taskserver && echo 'tenants: {}' > /etc/taskserver/taskserver.yaml"
                      " && chmod 666 /etc/taskserver/taskserver.yaml"])
    proc = m.sh(["dpkg", "-i", deb(VERSIONS[0])], check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "taskserver-install: warning: start of taskserver failed" in proc.stderr, proc.stdout + proc.stderr
    assert enabled(m)  # installed and enabled all the same: it starts once the admin fixes the config
    assert pids(m) == []


# --- rpm ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rpm_root(variant: lab.Roots) -> list[Path]:
    """The systemd root plus Debian's rpm package (rpm installs there with --nodeps)."""

    def build(root: Path) -> None:
        lab.run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", "rpm"])
        for deb_file in (root / "var/cache/apt/archives").glob("*.deb"):
            deb_file.unlink()

    return lab.derived_layer("systemd+rpm", variant("systemd"), "rpm", build)


def rpm_file(version: str) -> str:
    upstream, release = version.split("-")
    return f"{PKGS}/taskserver-{upstream}-{release}.x86_64.rpm"


def rpm(m: Container, *args: str) -> str:
    # Debian's rpm keeps its database in ~/.rpmdb unless told: use the system place an RPM distribution uses
    proc = m.sh(["rpm", "--dbpath", "/var/lib/rpm", "--nodeps", *args], check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rpm {' '.join(args)} exited {proc.returncode}:\n{out}"
    return out


def test_rpm_first_install_follows_systemd_presets(rpm_root: list[Path], packages: Path,
                                                   machines: Machines) -> None:
    """%post 1 asks `systemctl preset`: a preset that disables the unit leaves it disabled and stopped."""
    m = machines.container(rpm_root, wheels=packages)
    m.boot()
    m.wait_ready()
    m.sh(["sh", "-c", "mkdir -p /etc/systemd/system-preset && "
                      "echo 'disable taskserver.service' > /etc/systemd/system-preset/10-taskserver.preset"])
    out = rpm(m, "-i", rpm_file(VERSIONS[0]))
    assert not enabled(m), out
    assert pids(m) == [], out


def test_rpm_install_upgrade_erase_on_booted_systemd(rpm_root: list[Path], packages: Path,
                                                    machines: Machines) -> None:
    m = machines.container(rpm_root, wheels=packages)
    m.boot()
    m.wait_ready()

    out = rpm(m, "-i", rpm_file(VERSIONS[0]))  # %post 1: preset (Debian: enable) and start
    assert enabled(m), out
    first = running_pid(m)

    admin_disable(m)
    out = rpm(m, "-U", rpm_file(VERSIONS[1]))  # %post 2 + old %postun 1: still disabled, not started
    assert not enabled(m), out
    assert pids(m) == [], out

    admin_enable(m)
    before = running_pid(m)
    assert before != first
    out = rpm(m, "-U", rpm_file(VERSIONS[2]))  # running: restarted
    assert enabled(m), out
    assert running_pid(m) != before, out

    out = rpm(m, "-e", "taskserver")  # %preun 0: stop, disable, remove boot files and our records
    assert pids(m) == [], out
    assert not enabled(m)
    assert m.poweroff() == 0
    # rpm's database, and the (empty) /usr/share/licenses rpm made for %license: on an RPM distribution the
    # `filesystem` package owns that directory, Debian's root has no package that does
    left = [p for p in ours_left(m)
            if p not in ("/var/lib/rpm", "/usr/share/licenses") and not p.startswith("/var/lib/rpm/")]
    assert left == [], left
