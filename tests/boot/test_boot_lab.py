"""The lab itself works: each init system boots on an overlay, runs commands, reboots and powers off.

If these fail, every other boot test's failure says nothing about the project.
"""

from __future__ import annotations

from pathlib import Path

import lab
import pytest
from lab_machine import EXIT_REBOOT, Machines

pytestmark = pytest.mark.boot

INIT = {"systemd": "systemd", "sysv": "init", "openrc": "init", "runit": "runit"}  # PID 1's comm


@pytest.mark.parametrize("name", sorted(lab.VARIANTS))
def test_boot_run_reboot_poweroff(name: str, variant: lab.Roots, machines: Machines) -> None:
    m = machines.container(variant(name))
    m.boot()
    state = m.wait_ready()
    assert m.init == INIT[name], state
    assert m.sh(["cat", "/proc/1/comm"]).stdout.strip() == INIT[name]
    # Inside is really the container: its own hostname namespace and private network.
    assert m.sh(["hostname"]).stdout.strip() == name  # the root's /etc/hostname, not the host's
    assert "eth0" not in m.sh(["cat", "/proc/net/dev"]).stdout
    m.sh(["sh", "-c", "echo kept > /etc/bootlab-marker"])

    assert m.reboot() == EXIT_REBOOT
    m.boot()
    m.wait_ready()
    assert m.sh(["cat", "/etc/bootlab-marker"]).stdout == "kept\n"  # the overlay survived the reboot
    assert m.poweroff() == 0
    assert not m.running

    # What the test wrote is in the upper dir; the cached root underneath is untouched.
    assert "/etc/bootlab-marker" in lab.upper_dir_files(m.overlay)
    assert "/etc/bootlab-marker" in lab.leftovers(m.overlay)
    assert not (m.overlay.lowers[0] / "etc/bootlab-marker").exists()
    # SysV shutdown remounted the container's / read-only; the host's / must not have followed.
    assert lab.mounts().get("/") is not None
    probe = Path("/var/tmp") / f"bootlab-rw-probe-{m.name}"
    probe.write_text("rw")
    probe.unlink()


def test_refuses_to_boot_a_plain_directory(variant: lab.Roots, machines: Machines) -> None:
    m = machines.container(variant("sysv"))
    m.overlay.unmount()
    m.overlay.mount = lambda: None  # type: ignore[method-assign]  # simulate a failed/forgotten mount
    with pytest.raises(lab.LabError, match="not an overlay mount"):
        m.boot()
    assert not m.running


def test_upper_dir_files_is_an_exact_record(variant: lab.Roots, machines: Machines) -> None:
    """The "nothing of ours left" checks rest on this: every kind of change is reported, churn is not ours."""
    ov = machines.overlay(variant("sysv"))
    root = ov.root
    (root / "etc/ts-new").write_text("new")  # created
    (root / "etc/hostname").write_text("changed\n")  # changed
    (root / "etc/motd").unlink()  # deleted: a whiteout in the upper dir
    (root / "etc/issue").write_bytes((root / "etc/issue").read_bytes())  # rewritten, same bytes
    (root / "etc/ts-dir/sub").mkdir(parents=True)  # new directories
    (root / "usr/share/doc/dash/ts-note").write_text("x")  # only a file is new; its dirs existed
    (root / "var/log/taskserver.log").write_text("x")  # in a churn dir, but named like us
    (root / "var/log/dpkg.log").write_text("x")  # churn
    expected = {"/etc/ts-new", "/etc/hostname", "/etc/motd", "/etc/ts-dir", "/etc/ts-dir/sub",
                "/usr/share/doc/dash/ts-note", "/var/log/taskserver.log", "/var/log/dpkg.log"}
    assert lab.upper_dir_files(ov) == expected
    assert lab.leftovers(ov) == expected - {"/var/log/dpkg.log", "/etc/hostname"}
