"""SysV registration for real: update-rc.d and insserv run inside a Debian SysV root (the boot lab's cached
root, on a per-test overlay), driven by `taskserver-install --root`. Offline: nothing is started; the rc
links are what the next boot uses. Uninstall must leave the root exactly as before: insserv (behind
update-rc.d too) renumbers other scripts' links when ours comes (K01sendsigs -> K02sendsigs), and the
uninstall must renumber them back."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "boot"))
import lab

TOOL = Path(sys.executable).parent / "taskserver-install"
EXE = "/opt/taskserver/bin/taskserver"


@pytest.fixture
def sysv_tree() -> Iterator[lab.Overlay]:
    missing = [t for t in ("debootstrap", "chroot", "mount") if shutil.which(t, path=lab.CLEAN_PATH) is None]
    problem = "needs root (overlay mounts, chroot)" if os.geteuid() != 0 else None
    if missing:
        problem = f"needs {', '.join(missing)} (scripts/test.sh installs them)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    overlay = lab.Overlay([lab.variant_root("sysv")], tag="sysv-chroot")
    try:
        exe = overlay.root / EXE.lstrip("/")
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
        yield overlay
    finally:
        overlay.cleanup()


def changed(overlay: lab.Overlay) -> set[str]:
    """Paths in the upper dir whose content differs from the lower layer (copy-ups of equal bytes ignored)."""
    out = set()
    lower = overlay.lowers[0]
    for path in lab.upper_dir_files(overlay):
        low, up = lower / path.lstrip("/"), overlay.upper / path.lstrip("/")
        if up.is_file() and low.is_file() and not up.is_symlink() and filecmp.cmp(low, up, shallow=False):
            continue
        out.add(path)
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOL), *args], capture_output=True, text=True, check=False, timeout=120)


def rc_order(root: Path) -> dict[str, dict[str, int]]:
    """runlevel dir -> {S|K + script name: sequence number}."""
    return {
        d.name: {p.name[0] + p.name[3:]: int(p.name[1:3]) for p in d.iterdir() if p.name[:1] in "SK"}
        for d in sorted(root.glob("etc/rc?.d"))
    }


def same_boot(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> None:
    """The same scripts run in each runlevel, and no strict order between two of them was reversed."""
    assert {k: set(v) for k, v in after.items()} == {k: set(v) for k, v in before.items()}
    for level, seq in before.items():
        for a, na in seq.items():
            for b, nb in seq.items():
                if na < nb:
                    assert after[level][a] < after[level][b], (level, a, b)


def rc_links(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("etc/rc?.d/*taskserver"))


@pytest.mark.parametrize("registrar", ["update-rc.d", "insserv"])
def test_sysv_install_registers_in_chroot_and_uninstall_leaves_nothing(
    sysv_tree: lab.Overlay, registrar: str
) -> None:
    root = sysv_tree.root
    if registrar == "insserv":
        (root / "usr/sbin/update-rc.d").unlink()  # as on hosts without update-rc.d: insserv is used
    before = changed(sysv_tree)
    order = rc_order(root)
    det = json.loads(cli("--detect", "--json", "--root", str(root)).stdout)
    assert (det["init"], det["target"], det["registrar"]) == ("offline", "sysv", registrar)

    res = cli("--root", str(root), "--executable", EXE, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["backend"] == "sysv" and out["live"] is False
    assert out["ran"][0].startswith(f"chroot {root} {registrar}")
    script = root / "etc/init.d/taskserver"
    assert os.access(script, os.X_OK) and f"DAEMON={EXE}" in script.read_text()
    links = rc_links(root)
    assert [ln for ln in links if "/S" in ln] and {ln[:9] for ln in links if "/S" in ln} == {
        "etc/rc2.d",
        "etc/rc3.d",
        "etc/rc4.d",
        "etc/rc5.d",
    }
    assert {ln[:9] for ln in links if "/K" in ln} == {"etc/rc0.d", "etc/rc1.d", "etc/rc6.d"}
    status = json.loads(cli("--root", str(root), "--status", "--json").stdout)
    assert status["installed"] and status["enabled"]

    again = cli("--root", str(root), "--executable", EXE)
    assert again.returncode == 0 and "unchanged" in again.stdout

    res = cli("--root", str(root), "--uninstall")
    assert res.returncode == 0, res.stderr
    assert rc_links(root) == []
    same_boot(order, rc_order(root))
    assert not [p for p in changed(sysv_tree) - before if "taskserver" in p and not p.startswith("/opt/")]
    assert not [
        p for p in changed(sysv_tree) - before if not p.startswith(("/etc/rc", "/etc/init.d/.depend."))
    ]


def test_an_admins_linked_script_is_refused_then_forced_and_put_back(sysv_tree: lab.Overlay) -> None:
    """/etc/init.d/NAME a symlink to the admin's own script: refused without --force (it was replaced, and
    uninstall deleted it); with --force replaced and registered, and uninstall puts the link back."""
    root = sysv_tree.root
    own = root / "srv/admin/taskserver"
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\n# the admin's own script\n")
    own.chmod(0o755)
    script = root / "etc/init.d/taskserver"
    script.symlink_to("/srv/admin/taskserver")
    order = rc_order(root)
    res = cli("--root", str(root), "--executable", EXE)
    assert res.returncode == 1 and "is a symbolic link (to /srv/admin/taskserver)" in res.stderr, res.stderr
    assert os.readlink(script) == "/srv/admin/taskserver" and rc_order(root) == order
    res = cli("--root", str(root), "--executable", EXE, "--force")
    assert res.returncode == 0, res.stderr
    assert "replaced" in res.stdout and not script.is_symlink() and rc_links(root)
    res = cli("--root", str(root), "--uninstall")
    assert res.returncode == 0, res.stderr
    assert "restored" in res.stdout and os.readlink(script) == "/srv/admin/taskserver"
    assert rc_links(root) == [] and own.read_text() == "#!/bin/sh\n# the admin's own script\n"
    same_boot(order, rc_order(root))


def test_uninstall_leaves_a_script_the_admin_linked_since_and_its_rc_links(sysv_tree: lab.Overlay) -> None:
    """Installed and registered; then the admin put a link to their own script in its place. Uninstall ran
    `update-rc.d -f NAME remove`, which took the admin's service out of every runlevel; now the script, its
    rc links and the boot order stay as the admin has them."""
    root = sysv_tree.root
    assert cli("--root", str(root), "--executable", EXE).returncode == 0
    own = root / "srv/admin/taskserver"
    own.parent.mkdir(parents=True)
    own.write_text("#!/bin/sh\n# the admin's own script\n")
    own.chmod(0o755)
    script = root / "etc/init.d/taskserver"
    script.unlink()
    script.symlink_to("/srv/admin/taskserver")
    links, order = rc_links(root), rc_order(root)
    res = cli("--root", str(root), "--uninstall")
    assert res.returncode == 0, res.stderr
    assert "update-rc.d" not in res.stdout and "the admin's now" in res.stdout, res.stdout
    assert rc_links(root) == links and rc_order(root) == order
    assert os.readlink(script) == "/srv/admin/taskserver"


ADMINS = "#!/bin/sh\n# the admin's own start file, kept in the rc directory\n"


def admins_file(root: Path, entry: str) -> Path:
    path = root / entry
    path.write_text(ADMINS)
    path.chmod(0o755)
    return path


def test_an_admins_file_named_for_the_service_in_an_rc_directory_is_refused(sysv_tree: lab.Overlay) -> None:
    """A regular file `S20taskserver` in rc2.d (not a link to the script) counted as "enabled": the install
    skipped update-rc.d, so boot would run the admin's file in runlevel 2 and nothing in 3-5, while the
    install said it was registered. Registering beside it is not possible: the real update-rc.d (insserv)
    deletes every entry named for the service that is not its link. The install refuses before writing
    anything, naming the file; --no-enable installs without registering and leaves it too."""
    root = sysv_tree.root
    theirs = admins_file(root, "etc/rc2.d/S20taskserver")
    order, before = rc_order(root), changed(sysv_tree)
    res = cli("--root", str(root), "--executable", EXE)
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert len(lines) == 2 and lines[1].startswith("taskserver-install: hint: "), res.stderr
    assert "/etc/rc2.d/S20taskserver is not a link to /etc/init.d/taskserver" in lines[0], lines[0]
    assert changed(sysv_tree) == before and rc_order(root) == order
    assert theirs.read_text() == ADMINS and not (root / "etc/init.d/taskserver").exists()

    res = cli("--root", str(root), "--executable", EXE, "--no-enable", "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(cli("--root", str(root), "--status", "--json").stdout)
    assert (status["installed"], status["enabled"]) == (True, False), status
    assert status["registration_changed"] == [{"what": "/etc/rc2.d/S20taskserver", "state": "changed"}]
    assert cli("--root", str(root), "--uninstall").returncode == 0
    assert theirs.read_text() == ADMINS and rc_order(root) == order


def test_uninstall_leaves_an_admins_rc_entry_made_since(sysv_tree: lab.Overlay) -> None:
    """Installed and registered; then the admin put a file `S30taskserver` into rc3.d and pointed
    `K05taskserver` in rc0.d at another script. `update-rc.d -f NAME remove` (and the plain `insserv`
    after it) deleted both with the service's own links; now only the links to its script go."""
    root = sysv_tree.root
    order = rc_order(root)
    assert cli("--root", str(root), "--executable", EXE).returncode == 0
    status = json.loads(cli("--root", str(root), "--status", "--json").stdout)
    assert status["enabled"] and status["registration_changed"] == [], status
    theirs = admins_file(root, "etc/rc3.d/S30taskserver")
    (root / "etc/rc0.d/K05taskserver").symlink_to("../init.d/hwclock.sh")
    res = cli("--root", str(root), "--uninstall")
    assert res.returncode == 0, res.stderr
    assert "update-rc.d" not in res.stdout and "removed directly" in res.stdout, res.stdout
    assert rc_links(root) == ["etc/rc0.d/K05taskserver", "etc/rc3.d/S30taskserver"]
    assert theirs.read_text() == ADMINS
    assert os.readlink(root / "etc/rc0.d/K05taskserver") == "../init.d/hwclock.sh"
    theirs.unlink()
    (root / "etc/rc0.d/K05taskserver").unlink()
    same_boot(order, rc_order(root))
