"""The decision table of the maintainer-script hooks, and the snippets packagers paste.

These tests are about the table (which steps dpkg's and rpm's arguments lead to) and the shell the tool
emits (checked by shellcheck and dash). Whether the steps do the right thing to a real service is proven by
tests/boot/test_boot_packages.py on booted init systems.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taskserver.installer import maintscript
from taskserver.installer import manifest as mf
from taskserver.installer.backends.base import Action, Backend, FileSpec, cmd
from taskserver.installer.maintscript import Step, decide
from taskserver.installer.spec import ServiceSpec, build_spec
from taskserver.runtime.errors import UserError

S = Step
TOOL = [sys.executable, "-m", "taskserver.installer.cli"]


@pytest.mark.parametrize(
    ("fmt", "script", "args", "steps"),
    [
        # first install: enable (was-enabled defaults to true) and start
        ("deb", "postinst", ["configure"], (S.WRITE, S.START)),
        ("deb", "postinst", ["configure", ""], (S.WRITE, S.START)),
        # upgrade: keep the admin's choice, restart only if it runs
        ("deb", "postinst", ["configure", "0.1.0-1"], (S.WRITE, S.TRY_RESTART)),
        ("deb", "postinst", ["abort-upgrade", "0.1.0-2"], (S.WRITE, S.TRY_RESTART)),
        ("deb", "postinst", ["abort-remove"], (S.WRITE, S.START)),
        ("deb", "postinst", ["abort-deconfigure", "in-favour", "x", "1"], (S.WRITE, S.TRY_RESTART)),
        ("deb", "prerm", ["remove"], (S.STOP, S.REMOVE)),
        ("deb", "prerm", ["upgrade", "0.1.0-2"], ()),
        ("deb", "prerm", ["failed-upgrade", "0.1.0-1", "0.1.0-2"], ()),
        ("deb", "postrm", ["remove"], (S.REMOVE,)),
        ("deb", "postrm", ["purge"], (S.REMOVE, S.PURGE, S.PURGE_CONFIG)),
        ("deb", "postrm", ["upgrade", "0.1.0-2"], ()),
        ("deb", "postrm", ["abort-install"], ()),
        ("deb", "postrm", ["abort-install", "0.1.0-1", "0.1.0-2"], ()),  # an upgrade's preinst failed
        ("deb", "postrm", ["abort-upgrade", "0.1.0-1", "0.1.0-2"], ()),
        ("deb", "postrm", ["failed-upgrade", "0.1.0-1", "0.1.0-2"], ()),
        ("deb", "postrm", ["disappear", "other-pkg", "1.0"], ()),
        ("deb", "prerm", ["deconfigure", "in-favour", "x", "1", "removing", "y", "2"], ()),
        ("deb", "prerm", ["remove", "in-favour", "x", "1"], (S.STOP, S.REMOVE)),
        ("deb", "postinst", ["triggered", "/some/trigger"], ()),
        ("rpm", "post", ["3"], (S.WRITE, S.TRY_RESTART)),
        ("rpm", "preun", ["2"], ()),
        ("rpm", "postun", ["2"], (S.TRY_RESTART,)),
        ("rpm", "post", ["1"], (S.WRITE, S.PRESET, S.START)),
        ("rpm", "post", ["2"], (S.WRITE, S.TRY_RESTART)),
        ("rpm", "preun", ["0"], (S.STOP, S.REMOVE, S.PURGE)),
        ("rpm", "preun", ["1"], ()),
        ("rpm", "postun", ["1"], (S.TRY_RESTART,)),
        ("rpm", "postun", ["0"], ()),
    ],
)
def test_decision_table(fmt: str, script: str, args: list[str], steps: tuple[Step, ...]) -> None:
    assert decide(fmt, script, args) == steps


@pytest.mark.parametrize(
    ("fmt", "script", "args"),
    [("deb", "postinst", ["bogus"]), ("deb", "preinst", ["install"]), ("deb", "prerm", []),
     ("rpm", "post", []), ("rpm", "post", ["x"]), ("rpm", "pre", ["1"]), ("zip", "post", ["1"]),
     ("rpm", "post", ["1", "2"]), ("rpm", "postun", ["-1"]), ("deb", "postrm", ["bogus"]),
     ("deb", "postinst", ["abort-install"])],
)
def test_arguments_no_dpkg_or_rpm_passes_are_rejected(fmt: str, script: str, args: list[str]) -> None:
    with pytest.raises(UserError) as info:
        decide(fmt, script, args)
    assert info.value.exit_code == 2 and info.value.hint


def test_cli_rejects_bad_arguments_with_one_line_and_exit_2() -> None:
    res = subprocess.run([*TOOL, "--maintscript", "deb", "postinst", "bogus"], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 2
    first = res.stderr.splitlines()[0]
    assert first == "taskserver-install: error: --maintscript deb postinst: unknown action 'bogus'"
    assert "Traceback" not in res.stderr


def _emit(fmt: str, *extra: str) -> str:
    return subprocess.run([*TOOL, "--emit-maintscripts", fmt, *extra], capture_output=True, text=True,
                          check=True).stdout


def _deb_sections(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for chunk in text.split("# --- ")[1:]:
        name, _, body = chunk.partition(" ---\n")
        parts[name] = body
    return parts


@pytest.mark.parametrize("name", ["taskserver", "my.app-jobs"])
def test_emitted_deb_snippets_are_clean_posix_sh(tmp_path: Path, name: str) -> None:
    if not (shutil.which("shellcheck") and shutil.which("dash")):
        pytest.skip("shellcheck and dash are needed (scripts/test.sh installs them)")
    sections = _deb_sections(_emit("deb", "--name", name, "--config", "/etc/odd dir/it's.yaml"))
    assert set(sections) == {"postinst", "prerm", "postrm"}
    for script, body in sections.items():
        path = tmp_path / script
        path.write_text("#!/bin/sh\nset -e\n" + body + "exit 0\n")
        subprocess.run(["dash", "-n", str(path)], check=True)
        subprocess.run(["shellcheck", "-s", "sh", str(path)], check=True)
    assert "'/etc/odd dir/it'\"'\"'s.yaml'" in sections["postrm"]  # quoted as one word


def test_emitted_deb_snippets_fail_in_one_line_when_the_payload_cannot_run(tmp_path: Path) -> None:
    """DPKG_ROOT naming an empty root: the venv's interpreter is not there. postinst and prerm must fail and
    say so (dpkg then reports it); postrm runs after the payload is gone by design and succeeds."""
    sections = _deb_sections(_emit("deb", "--name", "ts-x"))
    env = {"PATH": os.environ["PATH"], "DPKG_ROOT": str(tmp_path / "root")}
    results = {}
    for script, arg in (("postinst", "configure"), ("prerm", "upgrade"), ("postrm", "remove")):
        path = tmp_path / script
        path.write_text("#!/bin/sh\nset -e\n" + sections[script] + "exit 0\n")
        res = subprocess.run(["sh", str(path), arg], capture_output=True, text=True, env=env, check=False)
        results[script] = (res.returncode, res.stderr.count("\n"), res.stderr.startswith("ts-x: "))
    assert results == {"postinst": (1, 1, True), "prerm": (1, 1, True), "postrm": (0, 0, False)}


def test_emitted_rpm_scriptlets_parse(tmp_path: Path) -> None:
    """Each body, after rpm's own macro expansion (`rpm --eval`, as rpmbuild does to scriptlets), is clean sh
    that still names the exact config path, `%` and all."""
    if not (shutil.which("dash") and shutil.which("shellcheck") and shutil.which("rpm")):
        pytest.skip("dash, shellcheck and rpm are needed (scripts/test.sh installs them)")
    config = "/etc/odd %{_bindir} %n dir/it's.yaml"
    text = _emit("rpm", "--name", "my.app", "--config", config)
    names = [line for line in text.splitlines() if line.startswith("%") and not line.startswith("%%")]
    assert names == ["%post", "%preun", "%postun"]
    for body in text.split("\n%")[1:]:
        name, _, raw = body.partition("\n")
        expanded = subprocess.run(["rpm", "--eval", raw], capture_output=True, text=True, check=True).stdout
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + expanded)
        subprocess.run(["dash", "-n", str(path)], check=True)
        subprocess.run(["shellcheck", "-s", "sh", str(path)], check=True)
        assert "--config '/etc/odd %{_bindir} %n dir/it'\"'\"'s.yaml'" in expanded, expanded


def test_options_after_the_dpkg_arguments_are_options_not_versions(tmp_path: Path) -> None:
    """`--maintscript deb postinst configure --name x` must not read `--name` as the old version."""
    res = subprocess.run([*TOOL, "--maintscript", "deb", "postinst", "configure", "--name", "bad name!"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert "--name 'bad name!' is not a valid service name" in res.stderr


def test_user_scope_is_refused_for_package_scripts() -> None:
    argv = [*TOOL, "--user", "--maintscript", "deb", "prerm", "upgrade", "1"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "--user does not apply" in res.stderr


@pytest.mark.parametrize(("fmt", "names"), [("deb", ["postinst", "prerm", "postrm"]),
                                            ("rpm", ["post", "preun", "postun"])])
def test_emit_json_holds_the_same_snippets(fmt: str, names: list[str]) -> None:
    data = json.loads(_emit(fmt, "--json", "--name", "ts-x"))
    assert (data["format"], data["name"], list(data["scripts"])) == (fmt, "ts-x", names)
    text = _emit(fmt, "--name", "ts-x")
    assert all(body in text for body in data["scripts"].values())


def test_json_is_refused_for_package_hooks_not_ignored() -> None:
    res = subprocess.run([*TOOL, "--json", "--maintscript", "deb", "prerm", "upgrade", "1"],
                         capture_output=True, text=True, check=False)
    assert (res.returncode, res.stdout) == (2, "") and "--json does not apply" in res.stderr


@pytest.mark.parametrize("how", ["dpkg-root", "no-init"])
def test_skipped_start_is_one_line_note_and_the_package_succeeds(tmp_path: Path, how: str) -> None:
    """No live init (this host's PID 1 is none) or DPKG_ROOT: files and links are written, nothing started,
    and the reason is one line of dpkg's log (systemctl --root writes the links for real)."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is needed")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\n")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
    argv = [*TOOL, "--init", "systemd", "--maintscript", "deb", "postinst", "configure"]
    if how == "dpkg-root":
        env["DPKG_ROOT"] = str(tmp_path)
        reason = f"DPKG_ROOT is set ({tmp_path}): installing into another root"
    else:
        argv += ["--root", str(tmp_path)]
        reason = "no init system runs here (chroot or image build); it starts at the next boot"
    res = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert (res.returncode, res.stderr) == (0, ""), res.stdout + res.stderr
    notes = [line for line in res.stdout.splitlines() if "not running" in line]
    assert notes == [f"taskserver-install: not running 'start' for taskserver: {reason}"]
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/taskserver.service").is_symlink()


class Marks(Backend):
    """A backend whose steps are real file operations under the spec's root (enabled/active markers), so
    the hooks' decisions are observable without an init system; the real ones are in tests/boot."""

    name = "test-marks"

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        return [FileSpec(Path("/etc/marks") / f"{spec.name}.conf", "boot file\n", 0o644)]

    def _mark(self, spec: ServiceSpec, mark: str, on: bool) -> list[Action]:
        path = spec.target(Path("/") / mark)
        return [cmd(["touch", str(path)] if on else ["rm", "-f", str(path)])]

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []

    def enable(self, spec: ServiceSpec) -> list[Action]:
        return self._mark(spec, "enabled", True)

    def disable(self, spec: ServiceSpec) -> list[Action]:
        return self._mark(spec, "enabled", False)

    def start(self, spec: ServiceSpec) -> list[Action]:
        return self._mark(spec, "active", True)

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return self._mark(spec, "active", False)

    def is_enabled(self, spec: ServiceSpec) -> bool:
        return spec.target(Path("/enabled")).exists()

    def is_active(self, spec: ServiceSpec) -> bool | None:
        return spec.target(Path("/active")).exists()


def test_reinstall_after_remove_starts_the_enabled_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dpkg -r` then `dpkg -i` runs `postinst configure OLD-VERSION` (dpkg keeps the configured version in
    config-files state; checked with dpkg below): prerm remove had stopped it, so it must start again; a
    real upgrade of a service the admin stopped leaves it stopped."""
    root, _, hook = _deb_hooks(tmp_path, monkeypatch)

    active = root / "active"
    hook("postinst", "configure")
    assert active.exists() and (root / "enabled").exists()
    hook("prerm", "remove")
    assert not active.exists() and not (root / "etc/marks/marks.conf").exists()
    hook("postinst", "configure", "0.1.0-1")
    assert active.exists(), "enabled service not started after dpkg -r + dpkg -i"
    active.unlink()  # the admin stops it; an upgrade restarts only what runs
    hook("postinst", "configure", "0.1.0-1")
    assert not active.exists()


def test_package_removal_leaves_a_service_the_admin_made_their_own_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prerm remove` stopped the service and then unregistered it: with the boot file edited by the admin
    since, it is theirs, and removing the package leaves it running, enabled and in place."""
    root, spec, hook = _deb_hooks(tmp_path, monkeypatch)

    hook("postinst", "configure")
    conf = root / "etc/marks/marks.conf"
    conf.write_text("boot file\n# the admin's line\n")
    capsys.readouterr()
    hook("prerm", "remove")
    said = capsys.readouterr().out
    assert (root / "active").exists() and (root / "enabled").exists(), said
    assert conf.read_text() == "boot file\n# the admin's line\n"
    assert "not stopping marks: /etc/marks/marks.conf was changed since it was installed" in said
    assert "kept: /etc/marks/marks.conf" in said and mf.load(spec) is None


def test_dpkg_passes_the_old_version_to_a_reinstall_after_remove(tmp_path: Path) -> None:
    """The fact the test above rests on, from the real dpkg (an empty database under --root)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg is needed")
    pkg, db, log = tmp_path / "pkg", tmp_path / "root", tmp_path / "calls"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/doc/probe").mkdir(parents=True)
    (pkg / "usr/share/doc/probe/README").write_text("probe\n")
    (pkg / "DEBIAN/control").write_text(
        "Package: ts-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: p\n"
    )
    for script in ("postinst", "postrm"):
        (pkg / "DEBIAN" / script).write_text(f'#!/bin/sh\necho "{script} $*" >> "{log}"\n')
        (pkg / "DEBIAN" / script).chmod(0o755)
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (db / d).mkdir(parents=True)
    (db / "var/lib/dpkg/status").write_text("")
    deb = tmp_path / "probe.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(deb)], check=True, capture_output=True)
    dpkg = ["dpkg", f"--root={db}", "--force-script-chrootless", "--force-not-root", "--log=/dev/null"]
    for op in (["-i", str(deb)], ["-r", "ts-probe"], ["-i", str(deb)]):
        subprocess.run([*dpkg, *op], check=True, capture_output=True)
    assert log.read_text().splitlines() == ["postinst configure ", "postrm remove", "postinst configure 1.0"]


def _deb_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, ServiceSpec, Callable[..., None]]:
    """A tree for the `marks` service and a function that runs one deb maintainer hook on it."""
    policy = tmp_path / "policy-rc.d"  # this host's may forbid everything (101): allow, as on a plain host
    policy.write_text("#!/bin/sh\nexit 0\n")
    policy.chmod(0o755)
    monkeypatch.setattr(maintscript, "POLICY_RC_D", policy)
    root = tmp_path / "root"
    root.mkdir()
    spec = build_spec(name="marks", executable="/opt/ts/bin/taskserver", root=root)
    args = argparse.Namespace(name="marks", config=None, user=False, init=None, root=str(root))

    def hook(script: str, *dpkg_args: str) -> None:
        ctx = maintscript.Context(spec, Marks(live=True), None, args, root)
        maintscript.carry_out(ctx, decide("deb", script, list(dpkg_args)))

    return root, spec, hook
