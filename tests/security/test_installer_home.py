"""Root's ``taskserver-install --user`` for another user works in that user's home, which the user controls:
its symlinks and its manifest are hostile input. Work there happens with the user's own privileges, so root
writes, chowns and deletes nothing the user could not have written, chowned or deleted alone.

Each test uses a throwaway user and a root-owned victim directory of the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from installer_lab import as_user, no_traceback, snapshot, tool, victim_dir

NAME = "ts-attack"
UNIT_DIR = ".config/systemd/user"


@pytest.fixture
def victim() -> Iterator[Path]:
    with victim_dir() as v:
        (v / "keep").write_text("root's file\n")
        yield v


def install_for(user: pwd.struct_passwd, *extra: str) -> tuple[int, str]:
    res = tool("--init", "systemd", "--user", "--name", NAME, "--no-start", *extra, home=Path(user.pw_dir))
    no_traceback(res)
    return res.returncode, res.stderr


def test_control_a_plain_home_gets_the_users_own_files(user: pwd.struct_passwd) -> None:
    """Without an attack the install works, and everything it left in the home belongs to the user."""
    home = Path(user.pw_dir)
    code, err = install_for(user)
    assert code == 0, err
    assert (home / UNIT_DIR / f"{NAME}.service").is_file()
    foreign = [str(p) for p in home.rglob("*") if p.lstat().st_uid != user.pw_uid]
    assert foreign == []
    res = tool("--uninstall", "--user", "--name", NAME, home=home)
    assert res.returncode == 0, res.stderr
    assert not (home / ".config").exists()


@pytest.mark.parametrize(
    "link",
    [UNIT_DIR, ".config", f"{UNIT_DIR}/default.target.wants", ".local/state/taskserver-install"],
)
def test_user_install_through_a_symlink_to_a_root_directory(
    user: pwd.struct_passwd, victim: Path, link: str
) -> None:
    """The user points a directory of the install's path at a root directory: root writes nothing there,
    chowns nothing, and says which path it could not write."""
    home = Path(user.pw_dir)
    parent = home / link
    as_user(user, "mkdir", "-p", parent.parent)
    as_user(user, "ln", "-s", victim, parent)
    before = snapshot(victim)
    code, err = install_for(user)
    assert code == 1, err
    if link == ".local/state/taskserver-install":  # the manifest directory: refused before anything is done
        assert f"{parent} is a symbolic link (to {victim})" in err, err
    else:
        assert "Permission denied" in err and "rolled back" in err
    assert snapshot(victim) == before  # owner, mode and content of every entry: nothing written or chowned
    assert os.stat(victim).st_uid == 0


def forged_manifest(user: pwd.struct_passwd, files: list[Path], dirs: list[Path]) -> None:
    """The user writes their own manifest (as they may: it lives in their home), naming other paths."""
    home = Path(user.pw_dir)
    data = {
        "version": 1,
        "name": NAME,
        "backend": "systemd",
        "scope": "user",
        "executable": "/bin/true",
        "config": str(home / ".config/taskserver/taskserver.yaml"),
        "run_as": None,
        "files": [
            {"path": str(f), "sha256": hashlib.sha256(b"").hexdigest(), "mode": "0o644"} for f in files
        ],
        "dirs": [str(d) for d in dirs],
        "extra": {},
    }
    state = home / ".local/state/taskserver-install"
    as_user(user, "mkdir", "-p", state)
    as_user(user, "touch", state / f"{NAME}.json")  # the user's own file; its content is theirs to choose
    (state / f"{NAME}.json").write_text(json.dumps(data))


def root_file_and_dir(victim: Path) -> tuple[Path, Path]:
    f, d = victim / f"{NAME}.service", victim / "emptydir"
    f.write_text("root's unit\n")
    d.mkdir()
    return f, d


def test_tampered_manifest_naming_root_paths_outside_the_home(user: pwd.struct_passwd, victim: Path) -> None:
    f, d = root_file_and_dir(victim)
    forged_manifest(user, [f], [d])
    before = snapshot(victim)
    res = tool("--uninstall", "--user", "--name", NAME, home=Path(user.pw_dir))
    no_traceback(res)
    assert res.returncode == 1 and "which no install of" in res.stderr, res.stderr
    assert snapshot(victim) == before and f.exists() and d.is_dir()


def test_tampered_manifest_naming_home_paths_that_lead_to_root_files(
    user: pwd.struct_passwd, victim: Path
) -> None:
    """The listed paths are inside the home, but the user's symlink resolves them to root's file and
    directory. Their bytes are not the ones listed, so uninstall leaves them as an admin's; with --force it
    removes them, but as the user, and the kernel refuses it."""
    _, d = root_file_and_dir(victim)
    (d / f"{NAME}.service").write_text("root's unit in root's directory\n")
    home = Path(user.pw_dir)
    as_user(user, "mkdir", "-p", home / ".config/systemd")
    as_user(user, "ln", "-s", victim, home / UNIT_DIR)
    listed = home / UNIT_DIR / "emptydir"
    forged_manifest(user, [listed / f"{NAME}.service", home / UNIT_DIR / f"{NAME}.service"], [listed])
    before = snapshot(victim)
    res = tool("--uninstall", "--user", "--name", NAME, home=home)
    no_traceback(res)
    assert res.returncode == 0 and "was changed since it was installed: the admin's now" in res.stdout, res
    assert snapshot(victim) == before
    forged_manifest(user, [listed / f"{NAME}.service", home / UNIT_DIR / f"{NAME}.service"], [listed])
    res = tool("--uninstall", "--user", "--force", "--name", NAME, home=home)
    no_traceback(res)
    assert res.returncode == 1 and "Permission denied" in res.stderr, res.stderr
    assert snapshot(victim) == before


def test_system_manifest_not_owned_by_root_is_refused(user: pwd.struct_passwd, victim: Path) -> None:
    """/var/lib/taskserver-install/NAME.json that another user owns is not root's record: refused whole."""
    f, d = root_file_and_dir(victim)
    state = Path("/var/lib/taskserver-install")
    made = not state.exists()
    state.mkdir(parents=True, exist_ok=True)
    name = f"ts-attack-{user.pw_name}"
    manifest = state / f"{name}.json"
    data = {
        "version": 1,
        "name": name,
        "backend": "systemd",
        "scope": "system",
        "executable": "/bin/true",
        "config": "/etc/taskserver/taskserver.yaml",
        "files": [{"path": str(f), "sha256": "0"}],
        "dirs": [str(d)],
        "extra": {},
    }
    try:
        manifest.write_text(json.dumps(data))
        os.chown(manifest, user.pw_uid, user.pw_gid)
        before = snapshot(victim)
        res = tool("--uninstall", "--name", name)
        no_traceback(res)
        assert res.returncode == 1 and "not trusted" in res.stderr, res.stderr
        assert snapshot(victim) == before
    finally:
        manifest.unlink(missing_ok=True)
        if made:
            state.rmdir()


def test_tampered_manifest_naming_a_root_file_inside_the_home(user: pwd.struct_passwd) -> None:
    """A root-owned directory and file inside the home (root put them there; the user cannot remove them):
    an entry not named for the service is refused before anything is removed."""
    home = Path(user.pw_dir)
    d = home / "root-managed"
    d.mkdir()
    (d / "quota.conf").write_text("root's\n")
    forged_manifest(user, [d / "quota.conf"], [d])
    res = tool("--uninstall", "--user", "--name", NAME, home=home)
    no_traceback(res)
    assert res.returncode == 1 and "which no install of" in res.stderr, res.stderr
    assert (d / "quota.conf").exists() and d.stat().st_uid == 0


def test_a_users_template_override_cannot_run_code_in_roots_installer(user: pwd.struct_passwd,
                                                                      victim: Path) -> None:
    """The user's own override of their user unit's template is accepted (it becomes their own unit), but
    it was rendered by an unsandboxed jinja2 in root's process: a template expression reached os.system."""
    home = Path(user.pw_dir)
    override = home / ".config/taskserver/templates/systemd/taskserver.service.j2"
    marker = victim / "pwned"
    as_user(user, "mkdir", "-p", override.parent)
    as_user(user, "sh", "-c", f"echo '{{{{ cycler.__init__.__globals__.os.system(\"id > {marker}\") }}}}' > "
            f"{override}")
    for extra in (["--dry-run"], []):
        res = tool("--init", "systemd", "--user", "--name", NAME, "--no-start", *extra, home=home)
        no_traceback(res)
        assert res.returncode != 0 and "template" in res.stderr, res
        assert not marker.exists()


def _forge(user: pwd.struct_passwd, **changes: object) -> None:
    manifest = Path(user.pw_dir) / ".local/state/taskserver-install" / f"{NAME}.json"
    data = json.loads(manifest.read_text())
    data.update(changes)
    manifest.write_text(json.dumps(data))


def test_a_forged_user_manifest_cannot_make_root_purge_a_root_file(user: pwd.struct_passwd,
                                                                  victim: Path) -> None:
    """The user's manifest is theirs to write: its config path, with the hash of a root file (so --purge
    takes it for a config this tool wrote), made root delete that file."""
    code, err = install_for(user)
    assert code == 0, err
    target = victim / "root-config.yaml"
    target.write_text("root's own config\n")
    _forge(user, config=str(target), config_written=hashlib.sha256(target.read_bytes()).hexdigest())
    before = snapshot(victim)
    res = tool("--uninstall", "--purge", "--user", "--name", NAME, home=Path(user.pw_dir))
    no_traceback(res)
    assert snapshot(victim) == before, res.stdout + res.stderr
    assert "Permission denied" in res.stdout, res.stdout


def test_a_forged_user_manifest_cannot_claim_the_system_scope(user: pwd.struct_passwd) -> None:
    """"scope": "system" in the user's manifest made root's `--user --uninstall` act on the system service
    of that name (its unit, its enablement, its state under /var/lib)."""
    home = Path(user.pw_dir)
    code, err = install_for(user)
    assert code == 0, err
    _forge(user, scope="system")
    res = tool("--uninstall", "--user", "--name", NAME, home=home)
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert f"removed    {home / UNIT_DIR / NAME}.service" in res.stdout, res.stdout
    assert "/etc/systemd/system" not in res.stdout + res.stderr and "/var/lib" not in res.stdout


def test_an_env_file_a_user_can_change_is_refused_for_a_system_service(user: pwd.struct_passwd,
                                                                       victim: Path) -> None:
    """The SysV, OpenRC and runit scripts source --env-file as shell, as root, at every start (systemd takes
    LD_PRELOAD from it): a file the run_as user owned gave them root at the next start."""
    home = Path(user.pw_dir)
    theirs = home / "app.env"
    as_user(user, "sh", "-c", f"echo 'X=1' > {theirs}")
    shared = victim / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    ours = victim / "root.env"
    ours.write_text("X=1\n")
    refused = ((theirs, f"uid {user.pw_uid} can change it"),
               (shared / "later.env", "writable by group or others"))
    for path, why in refused:
        res = tool("--init", "systemd", "--run-as", user.pw_name, "--env-file", path, "--dry-run")
        no_traceback(res)
        assert res.returncode == 2 and why in res.stderr, res.stderr
    res = tool("--init", "systemd", "--run-as", user.pw_name, "--env-file", ours, "--dry-run")
    assert res.returncode == 0, res.stderr
