"""Uninstall undoes what the install did, and nothing an admin made since (offline trees, real tools:
`systemctl --root` disables for real).

An admin who put their own unit where ours was (a symbolic link: `systemctl link`), or edited ours, owns the
service: uninstall ran `systemctl disable` (or the init system's own) on it anyway, which took their unit's
enable links away, and deleted an edited file. Now such a service is left exactly as it is (its file, its
enablement) with a note, and only the manifest goes; --force takes out an edited one. An enable link the
admin pointed at another service is theirs in the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_install_offline import BOOT_FILES, cli, for_init, snapshot

ADMINS = "# the admin's own\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (the systemd backend enables with systemctl --root)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return root


def install(tree: Path, init: str, *extra: str) -> None:
    res = cli(*for_init(tree, init), *extra)
    assert res.returncode == 0, res.stderr
    if init == "sysv":  # no registrar in a bare tree: the links as update-rc.d makes them
        for level, kind in (("2", "S01"), ("3", "S01"), ("0", "K01")):
            (tree / f"etc/rc{level}.d").mkdir(exist_ok=True)
            (tree / f"etc/rc{level}.d/{kind}taskserver").symlink_to("../init.d/taskserver")


def take_over(tree: Path, init: str, how: str) -> None:
    boot = tree / BOOT_FILES[init]
    if how == "edited":
        boot.write_text(boot.read_text() + "# the admin's line\n")
        return
    own = tree / "srv/admin/unit"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(ADMINS)
    boot.unlink()
    boot.symlink_to("/srv/admin/unit")


def without_install_record(snap: dict[str, str]) -> dict[str, str]:
    """The tree but for the manifest and the directories made for it (var/: nothing else is there)."""
    return {path: what for path, what in snap.items() if not path.startswith("var")}


def not_installed(tree: Path) -> bool:
    return json.loads(cli("--status", "--root", str(tree), "--json").stdout)["installed"] is False


@pytest.mark.parametrize("how", ["linked", "edited"])
@pytest.mark.parametrize("init", list(BOOT_FILES))
def test_uninstall_leaves_a_service_the_admin_made_their_own(tree: Path, init: str, how: str) -> None:
    install(tree, init)
    take_over(tree, init, how)
    before = snapshot(tree)
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"  kept       /{BOOT_FILES[init]}" in lines, res.stdout
    assert any(line.endswith(": the admin's now") for line in lines), res.stdout
    assert any("was left as the admin has it: not stopped, not disabled" in line for line in lines)
    assert snapshot(tree) == without_install_record(before)  # enable links, files: all as they were
    assert not_installed(tree)


@pytest.mark.parametrize("init", [i for i in BOOT_FILES if i != "sysv"])  # sysv: its registrar's test
def test_force_takes_out_a_service_whose_file_the_admin_edited(tree: Path, init: str) -> None:
    for_init(tree, init)
    pristine = snapshot(tree)
    install(tree, init)
    take_over(tree, init, "edited")
    res = cli("--uninstall", "--root", str(tree), "--force")
    assert res.returncode == 0, res.stderr
    assert f"  removed    /{BOOT_FILES[init]}" in res.stdout.splitlines(), res.stdout
    assert snapshot(tree) == pristine  # disabled too


def test_a_linked_service_stays_the_admins_even_with_force(tree: Path) -> None:
    """A link was never the installer's: --force does not make it take the admin's unit out."""
    install(tree, "systemd")
    take_over(tree, "systemd", "linked")
    before = snapshot(tree)
    res = cli("--uninstall", "--root", str(tree), "--force")
    assert res.returncode == 0 and "--force takes it out anyway" not in res.stdout, res.stdout
    assert snapshot(tree) == without_install_record(before)


def test_a_unit_the_admin_linked_with_systemctl_link_stays_enabled(tree: Path) -> None:
    """The admin replaced our unit with their own through systemd's own tool and enabled it: uninstall ran
    `systemctl disable` on it, which removed both the enable link and the linked unit."""
    install(tree, "systemd")
    unit = tree / BOOT_FILES["systemd"]
    unit.unlink()
    (tree / "srv/admin").mkdir(parents=True)
    (tree / "srv/admin/taskserver.service").write_text(
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    )
    for verb in ("link", "enable"):
        what = "/srv/admin/taskserver.service" if verb == "link" else "taskserver.service"
        subprocess.run(["systemctl", f"--root={tree}", verb, what], check=True, capture_output=True)
    before = snapshot(tree)
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert "systemctl" not in res.stdout  # nothing was disabled
    assert snapshot(tree) == without_install_record(before)
    assert os.readlink(unit) == "/srv/admin/taskserver.service"
    assert (tree / "etc/systemd/system/multi-user.target.wants/taskserver.service").is_symlink()


@pytest.mark.parametrize("init", ["runit", "openrc"])
def test_an_enable_link_the_admin_pointed_elsewhere_stays(tree: Path, init: str) -> None:
    """Our boot files are ours, but the enable link now leads to the admin's own service: uninstall takes
    our files out and leaves that link."""
    install(tree, init)
    link = tree / {"runit": "etc/service/taskserver", "openrc": "etc/runlevels/default/taskserver"}[init]
    link.unlink()
    link.symlink_to("/srv/admin/other")
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert f"  removed    /{BOOT_FILES[init]}" in res.stdout.splitlines()
    assert os.readlink(link) == "/srv/admin/other"
