"""apply.install/uninstall with a small backend defined here: its steps are real commands (`true`, `false`,
`touch`), so what is proven is apply's own job — atomic writes, manifest, idempotence, rollback of files
and steps, exact removal — independent of any init system."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from taskserver.installer import apply, remove
from taskserver.installer import manifest as mf
from taskserver.installer.backends.base import Action, Backend, FileSpec, cmd
from taskserver.installer.spec import ServiceSpec, build_spec
from taskserver.runtime.errors import UserError


class Files(Backend):
    """Writes etc/demo/NAME.conf; enable/start create marker files with `touch`; behaviour set per test."""

    name = "test-files"

    def __init__(
        self,
        *,
        live: bool = True,
        fail: str = "",
        active: bool = True,
        log: Path | None = None,
        content: str = "v1\n",
    ) -> None:
        super().__init__(live=live)
        self.fail, self.active, self.log, self.content = fail, active, log, content

    def files(self, spec: ServiceSpec) -> list[FileSpec]:
        return [FileSpec(Path("/etc/demo") / f"{spec.name}.conf", self.content, 0o640)]

    def _step(self, spec: ServiceSpec, what: str) -> list[Action]:
        if self.fail == what:
            return [cmd(["false"])]
        assert self.log is not None
        return [cmd(["sh", "-c", f'echo {what} >> "$0"', str(self.log)])]

    def reload(self, spec: ServiceSpec) -> list[Action]:
        return self._step(spec, "reload")

    def enable(self, spec: ServiceSpec) -> list[Action]:
        return [*self._step(spec, "enable"), cmd(["touch", str(spec.target(Path("/enabled")))])]

    def disable(self, spec: ServiceSpec) -> list[Action]:
        return [*self._step(spec, "disable"), cmd(["rm", "-f", str(spec.target(Path("/enabled")))])]

    def start(self, spec: ServiceSpec) -> list[Action]:
        up = [cmd(["touch", str(spec.target(Path("/active")))])] if self.active else []
        return [*self._step(spec, "start"), *up]

    def stop(self, spec: ServiceSpec) -> list[Action]:
        return [*self._step(spec, "stop"), cmd(["rm", "-f", str(spec.target(Path("/active")))])]

    def is_enabled(self, spec: ServiceSpec) -> bool:
        return spec.target(Path("/enabled")).exists()

    def is_active(self, spec: ServiceSpec) -> bool | None:
        return spec.target(Path("/active")).exists() if self.live else None


@pytest.fixture
def spec(tmp_path: Path) -> ServiceSpec:
    root = tmp_path / "root"
    root.mkdir()
    return build_spec(name="demo", executable="/opt/ts/bin/taskserver", root=root)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "steps.log"
    path.write_text("")
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_install_writes_file_with_mode_manifest_and_runs_steps_in_order(spec: ServiceSpec, log: Path) -> None:
    out = apply.install(spec, Files(log=log))
    conf = spec.target(Path("/etc/demo/demo.conf"))
    assert conf.read_text() == "v1\n" and conf.stat().st_mode & 0o777 == 0o640
    assert log.read_text().split() == ["reload", "enable", "start"]
    data = json.loads(spec.target(mf.manifest_path(spec)).read_text())
    assert data["files"] == [{"path": "/etc/demo/demo.conf", "sha256": mf.sha256(b"v1\n"), "mode": "0o640"}]
    assert set(data["dirs"]) == {"/etc", "/etc/demo", "/var", "/var/lib", "/var/lib/taskserver-install"}
    assert out.changed and out.files == [("/etc/demo/demo.conf", "created")]


def test_second_install_changes_nothing(spec: ServiceSpec, log: Path) -> None:
    apply.install(spec, Files(log=log))
    log.write_text("")
    out = apply.install(spec, Files(log=log))
    assert not out.changed and out.ran == [] and log.read_text() == ""


def test_failing_step_rolls_back_files_dirs_and_earlier_steps(spec: ServiceSpec, log: Path) -> None:
    with pytest.raises(UserError) as err:
        apply.install(spec, Files(log=log, fail="start"))
    assert err.value.exit_code == 1 and "rolled back" in err.value.message
    # the start that failed is undone too (stopped: a start may fail after it started something)
    assert log.read_text().split() == ["reload", "enable", "stop", "disable", "reload"]
    assert tree(spec.root) == set()  # not even the directories it had created


def test_service_that_does_not_stay_up_is_stopped_and_rolled_back(spec: ServiceSpec, log: Path) -> None:
    with pytest.raises(UserError) as err:
        apply.install(spec, Files(log=log, active=False), verify_seconds=0.5)
    assert "not running" in err.value.message
    assert log.read_text().split() == ["reload", "enable", "start", "stop", "disable", "reload"]
    assert tree(spec.root) == set()


def test_failed_update_restores_the_previous_file_and_manifest(spec: ServiceSpec, log: Path) -> None:
    apply.install(spec, Files(log=log))
    before = spec.target(mf.manifest_path(spec)).read_bytes()
    with pytest.raises(UserError):
        apply.install(spec, Files(log=log, content="v2\n", fail="reload"))
    assert spec.target(Path("/etc/demo/demo.conf")).read_text() == "v1\n"
    assert spec.target(mf.manifest_path(spec)).read_bytes() == before


def test_uninstall_removes_exactly_the_manifest_and_keeps_foreign_files(spec: ServiceSpec, log: Path) -> None:
    apply.install(spec, Files(log=log))
    foreign = spec.target(Path("/etc/demo/admin-notes.txt"))
    foreign.write_text("mine\n")
    log.write_text("")
    out = remove.uninstall(spec, Files(log=log))
    assert log.read_text().split() == ["stop", "disable", "reload"]
    assert out.files == [("/etc/demo/demo.conf", "removed")]
    assert tree(spec.root) == {"etc", "etc/demo", "etc/demo/admin-notes.txt"}  # markers gone too


def test_uninstall_of_what_is_not_installed_is_bad_input(spec: ServiceSpec) -> None:
    with pytest.raises(UserError) as err:
        remove.uninstall(spec, Files())
    assert err.value.exit_code == 2 and "not installed" in err.value.message


def test_dry_run_lists_steps_and_touches_nothing(spec: ServiceSpec, log: Path) -> None:
    out = apply.install(spec, Files(log=log), dry_run=True)
    assert out.dry_run and out.files == [("/etc/demo/demo.conf", "created")]
    assert [r.split()[0] for r in out.ran] == ["sh", "sh", "touch", "sh", "touch"]
    assert tree(spec.root) == set() and log.read_text() == ""


def test_offline_backend_starts_nothing(spec: ServiceSpec, log: Path) -> None:
    out = apply.install(spec, Files(log=log, live=False))
    assert "start" not in log.read_text()
    assert any("offline" in n for n in out.notes)


def test_status_reports_changed_and_missing_files(spec: ServiceSpec, log: Path) -> None:
    apply.install(spec, Files(log=log))
    spec.target(Path("/etc/demo/demo.conf")).write_text("edited\n")
    st = remove.status(spec, Files(log=log))
    assert st["installed"] and st["enabled"] and st["running"]
    assert st["files_changed"] == [{"path": "/etc/demo/demo.conf", "state": "changed"}]


def test_a_wrong_mode_is_repaired_on_re_install(spec: ServiceSpec, log: Path) -> None:
    apply.install(spec, Files(log=log))
    conf = spec.target(Path("/etc/demo/demo.conf"))
    conf.chmod(0o666)
    out = apply.install(spec, Files(log=log))
    assert out.files == [("/etc/demo/demo.conf", "updated")]
    assert conf.stat().st_mode & 0o777 == 0o640


def test_an_update_replaces_the_file_by_rename_never_in_place(spec: ServiceSpec, log: Path) -> None:
    """A hard link to the old file keeps the old bytes: the new content went to a new inode renamed over
    the path (a reader or a crash never sees a half-written boot file), and no temp file is left."""
    apply.install(spec, Files(log=log))
    conf = spec.target(Path("/etc/demo/demo.conf"))
    old_inode = spec.root / "old-inode"
    os.link(conf, old_inode)
    out = apply.install(spec, Files(log=log, content="v2\n"))
    assert out.files == [("/etc/demo/demo.conf", "updated")]
    assert old_inode.read_text() == "v1\n" and conf.read_text() == "v2\n"
    assert conf.stat().st_ino != old_inode.stat().st_ino and conf.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in conf.parent.iterdir()) == ["demo.conf"]
