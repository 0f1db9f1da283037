"""--uninstall keeps the service's data and names it; --purge removes it (installer.purge), on real trees.

A small offline backend defined here writes one boot file; the daemon's data is made by hand where the
backend says it lives (state dir, log), as a running daemon would have left it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserver.installer import apply, remove
from taskserver.installer import manifest as mf
from taskserver.installer.backends.base import Action, Backend, Capabilities, FileSpec
from taskserver.installer.cli import main
from taskserver.installer.spec import ServiceSpec, build_spec


class Offline(Backend):
    name = "test-offline"
    caps = Capabilities(run_as_by_daemon=True)  # like SysV: the daemon drops to the config's run_as

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        return [FileSpec(Path("/etc/demo") / spec.name, "boot file\n", 0o644)]

    def logs(self, spec: ServiceSpec) -> list[Path]:
        return [Path("/var/log") / f"{spec.name}.log"]

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return []

    enable = disable = start = stop = reload

    def is_enabled(self, spec: ServiceSpec) -> bool:
        return True

    def is_active(self, spec: ServiceSpec) -> bool | None:
        return None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("app:x:990:990::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("app:x:990:\n")
    return root


def spec_in(root: Path, run_as: str | None = None) -> ServiceSpec:
    return build_spec(name="demo", executable="/opt/ts/bin/taskserver", root=root, run_as=run_as)


def daemon_data(spec: ServiceSpec) -> list[Path]:
    """What a daemon run leaves: its state dir with a store, and its log."""
    state = spec.target(Path("/var/lib/demo"))
    state.mkdir(parents=True)
    (state / "t1.sqlite").write_text("x")
    log = spec.target(Path("/var/log/demo.log"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("log\n")
    return [state, log]


def test_uninstall_keeps_data_and_names_it_with_the_command_that_removes_it(root: Path) -> None:
    spec = spec_in(root)
    apply.install(spec, Offline(live=False))
    data = daemon_data(spec)
    dry = remove.uninstall(spec, Offline(live=False), dry_run=True, purge=True)
    assert dry.notes == ["would purge /var/lib/demo (state)", "would purge /var/log/demo.log (log)"]
    out = remove.uninstall(spec, Offline(live=False))
    assert all(p.exists() for p in data)
    assert out.kept == ["/var/lib/demo (state)", "/var/log/demo.log (log)"]
    assert out.remove_kept == f"rm -rf -- {root}/var/lib/demo {root}/var/log/demo.log"  # the tree's, run here
    assert not spec.target(Path("/etc/demo/demo")).exists()


def test_purge_removes_state_and_logs_and_keeps_the_admins_config(root: Path) -> None:
    spec = spec_in(root)
    cfg = spec.target(spec.config)
    cfg.parent.mkdir(parents=True)
    cfg.write_text("tenants: {}\n")  # the admin's
    apply.install(spec, Offline(live=False))
    data = daemon_data(spec)
    out = remove.uninstall(spec, Offline(live=False), purge=True)
    assert not any(p.exists() for p in data)
    assert cfg.exists() and out.kept == [f"{spec.config} (config)"]
    assert not (root / "var/lib/taskserver-install").exists()  # the manifest dir went with the last manifest
    apply.install(spec, Offline(live=False))
    remove.uninstall(spec, Offline(live=False), purge=True, purge_config=True)
    assert not cfg.exists()  # asked for


def test_the_config_the_installer_wrote_is_purged_only_while_unchanged(root: Path) -> None:
    spec = spec_in(root, run_as="app")
    out = apply.install(spec, Offline(live=False))
    cfg = spec.target(spec.config)
    assert (str(spec.config), "created") in out.files and "run_as: app" in cfg.read_text()
    out = remove.uninstall(spec, Offline(live=False))
    assert out.kept == [f"{spec.config} (config written by taskserver-install)"] and cfg.exists()
    apply.install(spec, Offline(live=False))  # finds it: not rewritten, and no longer known as ours
    assert mf.load(spec) is not None and "config_written" not in (mf.load(spec) or {})
    cfg.unlink()
    apply.install(spec, Offline(live=False))
    remove.uninstall(spec, Offline(live=False), purge=True)
    assert not cfg.exists()
    apply.install(spec, Offline(live=False))
    cfg.write_text(cfg.read_text() + "tenants: {a: {}}\n")  # edited: the admin's now
    out = remove.uninstall(spec, Offline(live=False), purge=True)
    assert cfg.exists() and out.kept == [f"{spec.config} (config)"]


def test_purge_does_not_follow_a_symlinked_directory(root: Path, tmp_path: Path) -> None:
    spec = spec_in(root)
    apply.install(spec, Offline(live=False))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "demo").mkdir(parents=True)
    (elsewhere / "demo/precious").write_text("keep")
    os.symlink(elsewhere, root / "var/log")
    out = remove.uninstall(spec, Offline(live=False), purge=True)
    assert (elsewhere / "demo/precious").exists()
    assert not any("purged /var/log" in n for n in out.notes)


def test_cli_says_what_it_kept(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe = root / "opt/ts/bin/taskserver"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    base = ["--root", str(root), "--init", "systemd", "--executable", "/opt/ts/bin/taskserver"]
    assert main(base) == 0
    (root / "var/lib/taskserver").mkdir()
    capsys.readouterr()
    assert main(["--root", str(root), "--uninstall"]) == 0
    out = capsys.readouterr().out
    assert "kept: /var/lib/taskserver (state)" in out
    # the command is run here: it names the tree's directory, never this machine's /var/lib/taskserver
    assert f"remove what was kept with: rm -rf -- {root}/var/lib/taskserver\n" in out
    assert main(["--root", str(root), "--purge"]) == 2
    assert "go with --uninstall" in capsys.readouterr().err


class InHome(Offline):
    """State in a user's home, as the cron backend keeps it for a crontab of another user."""

    name = "test-in-home"

    def state_dir(self, spec: ServiceSpec) -> Path:
        return Path("/home/u/.local/state/taskserver")


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A target tree every uid can reach (tmp_path lies below root's 0700 directories)."""
    d = Path(tempfile.mkdtemp(prefix="ts-purge-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "etc").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="removes as another uid: needs root")
def test_purge_below_a_users_home_runs_as_that_user(open_root: Path) -> None:
    """Only what the home's owner could remove goes: a root-owned 0755 dir in the state stays (root alone
    could empty it), the user's own files go. The user could swap a directory for a symlink at any moment."""
    root = open_root
    spec = spec_in(root)
    home = root / "home/u"
    state = home / ".local/state/taskserver"
    state.mkdir(parents=True)
    for d in (home, home / ".local", home / ".local/state", state):
        os.chown(d, 4242, 4242)
    (state / "t1.sqlite").write_text("x")
    os.chown(state / "t1.sqlite", 4242, 4242)
    (state / "roots").mkdir()  # root's, 0755: the user cannot remove what is inside
    (state / "roots/keep").write_text("root's")
    apply.install(spec, InHome(live=False))
    out = remove.uninstall(spec, InHome(live=False), purge=True)
    assert not (state / "t1.sqlite").exists()
    assert (state / "roots/keep").exists()
    assert any("kept" in n and "Permission denied" in n for n in out.notes), out.notes
