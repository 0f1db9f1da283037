"""The daemon's kept parse (runtime/config_cache.py) is unpickled: a file another user could write must never
be believed by a process that can do more than that user.

The attacks: the daemon's own ``run_as`` user, who owns the state dir, plants a kept parse that runs code
when unpickled, for root's next start and for its own daemon, which holds capabilities to run tenants as
their users; the planted file has the exact key the daemon would look for. Each plants it as a real
throwaway user. The positive side: a root daemon and a plain user's daemon do use their own kept parse, and
an edit of the config is never hidden by it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import Lab, Site, as_user, lab, needs_root, tenant_site, wait_for, write

from taskserver.runtime import config, config_cache

pytestmark = needs_root
KEPT_NOTE = "read as parsed before"


class _Plant:
    """Unpickling it runs a shell command (as pickle allows any callable)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def _payload(cfg: Path, default_state: Path, marker: Path) -> bytes:
    """A kept parse with the very key the daemon computes for ``cfg`` (anyone who can read the config and
    the code can compute it), whose unpickling creates ``marker``."""
    key = config_cache._key(str(cfg), str(default_state), cfg.read_text())
    return pickle.dumps((key, _Plant(f"touch {marker}")))


def _plant_as(world: Lab, user_site: Site, payload: bytes, into: Path) -> None:
    """The daemon's user writes the file itself, with the mode and owner the daemon asks for."""
    staged = user_site.daemon_user.home / "payload"
    staged.write_bytes(payload)
    staged.chmod(0o644)
    target = into / config_cache.NAME
    argv = as_user(user_site.daemon_user, ["sh", "-c", f"cp {staged} {target} && chmod 600 {target}"])
    res = subprocess.run(argv, env=world.env(), capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert target.stat().st_uid == user_site.daemon_user.uid


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        yield tenant_site(world, lambda a, b: (
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n    jobs:\n      idle: {{cron: \"0 3 * * *\", "
            "command: [/bin/true]}\n"
            f"  b:\n    login: shop-b\n    run_as: {b.name}\n"))


def test_the_daemon_user_cannot_plant_a_parse_for_root_or_its_capable_daemon(site: Site) -> None:
    world = site.world
    marker = site.daemon_user.home / "pwned"  # where the payload can write, whoever runs it
    assert world.ts(site.cfg, "run", "--once").returncode == 0  # the state dir made, handed to its user
    assert site.state.stat().st_uid == site.daemon_user.uid
    default_state = config.default_state_dir(site.cfg, 0)
    _plant_as(world, site, _payload(site.cfg, default_state, marker), site.state)
    # root's start: the state dir is the daemon user's, so nothing in it is believed
    res = world.ts(site.cfg, "run", "--once")
    assert res.returncode == 0, res.stderr
    assert not marker.exists() and KEPT_NOTE not in res.stderr
    # the running daemon, dropped to its user with capabilities for the tenants' users, reloads
    daemon = world.daemon(site.cfg)
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    eff = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
    uid = next(line.split()[2] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid) == site.daemon_user.uid and int(eff, 16) != 0, status  # the premise of the attack
    # a reload parses with the running daemon's state dir as the default: the key the daemon computes then
    _plant_as(world, site, _payload(site.cfg, site.state, marker), site.state)
    daemon.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded" in world.log() or "reload failed" in world.log()), world.log()
    assert "reload failed" not in world.log()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, world.log()
    assert not marker.exists(), world.log()
    assert KEPT_NOTE not in world.log()


def test_a_root_daemon_and_a_users_own_daemon_use_their_kept_parse() -> None:
    """Root's own state dir: a start reads the parse the one before kept; an edit of the same size and
    times is run as edited. A plain user's daemon (no capabilities) uses its own kept parse as well."""
    with lab() as world:
        out = world.base / "out"
        state = world.base / "state"
        cfg = world.base / "etc" / "ts.yaml"

        def text(word: str) -> str:
            return (f"task_server:\n  run_as: root\n  state_dir: {state}\ntenants:\n  t:\n    login: app\n"
                    f"    jobs:\n      probe:\n        every: 1h\n"
                    f"        command: [/bin/sh, -c, 'echo {word} > {out}']\n")

        write(cfg, text("aaa"))
        seen = []
        for _ in range(3):
            assert world.ts(cfg, "jobs", "run", "probe").returncode == 0  # the state dir made at once
            res = world.ts(cfg, "run", "--once")
            assert res.returncode == 0, res.stderr
            seen.append(KEPT_NOTE in res.stderr)
            assert out.read_text() == "aaa\n"
        assert seen == [False, True, True], seen  # the first start parses and keeps its parse
        # `start` (SysV): the terminal shows what it always did; the note goes to the daemon's log
        res = world.ts(cfg, "start")
        assert res.returncode == 0 and res.stderr == "" and KEPT_NOTE not in res.stdout, res
        assert world.ts(cfg, "stop").returncode == 0
        assert any(KEPT_NOTE in log.read_text() for log in state.glob("*.log")), list(state.iterdir())
        st = cfg.stat()
        write(cfg, text("bbb"))
        os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert world.ts(cfg, "jobs", "run", "probe").returncode == 0
        res = world.ts(cfg, "run", "--once")
        assert res.returncode == 0 and KEPT_NOTE not in res.stderr, res.stderr
        assert out.read_text() == "bbb\n"
        # a user's own daemon, started by that user
        u = world.user("kept")
        mine = write(u.home / "ts.yaml", f"task_server:\n  state_dir: {u.home}/state\ntenants:\n  t:\n"
                     "    login: app\n    jobs:\n      idle: {cron: \"0 3 * * *\", command: [/bin/true]}\n",
                     owner=u)
        seen = [KEPT_NOTE in world.ts(mine, "run", "--once", user=u).stderr for _ in range(3)]
        assert seen == [False, False, True], seen  # the first start makes the state dir, the second keeps
        assert (u.home / "state" / config_cache.NAME).stat().st_uid == u.uid
