"""Who a notification runs as (issue 13, docs/security.md). The daemon is started by root; a notify command
and the sendmail it hands a mail to run as the tenant's user, exactly like the tenant's jobs: a config a user
controls makes root run them as that user and nobody else, and a root-owned config's server-wide notify runs
as each tenant's own user, never as root or as the daemon's user. Real throwaway users (useradd)."""

from __future__ import annotations

import grp
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonlab import Daemon, cli, wait_for
from throwaway import User, users

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the daemon as root with throwaway users"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd"),
]

WHO = 'id -u > "$1/$2.uid.tmp" && id -G >> "$1/$2.uid.tmp" && mv "$1/$2.uid.tmp" "$1/$2.uid"'


@pytest.fixture
def three() -> Iterator[list[User]]:
    with users(3) as made:
        yield made


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ts-notifysec-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _own_dir(path: Path, user: User) -> Path:
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    return path


def _write(path: Path, doc: dict[str, Any], owner: User | None = None) -> Path:
    path.write_text(json.dumps(doc, indent=1))
    path.chmod(0o644)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def _stand_in(base: Path, out: Path) -> Path:
    script = base / "sendmail"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\nid -u > {out}/mail.uid.tmp && id -G >> {out}/mail.uid.tmp"
                      f" && mv {out}/mail.uid.tmp {out}/mail.uid\n")
    script.chmod(0o755)
    return script


def _who(out: Path, name: str, daemon: Daemon) -> tuple[int, set[int], int]:
    path = out / f"{name}.uid"
    wait_for(lambda: path.exists() or ") failed: " in daemon.text(), "the notification")
    assert path.exists(), daemon.text()
    uid, gids = path.read_text().splitlines()
    return int(uid), {int(g) for g in gids.split()}, path.stat().st_uid


def _groups(user: User) -> set[int]:
    return set(os.getgrouplist(user.name, user.gid))


def test_a_user_config_notifies_as_that_user_when_root_starts_it(three: list[User], base: Path) -> None:
    u = three[0]
    home = _own_dir(base / "u", u)
    out = _own_dir(home / "out", u)
    notify = [{"command": ["sh", "-c", WHO, "sh", str(out), "cmd"]},
              {"email": {"to": "ops@example.com", "sendmail": str(_stand_in(base, out))}}]
    doc = {"task_server": {"state_dir": str(home / "state")},
           "tenants": {"t": {"login": "app", "notify": notify, "jobs": {"fail": {"command": ["false"]}}}}}
    cfg = _write(home / "ts.yaml", doc, owner=u)
    daemon = Daemon(cfg)  # started by root: the daemon becomes u, its config's owner
    try:
        cli(cfg, "jobs", "run", "--tenant", "t", "fail")
        for name in ("cmd", "mail"):
            assert _who(out, name, daemon) == (u.uid, _groups(u), u.uid), name
    finally:
        daemon.stop()


def test_a_user_config_cannot_name_another_user_for_its_notifications(three: list[User], base: Path) -> None:
    u, other = three[0], three[1]
    home = _own_dir(base / "u", u)
    out = _own_dir(home / "out", u)
    doc = {"task_server": {"state_dir": str(home / "state")},
           "tenants": {"t": {"login": "app", "run_as": other.name,
                             "notify": {"command": ["sh", "-c", WHO, "sh", str(out), "cmd"]},
                             "jobs": {"fail": {"command": ["false"]}}}}}
    cfg = _write(home / "ts.yaml", doc, owner=u)
    for argv in (["check"], ["run", "--once"]):
        res = cli(cfg, *argv, check=False)
        assert res.returncode == 2 and f"run_as: {other.name} is not allowed" in res.stderr, res.stderr
    assert not list(out.iterdir())


def test_a_server_wide_notify_runs_as_each_tenants_user(three: list[User], base: Path) -> None:
    daemon_user, shop, blog = three
    outs = {u.name: _own_dir(base / f"out-{u.name}", u) for u in (shop, blog)}
    tenants = {u.name: {"login": "app", "run_as": u.name, "jobs": {"fail": {"command": ["false"]}},
                        "notify": {"command": ["sh", "-c", WHO, "sh", str(outs[u.name]), "cmd"]}}
               for u in (shop, blog)}
    doc = {"task_server": {"run_as": daemon_user.name, "state_dir": str(base / "state")}, "tenants": tenants}
    cfg = _write(base / "ts.yaml", doc)  # root's own config
    daemon = Daemon(cfg)
    try:
        for u in (shop, blog):
            cli(cfg, "jobs", "run", "--tenant", u.name, "fail")
        for u in (shop, blog):
            uid, gids, owner = _who(outs[u.name], "cmd", daemon)
            assert (uid, owner) == (u.uid, u.uid) and gids == _groups(u), u.name
            assert daemon_user.gid not in gids and 0 not in gids and grp.getgrgid(u.gid).gr_name == u.name
    finally:
        daemon.stop()
