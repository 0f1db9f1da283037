"""A tenant's status directory is written by two users: the tenant's (its `jobs` commands, and the daemon
acting as it) and the daemon's (its own `jobs` commands, the web side). Whichever came first, neither may
shut the other out, and neither gains a write to anything of another tenant or of root.

A root-owned config with a daemon user and one user per tenant; the daemon started by root. The commands
run as the real throwaway users, on the lean `jobs enqueue` path (`--queue q`) and the full one
(`--queue=q`). Before this was fixed, the first `jobs enqueue` made the status directory in its own user's
group: the daemon user's enqueue shut the tenant's user out ("its status file was not written"), and the
tenant's (or root's, acting as the tenant) shut the daemon's user out.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import Site, User, as_user, lab, needs_root, tenant_site, wait_for

from taskserver.runtime import statusfile

pytestmark = needs_root
NOT_WRITTEN = "status file was not written"


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        got = tenant_site(world, lambda a, b: (
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n"
            f"  b:\n    login: shop-b\n    run_as: {b.name}\n"))
        time.sleep(2.1)  # the lean path trusts a config unchanged for 2 s before its daemon read it
        yield got


def _status_dir(site: Site, tenant: str) -> Path:
    return Path(statusfile.status_dir(site.state / "tenants" / tenant, tenant))


def _enqueue(site: Site, tenant: str, user: User | None, *, lean: bool) -> int:
    """`jobs enqueue` as ``user`` (None: root); it must say nothing but the run id."""
    queue = ["--queue", "q"] if lean else ["--queue=q"]
    res = site.world.ts(site.cfg, "jobs", "enqueue", "--tenant", tenant, *queue, "--", "/bin/true", user=user)
    assert res.returncode == 0 and res.stdout.strip().isdigit(), res
    assert NOT_WRITTEN not in res.stderr and "Traceback" not in res.stderr, res.stderr
    run_id = int(res.stdout)
    assert statusfile.read_state(_status_dir(site, tenant) / str(run_id)) in ("QUE", "RUN", "OK"), run_id
    return run_id


def _each_writes(site: Site, tenant: str, first: User | None, then: User | None) -> None:
    for who in (first, then, first):
        for lean in (True, False):
            _enqueue(site, tenant, who, lean=lean)


def _as_the_daemon_makes_it(site: Site, tenant: str, user: User) -> None:
    """The tenant's user's, in the daemon's group, 0770, both levels; nothing under the state dir opens to
    other users."""
    for path in (_status_dir(site, tenant).parent, _status_dir(site, tenant)):
        st = path.stat()
        want = (user.uid, site.daemon_user.gid, 0o770)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == want, path
    for path in site.state.rglob("*"):
        assert not stat.S_IMODE(path.lstat().st_mode) & 0o006 or path.is_symlink(), path


def _owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _cannot_write(user: User, directory: Path) -> None:
    probe = directory / f"probe-{user.name}"
    res = subprocess.run(as_user(user, ["sh", "-c", f'echo x > "{probe}"']), capture_output=True, text=True,
                         check=False)
    assert res.returncode != 0 and not probe.exists(), res


def test_the_daemon_user_first_then_the_tenant_user(site: Site) -> None:
    """The reported case: the daemon's user queued first (its directory, its group), then the tenant's
    user's enqueue warned that its status file was not written."""
    daemon = site.world.daemon(site.cfg)
    _each_writes(site, "a", site.daemon_user, site.a)
    _each_writes(site, "b", site.b, site.daemon_user)  # and the other way round
    _as_the_daemon_makes_it(site, "a", site.a)
    _as_the_daemon_makes_it(site, "b", site.b)
    _cannot_write(site.a, _status_dir(site, "b"))  # a tenant's user gains nothing of another tenant's
    _cannot_write(site.b, _status_dir(site, "a"))
    _cannot_write(site.stranger, _status_dir(site, "a"))
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, site.world.log()


def test_root_acting_as_the_tenant_first_then_the_daemon_user(site: Site) -> None:
    """Root acts as the tenant's user (with that user's groups): the directory it makes must still let
    the daemon's user in. No daemon runs: the commands make everything themselves."""
    _each_writes(site, "a", None, site.daemon_user)
    _each_writes(site, "a", site.a, site.daemon_user)
    _as_the_daemon_makes_it(site, "a", site.a)


@pytest.mark.parametrize("made_by", ["daemon user", "tenant user"])
def test_a_directory_an_earlier_version_left_is_mended_when_the_daemon_starts(site: Site,
                                                                            made_by: str) -> None:
    """A status directory an earlier version let a `jobs` command make in its own user's group: the daemon
    (or root's next command) gives it back to the tenant's user in the daemon's group; its files stay as
    they are, and the other user's next write replaces any it may not write in place."""
    first = _enqueue(site, "a", None, lean=False)  # root: the tenant's directory and store
    owner = site.daemon_user if made_by == "daemon user" else site.a
    for path in (_status_dir(site, "a").parent, _status_dir(site, "a"), _status_dir(site, "a") / str(first)):
        os.chown(path, owner.uid, owner.gid)  # as that user's own command made them
    other = site.a if owner is site.daemon_user else site.daemon_user
    kept = _owner(_status_dir(site, "a") / str(first))
    daemon = site.world.daemon(site.cfg)
    _as_the_daemon_makes_it(site, "a", site.a)
    assert _owner(_status_dir(site, "a") / str(first)) == kept  # files are not chowned (the run rewrites it)
    _each_writes(site, "a", other, owner)
    assert wait_for(lambda: statusfile.read_state(_status_dir(site, "a") / str(first)) == "OK"), first
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, site.world.log()


def test_each_user_ends_a_task_the_other_queued(site: Site) -> None:
    """A status file one user made (in its own group) the other rewrites by replacing it: the tenant's
    job reports a task the daemon's user queued, the daemon's user cancels one the tenant's user queued."""
    _enqueue(site, "a", None, lean=False)  # root: the tenant's directory and store (no daemon runs)
    by_daemon_user = _enqueue(site, "a", site.daemon_user, lean=False)  # both wait in QUE
    by_tenant_user = _enqueue(site, "a", site.a, lean=False)
    for user, argv in ((site.a, ["finish", str(by_daemon_user), "--status", "err", "--message", "no"]),
                       (site.daemon_user, ["cancel", str(by_tenant_user)])):
        res = site.world.ts(site.cfg, "jobs", argv[0], "--tenant", "a", *argv[1:], user=user)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res
    for run_id in (by_daemon_user, by_tenant_user):
        path = _status_dir(site, "a") / str(run_id)
        assert statusfile.read_state(path) == "ERR", path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o660


def test_a_missing_status_directory_is_made_only_by_the_daemon(site: Site) -> None:
    """Removed (by either user: both may), the directory is not made again by a `jobs` command in its own
    user's group: the command warns that the status file was not written (the run is queued), and the
    daemon, starting the run, makes the directory as the tenant's user in its own group and writes it."""
    daemon = site.world.daemon(site.cfg)
    done = _enqueue(site, "a", site.a, lean=True)
    for user in (site.a, site.daemon_user):
        path = _status_dir(site, "a") / str(done)
        assert wait_for(lambda path=path: statusfile.read_state(path) == "OK"), path  # the daemon is idle
        subprocess.run(as_user(user, ["rm", "-r", str(_status_dir(site, "a").parent)]), check=True)
        res = site.world.ts(site.cfg, "jobs", "enqueue", "--tenant", "a", "--", "/bin/true", user=user)
        assert res.returncode == 0 and res.stdout.strip().isdigit(), res  # queued all the same
        assert NOT_WRITTEN in res.stderr and "Traceback" not in res.stderr, res.stderr
        done = int(res.stdout)
        path = _status_dir(site, "a") / str(done)
        assert wait_for(lambda path=path: path.exists() and statusfile.read_state(path) == "OK"), path
        _as_the_daemon_makes_it(site, "a", site.a)
    _each_writes(site, "a", site.a, site.daemon_user)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, site.world.log()
