"""A registration that a later step of the install undoes: the tree (or the crontab) is exactly as before.

An install registers its boot file (`systemctl enable`, `update-rc.d NAME defaults`, the runit or OpenRC
link, upstart's override, the crontab entry) and then records its manifest. When a registrar failed part-way
(`systemctl enable` made one of two links, then exited 1) its undo was never recorded, so the link it made
stayed; and the undo of a registration that edits text (the crontab, upstart's override) wrote what
`disable` writes, not what was there (an entry of ours replaced by a re-install went, a `manual` line moved).
Every failure here is real: the real `systemctl --root`, `update-rc.d` in a Debian SysV root and `crontab`
as a throwaway user, made to fail by a file in their way or a directory they may not write.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_install_offline import BOOT_FILES, cli, for_init, snapshot, systemctl_tree

from taskserver.installer.render import package_templates

TOOL = str(Path(sys.executable).parent / "taskserver-install")
MANIFEST_DIR = "var/lib/taskserver-install"
EXE = "/opt/taskserver/bin/taskserver"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return systemctl_tree(tmp_path)


def rolled_back(res: subprocess.CompletedProcess[str]) -> str:
    """One error line saying everything was rolled back, a hint, exit 1, no traceback; the error line."""
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert len(lines) == 2 and lines[1].startswith("taskserver-install: hint: "), res.stderr
    assert lines[0].endswith(" — rolled back everything this install did"), lines[0]
    return lines[0]


def test_systemctl_enable_that_fails_after_making_a_link_is_undone(tree: Path) -> None:
    """An admin's override template puts the unit into two targets; the second target's .wants directory
    is a file, so the real `systemctl --root enable` links the unit into multi-user.target.wants and then
    exits 1. That link (and the directory made for it) stayed after the "rollback"."""
    two_targets(tree)
    before = snapshot(tree)
    error = rolled_back(cli("--init", "systemd", "--root", str(tree)))
    assert "systemctl" in error and "Not a directory" in error, error
    assert snapshot(tree) == before


def two_targets(tree: Path) -> None:
    """An admin's override template that puts the unit into graphical.target too, whose .wants directory
    is a file: the real `systemctl --root enable` (and `preset`) links the unit into multi-user.target.wants
    and then exits 1."""
    packaged = (package_templates() / "systemd/taskserver.service.j2").read_text()
    wanted = 'WantedBy={{ "default.target" if spec.user_scope else "multi-user.target" }}'
    assert wanted in packaged
    override = tree / "etc/taskserver/templates/systemd/taskserver.service.j2"
    override.parent.mkdir(parents=True)
    override.write_text(packaged.replace(wanted, wanted + " graphical.target"))
    (tree / "etc/systemd/system").mkdir(parents=True)
    (tree / "etc/systemd/system/graphical.target.wants").write_text("in the way\n")


def rpm_post(tree: Path) -> subprocess.CompletedProcess[str]:
    """rpm's %post of a first install (N = 1): write, `systemctl preset`, start (offline: not started)."""
    return cli("--maintscript", "rpm", "post", "1", "--init", "systemd", "--root", str(tree))


def test_a_preset_that_fails_part_way_is_undone_with_the_whole_post_hook(tree: Path) -> None:
    """The rpm post hook ran `systemctl preset` after the install had finished: a preset that linked the
    unit into one target and then failed left that link, the unit and the manifest behind."""
    two_targets(tree)
    before = snapshot(tree)
    error = rolled_back(rpm_post(tree))
    assert "systemctl" in error and "preset taskserver.service" in error, error
    assert snapshot(tree) == before


def test_a_post_hook_that_fails_after_the_preset_undoes_the_preset(tree: Path) -> None:
    """The preset enabled the unit (no preset file: systemd's default is enable); then the hook could not
    record the admin's choice (a directory where that record goes): the link the preset made stayed, with
    the unit and the manifest. Without the obstacle the same hook enables the unit."""
    record = tree / MANIFEST_DIR / "taskserver.maint.json"
    record.mkdir(parents=True)
    before = snapshot(tree)
    error = rolled_back(rpm_post(tree))
    assert "taskserver.maint.json" in error, error
    assert snapshot(tree) == before
    record.rmdir()
    res = rpm_post(tree)
    assert res.returncode == 0 and "preset taskserver.service" in res.stdout, res.stdout + res.stderr
    assert (tree / "etc/systemd/system/multi-user.target.wants/taskserver.service").is_symlink()
    assert json.loads(record.read_text()) == {"enabled": True}


def in_the_way_of_the_manifest(tree: Path) -> None:
    """A file where the manifest directory goes: every step before the manifest runs, then that fails."""
    (tree / MANIFEST_DIR).parent.mkdir(parents=True, exist_ok=True)
    (tree / MANIFEST_DIR).write_text("in the way\n")


@pytest.mark.parametrize("init", [i for i in BOOT_FILES if i != "sysv"])
def test_a_registration_a_later_step_fails_after_is_undone(tree: Path, init: str) -> None:
    """Each backend's registration (`systemctl --root enable`, the OpenRC and runit links, upstart's job
    file) is undone when recording the manifest fails after it."""
    args = [a for a in for_init(tree, init) if a != "--no-enable"]
    in_the_way_of_the_manifest(tree)
    before = snapshot(tree)
    error = rolled_back(cli(*args))
    assert "not a directory" in error, error
    assert snapshot(tree) == before


def test_an_upstart_override_the_admin_wrote_is_put_back_byte_for_byte(tree: Path) -> None:
    """The admin disabled the job with a `manual` line among their own stanzas. `--enable` takes that line
    out; when the install then fails, the undo appended `manual` at the end of the file (what `disable`
    writes) instead of putting the admin's file back as it was."""
    args = for_init(tree, "upstart")
    override = tree / "etc/init/taskserver.override"
    override.parent.mkdir(parents=True)
    override.write_text("# the admin's\nmanual\nenv LANG=C\n")
    override.chmod(0o640)
    in_the_way_of_the_manifest(tree)
    before = snapshot(tree)
    rolled_back(cli(*args, "--enable"))
    assert snapshot(tree) == before
    assert override.stat().st_mode & 0o777 == 0o640


@pytest.fixture
def sysv_root() -> Iterator[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "boot"))
    import lab  # the boot lab's cached roots, as test_install_sysv_chroot uses them

    if os.geteuid() != 0 or shutil.which("debootstrap", path=lab.CLEAN_PATH) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root and debootstrap (scripts/test.sh installs it)")
        pytest.skip("needs root and debootstrap (overlay mounts, chroot)")
    overlay = lab.Overlay([lab.variant_root("sysv")], tag="rollback")
    try:
        exe = overlay.root / "opt/taskserver/bin/taskserver"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
        yield overlay.root
    finally:
        overlay.cleanup()


def test_update_rc_d_registration_is_undone_with_the_numbering_of_other_scripts(sysv_root: Path) -> None:
    """The real `update-rc.d NAME defaults` in a Debian SysV root links the script into every runlevel and
    renumbers other scripts' links; the manifest then fails: every link is as it was."""
    in_the_way_of_the_manifest(sysv_root)
    before = snapshot(sysv_root / "etc")
    res = cli("--init", "sysv", "--root", str(sysv_root), "--executable", "/opt/taskserver/bin/taskserver")
    rolled_back(res)
    assert snapshot(sysv_root / "etc") == before
    (sysv_root / MANIFEST_DIR).unlink()  # without the obstacle the same install registers for real
    res = cli("--init", "sysv", "--root", str(sysv_root), "--executable", "/opt/taskserver/bin/taskserver")
    assert res.returncode == 0 and "update-rc.d taskserver defaults" in res.stdout, res.stdout + res.stderr
    assert list((sysv_root / "etc/rc2.d").glob("S??taskserver")), "update-rc.d made no link"


def test_a_runlevel_update_rc_d_could_not_link_fails_the_install(sysv_root: Path) -> None:
    """insserv (behind `update-rc.d`) exits 0 when it cannot make a link: with no inode left where rc5.d
    is, the install reported success and the service would not start in runlevel 5. The install checks
    the links the script's header asks for, fails, and undoes the registration."""
    rc5 = sysv_root / "etc/rc5.d"
    kept = {p.name: os.readlink(p) for p in rc5.iterdir() if p.is_symlink()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "rc5", str(rc5)], check=True)
    try:
        for name, target in kept.items():
            (rc5 / name).symlink_to(target)
        st = os.statvfs(rc5)
        used = st.f_files - st.f_ffree
        subprocess.run(["mount", "-o", f"remount,nr_inodes={used}", str(rc5)], check=True)  # none left
        before = snapshot(sysv_root / "etc")
        res = cli("--init", "sysv", "--root", str(sysv_root), "--executable", EXE)
        line = rolled_back(res)
        assert "rc5.d" in line, line
        assert snapshot(sysv_root / "etc") == before
    finally:
        subprocess.run(["umount", str(rc5)], check=False)


# --- the crontab, as a throwaway user ----------------------------------------------------------------------

OTHERS = "# the user's own job\n*/5 * * * * /bin/true\n"


def sh(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, input=input, check=check, timeout=60)


@pytest.fixture
def cron_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0 or shutil.which("crontab") is None or shutil.which("useradd") is None:
        pytest.skip("needs root (a throwaway user), crontab (Debian package cron) and useradd")
    name = f"tsi-rb{secrets.token_hex(3)}"
    sh("useradd", "-m", "-s", "/bin/sh", name)
    try:
        yield pwd.getpwnam(name)
    finally:
        sh("crontab", "-u", name, "-r", check=False)
        sh("userdel", "-r", name, check=False)


def as_user(pw: pwd.struct_passwd, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", TOOL, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=60)


def crontab_l(user: str) -> tuple[int, str]:
    res = sh("crontab", "-u", user, "-l", check=False)
    return res.returncode, res.stdout


def test_a_reinstall_whose_manifest_cannot_be_written_puts_the_old_entry_back(
    cron_user: pwd.struct_passwd,
) -> None:
    """Installed; then re-installed with another config, which replaces the crontab entry, and the user may
    not write their manifest directory any more (root took it over): the undo removed the entry, so the
    service the first install made was gone. The crontab is now the one from before, byte for byte."""
    sh("crontab", "-u", cron_user.pw_name, "-", input=OTHERS)
    assert as_user(cron_user, "--init", "cron").returncode == 0
    before = crontab_l(cron_user.pw_name)
    os.chown(Path(cron_user.pw_dir, ".local/state/taskserver-install"), 0, 0)
    error = rolled_back(as_user(cron_user, "--init", "cron", "--config", f"{cron_user.pw_dir}/other.yaml"))
    assert "Permission denied" in error, error
    assert crontab_l(cron_user.pw_name) == before


def test_a_first_install_that_fails_leaves_a_user_without_a_crontab_without_one(
    cron_user: pwd.struct_passwd,
) -> None:
    """The user had no crontab; the entry was added, then the manifest could not be made (their
    ~/.local/state is root's): the undo left an empty crontab behind instead of none."""
    state = Path(cron_user.pw_dir, ".local/state")
    state.mkdir(parents=True)
    assert crontab_l(cron_user.pw_name)[0] != 0
    error = rolled_back(as_user(cron_user, "--init", "cron"))
    assert "Permission denied" in error, error
    code, _ = crontab_l(cron_user.pw_name)
    assert code != 0, "a crontab was left behind"
