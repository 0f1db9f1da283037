"""An optional part (a pip extra) packaged by packaging/build.sh as a package of its own, taskserver-NAME.

No optional part ships yet (packaging/extras lists none); the one extra that exists today, `systemd` (pystemd
with lxml and psutil), is built here from tests/boot/data/extras-systemd to prove the split: the part's
package holds exactly what it adds to the venv, depends on the base of exactly its version and on the
libraries its modules link, installs and removes cleanly beside the base (its bytecode too) in a Debian
root, and the .rpm's subpackage holds the same files. Nothing boots; the lab gives the root and the wheels.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import lab
import pytest

pytestmark = [pytest.mark.boot, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
VERSION = lab.PACKAGE_VERSIONS[0]
PY = "/opt/taskserver/bin/python3"


@pytest.fixture(scope="module")
def built(wheel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extras")
    lab.run(["bash", str(REPO / "packaging/build.sh"), "--version", VERSION, "--out", str(out), "--wheels",
             str(wheel_dir), "--extras", str(REPO / "tests/boot/data/extras-systemd"), "all"])
    return out


def only(built: Path, pattern: str) -> Path:
    (found,) = built.glob(pattern)
    return found


def deb_files(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[5] for line in listing.splitlines() if not line.startswith("d")}


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_deb_of_the_part_holds_what_it_adds_and_depends_on_exactly_its_base(built: Path) -> None:
    base, part = only(built, "taskserver_*.deb"), only(built, "taskserver-systemd_*.deb")
    part_files = {f for f in deb_files(part) if f.startswith("./opt/")}
    assert not part_files & deb_files(base)
    assert any("/site-packages/pystemd/" in f for f in part_files)
    assert all("/site-packages/pystemd" in f or "/site-packages/lxml" in f or "/site-packages/psutil" in f
               for f in part_files), sorted(part_files)
    depends = field(part, "Depends").split(", ")
    assert depends[0] == f"taskserver (= {VERSION})", depends
    assert any(d.startswith("libsystemd0 (>= ") for d in depends), depends  # pystemd's modules link it
    assert "libsystemd0" not in field(base, "Depends")


@pytest.fixture
def debian_root() -> Iterator[Path]:
    ov = lab.Overlay([lab.base_root()], tag="extras")
    try:
        yield ov.root
    finally:
        ov.cleanup()


def chroot(root: Path, *argv: str) -> str:
    res = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, env=lab.CLEAN_ENV,
                         check=False)
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
    return res.stdout + res.stderr


def test_the_part_installs_beside_the_base_and_goes_without_a_trace(built: Path, debian_root: Path) -> None:
    root = debian_root
    for deb in (only(built, "taskserver_*.deb"), only(built, "taskserver-systemd_*.deb")):
        (root / "var/tmp" / deb.name).write_bytes(deb.read_bytes())
    out = chroot(root, "sh", "-c", "dpkg -i /var/tmp/taskserver_*.deb /var/tmp/taskserver-systemd_*.deb")
    site = root / "opt/taskserver/lib/python3.11/site-packages"
    assert (site / "pystemd/__pycache__").is_dir(), out  # compiled at install time, as the base's modules
    chroot(root, PY, "-I", "-c", "import pystemd.systemd1, taskserver.installer.cli")

    out = chroot(root, "dpkg", "--purge", "taskserver-systemd")
    assert "not empty" not in out, out  # dpkg removed every directory: no bytecode was left in them
    assert not [p.name for p in site.iterdir() if p.name.startswith(("pystemd", "lxml", "psutil"))]
    chroot(root, PY, "-I", "-c", "import taskserver.installer.cli")  # the base is whole

    out = chroot(root, "dpkg", "--purge", "taskserver")
    assert "not empty" not in out and not (root / "opt/taskserver").exists(), out


def test_rpm_subpackage_holds_the_same_part(built: Path) -> None:
    main = only(built, f"taskserver-{VERSION}.*.rpm")
    part = only(built, f"taskserver-systemd-{VERSION}.*.rpm")

    def query(pkg: Path, *what: str) -> list[str]:
        return subprocess.run(["rpm", "-qp", *what, str(pkg)], capture_output=True, text=True,
                              check=True).stdout.splitlines()

    main_files, part_files = set(query(main, "-l")), set(query(part, "-l"))
    assert not main_files & part_files - {"/usr/share/licenses"}
    assert "/opt/taskserver/lib/python3.11/site-packages/pystemd" in part_files
    requires = query(part, "--requires")
    assert f"taskserver = {VERSION}" in requires and "libsystemd.so.0()(64bit)" in requires, requires
    assert not [r for r in query(main, "--requires") if "libsystemd" in r]
