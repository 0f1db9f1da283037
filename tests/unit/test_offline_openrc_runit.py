"""OpenRC and runit into an unbooted tree (--root): files and the enable link inside the tree, as each init
system's own tool makes them, and never through a link of the tree to this machine's own directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskserver.installer.cli import main

EXE = "/opt/ts/bin/taskserver"


def tree(root: Path) -> Path:
    exe = root / EXE.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return root


def files_under(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*")}


def test_runit_link_goes_into_the_trees_service_dir_through_its_absolute_links(tmp_path: Path) -> None:
    """Debian: /etc/service -> runit/runsvdir/current -> /etc/runit/runsvdir/default (absolute). Followed from
    here, the absolute link would name this machine's own /etc/runit; resolved in the tree, it does not."""
    root = tree(tmp_path / "root")
    (root / "etc/sv").mkdir(parents=True)
    (root / "etc/runit/runsvdir/default").mkdir(parents=True)
    os.symlink("/etc/runit/runsvdir/default", root / "etc/runit/runsvdir/current")
    os.symlink("runit/runsvdir/current", root / "etc/service")
    before = files_under(root)
    assert main(["--root", str(root), "--init", "runit", "--executable", EXE]) == 0
    link = root / "etc/runit/runsvdir/default/taskserver"
    assert os.readlink(link) == "/etc/sv/taskserver"
    assert (root / "etc/sv/taskserver/run").stat().st_mode & 0o777 == 0o755
    assert (root / "etc/sv/taskserver/log/run").exists()
    assert main(["--root", str(root), "--uninstall"]) == 0
    assert files_under(root) == before


def test_openrc_script_and_runlevel_link_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path / "root")
    (root / "etc/init.d").mkdir(parents=True)
    (root / "etc/runlevels/default").mkdir(parents=True)
    before = files_under(root)
    assert main(["--root", str(root), "--init", "openrc", "--executable", EXE]) == 0
    assert "offline" in capsys.readouterr().out
    assert os.readlink(root / "etc/runlevels/default/taskserver") == "/etc/init.d/taskserver"
    assert (root / "etc/init.d/taskserver").read_text().startswith("#!/sbin/openrc-run\n")
    assert main(["--root", str(root), "--uninstall"]) == 0
    assert files_under(root) == before


INITS = [("/lib/runit/runit-init", "runit"), ("/lib/sysvinit/init", "sysv")]


@pytest.mark.parametrize(("init_link", "expected"), INITS)
def test_offline_target_is_the_init_that_boots_next(tmp_path: Path, init_link: str, expected: str) -> None:
    """The runit package is also a mere supervisor under SysV or systemd: only /sbin/init leading to
    runit-init (Debian keeps it in /lib/runit, outside PATH) makes runit the target of an offline install."""
    from taskserver.installer.detect import detect

    root = tmp_path / "root"
    for d in ("etc/init.d", "etc/runit", "sbin", "lib/runit", "lib/sysvinit"):
        (root / d).mkdir(parents=True)
    for exe in ("lib/runit/runit-init", "lib/sysvinit/init", "sbin/runit"):
        (root / exe).write_text("")
        (root / exe).chmod(0o755)
    os.symlink(init_link, root / "sbin/init")
    det = detect(root)
    assert (det.init, det.target) == ("offline", expected), det.evidence
