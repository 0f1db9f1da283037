"""SysV offline (`--root TREE`) in a tree without a registrar it may run (none there, or one root may not
run: see tests/security/test_installer_tree.py). Uninstall failed there ("no SysV registrar"), leaving the
script and its rc links in the tree; it now removes the rc links that lead to its own script itself, inside
the tree, says which, and leaves every other link alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_install_offline import cli, snapshot

NAME = "ts"


def layout(tree: Path, kind: str) -> dict[str, str]:
    """A bare tree's init.d and rc directories (Debian's, or RHEL's under /etc/rc.d with links to them);
    what each rcN.d is called in the link targets below."""
    if kind == "debian":
        for d in ("init.d", "rc0.d", "rc2.d", "rc3.d", "rcS.d"):
            (tree / "etc" / d).mkdir(parents=True)
        return {"rc": "etc/rc{n}.d", "script": f"../init.d/{NAME}"}
    for d in ("init.d", "rc0.d", "rc2.d", "rc3.d"):
        (tree / "etc/rc.d" / d).mkdir(parents=True)
        (tree / "etc" / d).symlink_to(f"rc.d/{d}")
    return {"rc": "etc/rc.d/rc{n}.d", "script": f"../init.d/{NAME}"}


def real(link: Path) -> str:
    """Where an rc entry is, its directory's links resolved (not the entry's own)."""
    return os.path.join(os.path.realpath(link.parent), link.name)


@pytest.mark.parametrize("kind", ["debian", "rhel"])
def test_offline_uninstall_without_a_registrar_removes_its_own_rc_links(tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "root"
    names = layout(tree, kind)
    rc = {n: tree / names["rc"].format(n=n) for n in "023S" if (tree / names["rc"].format(n=n)).is_dir()}
    pristine = snapshot(tree)
    res = cli("--root", str(tree), "--init", "sysv", "--name", NAME, "--no-enable")
    assert res.returncode == 0, res.stderr
    ours = {  # as update-rc.d, insserv or chkconfig make them: relative or absolute, S and K
        rc["2"] / f"S20{NAME}": names["script"],
        rc["3"] / f"S20{NAME}": f"/etc/init.d/{NAME}",
        rc["0"] / f"K01{NAME}": names["script"],
    }
    others = {  # another service's links, one named like ours but for another script, and a plain file
        rc["2"] / "S01cron": "../init.d/cron",
        rc["3"] / f"S21{NAME}": "../init.d/other",
    }
    for link, target in {**ours, **others}.items():
        link.symlink_to(target)
    (rc["0"] / f"K02{NAME}").write_text("not a link\n")
    assert json.loads(cli("--root", str(tree), "--status", "--name", NAME, "--json").stdout)["enabled"]
    res = cli("--root", str(tree), "--uninstall", "--name", NAME)
    assert res.returncode == 0, res.stderr
    ran = [line for line in res.stdout.splitlines() if line.startswith("  ran: rm ")]
    assert len(ran) == 1 and "removed directly: no SysV registrar" in ran[0], res.stdout
    named = ran[0].split("  (")[0].split()[2:]  # by the first name each rc directory has (RHEL: etc/rcN.d)
    assert sorted(map(real, (tree / n.lstrip("/") for n in named))) == sorted(map(real, ours))
    assert not any(os.path.lexists(p) for p in ours)
    assert all(os.readlink(p) == t for p, t in others.items()) and (rc["0"] / f"K02{NAME}").exists()
    for p in [*others, rc["0"] / f"K02{NAME}"]:
        p.unlink()
    assert snapshot(tree) == pristine  # the script, the manifest and its directories are gone too


def test_a_dry_run_names_the_links_it_would_remove(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    layout(tree, "debian")
    assert cli("--root", str(tree), "--init", "sysv", "--name", NAME, "--no-enable").returncode == 0
    (tree / f"etc/rc2.d/S20{NAME}").symlink_to(f"../init.d/{NAME}")
    before = snapshot(tree)
    res = cli("--root", str(tree), "--uninstall", "--name", NAME, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"  would run: rm /etc/rc2.d/S20{NAME}  (the rc links to /etc/init.d/{NAME}" in res.stdout
    assert snapshot(tree) == before
