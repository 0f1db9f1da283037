"""A template override becomes a boot file root runs. Root renders only an override that nobody else can
change: the file and every directory from ``/`` down are opened once without following links and checked on
the opened descriptor (owner root, or the unit's user for a user unit; not group/world-writable), and the
text rendered is the bytes read from that descriptor.

The race test is the attack from the review: another user flips the override between a benign, root-owned
template and their own while root renders 1,000 times (the old check looked only from ``templates/`` down
and opened the path again afterwards; 4 in 1,000 renders took the attacker's file).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from installer_lab import CLEAN_PATH, need_root, no_traceback, snapshot, tool, user_dir

from taskserver.installer.backends.systemd import Systemd
from taskserver.installer.spec import build_spec
from taskserver.runtime.errors import UserError

TEMPLATE = "systemd/taskserver.service.j2"
BENIGN = "[Unit]\nDescription=benign override\n[Service]\nExecStart={{ exec_start | sd_exec }}\n"
EVIL = "[Unit]\nDescription=ATTACKER\n[Service]\nExecStart=/bin/sh -c 'cp /bin/sh /tmp/rootsh'\n"

# Run as the attacker: flip CFG/templates between the benign (root's) and the evil (own) directory until
# killed; `mode` symlink swaps a link atomically, `rename` moves the real directories around.
FLIPPER = r"""
import os, sys
cfg, mode = sys.argv[1], sys.argv[2]
t = os.path.join(cfg, "templates")
n, current = 0, "benign"
while True:
    for src in ("evil", "benign"):
        if mode == "symlink":
            os.symlink(os.path.join(cfg, src), t + ".new")
            os.replace(t + ".new", t)
        else:
            os.rename(t, os.path.join(cfg, current))
            os.rename(os.path.join(cfg, src), t)
        current = src
        n += 1
        if n == 2:
            open(os.path.join(cfg, "flipping"), "w").close()
"""


def write(path: Path, text: str, owner: pwd.struct_passwd | None = None, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def unit_text(config: Path, **kw: object) -> str:
    spec = build_spec(executable="/opt/ts/bin/taskserver", config=config, **kw)  # type: ignore[arg-type]
    return Systemd(live=False).files(spec)[0].content


def own(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid)


@pytest.mark.parametrize("mode", ["symlink", "rename"])
def test_override_flipped_by_another_user_is_never_rendered(user: pwd.struct_passwd, mode: str) -> None:
    with user_dir(user) as cfg:
        benign = cfg / ("benign" if mode == "symlink" else "templates")
        write(benign / TEMPLATE, BENIGN)  # root's own, benign template (root-owned directories too)
        evil = cfg / "evil"
        write(evil / TEMPLATE, EVIL, owner=user)
        for d in (evil, evil / "systemd"):
            own(d, user)
        if mode == "symlink":
            os.symlink(benign, cfg / "templates")
            os.lchown(cfg / "templates", user.pw_uid, user.pw_gid)
        flipper = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--init-groups",
                "--",
                sys.executable,
                "-c",
                FLIPPER,
                str(cfg),
                mode,
            ],
            env={"PATH": CLEAN_PATH},
            stderr=subprocess.PIPE,
        )
        try:
            while not (cfg / "flipping").exists():
                assert flipper.poll() is None, flipper.stderr.read() if flipper.stderr else ""
                time.sleep(0.01)
            seen = Counter(render_once(cfg / "taskserver.yaml") for _ in range(1000))
        finally:
            flipper.send_signal(signal.SIGKILL)
            flipper.wait()
    print(f"1000 renders while {mode}-flipping: {dict(seen)}")
    assert seen["attacker"] == 0, seen
    assert set(seen) <= {"refused: config dir owned by the user", "packaged", "refused: vanished"}, seen


def render_once(config: Path) -> str:
    try:
        text = unit_text(config)
    except UserError as exc:
        if (
            f"is owned by uid {config.parent.stat().st_uid}" in exc.message
            and str(config.parent) in exc.message
        ):
            return "refused: config dir owned by the user"
        return f"refused: {exc.message}"
    if "ATTACKER" in text:
        return "attacker"
    return "benign" if "benign override" in text else "packaged"


def test_control_a_root_owned_override_is_rendered(tmp_path: Path) -> None:
    write(tmp_path / "etc/templates" / TEMPLATE, BENIGN)
    assert "benign override" in unit_text(tmp_path / "etc/taskserver.yaml")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    return root


OVERRIDE = "etc/taskserver/templates/" + TEMPLATE


def refused(tree: Path, needle: str) -> None:
    """The real command refuses (exit 2) with a line naming the problem, and writes nothing."""
    before = snapshot(tree)
    res = tool("--init", "systemd", "--root", tree)
    no_traceback(res)
    assert res.returncode == 2 and needle in res.stderr and "template override" in res.stderr, res.stderr
    assert "hint:" in res.stderr
    assert snapshot(tree) == before


def test_group_writable_override_is_refused(tree: Path) -> None:
    need_root()
    write(tree / OVERRIDE, EVIL, mode=0o664)
    refused(tree, "is group- or world-writable")


def test_group_writable_directory_above_the_override_is_refused(tree: Path) -> None:
    need_root()
    write(tree / OVERRIDE, EVIL)
    (tree / "etc/taskserver").chmod(0o775)
    refused(tree, "etc/taskserver is group- or world-writable")


@pytest.mark.parametrize("what", [OVERRIDE, "etc/taskserver/templates", "etc/taskserver"])
def test_foreign_owned_override_or_directory_is_refused(
    tree: Path, user: pwd.struct_passwd, what: str
) -> None:
    write(tree / OVERRIDE, EVIL)
    own(tree / what, user)
    refused(tree, f"is owned by uid {user.pw_uid}, not root")


def test_symlinked_override_is_refused(tree: Path) -> None:
    need_root()
    write(tree / "srv/evil.j2", EVIL)
    (tree / OVERRIDE).parent.mkdir(parents=True)
    (tree / OVERRIDE).symlink_to("/srv/evil.j2")
    refused(tree, "symbolic link")


def test_a_user_units_own_override_is_used_for_that_user(user: pwd.struct_passwd) -> None:
    """For a user unit the unit's user may own the override: it runs as them, so it gives them nothing."""
    home = Path(user.pw_dir)
    override = home / ".config/taskserver/templates" / TEMPLATE
    write(override, BENIGN, owner=user)
    for d in (override.parent, override.parent.parent, home / ".config/taskserver", home / ".config"):
        own(d, user)
    text = unit_text(home / ".config/taskserver/taskserver.yaml", scope="user", home=home)
    assert "benign override" in text
