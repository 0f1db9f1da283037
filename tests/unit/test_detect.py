"""Detection from fake roots: every case the installer must get right, built as real files in tmp_path.

Evidence is read under ``root`` (PID 1's facts from ``root/proc/1/...``), and registrars/initctl are real
executables in the tree (initctl is a tiny script that answers like upstart's), so nothing is patched. The
fake roots stand for this machine's ``/`` (``detect_as_host``): a ``--root`` tree is always offline and never
probed (tests/security/test_installer_tree.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserver.installer.detect import detect_as_host as detect


def tool(root: Path, rel: str, body: str = "exit 0") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def os_release(root: Path, id_: str, version: str, like: str = "") -> None:
    text = f'ID={id_}\nVERSION_ID="{version}"\nNAME="{id_}"\n' + (f'ID_LIKE="{like}"\n' if like else "")
    write(root, "etc/os-release", text)


def pid1(root: Path, comm: str) -> None:
    write(root, "proc/1/comm", comm + "\n")


def test_booted_systemd_host(tmp_path: Path) -> None:
    os_release(tmp_path, "debian", "12")
    pid1(tmp_path, "systemd")
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    tool(tmp_path, "usr/bin/systemctl")
    det = detect(tmp_path)
    assert (det.init, det.target, det.live) == ("systemd", "systemd", True)
    assert det.registrar in ("pystemd", "systemctl")
    assert det.distro_id == "debian" and det.distro_version == "12"
    assert any("/run/systemd/system exists" in e for e in det.evidence)


def test_systemd_installed_but_not_running_chroot(tmp_path: Path) -> None:
    """A chroot/image: systemd's binaries are there, but /run/systemd/system is not (nothing booted it)."""
    os_release(tmp_path, "debian", "12")
    pid1(tmp_path, "systemd")  # the host's PID 1, seen through a bind-mounted /proc
    tool(tmp_path, "usr/bin/systemctl")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    det = detect(tmp_path)
    assert (det.init, det.target, det.registrar, det.live) == ("offline", "systemd", "systemctl", False)
    assert "systemd is installed (systemctl present)" in det.evidence
    assert any(e.startswith("no running init system found: offline") for e in det.evidence)


def test_docker_like_container_without_init(tmp_path: Path) -> None:
    os_release(tmp_path, "debian", "12")
    pid1(tmp_path, "python3")
    write(tmp_path, ".dockerenv", "")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "usr/sbin/update-rc.d")
    det = detect(tmp_path)
    assert det.init == "offline" and det.container == "docker"
    assert det.target == "sysv"  # what is installed, for the next boot of an image
    assert det.registrar == "update-rc.d"  # enable links for that next boot
    assert any(".dockerenv" in e for e in det.evidence)
    assert "PID 1 is 'python3'" in det.evidence


def test_upstart_ubuntu_1404_with_systemd_binaries_installed(tmp_path: Path) -> None:
    os_release(tmp_path, "ubuntu", "14.04", like="debian")
    pid1(tmp_path, "init")
    tool(tmp_path, "sbin/initctl", 'echo "initctl (upstart 1.12.1)"')
    tool(tmp_path, "bin/systemctl")  # Ubuntu 14.04 shipped systemd binaries next to upstart
    tool(tmp_path, "usr/sbin/update-rc.d")
    (tmp_path / "etc/init").mkdir(parents=True)
    (tmp_path / "etc/init.d").mkdir(parents=True)
    det = detect(tmp_path)
    assert (det.init, det.registrar) == ("upstart", "initctl")
    assert any("upstart 1.12.1" in e for e in det.evidence)


def test_initctl_that_is_not_upstart_is_not_taken_for_upstart(tmp_path: Path) -> None:
    os_release(tmp_path, "debian", "12")
    pid1(tmp_path, "init")
    tool(tmp_path, "sbin/initctl", 'echo "initctl: unable to connect" >&2; exit 1')
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "usr/sbin/update-rc.d")
    det = detect(tmp_path)
    assert det.init == "sysv"


def test_devuan_sysv_uses_update_rc_d(tmp_path: Path) -> None:
    os_release(tmp_path, "devuan", "5", like="debian")
    pid1(tmp_path, "init")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "usr/sbin/update-rc.d")
    tool(tmp_path, "sbin/insserv")
    det = detect(tmp_path)
    assert (det.init, det.registrar, det.distro_id) == ("sysv", "update-rc.d", "devuan")
    assert any(e.startswith("PID 1 is init with /etc/init.d") for e in det.evidence)
    assert "registrar update-rc.d (distribution family debian)" in det.evidence


def test_debian_without_update_rc_d_falls_back_to_insserv(tmp_path: Path) -> None:
    os_release(tmp_path, "debian", "7")
    pid1(tmp_path, "init")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "sbin/insserv")
    assert detect(tmp_path).registrar == "insserv"


def test_centos6_like_sysv_uses_chkconfig(tmp_path: Path) -> None:
    """CentOS 6 has no /etc/os-release; distro reads /etc/centos-release."""
    write(tmp_path, "etc/centos-release", "CentOS release 6.10 (Final)\n")
    pid1(tmp_path, "init")
    (tmp_path / "etc/rc.d/init.d").mkdir(parents=True)
    (tmp_path / "etc/init.d").symlink_to("rc.d/init.d")
    tool(tmp_path, "sbin/chkconfig")
    det = detect(tmp_path)
    assert (det.init, det.registrar, det.distro_id) == ("sysv", "chkconfig", "centos")
    assert "registrar chkconfig (distribution family rhel)" in det.evidence


def test_centos6_with_its_upstart_06_still_gets_a_chkconfig_script(tmp_path: Path) -> None:
    """Real CentOS 6 runs upstart 0.6.5 as PID 1, but its services are SysV scripts under chkconfig."""
    write(tmp_path, "etc/centos-release", "CentOS release 6.10 (Final)\n")
    pid1(tmp_path, "init")
    tool(tmp_path, "sbin/initctl", 'echo "initctl (upstart 0.6.5)"')
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "sbin/chkconfig")
    det = detect(tmp_path)
    assert (det.init, det.registrar) == ("sysv", "chkconfig")
    assert any("upstart 0.6.5" in e for e in det.evidence)


def test_suse_like_sysv_uses_insserv_even_with_chkconfig_present(tmp_path: Path) -> None:
    os_release(tmp_path, "sles", "11.4", like="suse")
    pid1(tmp_path, "init")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "sbin/insserv")
    tool(tmp_path, "sbin/chkconfig")  # SUSE's chkconfig is a wrapper around insserv
    det = detect(tmp_path)
    assert (det.init, det.registrar) == ("sysv", "insserv")
    assert "SysV registrars present: insserv, chkconfig" in det.evidence
    assert "registrar insserv (distribution family suse)" in det.evidence


def test_wsl_without_systemd_is_offline(tmp_path: Path) -> None:
    """WSL's PID 1 is Microsoft's /init (comm "init"): not a service manager, although /etc/init.d exists."""
    os_release(tmp_path, "ubuntu", "22.04", like="debian")
    pid1(tmp_path, "init")
    write(tmp_path, "proc/version", "Linux version 5.15.90.1-microsoft-standard-WSL2 (gcc) #1 SMP\n")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    tool(tmp_path, "usr/bin/systemctl")
    tool(tmp_path, "usr/sbin/update-rc.d")
    det = detect(tmp_path)
    assert det.init == "offline" and det.wsl
    assert (det.target, det.registrar) == ("systemd", "systemctl")  # files + links for when systemd is on
    assert any("WSL kernel" in e for e in det.evidence)
    assert not any("SysV init is running" in e for e in det.evidence)


def test_wsl_with_systemd_enabled_is_systemd(tmp_path: Path) -> None:
    os_release(tmp_path, "ubuntu", "22.04", like="debian")
    pid1(tmp_path, "systemd")
    write(tmp_path, "proc/version", "Linux version 5.15.90.1-microsoft-standard-WSL2\n")
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert detect(tmp_path).init == "systemd"


def test_openrc_and_runit_are_told_apart(tmp_path: Path) -> None:
    os_release(tmp_path, "debian", "12")
    pid1(tmp_path, "init")
    (tmp_path / "etc/init.d").mkdir(parents=True)
    (tmp_path / "run/openrc").mkdir(parents=True)
    assert detect(tmp_path).init == "openrc"
    pid1(tmp_path, "runit")
    assert detect(tmp_path).init == "runit"


def test_empty_root_is_offline_with_nothing_to_target(tmp_path: Path) -> None:
    det = detect(tmp_path)
    assert (det.init, det.target) == ("offline", None)
    assert det.to_json()["live"] is False


@pytest.mark.parametrize("marker", ["run/.containerenv", "run/systemd/container"])
def test_other_container_markers(tmp_path: Path, marker: str) -> None:
    write(tmp_path, marker, "podman\n")
    pid1(tmp_path, "sh")
    det = detect(tmp_path)
    assert det.init == "offline" and det.container


def test_this_host_is_offline_because_pid1_is_no_init() -> None:
    """The development/CI host runs no init system as PID 1 (see BOOTLAB.md)."""
    comm = Path("/proc/1/comm").read_text().strip()
    if comm in ("systemd", "init", "runit", "upstart"):
        pytest.skip(f"PID 1 here is {comm}: an init system runs")
    assert detect(Path("/")).init == "offline"
