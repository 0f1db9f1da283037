"""The real `taskserver-install` command against trees in tmp_path (offline: nothing runs there).

systemd's own `systemctl --root` writes the enable links; the manifest, idempotence, admin-edit refusal,
rollback, dry-run and bad-input rules are checked on the bytes left on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOL = Path(sys.executable).parent / "taskserver-install"
UNIT = "etc/systemd/system/taskserver.service"
LINK = "etc/systemd/system/multi-user.target.wants/taskserver.service"


def cli(
    *args: str, env: dict[str, str] | None = None, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(TOOL), *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=120)


def systemctl_tree(tmp_path: Path) -> Path:
    """An empty root tree (etc/passwd only) for installs that register with the real `systemctl --root`."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (the systemd backend enables with systemctl --root)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> hash of its content (or link target), to compare trees byte for byte."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small target root: passwd/group for --run-as lookups, nothing else."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nsvc:x:991:991::/var/lib/svc:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text("root:x:0:\nsvc:x:991:\n")
    return root


def test_root_install_writes_unit_and_links_starts_nothing_and_uninstall_removes_exactly_them(
    tree: Path,
) -> None:
    before = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["live"] is False and out["changed"] is True
    assert {f["path"]: f["state"] for f in out["files"]} == {"/" + UNIT: "created"}
    assert out["ran"] == [f"systemctl --root={tree} enable taskserver.service"]  # no start, no daemon-reload
    assert any("offline" in n for n in out["notes"])
    assert "--uninstall --name taskserver --root" in out["undo"]
    assert (tree / LINK).is_symlink() and os.readlink(tree / LINK) == "/" + UNIT
    unit = (tree / UNIT).read_text()
    assert "ExecStart=" in unit and str(Path(sys.executable).parent / "taskserver") in unit
    assert oct((tree / UNIT).stat().st_mode & 0o777) == "0o644"
    manifest = json.loads((tree / "var/lib/taskserver-install/taskserver.json").read_text())
    assert manifest["files"][0]["sha256"] == hashlib.sha256((tree / UNIT).read_bytes()).hexdigest()

    text = cli("--root", str(tree), "--status", "--json")
    status = json.loads(text.stdout)
    assert (status["installed"], status["enabled"], status["running"], status["files_changed"]) == (
        True,
        True,
        None,
        [],
    )

    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert "removed" in res.stdout and "disable taskserver.service" in res.stdout
    assert snapshot(tree) == before


def test_rerun_is_unchanged_byte_for_byte(tree: Path) -> None:
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    first = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 0
    assert "unchanged" in res.stdout and "ran:" not in res.stdout
    assert snapshot(tree) == first


def test_admin_edit_is_refused_with_diff_then_replaced_with_force(tree: Path) -> None:
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    unit = tree / UNIT
    shipped = unit.read_text()
    assert "\nRestartSec=5s\n" in shipped  # the line the admin edits below
    unit.write_text(shipped.replace("RestartSec=5s", "RestartSec=30s"))
    edited = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 1
    assert "-RestartSec=30s" in res.stderr and "+RestartSec=5s" in res.stderr  # the diff, before the error
    assert res.stderr.index("+RestartSec=5s") < res.stderr.index("changed since it was installed")
    assert "--force" in res.stderr.splitlines()[-1] and res.stdout == ""
    assert snapshot(tree) == edited
    res = cli("--init", "systemd", "--root", str(tree), "--json")
    assert res.returncode == 1 and res.stdout == "" and "+RestartSec=5s" in res.stderr  # no text as JSON
    status = json.loads(cli("--root", str(tree), "--status", "--json").stdout)
    assert status["files_changed"] == [{"path": "/" + UNIT, "state": "changed"}]
    res = cli("--init", "systemd", "--root", str(tree), "--force")
    assert res.returncode == 0 and "updated" in res.stdout
    assert "RestartSec=5s" in unit.read_text()


def test_foreign_file_is_not_overwritten(tree: Path) -> None:
    (tree / UNIT).parent.mkdir(parents=True)
    (tree / UNIT).write_text("[Service]\nExecStart=/bin/true\n")
    before = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 1 and "not installed by us" in res.stderr
    assert snapshot(tree) == before


MANIFEST = "var/lib/taskserver-install/taskserver.json"


# Each init system's boot file (cron has none: its entry goes through `crontab -`, every other line kept).
BOOT_FILES = {
    "systemd": UNIT,
    "sysv": "etc/init.d/taskserver",
    "upstart": "etc/init/taskserver.conf",
    "openrc": "etc/init.d/taskserver",
    "runit": "etc/sv/taskserver/run",
}


def for_init(tree: Path, init: str) -> list[str]:
    """The options and directories each init system's offline install needs in a bare tree."""
    dirs = {"runit": ["etc/sv", "etc/service"], "openrc": ["etc/runlevels/default"]}
    for d in ["", *dirs.get(init, [])]:
        (tree / d).mkdir(parents=True, exist_ok=True)
    return ["--init", init, "--root", str(tree), *(["--no-enable"] if init == "sysv" else [])]


def admin_link(tree: Path, init: str, kind: str) -> str:
    """A symlink where the boot file goes, as an admin keeps their own unit: to a file elsewhere in the
    tree, to a host path (dangling inside the tree), or to a copy of the very bytes the install writes."""
    rel = BOOT_FILES[init]
    for_init(tree, init)
    (tree / rel).parent.mkdir(parents=True, exist_ok=True)
    target = {"admin's unit": "/srv/admin/unit", "dangling": "/nonexistent/admin.unit", "a copy": "/srv/copy"}
    (tree / "srv/admin").mkdir(parents=True, exist_ok=True)
    (tree / "srv/admin/unit").write_text("# the admin's own unit\n")
    if kind == "a copy":
        scratch = tree.parent / "scratch"
        assert cli(*for_init(scratch, init)).returncode == 0
        shutil.copy(scratch / rel, tree / "srv/copy")
    (tree / rel).symlink_to(target[kind])
    return target[kind]


@pytest.mark.parametrize("kind", ["admin's unit", "dangling", "a copy"])
@pytest.mark.parametrize("init", list(BOOT_FILES))
def test_a_symlink_where_the_boot_file_goes_is_an_admins_file(tree: Path, init: str, kind: str) -> None:
    """The installer writes regular files only: a link at its boot file's path is never its own, whatever it
    leads to. It was replaced without --force (reported `created`, or `updated` for a copy) and uninstall
    then deleted it; now it is refused like an admin's file, and left as it was."""
    target = admin_link(tree, init, kind)
    before = snapshot(tree)
    for extra in ([], ["--dry-run"]):
        res = cli(*for_init(tree, init), *extra)
        assert res.returncode == 1 and res.stdout == "", res.stdout + res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 2 and lines[1].startswith("taskserver-install: hint: "), res.stderr
        assert f"/{BOOT_FILES[init]} is a symbolic link (to {target})" in lines[0] and "--force" in lines[1]
        assert snapshot(tree) == before


@pytest.mark.parametrize("init", [i for i in BOOT_FILES if i != "sysv"])  # sysv: test_install_sysv_chroot
def test_force_replaces_an_admins_link_and_uninstall_puts_it_back(tree: Path, init: str) -> None:
    rel = BOOT_FILES[init]
    target = admin_link(tree, init, "admin's unit")
    before = snapshot(tree)
    res = cli(*for_init(tree, init), "--force")
    assert res.returncode == 0, res.stderr
    assert f"  replaced   /{rel}" in res.stdout.splitlines()
    assert not (tree / rel).is_symlink()
    assert (tree / "srv/admin/unit").read_text() == "# the admin's own unit\n"
    assert cli(*for_init(tree, init)).returncode == 0  # a re-install keeps what to restore
    assert "would restore" in cli("--uninstall", "--root", str(tree), "--dry-run").stdout
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert f"  restored   /{rel}" in res.stdout.splitlines()
    assert os.readlink(tree / rel) == target
    assert snapshot(tree) == before


def test_a_link_put_over_the_installed_unit_is_left_by_uninstall(tree: Path) -> None:
    """Installed; then the admin replaced the unit with a link to their own: that is no longer the file the
    manifest lists, so --status says so and uninstall leaves it (it deleted it)."""
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    (tree / UNIT).unlink()
    (tree / UNIT).symlink_to("/srv/admin/unit")
    status = json.loads(cli("--root", str(tree), "--status", "--json").stdout)
    assert status["files_changed"] == [{"path": "/" + UNIT, "state": "replaced by a symbolic link"}]
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 1 and "was replaced by a symbolic link since it was installed" in res.stderr
    res = cli("--uninstall", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert f"  kept       /{UNIT}" in res.stdout.splitlines() and "not the file installed" in res.stdout
    assert os.readlink(tree / UNIT) == "/srv/admin/unit"


def one_error_naming(res: subprocess.CompletedProcess[str], path: Path, why: str) -> None:
    """The failure is one error line naming ``path`` and ``why``, one hint line, and no traceback."""
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("taskserver-install: error: ") and f"{path}" in lines[0], lines[0]
    assert lines[0].endswith(why) and lines[1].startswith("taskserver-install: hint: "), res.stderr


@pytest.mark.parametrize("where", [UNIT, MANIFEST])
def test_a_directory_where_a_file_goes_is_named_by_its_path(tree: Path, where: str) -> None:
    """A directory at the unit's (or the manifest's) path: the error names that path, not the descriptor
    the file was read through (it said `error: 4: Is a directory`); exit 1, nothing written."""
    (tree / where).mkdir(parents=True)
    before = snapshot(tree)
    for extra in ([], ["--dry-run"]):
        res = cli("--init", "systemd", "--root", str(tree), *extra)
        assert res.returncode == 1 and res.stdout == "", res.stdout + res.stderr
        one_error_naming(res, tree / where, "Is a directory")
        assert snapshot(tree) == before


def test_status_names_an_installed_file_that_became_a_directory(tree: Path) -> None:
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    (tree / UNIT).unlink()
    (tree / UNIT).mkdir()
    res = cli("--status", "--root", str(tree))
    assert res.returncode == 1
    one_error_naming(res, tree / UNIT, "Is a directory")


def test_failing_registrar_rolls_back_everything(tree: Path) -> None:
    """systemctl enable fails for real (the .wants directory is a file): nothing of the install remains."""
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.parent.mkdir(parents=True)
    wants.write_text("in the way\n")
    before = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 1, res.stdout
    assert "systemctl" in res.stderr and "rolled back" in res.stderr
    assert snapshot(tree) == before


def test_dry_run_writes_nothing_and_prints_the_plan(tree: Path) -> None:
    before = snapshot(tree)
    res = cli("--init", "systemd", "--root", str(tree), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "would install" in res.stdout and "would run: systemctl" in res.stdout
    assert "would be written" in res.stdout and "were written" not in res.stdout
    assert snapshot(tree) == before


def test_dry_run_says_what_it_would_do_to_each_file_not_what_it_did(tree: Path) -> None:
    """A dry run listed `created /etc/...service` (`removed` for uninstall) though it touched nothing."""

    def dry(*args: str) -> list[str]:
        before = snapshot(tree)
        res = cli(*args, "--root", str(tree), "--dry-run")
        assert res.returncode == 0, res.stderr
        assert snapshot(tree) == before
        lines = res.stdout.splitlines()
        done = ("  created", "  updated", "  removed", "  kept:", "remove what was kept")
        assert not [line for line in lines if line.startswith(done)], res.stdout
        return lines

    assert f"  would create /{UNIT}" in dry("--init", "systemd")
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    (tree / UNIT).write_text((tree / UNIT).read_text() + "# the admin's line\n")
    assert f"  would update /{UNIT}" in dry("--init", "systemd", "--force")
    (tree / "var/lib/taskserver").mkdir(parents=True)  # the service's state: uninstall keeps it
    lines = dry("--uninstall")  # the admin's edit makes the unit theirs: left as it is
    assert f"  would keep /{UNIT}" in lines and "  would keep: /var/lib/taskserver (state)" in lines
    assert any(line.endswith("would forget it (--uninstall --force takes it out anyway)") for line in lines)
    lines = dry("--uninstall", "--force")
    assert f"  would remove /{UNIT}" in lines and "  would keep: /var/lib/taskserver (state)" in lines
    assert any(line.endswith("would be removed anyway (--force)") for line in lines), lines


def test_no_enable_then_reinstall_keeps_it_disabled_unless_asked(tree: Path) -> None:
    assert cli("--init", "systemd", "--root", str(tree)).returncode == 0
    # the admin disables it with systemd's own tool
    subprocess.run(
        ["systemctl", f"--root={tree}", "disable", "taskserver.service"], check=True, capture_output=True
    )
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 0 and "left disabled" in res.stdout
    assert not (tree / LINK).exists()
    res = cli("--init", "systemd", "--root", str(tree), "--enable")
    assert res.returncode == 0 and (tree / LINK).is_symlink()


def test_two_instances_side_by_side(tree: Path) -> None:
    assert (
        cli(
            "--init", "systemd", "--root", str(tree), "--name", "ts-a", "--config", "/etc/ts/a.yaml"
        ).returncode
        == 0
    )
    assert (
        cli(
            "--init", "systemd", "--root", str(tree), "--name", "ts-b", "--config", "/etc/ts/b.yaml"
        ).returncode
        == 0
    )
    a = (tree / "etc/systemd/system/ts-a.service").read_text()
    assert '"/etc/ts/a.yaml"' in a and "StateDirectory=ts-a" in a
    assert cli("--uninstall", "--root", str(tree), "--name", "ts-a").returncode == 0
    assert not (tree / "etc/systemd/system/ts-a.service").exists()
    assert (tree / "etc/systemd/system/ts-b.service").exists()


def test_run_as_from_the_target_tree(tree: Path) -> None:
    res = cli("--init", "systemd", "--root", str(tree), "--run-as", "svc")
    assert res.returncode == 0, res.stderr
    unit = (tree / UNIT).read_text()
    assert "User=svc\nGroup=svc\n" in unit


NOT_UTF8 = os.fsdecode(b"/srv/a\xff")  # what a path with a byte that is not UTF-8 becomes in sys.argv
BAD = [
    (["--init", "launchd"], "unknown init system"),
    (["--init", "sysv", "--user"], "--user works only with systemd"),
    (["--init", "systemd", "--run-as", "nosuchuser"], "no such user"),
    (["--init", "systemd", "--run-as", "svc:nosuchgroup"], "no such group"),
    (["--init", "systemd", "--name", "bad\nname"], "--name"),
    (["--init", "systemd", "--name", "../etc"], "not a valid service name"),
    (["--init", "systemd", "--name", "a b"], "not a valid service name"),
    (["--init", "systemd", "--name", "a$b"], "not a valid service name"),
    (["--init", "systemd", "--name", "x.service"], "ends in .service"),
    (["--init", "cron", "--user"], "--user works only with systemd"),
    (["--init", "runit"], "no runit service directory"),
    (["--init", "systemd", "--purge"], "--purge and --purge-config go with --uninstall"),
    (["--init", "systemd", "--user", "--run-as", "svc"], "--run-as does not apply with --user"),
    (["--init", "systemd", "--writable", "/"], "whole file system writable"),
    (["--init", "systemd", "--writable", "/srv/../"], "whole file system writable"),
    (["--init", "systemd", "--config", "/etc/ts/a\nb.yaml"], "cannot be written safely"),
    (["--init", "systemd", "--config", "/etc/ts/a\x01b.yaml"], "control character"),
    (["--init", "systemd", "--config", "relative.yaml"], "absolute path"),
    (["--init", "systemd", "--workdir", "/srv/x\\"], "cannot be written as a systemd setting"),
    (["--init", "upstart", "--user"], "--user works only with systemd"),
    # bytes that are not UTF-8 reach Python as lone surrogates (an encoding error half-way, exit 70, before)
    *(
        (["--init", "systemd", *dry, opt, NOT_UTF8], f"{opt} is not UTF-8 text: b'/srv/a\\xff'")
        for opt in ("--writable", "--config", "--env-file", "--workdir", "--executable")
        for dry in ([], ["--dry-run"])
    ),
    (["--init", "systemd", "--name", os.fsdecode(b"ts\xff")], "--name is not UTF-8 text: b'ts\\xff'"),
    (["--init", "systemd", "--run-as", os.fsdecode(b"svc\xff")], "--run-as is not UTF-8 text"),
    (["--uninstall", "--config", os.fsdecode(b"/etc/\xff.yaml")], "--config is not UTF-8 text"),
    (["--status", "--config", os.fsdecode(b"/etc/\xff.yaml")], "--config is not UTF-8 text"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m + " ".join(a[2:3]) for a, m in BAD])
def test_bad_input_exits_2_with_one_line_and_hint_and_writes_nothing(
    tree: Path, args: list[str], message: str
) -> None:
    before = snapshot(tree)
    res = cli(*args, "--root", str(tree))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("taskserver-install: error: ") and message in lines[0]
    assert lines[1].startswith("taskserver-install: hint: ")
    assert "Traceback" not in res.stderr
    assert snapshot(tree) == before


def test_a_root_or_home_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """--root, DPKG_ROOT (package hooks) and the home of a user unit are written into the output, the undo
    command and the manifest, which are UTF-8: a name that is not is refused in one line (exit 2)."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed")
    tree = tmp_path / os.fsdecode(b"root\xff")
    tree.mkdir()
    shown = "b'" + str(tmp_path) + "/root\\xff'"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    runs = [
        (["--init", "systemd", "--root", str(tree)], env, f"--root is not UTF-8 text: {shown}"),
        (["--detect", "--root", str(tree)], env, f"--root is not UTF-8 text: {shown}"),
        (["--maintscript", "deb", "postinst", "configure"], {**env, "DPKG_ROOT": str(tree)}, "DPKG_ROOT is"),
        (["--init", "systemd", "--user", "--root", str(tmp_path)], {**env, "HOME": os.fsdecode(b"/h\xff")},
         "home directory is not UTF-8 text: b'/h\\xff'"),
    ]
    for args, run_env, message in runs:
        res = cli(*args, env=run_env)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("taskserver-install: error: "), res.stderr
        assert message in lines[0], res.stderr
        assert lines[1].startswith("taskserver-install: hint: ")
    assert list(tmp_path.rglob("*")) == [tree]


def test_system_scope_without_root_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become another user with setpriv)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    # the real / is the target here (no --root): prove that not one byte of it changed
    watched = [Path("/etc/systemd/system"), Path("/var/lib/taskserver-install"), Path("/etc/init.d")]
    before = {str(d): snapshot(d) if d.exists() else None for d in watched}
    for init in ("systemd", "sysv", "upstart"):
        res = cli("--init", init, "--name", "ts-audit-noroot", env=env, user=65534)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 2 and "needs root" in lines[0] and "--user" in lines[1], res.stderr
    assert {str(d): snapshot(d) if d.exists() else None for d in watched} == before


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """A home directory owned by nobody, reachable by nobody (pytest's tmp_path is root-only)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become another user with setpriv)")
    home = Path(tempfile.mkdtemp(prefix="taskserver-install-test-"))
    home.chmod(0o755)
    os.chown(home, 65534, 65534)
    yield home
    shutil.rmtree(home)


def test_user_scope_without_root_writes_the_user_unit_and_warns_about_linger(nobody_home: Path) -> None:
    home = nobody_home
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "nobody", "LOGNAME": "nobody"}
    res = cli("--init", "systemd", "--user", env=env, user=65534)
    assert res.returncode == 0, res.stderr
    unit = home / ".config/systemd/user/taskserver.service"
    assert "WantedBy=default.target" in unit.read_text()
    assert (home / ".config/systemd/user/default.target.wants/taskserver.service").is_symlink()
    assert "loginctl enable-linger nobody" in res.stdout
    assert unit.stat().st_uid == 65534
    res = cli("--uninstall", "--user", env=env, user=65534)
    assert res.returncode == 0, res.stderr
    assert list(home.iterdir()) == []


def test_detect_json_on_this_host() -> None:
    res = cli("--detect", "--json")
    assert res.returncode == 0
    data = json.loads(res.stdout)
    assert {"init", "target", "registrar", "distro_id", "evidence", "live"} <= set(data)
    assert data["evidence"]


def write_config(tree: Path, text: str) -> None:
    path = tree / "etc/taskserver/taskserver.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def test_config_install_dir_and_state_dir_become_writable_in_the_unit(tree: Path) -> None:
    write_config(tree, "task_server:\n  install_dir: /srv/my app\n  state_dir: /data/ts\ntenants: {}\n")
    res = cli("--init", "systemd", "--root", str(tree), "--writable", "/srv/extra")
    assert res.returncode == 0, res.stderr
    unit = (tree / UNIT).read_text()
    assert 'ReadWritePaths="-/srv/extra" "-/srv/my app" "-/data/ts"\n' in unit


def test_sysv_run_as_must_match_the_config(tree: Path) -> None:
    """The SysV script starts the daemon as root; the daemon drops to the config's run_as by itself."""
    (tree / "etc/init.d").mkdir(parents=True)
    write_config(tree, "task_server: {run_as: root}\ntenants: {}\n")
    before = snapshot(tree)
    res = cli("--init", "sysv", "--root", str(tree), "--run-as", "svc", "--no-enable")
    assert res.returncode == 2 and "run_as" in res.stderr and "task_server: {run_as: svc}" in res.stderr
    assert snapshot(tree) == before
    write_config(tree, "task_server: {run_as: svc}\ntenants: {}\n")
    res = cli("--init", "sysv", "--root", str(tree), "--run-as", "svc", "--no-enable")
    assert res.returncode == 0, res.stderr
    assert (tree / "etc/init.d/taskserver").stat().st_mode & 0o777 == 0o755


def test_sysv_without_any_registrar_is_refused_before_writing(tree: Path) -> None:
    (tree / "etc/init.d").mkdir(parents=True)
    before = snapshot(tree)
    res = cli("--init", "sysv", "--root", str(tree))
    assert res.returncode == 2 and "no SysV registrar" in res.stderr
    assert snapshot(tree) == before


def test_upstart_job_into_a_tree_offline(tree: Path) -> None:
    """No upstart runs here: offline, the job file is the whole registration; nothing is run."""
    res = cli("--init", "upstart", "--root", str(tree), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ran"] == [] and out["files"] == [{"path": "/etc/init/taskserver.conf", "state": "created"}]
    assert "exec " in (tree / "etc/init/taskserver.conf").read_text()
    assert cli("--uninstall", "--root", str(tree)).returncode == 0
    assert not (tree / "etc/init").exists()


def test_user_unit_into_a_tree_links_it_and_uninstall_removes_all(tree: Path) -> None:
    """`systemctl --user --root` refuses to work, so the WantedBy= link of a user unit is made directly."""
    (tree / "home/op").mkdir(parents=True)
    os.chown(tree / "home/op", 4242, 4242)  # root installs into op's home: the files must be op's
    before = snapshot(tree)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/op", "USER": "op"}
    res = cli("--init", "systemd", "--user", "--root", str(tree), env=env)
    assert res.returncode == 0, res.stderr
    link = tree / "home/op/.config/systemd/user/default.target.wants/taskserver.service"
    assert os.readlink(link) == "../taskserver.service"
    assert "loginctl enable-linger op" in res.stdout
    if os.geteuid() == 0:
        owned = list((tree / "home/op").rglob("*"))
        assert owned and all(p.lstat().st_uid == 4242 for p in owned), [str(p) for p in owned]
    assert cli("--uninstall", "--user", "--root", str(tree), env=env).returncode == 0
    assert snapshot(tree) == before


def test_admin_template_override_is_used_and_must_be_safe(tree: Path) -> None:
    """`templates/systemd/taskserver.service.j2` next to the config replaces the packaged template; being
    code for a root boot file, it is refused (exit 2, nothing written) when others may write it."""
    packaged = Path(__file__).parents[2] / "templates/systemd/taskserver.service.j2"
    override = tree / "etc/taskserver/templates/systemd/taskserver.service.j2"
    override.parent.mkdir(parents=True)
    override.write_text(packaged.read_text() + "# the admin's own\n")
    override.chmod(0o644)
    res = cli("--init", "systemd", "--root", str(tree))
    assert res.returncode == 0, res.stderr
    assert (tree / UNIT).read_text().endswith("# the admin's own\n")
    assert cli("--uninstall", "--root", str(tree)).returncode == 0
    for unsafe in (override.parent, override):
        unsafe.chmod(unsafe.stat().st_mode | 0o020)
        before = snapshot(tree)
        res = cli("--init", "systemd", "--root", str(tree))
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"template override {unsafe} is group- or world-writable" in res.stderr
        assert snapshot(tree) == before
        unsafe.chmod(unsafe.stat().st_mode & ~0o020)
    if os.geteuid() == 0:
        os.chown(override, 65534, 65534)
        res = cli("--init", "systemd", "--root", str(tree))
        assert res.returncode == 2 and "is owned by uid 65534, not root" in res.stderr


@pytest.mark.parametrize("listed", ["/etc/passwd", "/home/op/../../etc/passwd", "etc/passwd"])
def test_uninstall_refuses_a_manifest_listing_what_no_install_writes(tree: Path, listed: str) -> None:
    """A user's manifest lives in their home, writable by them; root's --uninstall must not delete what a
    hand-edited manifest names outside that home (or a path that is not absolute and normalized)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/op", "USER": "op"}
    pristine = snapshot(tree)
    # the home does not exist yet: the install makes /home and /home/op, and uninstall removes them again
    assert cli("--init", "systemd", "--user", "--root", str(tree), env=env).returncode == 0
    assert cli("--uninstall", "--user", "--root", str(tree), env=env).returncode == 0
    assert snapshot(tree) == pristine
    assert cli("--init", "systemd", "--user", "--root", str(tree), env=env).returncode == 0
    manifest = tree / "home/op/.local/state/taskserver-install/taskserver.json"
    data = json.loads(manifest.read_text())
    data["files"].append({"path": listed, "sha256": "0" * 64, "mode": "0o644"})
    manifest.write_text(json.dumps(data))
    before = snapshot(tree)
    res = cli("--uninstall", "--user", "--root", str(tree), env=env)
    assert res.returncode == 1 and f"lists {listed!r}, which no install of taskserver writes" in res.stderr
    assert snapshot(tree) == before and (tree / "etc/passwd").exists()


def test_json_is_one_valid_object_in_every_mode(tree: Path) -> None:
    """Each mode's --json stdout parses as JSON as a whole (no text before or after it)."""
    modes = [
        ["--detect"],
        ["--init", "systemd", "--dry-run"],
        ["--init", "systemd"],
        ["--init", "systemd"],  # unchanged re-run
        ["--status"],
        ["--uninstall", "--dry-run"],
        ["--uninstall"],
        ["--status"],  # nothing installed
        ["--emit-maintscripts", "deb"],
        ["--emit-maintscripts", "rpm"],
    ]
    for args in modes:
        res = cli(*args, "--root", str(tree), "--json")
        assert res.returncode == 0, (args, res.stderr)
        assert isinstance(json.loads(res.stdout), dict), args


def test_upstart_no_enable_writes_manual_override_and_enable_uninstall_take_it_out(tree: Path) -> None:
    """upstart's job file alone starts the job at boot: --no-enable must add upstart's `manual` switch (it
    was silently ignored), --enable and uninstall take it out, keeping an admin's other override stanzas."""
    before = snapshot(tree)
    override = tree / "etc/init/taskserver.override"
    assert cli("--init", "upstart", "--root", str(tree), "--no-enable").returncode == 0
    assert override.read_text() == "manual\n"
    assert json.loads(cli("--root", str(tree), "--status", "--json").stdout)["enabled"] is False
    res = cli("--init", "upstart", "--root", str(tree))
    assert res.returncode == 0 and "left disabled" in res.stdout and override.exists()
    assert cli("--init", "upstart", "--root", str(tree), "--enable").returncode == 0
    assert not override.exists()
    assert json.loads(cli("--root", str(tree), "--status", "--json").stdout)["enabled"] is True
    override.write_text("env LANG=C.UTF-8\nmanual\n")  # the admin's own override, disabling it
    assert cli("--uninstall", "--root", str(tree)).returncode == 0
    assert override.read_text() == "env LANG=C.UTF-8\n"
    override.unlink()
    override.parent.rmdir()
    assert snapshot(tree) == before


def test_user_unit_override_owned_by_that_user_is_accepted(tree: Path) -> None:
    """root installing op's user unit: op's own override in op's config dir runs only as op, so it is fine."""
    if os.geteuid() != 0:
        pytest.skip("needs root (files owned by another user)")
    home = tree / "home/op"
    override = home / ".config/taskserver/templates/systemd/taskserver.service.j2"
    override.parent.mkdir(parents=True)
    packaged = Path(__file__).parents[2] / "templates/systemd/taskserver.service.j2"
    override.write_text(packaged.read_text() + "# op's own\n")
    for p in [home, *override.relative_to(home).parents, override.relative_to(home)]:
        os.chown(home / p, 4242, 4242)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/op", "USER": "op"}
    res = cli("--init", "systemd", "--user", "--root", str(tree), env=env)
    assert res.returncode == 0, res.stderr
    assert (home / ".config/systemd/user/taskserver.service").read_text().endswith("# op's own\n")


def test_an_install_that_runs_out_of_inodes_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    """A tree on a real tmpfs with few inodes: every install that fails part-way (whatever it was writing
    when the file system filled) rolls back to the tree as it was. The manifest's own directory stayed
    behind, empty, when the manifest itself could not be written."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = tmp_path / "small"
    root.mkdir()
    failed = 0
    for inodes in range(4, 30):
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,nr_inodes={inodes}", "tmpfs", str(root)],
                          check=False, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        try:
            try:  # the tree itself: too few inodes even for it in the first rounds
                (root / "etc/init.d").mkdir(parents=True)
                (root / "var/lib").mkdir(parents=True)
                (root / "etc/os-release").write_text("ID=alpine\n")
            except OSError:
                continue
            before = snapshot(root)
            res = cli("--init", "openrc", "--root", str(root), "--no-start")
            if res.returncode == 0:
                break
            failed += 1
            assert "Traceback" not in res.stderr, res.stderr
            assert snapshot(root) == before, (inodes, res.stderr)
        finally:
            subprocess.run(["umount", str(root)], check=False)
    assert failed > 0  # the small trees did fail
