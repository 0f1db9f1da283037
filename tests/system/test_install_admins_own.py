"""Uninstall undoes what the install did, and nothing an admin made since (offline trees, real tools:
`systemctl --root` disables for real).

An admin who put their own unit where ours was (a symbolic link: `systemctl link`), or edited ours, owns the
service: uninstall ran `systemctl disable` (or the init system's own) on it anyway, which took their unit's
enable links away, and deleted an edited file. Now such a service is left exactly as it is (its file, its
enablement) with a note, and only the manifest goes; --force takes out an edited one. A symbolic link in
place of a directory the install makes (runit's /etc/sv/NAME), of runsv's supervise/ directory, of an enable
link pointing elsewhere, of upstart's override or of a purged data directory is the admin's in the same
way: not written, not removed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_install_offline import BOOT_FILES, cli, for_init, snapshot, systemctl_tree

ADMINS = "# the admin's own\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return systemctl_tree(tmp_path)


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


@pytest.mark.parametrize("init", list(BOOT_FILES))
def test_force_takes_out_a_service_whose_file_the_admin_edited(tree: Path, init: str) -> None:
    for_init(tree, init)
    for level in "230" if init == "sysv" else "":
        (tree / f"etc/rc{level}.d").mkdir()
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


def link_sv_dir(tree: Path) -> Path:
    """/etc/sv/taskserver as the admin's link to their own service directory (with runsv's supervise/)."""
    own = tree / "srv/admin/sv"
    for d in ("log", "supervise"):
        (own / d).mkdir(parents=True, exist_ok=True)
    (own / "run").write_text(ADMINS)
    (own / "supervise/stat").write_text("run\n")
    sv = tree / "etc/sv/taskserver"
    if sv.is_dir() and not sv.is_symlink():
        for name in ("run", "log/run"):
            (sv / name).unlink()
        (sv / "log").rmdir()
        sv.rmdir()
    sv.symlink_to("/srv/admin/sv")
    return sv


@pytest.mark.parametrize("target", ["the admin's service", "an empty directory"])
def test_a_symlinked_runit_service_dir_is_never_written_into(tree: Path, target: str) -> None:
    """A link at /etc/sv/NAME (to anywhere) is an admin's directory: install wrote run and log/run into
    it; now it refuses, --force and --dry-run too, with one line naming the link."""
    for_init(tree, "runit")
    sv = link_sv_dir(tree)
    if target == "an empty directory":
        sv.unlink()
        (tree / "srv/empty").mkdir()
        sv.symlink_to("/srv/empty")
    before = snapshot(tree)
    for extra in ([], ["--force"], ["--dry-run"]):
        res = cli(*for_init(tree, "runit"), *extra)
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and res.stdout == "" and len(lines) == 2, res.stdout + res.stderr
        assert f"/etc/sv/taskserver is a symbolic link (to {os.readlink(sv)}), not a directory" in lines[0]
        assert snapshot(tree) == before


def test_uninstall_leaves_a_runit_service_dir_the_admin_linked_since(tree: Path) -> None:
    """Installed; then /etc/sv/NAME became a link to the admin's own directory: uninstall removed the
    service link and runsv's supervise/ there; now it leaves all of it."""
    install(tree, "runit")
    link_sv_dir(tree)
    before = snapshot(tree)
    status = json.loads(cli("--status", "--root", str(tree), "--json").stdout)
    assert {c["state"] for c in status["files_changed"]} == {
        "below /etc/sv/taskserver, a symbolic link (to /srv/admin/sv)"
    }
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert snapshot(tree) == without_install_record(before)
    assert (tree / "etc/service/taskserver").is_symlink() and (tree / "srv/admin/sv/supervise/stat").exists()


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


def test_a_symlinked_upstart_override_is_the_admins(tree: Path) -> None:
    """upstart's override switches the job off with `manual`: a link there is the admin's file kept
    elsewhere. --no-enable replaced it with a file of its own and uninstall removed it; now install refuses
    to change it and uninstall leaves it."""
    override = tree / "etc/init/taskserver.override"
    override.parent.mkdir(parents=True)
    (tree / "srv").mkdir()
    (tree / "srv/override").write_text("env LANG=C.UTF-8\n")
    override.symlink_to("/srv/override")
    before = snapshot(tree)
    res = cli("--init", "upstart", "--root", str(tree), "--no-enable")
    assert res.returncode == 1 and "taskserver.override is a symbolic link (to /srv/override)" in res.stderr
    assert snapshot(tree) == before
    assert cli("--init", "upstart", "--root", str(tree)).returncode == 0
    (tree / "srv/override").write_text("env LANG=C.UTF-8\nmanual\n")  # the admin switches it off
    before = snapshot(tree)
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    del before["etc/init/taskserver.conf"]  # ours
    assert snapshot(tree) == without_install_record(before)


def test_purge_keeps_a_data_directory_that_is_a_link(tree: Path) -> None:
    """runit's log directory as a link to where the admin keeps logs: purge removed the link and said
    "purged" while the logs stayed; now it keeps the link and says so."""
    install(tree, "runit")
    (tree / "srv/logs").mkdir(parents=True)
    (tree / "srv/logs/current").write_text("log line\n")
    (tree / "var/log").mkdir(parents=True)
    (tree / "var/log/taskserver").symlink_to("/srv/logs")
    res = cli("--uninstall", "--purge", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert "kept /var/log/taskserver (log): a symbolic link (to /srv/logs), an admin's" in res.stdout
    assert os.readlink(tree / "var/log/taskserver") == "/srv/logs"
    assert (tree / "srv/logs/current").read_text() == "log line\n"


def test_a_supervise_link_in_the_runit_service_dir_stays(tree: Path) -> None:
    """runsv makes supervise/ in the service directory; uninstall removes it. A link there instead (Debian's
    packaged services point it into /run) is not runsv's: it stays, and what it leads to."""
    install(tree, "runit")
    sv = tree / "etc/sv/taskserver"
    (tree / "run/runit/supervise.taskserver").mkdir(parents=True)
    (tree / "run/runit/supervise.taskserver/stat").write_text("run\n")
    (sv / "supervise").symlink_to("/run/runit/supervise.taskserver")
    (sv / "log/supervise").mkdir()  # what runsv made for the log service
    (sv / "log/supervise/stat").write_text("run\n")
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert os.readlink(sv / "supervise") == "/run/runit/supervise.taskserver"
    assert (tree / "run/runit/supervise.taskserver/stat").read_text() == "run\n"
    assert sorted(p.name for p in sv.iterdir()) == ["supervise"]  # run, log/ and its supervise/ are gone


def test_package_purge_keeps_a_state_directory_that_is_a_link(tree: Path) -> None:
    """`postrm purge` (DPKG_ROOT) removes the service's state directory: a link there (the admin keeps the
    state elsewhere) is kept and named, as --uninstall --purge keeps it."""
    (tree / "srv/state").mkdir(parents=True)
    (tree / "srv/state/history.db").write_text("runs\n")
    (tree / "var/lib").mkdir(parents=True)
    (tree / "var/lib/taskserver").symlink_to("/srv/state")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPKG_ROOT": str(tree)}
    res = cli("--init", "systemd", "--maintscript", "deb", "postrm", "purge", env=env)
    assert res.returncode == 0, res.stderr
    assert "kept /var/lib/taskserver: a symbolic link (to /srv/state), an admin's" in res.stdout
    assert os.readlink(tree / "var/lib/taskserver") == "/srv/state"
    assert (tree / "srv/state/history.db").read_text() == "runs\n"


# the enable link (or rc entry) of each init system, as the tree names it
ENABLE_LINKS = {
    "systemd": "etc/systemd/system/multi-user.target.wants/taskserver.service",
    "sysv": "etc/rc2.d/S01taskserver",
    "openrc": "etc/runlevels/default/taskserver",
    "runit": "etc/service/taskserver",
}


@pytest.mark.parametrize("init", list(ENABLE_LINKS))
def test_status_names_an_enable_link_the_admin_pointed_elsewhere(tree: Path, init: str) -> None:
    """The enable link leads to the admin's own service (for SysV: an rc entry of the service's name is
    their file): --status said `enabled: True` and nothing else, as if it were the install's registration.
    It names the link now; the link the install made is not named."""
    install(tree, init)
    assert json.loads(cli("--status", "--root", str(tree), "--json").stdout)["registration_changed"] == []
    link = tree / ENABLE_LINKS[init]
    link.unlink()
    if init == "sysv":
        link.write_text("#!/bin/sh\n# the admin's own\n")
    else:
        link.symlink_to("/srv/admin/other")
    res = cli("--status", "--root", str(tree), "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    where = "/" + ENABLE_LINKS[init]
    assert status["registration_changed"] == [{"what": where, "state": "changed"}], status
    assert [n for n in status["notes"] if n.startswith(f"{where} ") and n.endswith(
        "the admin's now (not this install's registration)")], status["notes"]


@pytest.mark.parametrize("what", ["a link to another service", "a directory"])
def test_a_runit_service_entry_of_the_admins_is_refused_not_taken_for_the_registration(tree: Path,
                                                                                         what: str) -> None:
    """/etc/service/NAME leads to the admin's own service directory (or is one): runsvdir runs that, not
    /etc/sv/NAME. An install counted the link as "enabled" and said the service was registered; now it
    refuses before writing anything, naming the entry, and leaves it; --no-enable installs without it."""
    args = for_init(tree, "runit")
    entry = tree / "etc/service/taskserver"
    if what == "a directory":
        entry.mkdir()
        (entry / "run").write_text("#!/bin/sh\n# the admin's own\n")
    else:
        entry.symlink_to("/srv/admin/other")
    before = snapshot(tree)
    res = cli(*args)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert len(lines) == 2 and lines[1].startswith("taskserver-install: hint: "), res.stderr
    assert "/etc/service/taskserver is the admin's" in lines[0] and "not registering" in lines[0], lines[0]
    assert snapshot(tree) == before
    assert cli(*args, "--no-enable").returncode == 0
    status = json.loads(cli("--status", "--root", str(tree), "--json").stdout)
    assert (status["installed"], status["enabled"]) == (True, False), status
    assert cli("--uninstall", "--root", str(tree)).returncode == 0
    assert snapshot(tree) == before
