"""packaging/build.sh builds a .deb that lintian accepts and an .rpm that rpmlint accepts (with the filters of
packaging/rpm/rpmlint.toml, each proven to be needed), whose scripts are the tool's own.

The packages are built for real (dpkg-deb, rpmbuild) and inspected with the real tools; what they do when
installed is proven on booted roots by tests/boot/test_boot_packages.py, and by piuparts in
tests/boot/test_piuparts.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0-7"
TOOLS = ("dpkg-deb", "dpkg-shlibdeps", "rpmbuild", "rpm", "lintian", "rpmlint", "unshare", "shellcheck")
RPMLINT_CONFIG = REPO / "packaging/rpm/rpmlint.toml"


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


def every(built: Path, suffix: str) -> list[str]:
    """The base package and its optional parts' packages (packaging/extras: taskserver-web)."""
    found = sorted(str(p) for p in built.glob(f"taskserver*{suffix}"))
    assert any("taskserver-web" in f for f in found), found
    return found


def test_lintian_reports_no_errors_and_no_warnings(built: Path) -> None:
    res = subprocess.run(["lintian", "--fail-on", "error,warning", *every(built, ".deb")],
                         capture_output=True, text=True, check=False)
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


def test_copyright_names_every_bundled_distribution_and_its_license(unpacked: Path) -> None:
    """Debian's copyright file covers all the package ships: each distribution in the venv has a Files
    paragraph, and every license named there has its text or a pointer to Debian's copy."""
    text = (unpacked / "usr/share/doc/taskserver/copyright").read_text()
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    files_lines = " ".join(p.split("\n")[0] for p in paragraphs if p.startswith("Files: "))
    site = next((unpacked / "opt/taskserver/lib").glob("python3*/site-packages"))
    for info in site.glob("*.dist-info"):
        if not info.name.startswith("taskserver-"):
            assert f"/{info.name}/*" in files_lines, info.name

    def license_of(paragraph: str) -> str:
        return paragraph.split("License: ", 1)[1].split("\n", 1)[0]

    named = {n for p in paragraphs if p.startswith("Files: ") for n in license_of(p).split(" and ")}
    # a stand-alone License paragraph, or taskserver's own (Files: *), which carries its text inline
    described = {license_of(p) for p in paragraphs if p.startswith(("License: ", "Files: *\n"))}
    assert named <= described, (named, described)


def test_control_and_maintainer_scripts(unpacked: Path) -> None:
    control = (unpacked / "DEBIAN/control").read_text()
    assert f"Version: {VERSION}\n" in control
    # the venv's link names /usr/bin/python3 (python3-minimal, pulled in by python3) and its site-packages
    # are for one minor version; markupsafe's extension module links libc
    depends = control.split("\nDepends: ")[1].split("\n")[0].split(", ")
    assert depends[:2] == ["python3 (>= 3.11)", "python3 (<< 3.12)"], depends
    assert any(d.startswith("libc6 (>= ") for d in depends), depends
    for script in ("postinst", "prerm", "postrm"):
        path = unpacked / "DEBIAN" / script
        text = path.read_text()
        assert os.access(path, os.X_OK) and text.startswith("#!/bin/sh\nset -e\n")
        call = (f'"$DPKG_ROOT"/opt/taskserver/bin/python3 -I -B -m taskserver.installer.cli '
                f'--name taskserver --maintscript deb {script} "$@"')
        assert call in text, text
        subprocess.run(["shellcheck", "-s", "sh", str(path)], check=True)
    assert "rm -rf -- " in (unpacked / "DEBIAN/postrm").read_text()  # purge works without the payload
    postinst, prerm = ((unpacked / "DEBIAN" / s).read_text() for s in ("postinst", "prerm"))
    # bytecode as dh_python3: compiled by postinst, removed by every prerm (upgrades included)
    assert "/opt/taskserver/bin/python3 -I -m compileall -q /opt/taskserver/lib" in postinst
    assert "-name __pycache__ -exec rm -rf {} +" in prerm and 'if [ "$1" = remove ]' not in prerm


def test_maintainer_scripts_fail_with_one_line_when_the_payload_cannot_run(unpacked: Path,
                                                                          tmp_path: Path) -> None:
    """postinst and prerm of a package whose interpreter is missing (here: DPKG_ROOT names an empty root)
    fail, saying why in one line; postrm, which dpkg runs after the payload is gone, succeeds."""
    env = {"PATH": os.environ["PATH"], "DPKG_ROOT": str(tmp_path)}
    calls = (("postinst", ["configure"]), ("prerm", ["remove"]), ("prerm", ["upgrade", "0.1.0-8"]))
    for script, args in calls:
        res = subprocess.run(["sh", str(unpacked / "DEBIAN" / script), *args], capture_output=True, text=True,
                             env=env, check=False)
        assert res.returncode == 1 and res.stdout == "", (script, res.stdout, res.stderr)
        assert res.stderr == (f"taskserver: {tmp_path}/opt/taskserver/bin/python3 cannot run (it needs "
                              f"/usr/bin/python3 of version 3.11): deb {script} failed\n"), res.stderr
    res = subprocess.run(["sh", str(unpacked / "DEBIAN/postrm"), "remove"], capture_output=True, text=True,
                         env=env, check=False)
    assert (res.returncode, res.stderr) == (0, "")


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


def test_web_part_is_a_package_of_its_own_on_exactly_its_base(built: Path) -> None:
    (web,) = built.glob(f"taskserver-web_{VERSION}_all.deb")  # pure Python: one package for every arch

    def fields(pkg: Path, *names: str) -> list[str]:
        return [subprocess.run(["dpkg-deb", "-f", str(pkg), n], capture_output=True, text=True,
                               check=True).stdout.strip() for n in names]

    assert fields(web, "Depends") == [f"taskserver (= {VERSION})"]
    listing = subprocess.run(["dpkg-deb", "-c", str(web)], capture_output=True, text=True, check=True).stdout
    assert "/site-packages/starlette/" in listing and "/site-packages/taskserver/" not in listing
    assert "starlette" not in subprocess.run(["dpkg-deb", "-c", str(deb(built))], capture_output=True,
                                             text=True, check=True).stdout


def test_rpm_dependencies_name_what_the_payload_links_to(built: Path) -> None:
    pkg = str(rpm_file(built))
    requires = subprocess.run(["rpm", "-qp", "--requires", pkg], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    assert {"/usr/bin/python3", "python(abi) = 3.11", "libc.so.6()(64bit)"} <= set(requires), requires
    provides = subprocess.run(["rpm", "-qp", "--provides", pkg], capture_output=True, text=True,
                              check=True).stdout.split()
    assert not [p for p in provides if ".so" in p], provides  # the venv's private modules provide nothing
    info = subprocess.run(["rpm", "-qp", "--qf", "%{LICENSE}|%{URL}", pkg], capture_output=True, text=True,
                          check=True).stdout
    licenses, url = info.split("|")
    assert "MIT" in licenses.split(" AND ") and url.startswith("https://"), info  # ours and the bundled ones
    files = subprocess.run(["rpm", "-qpl", pkg], capture_output=True, text=True, check=True).stdout.split()
    # rpm ships the bytecode (as brp-python-bytecompile makes it) and so owns and erases it
    assert any(f.endswith("/taskserver/installer/__pycache__/cli.cpython-311.pyc") for f in files)


def _rpmlint(*argv: str) -> list[str]:
    res = subprocess.run(["rpmlint", *argv], capture_output=True, text=True, check=False)
    return [line for line in res.stdout.splitlines() if ": E: " in line or ": W: " in line]


def test_rpmlint_reports_nothing_with_the_justified_filters(built: Path) -> None:
    res = subprocess.run(["rpmlint", "-c", str(RPMLINT_CONFIG), *every(built, ".rpm")], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0 and "0 errors, 0 warnings" in res.stdout, res.stdout + res.stderr


def test_every_rpmlint_filter_is_needed_and_commented(built: Path) -> None:
    """Each filter matches something rpmlint really reports without it, and a comment says why."""
    config = tomllib.loads(RPMLINT_CONFIG.read_text())
    unfiltered = _rpmlint(*every(built, ".rpm"))
    for pattern in config["Filters"]:
        assert any(re.search(pattern, line) for line in unfiltered), f"unused filter {pattern!r}"
    lines = RPMLINT_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("'"):
            assert lines[i - 1].strip().startswith("#"), f"filter without its reason: {line}"


def test_build_rejects_a_version_of_another_tree(tmp_path: Path) -> None:
    res = subprocess.run(["bash", str(REPO / "packaging/build.sh"), "--version", "9.9.9-1", "--out",
                          str(tmp_path), "deb"], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "--version must be" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_build_script_is_clean_bash() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("needs shellcheck")
    subprocess.run(["shellcheck", str(REPO / "packaging/build.sh")], check=True)
