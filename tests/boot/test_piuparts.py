"""Debian's own package tester on the .deb: piuparts (with adequate); dpkg on a root without the interpreter.

piuparts copies a chroot (here: the lab's debootstrap base root, on an overlay whose apt sources name only a
local repository), installs the package with apt, purges it, and fails on anything left behind, on broken
symlinks and (--fail-if-inadequate) on any adequate tag, e.g. `py-file-not-bytecompiled`. Its upgrade test
installs the previous build from that repository with apt and upgrades to the tested .deb (on the systemd
root: the base and its optional part taskserver-web, tested together). It runs in a
network namespace of its own: every dependency must come from the base root or the local repository.
Nothing boots here; the module sits with the boot tests for the lab's roots and root privileges.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import lab
import pytest

pytestmark = [pytest.mark.boot, pytest.mark.root]

TOOLS = ("piuparts", "adequate", "dpkg-scanpackages", "unshare")
PREVIOUS, TESTED = lab.PACKAGE_VERSIONS[0], lab.PACKAGE_VERSIONS[1]
REPO_IN_ROOT = "srv/taskserver-test-repo"


@pytest.fixture(scope="module")
def piuparts_host(bootlab_host: None) -> None:
    missing = [t for t in TOOLS if shutil.which(t, path=lab.CLEAN_PATH) is None]
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run piuparts; missing: {missing}", pytrace=False)
        pytest.skip(f"needs {', '.join(missing)} (Debian packages piuparts, adequate, dpkg-dev, util-linux)")


def deb(packages: Path, version: str, name: str = "taskserver") -> Path:
    (found,) = packages.glob(f"{name}_{version}_*.deb")
    return found


# root -> the packages piuparts tests there together: the base alone on minbase, the base with its optional
# part taskserver-web (packaging/extras) on the systemd root
CASES = {"base": ("taskserver",), "systemd": ("taskserver", "taskserver-web")}


def lab_root(name: str) -> Path:
    """"base": debootstrap minbase with python3 (no init system: the tool writes a SysV script for the next
    boot); "systemd": the same with systemd (a unit, enabled offline with systemctl)."""
    return lab.base_root() if name == "base" else lab.variant_root(name)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def root_with_local_repo(case: str, piuparts_host: None, packages: Path) -> Iterator[Path]:
    """A lab root on an overlay, its apt sources replaced by a local repository of the PREVIOUS build."""
    ov = lab.Overlay([lab_root(case)], tag="piuparts")
    try:
        repo = ov.root / REPO_IN_ROOT
        repo.mkdir(parents=True)
        for name in CASES[case]:
            shutil.copy(deb(packages, PREVIOUS, name), repo)
        index = subprocess.run(["dpkg-scanpackages", ".", "/dev/null"], cwd=repo, capture_output=True,
                               text=True, check=True).stdout
        (repo / "Packages").write_text(index)
        (ov.root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:/{REPO_IN_ROOT} ./\n")
        for lists in (ov.root / "var/lib/apt/lists").glob("*_dists_*"):
            lists.unlink()  # the base's index of the network mirror: apt must see only the local repository
        yield ov.root
    finally:
        ov.cleanup()


def test_piuparts_install_purge_and_upgrade_from_previous_build(case: str, root_with_local_repo: Path,
                                                                packages: Path) -> None:
    with tempfile.TemporaryDirectory(dir=lab.SCRATCH, prefix="taskserver-piuparts-") as scratch:
        log = Path(scratch) / "piuparts.log"
        argv = ["unshare", "--net", "piuparts", "--existing-chroot", str(root_with_local_repo),
                "--keep-sources-list", "--no-eatmydata", "--fail-if-inadequate", "--fail-on-broken-symlinks",
                "--distribution", lab.SUITE, "--tmpdir", scratch, "--log-file", str(log),
                *(str(deb(packages, TESTED, name)) for name in CASES[case])]
        res = subprocess.run(argv, capture_output=True, text=True, env=lab.CLEAN_ENV, timeout=900,
                             check=False)
        text = log.read_text() if log.exists() else res.stdout + res.stderr
    failures = [line for line in text.splitlines() if "ERROR:" in line or "FAIL" in line]
    assert res.returncode == 0 and failures == [], "\n".join(failures) or text[-4000:]
    for passed in ("PASS: Installation and purging test.", "PASS: Installation, upgrade and purging tests."):
        assert passed in text, f"piuparts did not run: {passed}\n{text[-4000:]}"
    for name in CASES[case]:  # the upgrade started from the previous build
        assert f"Unpacking {name} ({PREVIOUS})" in text and f"Unpacking {name} ({TESTED})" in text
    assert "Running adequate" in text and "No broken symlinks as far as we can find." in text


def test_postinst_fails_with_one_line_when_the_interpreter_is_missing(piuparts_host: None,
                                                                     packages: Path) -> None:
    """The issue's case: the venv's /usr/bin/python3 is gone (python3 and python3-minimal, which ships that
    link, removed; python3.11 still there) and the package is forced in. dpkg must report the failed
    configure, with the reason in one line."""
    ov = lab.Overlay([lab.base_root()], tag="nopython")
    try:
        root = ov.root
        lab.run(["chroot", str(root), "dpkg", "--force-depends", "--purge", "python3-venv", "python3",
                 "python3-minimal"])
        assert not os.path.lexists(root / "usr/bin/python3") and (root / "usr/bin/python3.11").exists()
        shutil.copy(deb(packages, TESTED), root / "var/tmp/taskserver.deb")
        argv = ["chroot", str(root), "dpkg", "--force-depends", "-i", "/var/tmp/taskserver.deb"]
        res = subprocess.run(argv, capture_output=True, text=True, env=lab.CLEAN_ENV, check=False)
        status = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Status}", "taskserver"],
                                capture_output=True, text=True, check=False).stdout
    finally:
        ov.cleanup()
    assert res.returncode != 0, res.stdout + res.stderr
    ours = [line for line in res.stderr.splitlines() if line.startswith("taskserver: ")]
    assert ours == ["taskserver: /opt/taskserver/bin/python3 cannot run (it needs /usr/bin/python3 of "
                    "version 3.11): deb postinst failed"], res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert status == "install ok half-configured", status
