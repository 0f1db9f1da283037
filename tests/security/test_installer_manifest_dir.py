"""The manifest directory (``/var/lib/taskserver-install``, under ``--root`` inside the tree) is the
installer's own: root reads, writes and removes its records there (``NAME.json`` and the maintainer scripts'
``NAME.maint.json``). A symbolic link in its place, or on a directory leading to it inside a tree, was
followed: to a directory a throwaway user owns, root wrote its record where that user could change it and
took that user's ``.maint.json`` as the admin's enable/disable choice; out of a tree, it wrote into whatever
the link named inside the tree. Every command that touches a manifest now refuses such a link with one line
naming it and where it leads, exit 1, and writes nothing.

Each test builds the tree as root (what a tree root builds for an image looks like), lets the throwaway user
own the directory the link leads to (or points the link at a root-owned directory of the host), runs the
real command as root and compares the tree, the user's directory and the host's directory byte for byte.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from installer_lab import (
    CLEAN_PATH,
    TOOL,
    no_traceback,
    snapshot,
    tool,
)

NAME = "ts-mdir"
MANIFEST_DIR = "var/lib/taskserver-install"
HOOK = ["--init", "upstart", "--name", NAME, "--maintscript", "deb"]

# every command that reads, writes or removes a manifest (or the .maint.json beside it): argv after the tool,
# and whether it runs as a maintainer script under DPKG_ROOT (the tree given that way, not by --root)
COMMANDS = {
    "install": (["--init", "upstart", "--name", NAME], False),
    "status": (["--status", "--name", NAME], False),
    "uninstall": (["--uninstall", "--name", NAME], False),
    "purge": (["--uninstall", "--purge", "--name", NAME], False),
    "postinst configure": ([*HOOK, "postinst", "configure"], True),
    "prerm remove": ([*HOOK, "prerm", "remove"], True),
    "postrm purge": ([*HOOK, "postrm", "purge"], True),
}


@pytest.fixture
def tree(victim: Path) -> Iterator[Path]:
    """A root-owned tree (next to the victim, outside it) to install an upstart job into (its registration
    is files only), with /usr/bin/taskserver for the job file to name."""
    root = victim.parent / f"{victim.name}-tree"
    for d in ("etc/init", "etc/init.d", "var/lib", "usr/bin"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "usr/bin/taskserver").write_text("#!/bin/sh\n")
    (root / "usr/bin/taskserver").chmod(0o755)
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)


def run(tree: Path, command: str) -> subprocess.CompletedProcess[str]:
    args, under_dpkg_root = COMMANDS[command]
    if not under_dpkg_root:
        exe = ["--executable", "/usr/bin/taskserver"] if command == "install" else []
        return tool(*args, *exe, "--root", tree)
    env = {"PATH": CLEAN_PATH, "DPKG_ROOT": str(tree), "LANG": "C.UTF-8"}
    return subprocess.run([str(TOOL), *args, "--executable", "/usr/bin/taskserver"], capture_output=True,
                          text=True, check=False, env=env, timeout=120)


def refused(res: subprocess.CompletedProcess[str], link: Path, target: str) -> None:
    """One error line naming the link and where it leads, a hint, exit 1, nothing on stdout."""
    no_traceback(res)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("taskserver-install: hint: "), res.stderr
    error = f"taskserver-install: error: {link} is a symbolic link (to {target})"
    assert lines[0].startswith(error), lines[0]
    assert res.stdout == "", res.stdout


def forged_records(where: Path, owner: pwd.struct_passwd) -> None:
    """What the user keeps in the directory the link leads to: a manifest naming root's boot script of the
    tree and a record that says the admin disabled the service."""
    manifest = {"version": 1, "name": NAME, "backend": "upstart", "scope": "system", "executable":
                "/usr/bin/taskserver", "config": "/etc/taskserver/taskserver.yaml", "extra": {}, "dirs": [],
                "files": [{"path": f"/etc/init/{NAME}.conf", "sha256": "0", "mode": "0o644"}]}
    (where / f"{NAME}.json").write_text(json.dumps(manifest))
    (where / f"{NAME}.maint.json").write_text('{"enabled": false}\n')
    for p in (where, *where.iterdir()):
        os.lchown(p, owner.pw_uid, owner.pw_gid)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_manifest_dir_linked_to_a_users_directory_is_refused(
    tree: Path, user: pwd.struct_passwd, command: str
) -> None:
    """The tree's manifest directory leads (a relative link, inside the tree) to a directory the throwaway
    user owns and has put records into: each command refuses it, and neither the tree nor the user's
    directory changes."""
    theirs = tree / "home/records"
    theirs.mkdir(parents=True)
    forged_records(theirs, user)
    (tree / f"etc/init/{NAME}.conf").write_text("# root's own job of the tree\n")
    (tree / MANIFEST_DIR).symlink_to("../../home/records")
    before = snapshot(tree)
    refused(run(tree, command), tree / MANIFEST_DIR, "../../home/records")
    assert snapshot(tree) == before


@pytest.mark.parametrize("linked", [MANIFEST_DIR, "var/lib", "var"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_link_out_of_the_tree_on_the_way_to_the_manifest_dir_is_refused(
    tree: Path, victim: Path, command: str, linked: str
) -> None:
    """The manifest directory, or a directory leading to it, is an absolute link to a root-owned directory
    of the host holding records of the service's name: refused, the host's directory and the tree as they
    were (an install used to make the link's target inside the tree and leave its manifest there)."""
    host = victim / "records"
    (host / "lib/taskserver-install").mkdir(parents=True)
    for d in (host, host / "lib/taskserver-install"):
        (d / f"{NAME}.json").write_text("root's own file of the host\n")
        (d / f"{NAME}.maint.json").write_text('{"enabled": false}\n')
    target = {"var": str(host), "var/lib": str(host / "lib"), MANIFEST_DIR: str(host)}[linked]
    subprocess.run(["rm", "-rf", str(tree / linked)], check=True)
    (tree / linked).symlink_to(target)
    before_host, before_tree = snapshot(victim), snapshot(tree)
    refused(run(tree, command), tree / linked, target)
    assert snapshot(victim) == before_host
    assert snapshot(tree) == before_tree


def test_a_real_manifest_dir_still_works(tree: Path) -> None:
    """The same commands on a plain tree: install, status, the maintainer hooks and purge work as before."""
    for command in ("install", "status", "postinst configure", "prerm remove", "postrm purge"):
        res = run(tree, command)
        no_traceback(res)
        assert res.returncode == 0, (command, res.stderr)
    assert not (tree / MANIFEST_DIR).exists()  # purged with the service
