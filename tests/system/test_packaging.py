"""packaging/build.sh builds a .deb that lintian accepts and an .rpm whose scriptlets are the tool's own.

The packages are built for real (dpkg-deb, rpmbuild) and inspected with the real tools; what they do when
installed is proven on booted roots by tests/boot/test_boot_packages.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0-7"
TOOLS = ("dpkg-deb", "rpmbuild", "rpm", "lintian", "unshare", "shellcheck")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must build the packages; missing: {missing}", pytrace=False)
        pytest.skip(f"needs {', '.join(missing)} (scripts/test.sh installs them)")
    out = tmp_path_factory.mktemp("pkgs")
    argv = ["bash", str(REPO / "packaging/build.sh"), "--version", VERSION, "--out", str(out), "all"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return out


def deb(built: Path) -> Path:
    (found,) = built.glob(f"taskserver_{VERSION}_*.deb")
    return found


def rpm_file(built: Path) -> Path:
    (found,) = built.glob(f"taskserver-{VERSION}.*.rpm")
    return found


def test_lintian_reports_no_errors_and_no_warnings(built: Path) -> None:
    res = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb(built))], capture_output=True,
                         text=True, check=False)
    tags = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert res.returncode == 0 and tags == [], res.stdout + res.stderr


@pytest.fixture(scope="module")
def unpacked(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deb")
    subprocess.run(["dpkg-deb", "-R", str(deb(built)), str(tree)], check=True)
    return tree


def test_payload_is_a_venv_for_the_target_paths(unpacked: Path) -> None:
    venv = unpacked / "opt/taskserver"
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    for script in ("taskserver", "taskserver-install"):
        first = (venv / "bin" / script).read_text().splitlines()[0]
        assert first == "#!/opt/taskserver/bin/python", first
    assert list(unpacked.rglob("__pycache__")) == []
    assert not (venv / "lib/python3.11/site-packages/pip").exists()
    leaked = subprocess.run(["grep", "-rIl", "taskserver-pkg.", str(venv)], capture_output=True, text=True,
                            check=False).stdout
    assert leaked == "", f"build directory named in: {leaked}"


def test_control_and_maintainer_scripts(unpacked: Path) -> None:
    control = (unpacked / "DEBIAN/control").read_text()
    assert f"Version: {VERSION}\n" in control and "Depends: python3.11" in control
    for script in ("postinst", "prerm", "postrm"):
        path = unpacked / "DEBIAN" / script
        text = path.read_text()
        assert os.access(path, os.X_OK) and text.startswith("#!/bin/sh\nset -e\n")
        call = (f'"$DPKG_ROOT"/opt/taskserver/bin/python3 -I -B -m taskserver.installer.cli '
                f'--name taskserver --maintscript deb {script} "$@"')
        assert call in text, text
        subprocess.run(["shellcheck", "-s", "sh", str(path)], check=True)
    assert "rm -rf -- " in (unpacked / "DEBIAN/postrm").read_text()  # purge works without the payload


def test_rpm_scriptlets_pass_rpms_count(built: Path) -> None:
    pkg = str(rpm_file(built))
    fmt = subprocess.run(["rpm", "-qp", "--qf", "%{NAME} %{VERSION}-%{RELEASE}", pkg], capture_output=True,
                         text=True, check=True).stdout
    assert fmt == f"taskserver {VERSION}"
    scripts = subprocess.run(["rpm", "-qp", "--scripts", pkg], capture_output=True, text=True,
                             check=True).stdout
    for name in ("post", "preun", "postun"):
        assert f'--maintscript rpm {name} "$1"' in scripts, scripts
    files = subprocess.run(["rpm", "-qpl", pkg], capture_output=True, text=True, check=True).stdout.split()
    assert "/opt/taskserver/bin/taskserver-install" in files and "/opt" not in files


def test_build_rejects_a_version_of_another_tree(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(REPO / "packaging/build.sh"), "--version", "9.9.9-1", "--out",
                          str(tmp_path), "deb"], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "--version must be" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_script_is_clean_bash() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("needs shellcheck")
    subprocess.run(["shellcheck", str(REPO / "packaging/build.sh")], check=True)
