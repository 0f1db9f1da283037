"""A ``--root`` tree belongs to whoever built it (here a throwaway user): root's ``taskserver-install --root``
must neither run anything of it on the host nor be led outside it by its symlinks.

Each test builds the tree as the user, runs the real command as root, and compares a root-owned directory
of the host (the victim) byte for byte before and after.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from installer_lab import (
    TOOL,
    as_user,
    no_traceback,
    snapshot,
    tool,
    user_dir,
)

NAME = "ts-attack"


@pytest.fixture
def base(user: pwd.struct_passwd) -> Iterator[Path]:
    with user_dir(user) as d:
        yield d


def make_tree(base: Path, user: pwd.struct_passwd) -> Path:
    """A small Debian-like tree owned by ``user``: upstart installed, PID 1 claims to be init."""
    tree = base / "tree"
    for d in ("etc/init", "etc/init.d", "sbin", "proc/1", "var/lib"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tree / "etc/group").write_text("root:x:0:\n")
    (tree / "etc/os-release").write_text('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="14.04"\n')
    (tree / "proc/1/comm").write_text("init\n")
    shutil.chown(base, user.pw_uid, user.pw_gid)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [".", *dirnames, *filenames]:
            os.lchown(Path(dirpath, name), user.pw_uid, user.pw_gid)
    return tree


def planted_initctl(tree: Path, user: pwd.struct_passwd, marker: Path) -> None:
    """The tree's sbin/initctl: answers like upstart and, if root ever runs it, leaves ``marker``."""
    script = tree / "sbin/initctl"
    script.write_text(f'#!/bin/sh\necho owned > {marker}\necho "initctl (upstart 1.12.1)"\n')
    script.chmod(0o755)
    os.lchown(script, user.pw_uid, user.pw_gid)


def test_detecting_a_tree_never_runs_its_initctl(base: Path, user: pwd.struct_passwd, victim: Path) -> None:
    """TREE/proc/1/comm says init and TREE/sbin/initctl answers as upstart: detection, install, status and
    uninstall of the tree all leave the marker unwritten, and detection calls the tree offline."""
    tree = make_tree(base, user)
    marker = victim / "initctl-ran-as-root"
    planted_initctl(tree, user, marker)
    res = tool("--detect", "--json", "--root", tree)
    assert res.returncode == 0, res.stderr
    det = json.loads(res.stdout)
    assert (det["init"], det["live"], det["target"]) == ("offline", False, "upstart")
    assert any("always offline" in e for e in det["evidence"])
    for args in (["--name", NAME], ["--status", "--name", NAME], ["--uninstall", "--name", NAME]):
        res = tool(*args, "--root", tree)
        assert res.returncode == 0, res.stderr
        no_traceback(res)
    assert not marker.exists(), "root ran the tree's sbin/initctl"


# Layouts of a tree whose symlinks point at the host's victim directory (VICTIM is filled in by the test):
# layout -> (init system, {link in the tree: its target}).
LINKS = {
    "systemd unit dir is a link to a host dir": ("systemd", {"etc/systemd/system": "VICTIM"}),
    "job dir is a link to a host dir": ("upstart", {"etc/init": "VICTIM"}),
    "a link in the middle of the path": ("upstart", {"etc": "VICTIM"}),
    "a link that climbs out with ..": ("upstart", {"etc/init": "../../../../../../../../../VICTIM"}),
    "dangling link as the job file": ("upstart", {f"etc/init/{NAME}.conf": f"VICTIM/{NAME}.conf"}),
    "dangling link as the unit file": ("systemd", {f"etc/systemd/system/{NAME}.service": "VICTIM/x"}),
    "manifest dir is a link to a host dir": ("upstart", {"var/lib/taskserver-install": "VICTIM"}),
}


@pytest.mark.parametrize("layout", list(LINKS))
def test_symlinks_in_a_tree_never_lead_outside_it(
    base: Path, user: pwd.struct_passwd, victim: Path, layout: str
) -> None:
    """Install and uninstall follow the tree's links the way the tree's own boot would (inside it), so
    nothing of the host's victim directory is written, chowned or deleted."""
    init, links = LINKS[layout]
    if init == "systemd" and shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (the systemd backend enables with systemctl --root)")
    tree = make_tree(base, user)
    (victim / "keep").write_text("root's file\n")
    before = snapshot(victim)
    for rel, target in links.items():
        link = tree / rel
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        as_user(user, "mkdir", "-p", link.parent)
        as_user(user, "ln", "-s", target.replace("VICTIM", str(victim)), link)
    for args in (["--init", init, "--name", NAME], ["--uninstall", "--name", NAME]):
        res = tool(*args, "--root", tree)
        no_traceback(res)
        assert res.returncode in (0, 1, 2), res.stderr  # done inside the tree, refused, or nothing to undo
        assert snapshot(victim) == before, f"{args} changed the host's victim directory"
    assert not (victim / f"{NAME}.conf").exists() and not (victim / "x").exists()


def test_uninstall_after_the_tree_owner_swapped_a_directory_for_a_link(
    base: Path, user: pwd.struct_passwd, victim: Path
) -> None:
    """Installed honestly; then the tree's owner replaces etc/init with a link to a host directory that
    holds a root file of the job file's name: uninstall removes nothing there."""
    tree = make_tree(base, user)
    assert tool("--init", "upstart", "--name", NAME, "--root", tree).returncode == 0
    (victim / f"{NAME}.conf").write_text("root's own job\n")
    before = snapshot(victim)
    as_user(user, "mv", tree / "etc/init", tree / "etc/init.moved")
    as_user(user, "ln", "-s", victim, tree / "etc/init")
    res = tool("--uninstall", "--name", NAME, "--root", tree)
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert snapshot(victim) == before
    assert (tree / "etc/init.moved" / f"{NAME}.conf").exists()  # the real job file was elsewhere


def _var_lib_linked_to(victim: Path, base: Path, user: pwd.struct_passwd) -> tuple[Path, dict[str, str]]:
    """A user's tree whose var/lib is a link to the host's ``victim``, which holds a NAME directory (what a
    purge under DPKG_ROOT removes in the tree); the tree and the victim's snapshot."""
    tree = make_tree(base, user)
    (victim / NAME / "data").mkdir(parents=True)
    (victim / NAME / "data/keep").write_text("root's data\n")
    before = snapshot(victim)
    shutil.rmtree(tree / "var/lib")
    as_user(user, "ln", "-s", victim, tree / "var/lib")
    return tree, before


def test_package_purge_in_a_dpkg_root_tree_stays_inside_it(
    base: Path, user: pwd.struct_passwd, victim: Path
) -> None:
    """`postrm purge` under DPKG_ROOT removes the service's state dir (/var/lib/NAME): with the tree's
    var/lib a link to a host directory, the host's NAME directory there stays (it was removed before). The
    link is on the way to the manifest directory, so the purge is refused whole, naming it."""
    tree, before = _var_lib_linked_to(victim, base, user)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPKG_ROOT": str(tree)}
    res = subprocess.run(
        [str(TOOL), "--name", NAME, "--init", "sysv", "--maintscript", "deb", "postrm", "purge"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    no_traceback(res)
    assert res.returncode == 1 and f"{tree / 'var/lib'} is a symbolic link (to {victim})" in res.stderr, res
    assert snapshot(victim) == before


def test_the_postrm_purge_snippet_under_dpkg_root_stays_inside_the_tree(
    base: Path, user: pwd.struct_passwd, victim: Path
) -> None:
    """The same purge through the emitted postrm's own shell branch, which is what runs when dpkg has
    already removed the payload (the tool is gone): its rm -rf followed the tree's var/lib link to the
    host and removed the host's NAME directory there."""
    tree, before = _var_lib_linked_to(victim, base, user)
    emitted = tool("--name", NAME, "--emit-maintscripts", "deb")
    assert emitted.returncode == 0, emitted.stderr
    postrm = emitted.stdout.split("# --- postrm ---", 1)[1]
    script = base / "postrm.sh"
    script.write_text(postrm)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DPKG_ROOT": str(tree)}
    res = subprocess.run(["sh", str(script), "purge"], capture_output=True, text=True, check=False, env=env)
    assert res.returncode == 0, res.stderr
    assert snapshot(victim) == before
    assert "is a symbolic link" in res.stderr


@pytest.mark.parametrize("plant", ["host-link", "fifo"])
def test_run_as_is_looked_up_in_the_trees_own_passwd(base: Path, user: pwd.struct_passwd, plant: str) -> None:
    """--run-as names a user of the tree's etc/passwd. The tree's owner pointing that file at the host's
    (an absolute link) must not make a host user count as the tree's, and a FIFO there must not hang root's
    installer: both are a user the tree does not have."""
    tree = make_tree(base, user)
    (tree / "etc/passwd").unlink()
    if plant == "host-link":
        as_user(user, "ln", "-s", "/etc/passwd", tree / "etc/passwd")
    else:
        as_user(user, "mkfifo", tree / "etc/passwd")
    res = tool("--root", tree, "--init", "sysv", "--name", NAME, "--run-as", user.pw_name, "--dry-run")
    no_traceback(res)
    assert res.returncode != 0 and "no such user" in res.stderr, res.stderr


def _runnable_shell(tree: Path) -> None:
    """The host's /bin/sh and the libraries it loads, copied into the tree: a script there can run."""
    shell = Path(os.path.realpath("/bin/sh"))
    libs = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=True).stdout
    for path in [str(shell), *(w for w in libs.split() if w.startswith("/"))]:
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
    (tree / "bin").mkdir(exist_ok=True)
    if not (tree / "bin/sh").exists():
        (tree / "bin/sh").symlink_to(shell)


def test_an_offline_sysv_install_never_runs_the_registrar_of_a_tree_a_user_built(
    base: Path, user: pwd.struct_passwd
) -> None:
    """`--root TREE --init sysv` ran the tree's own update-rc.d in a chroot, as root: a program the tree's
    owner wrote (an audit's broke out of the chroot). It runs only in a tree root alone could change."""
    tree = make_tree(base, user)
    _runnable_shell(tree)
    (tree / "etc/os-release").write_text("ID=debian\n")
    (tree / "etc/rc2.d").mkdir(exist_ok=True)
    marker = "/registrar-ran-as-root"
    script = tree / "usr/sbin/update-rc.d"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\nid > {marker}\n")
    script.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [".", *dirnames, *filenames]:
            os.lchown(Path(dirpath, name), user.pw_uid, user.pw_gid)
    res = tool("--root", tree, "--init", "sysv", "--name", NAME, "--no-start")
    no_traceback(res)
    assert res.returncode != 0 and "not running update-rc.d of the tree" in res.stderr, res
    assert not (tree / marker.lstrip("/")).exists()


# Where a tree's rc links are read from (VICTIM: a root-owned host directory holding rc2.d/S01NAME and
# etc/rc2.d/S01NAME, links to the service's script): layout -> {link in the tree: its target}.
RC_LINKS = {
    "rc2.d is an absolute link to a host dir": {"etc/rc2.d": "VICTIM/rc2.d"},
    "rc2.d climbs out with ..": {"etc/rc2.d": "../../../../../../../../../VICTIM/rc2.d"},
    "etc is a link to a host dir": {"etc": "VICTIM/etc"},
}


@pytest.mark.parametrize("layout", list(RC_LINKS))
def test_sysv_status_reads_the_rc_links_of_the_tree_only(
    base: Path, user: pwd.struct_passwd, victim: Path, layout: str
) -> None:
    """--status of a SysV install in a tree looked for rcN.d/S??NAME by globbing TREE/etc/rc2.d on the
    host: the tree's owner pointing etc/rc2.d (or etc) at a host directory made it report the host's links
    (enabled: True). The rc directories are read inside the tree, and status says which link leads out."""
    tree = make_tree(base, user)
    (tree / "etc/os-release").write_text("ID=debian\n")
    res = tool("--root", tree, "--init", "sysv", "--name", NAME, "--no-enable")
    assert res.returncode == 0, res.stderr
    for d in ("rc2.d", "etc/rc2.d"):
        (victim / d).mkdir(parents=True)
        (victim / d / f"S01{NAME}").symlink_to(f"../init.d/{NAME}")
    before = snapshot(victim)
    for rel, target in RC_LINKS[layout].items():
        if rel == "etc":
            as_user(user, "mv", tree / "etc", tree / "etc.moved")
        as_user(user, "ln", "-s", target.replace("VICTIM", str(victim)), tree / rel)
    res = tool("--root", tree, "--status", "--name", NAME, "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    assert status["installed"] and status["enabled"] is False, status
    link = next(iter(RC_LINKS[layout]))
    assert [n for n in status["notes"] if n.startswith(f"{tree / link} is a symbolic link to ")
            and "outside the tree" in n], status["notes"]
    text = tool("--root", tree, "--status", "--name", NAME)
    assert "enabled: False" in text.stdout.splitlines() and "\nnote: " in text.stdout, text.stdout
    if link == "etc":
        det = json.loads(tool("--root", tree, "--detect", "--json").stdout)
        assert [e for e in det["evidence"] if "outside the tree" in e], det["evidence"]
    assert snapshot(victim) == before


def test_executable_is_looked_up_in_the_tree(base: Path, user: pwd.struct_passwd, victim: Path) -> None:
    """--executable names a program of the tree: a link the tree's owner points at a host program (or
    one that climbs out) does not make it one; the tree's own program is accepted."""
    tree = make_tree(base, user)
    program = victim / "prog"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    as_user(user, "mkdir", "-p", tree / "opt/ts/bin")
    for target in (str(program), f"../../../../../../../../..{program}"):
        as_user(user, "ln", "-sfn", target, tree / "opt/ts/bin/taskserver")
        res = tool("--root", tree, "--init", "upstart", "--name", NAME, "--executable",
                   "/opt/ts/bin/taskserver", "--dry-run")
        no_traceback(res)
        assert res.returncode == 2 and "not an executable file in" in res.stderr, res.stderr
    as_user(user, "rm", tree / "opt/ts/bin/taskserver")
    as_user(user, "cp", program, tree / "opt/ts/bin/taskserver")
    res = tool("--root", tree, "--init", "upstart", "--name", NAME, "--executable", "/opt/ts/bin/taskserver",
               "--dry-run")
    assert res.returncode == 0, res.stderr


def test_an_offline_sysv_uninstall_in_a_tree_a_user_built_removes_its_rc_links_itself(
    base: Path, user: pwd.struct_passwd
) -> None:
    """Uninstall in a tree whose registrar root may not run (the tree is a user's) failed with "not running
    update-rc.d of the tree", leaving the script and its rc links. It removes the links to its own script
    itself now, inside the tree, and still never runs the tree's program."""
    tree = make_tree(base, user)
    _runnable_shell(tree)
    (tree / "etc/os-release").write_text("ID=debian\n")
    marker = "/registrar-ran-as-root"
    script = tree / "usr/sbin/update-rc.d"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\nid > {marker}\n")
    script.chmod(0o755)
    res = tool("--root", tree, "--init", "sysv", "--name", NAME, "--no-start", "--no-enable")
    assert res.returncode == 0, res.stderr
    (tree / "etc/rc2.d").mkdir()
    (tree / f"etc/rc2.d/S01{NAME}").symlink_to(f"../init.d/{NAME}")  # as update-rc.d makes it
    (tree / "etc/rc2.d/S01cron").symlink_to("../init.d/cron")
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [".", *dirnames, *filenames]:
            os.lchown(Path(dirpath, name), user.pw_uid, user.pw_gid)
    res = tool("--root", tree, "--uninstall", "--name", NAME)
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert f"rm /etc/rc2.d/S01{NAME}" in res.stdout and "not running update-rc.d of the tree" in res.stdout
    assert not os.path.lexists(tree / f"etc/rc2.d/S01{NAME}") and (tree / "etc/rc2.d/S01cron").is_symlink()
    assert not (tree / f"etc/init.d/{NAME}").exists()
    assert not (tree / marker.lstrip("/")).exists()
