"""The lean `jobs enqueue` (runtime/cli_enqueue.py): what it trusts, and that it does what the full path does.

A root-owned config with a daemon user and one user per tenant, its daemon started by root. The lean path
writes from the settings that daemon published in its .info; every other way in (a user's own place, a
forged or swapped .info, a file changed since the daemon read it, a user who is not the tenant) must end as
the full path ends. ``-v`` shows which path ran: the lean one logs nothing, a fall-back says so. The full
path itself is forced with `--queue=NAME` (argparse reads it; the lean reader takes only `--queue NAME`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import Site, User, as_user, lab, needs_root, tenant_site, wait_for, write

import taskserver
from taskserver.runtime import config, pidfile

pytestmark = needs_root
FELL_BACK = "jobs enqueue: the full path"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
HOSTILE = ["/bin/echo", "$(touch /tmp/pwned)", "a; rm -rf /", "two\nlines", "quote'\"", "é ✓", "--json", ""]


@pytest.fixture
def site() -> Iterator[Site]:
    with lab() as world:
        got = tenant_site(world, lambda a, b: (
            f"  a:\n    login: shop-a\n    run_as: {a.name}\n"
            f"  b:\n    login: shop-b\n    run_as: {b.name}\n"
            "  plain:\n    login: shop-p\n"
            "  off:\n    enabled: false\n    login: shop-o\n"))
        time.sleep(2.1)  # a file in use: not changed in the 2 s before its daemon read it (config.SETTLED_NS)
        yield got


def _store(site: Site, tenant: str) -> Path:
    return site.state / ("tenants/" + tenant if tenant in ("a", "b") else "") / f"{tenant}.sqlite"


def _status_dir(site: Site, tenant: str) -> Path:
    return site.state / ("tenants/" + tenant if tenant in ("a", "b") else "") / "status" / tenant


def _rows(site: Site, tenant: str) -> list[tuple[object, ...]]:
    if not _store(site, tenant).exists():
        return []
    db = sqlite3.connect(_store(site, tenant))
    try:
        return db.execute("SELECT id, job, queue, state, reason, due, attempt, argv, queued, started, "
                          "finished, pid, exit_code, message, created FROM runs ORDER BY id").fetchall()
    finally:
        db.close()


def _enqueue(site: Site, tenant: str | None, argv: list[str], *, user: User | None = None, lean: bool = True,
             queue: str = "q", extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    words = ["-v", "jobs", "enqueue", *(["--tenant", tenant] if tenant else []), *extra,
             *(["--queue", queue] if lean else [f"--queue={queue}"]), "--", *argv]
    return site.world.ts(site.cfg, *words, user=user)


def _said(res: subprocess.CompletedProcess[str]) -> tuple[int, str, list[str]]:
    """Exit code, output, and the lines a person reads (log lines with their times left out)."""
    lines = [line for line in res.stderr.splitlines() if not LOG_LINE.match(line)]
    return res.returncode, res.stdout, lines


def _normal(out: str, status: str, run_id: int) -> tuple[str, str]:
    """The output and the status file without what differs between two runs: the run id and the time."""
    if out.strip().isdigit():
        assert int(out) == run_id
        out = "ID"
    else:
        got = json.loads(out)
        assert got["id"] == run_id and got["status_file"].endswith(f"/{run_id}"), got
        out = json.dumps({**got, "id": "ID", "status_file": got["status_file"].rsplit("/", 1)[0]})
    status = re.sub(r"(?m)^created=.*$", "created=T", status.replace(f"\nid={run_id}\n", "\nid=ID\n", 1))
    return out, status


def _block_queue(site: Site, tenant: str, user: User | None) -> None:
    """A task that keeps queue q busy: the tasks queued behind it stay QUE while they are compared."""
    res = _enqueue(site, tenant, ["/bin/sleep", "60"], user=user)
    assert res.returncode == 0, res


def _same_as_full(site: Site, tenant: str | None, argv: list[str], user: User | None = None,
                  extra: tuple[str, ...] = ()) -> None:
    """The lean run and the full one: the same exit code, output, messages, row, status file (with its
    owner and mode); the lean one did not fall back."""
    name = tenant or "plain"
    results = []
    for lean in (True, False):
        before = {r[0] for r in _rows(site, name)}
        res = _enqueue(site, tenant, argv, user=user, lean=lean, extra=extra)
        assert (FELL_BACK in res.stderr) is False, res.stderr
        new = [r for r in _rows(site, name) if r[0] not in before]
        assert len(new) == 1, (res, new)
        run_id = new[0][0]
        status = _status_dir(site, name) / str(run_id)
        st = status.stat() if status.exists() else os.stat_result((0,) * 10)
        code, out, said = _said(res)
        said = [line.replace(f"run {run_id} ", "run ID ").replace(f"/{run_id}'", "/ID'") for line in said]
        text = status.read_text() if status.exists() else ""
        owner = (st.st_uid, st.st_gid, st.st_mode)
        results.append((code, said, new[0][1:-1], _normal(out, text, run_id), owner))
        assert json.loads(new[0][7]) == argv  # stored as given
    assert results[0] == results[1]


def test_lean_and_full_paths_write_the_same_rows_and_files(site: Site) -> None:
    site.world.daemon(site.cfg)
    info = pidfile.probe(site.cfg).info()
    assert info is not None and info["enqueue"]["identity"] == list(config.file_identity(site.cfg.stat()))
    _block_queue(site, "a", None)
    _same_as_full(site, "a", HOSTILE)  # root, for a tenant with its own user
    _same_as_full(site, "a", ["/bin/true"], user=site.a, extra=("--json",))  # the tenant's user
    _same_as_full(site, "a", ["/bin/true", "x"], user=site.daemon_user)  # the daemon's user
    _block_queue(site, "plain", site.daemon_user)
    # a tenant without its own user: the daemon's
    _same_as_full(site, "plain", HOSTILE, user=site.daemon_user)
    assert not Path("/tmp/pwned").exists()
    # and the lean path is lean: none of the parser's, the model's or the scheduler's modules
    heavy = ("ruamel.yaml", "dataclasses", "zoneinfo", "logging", "argparse")
    code = ("import sys\nfrom taskserver.runtime import cli\ncode = cli.main(sys.argv[1:])\n"
            f"print(code, [m for m in {heavy!r} if m in sys.modules])")
    words = ["-c", str(site.cfg), "jobs", "enqueue", "--tenant", "a", "--queue", "q", "--", "/bin/true"]
    out = subprocess.run([sys.executable, "-c", code, *words], env=site.world.env(), capture_output=True,
                         text=True, check=True)
    assert out.stdout.splitlines()[-1] == "0 []", out


# Modules the lean path does without (docs/performance.md): typing and pathlib (with what it imports), and
# what an import of them would bring back unnoticed; logging and argparse show that the full path did not
# run instead.
NOT_LEAN = ("typing", "pathlib", "urllib.parse", "ipaddress", "fnmatch", "logging", "argparse")
# the console script's own wrapper (pip's), which imports re before the command: what the command pays anyway
SCRIPT = ("import re, sys\nfrom taskserver.runtime.cli import main\ncode = main(sys.argv[1:])\n"
          "print(code, [m for m in {!r} if m in sys.modules])\n")


def _lean_modules(site: Site, tenant: str) -> str:
    """`taskserver jobs enqueue` as the console script runs it, in an interpreter without the site hook (an
    editable install's import hook loads pathlib itself): the exit code and the NOT_LEAN modules loaded."""
    top = str(Path(taskserver.__file__).parent.parent)
    paths = [p for p in sys.path if p.endswith("-packages")]  # the fall-back's YAML parser, if it came to it
    code = f"import sys\nsys.path[:0] = [{top!r}]\nsys.path += {paths!r}\n" + SCRIPT.format(NOT_LEAN)
    words = ["-c", str(site.cfg), "jobs", "enqueue", "--tenant", tenant, "--queue", "q", "--", "/bin/true"]
    out = subprocess.run([sys.executable, "-S", "-c", code, *words], env=site.world.env(),
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[-1]


def test_the_lean_path_imports_neither_typing_pathlib_nor_the_full_paths_modules(site: Site) -> None:
    site.world.daemon(site.cfg)
    for tenant in ("a", "plain"):  # a tenant with its own user (tenancy, privilege changes), one without
        before = len(_rows(site, tenant))
        assert _lean_modules(site, tenant) == "0 []"
        assert len(_rows(site, tenant)) == before + 1


def test_lean_and_full_paths_refuse_alike(site: Site) -> None:
    """Each refusal in the full path's words, nothing queued; the lean path had nothing to add."""
    site.world.daemon(site.cfg)
    cases = [(None, "a", ["/bin/true"]), (None, "nope", ["/bin/true"]), (None, "off", ["/bin/true"]),
             (None, "a", [""]), (site.b, "a", ["/bin/true"]), (site.stranger, "a", ["/bin/true"]),
             (site.stranger, "plain", ["/bin/true"]), (site.a, "plain", ["/bin/true"]), (site.a, None, ["x"])]
    for user, tenant, argv in cases:
        # the daemon has ended what the control case queued: the rows below change only if a refusal wrote
        assert wait_for(lambda: not any(r[3] in ("QUE", "RUN") for t in ("a", "b", "plain")
                                        for r in _rows(site, t)))
        rows = {t: _rows(site, t) for t in ("a", "b", "plain")}
        lean, full = (_enqueue(site, tenant, argv, user=user, lean=flag) for flag in (True, False))
        if tenant == "a" and user is None and argv == ["/bin/true"]:
            continue  # the one that works (a control that the site is sound)
        assert _said(lean) == _said(full), (user, tenant, lean, full)
        assert lean.returncode != 0 and "Traceback" not in lean.stderr
        assert {t: _rows(site, t) for t in ("a", "b", "plain")} == rows


def _forge(site: Site, place: Path, owner: User, settings: dict[str, object]) -> subprocess.Popen[str]:
    """A place of ``owner``'s with a live process of theirs holding this config's lock, and an .info that
    says what ``settings`` say: what that user could set up on their own."""
    stem = config.instance_name(site.cfg)
    place.mkdir(mode=0o700, exist_ok=True)
    os.chown(place, owner.uid, owner.gid)
    hold = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen(as_user(owner, ["/usr/bin/python3", "-c", hold, str(place / f"{stem}.lock")]),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    info = {"pid": proc.pid, "starttime": pidfile.starttime(proc.pid), "config": str(site.cfg),
            "started": time.time(), "tenants": [], KEY: settings}
    for name, text in ((f"{stem}.pid", f"{proc.pid}\n"), (f"{stem}.info", json.dumps(info))):
        write(place / name, text, owner)
    return proc


KEY = "enqueue"


def _forged(site: Site, store: Path) -> dict[str, object]:
    """Settings that would put tenant a's tasks into ``store``, as root (no run_as)."""
    return {"config": str(site.cfg), "identity": list(config.file_identity(site.cfg.stat())),
            "state_dir": str(site.state), "state_default": False, "run_as": None,
            "tenants": [{"name": "a", "login": "shop-a", "run_as": None, "store": str(store), "lean": True}]}


def test_a_users_own_place_is_never_believed(site: Site) -> None:
    """Tenant a's user sets up a daemon of their own for root's config, saying a's store is a file of
    theirs elsewhere: the command runs the full path, and a's task lands in a's store."""
    site.world.daemon(site.cfg)
    b_rows, elsewhere = _rows(site, "b"), site.a.home / "elsewhere.sqlite"
    fake = _forge(site, Path(f"/tmp/taskserver-{site.a.uid}"), site.a, _forged(site, elsewhere))
    try:
        res = _enqueue(site, "a", ["/bin/true"], user=site.a)
    finally:
        fake.kill()
        fake.wait()
        subprocess.run(["rm", "-rf", f"/tmp/taskserver-{site.a.uid}"], check=False)
    assert res.returncode == 0 and FELL_BACK in res.stderr, res
    assert _rows(site, "b") == b_rows and not elsewhere.exists()
    assert [r[7] for r in _rows(site, "a")] == ['["/bin/true"]']


def test_root_never_believes_a_place_a_user_owns(site: Site) -> None:
    """A place root looks in (/run/taskserver/u<UID>, made for the user) with the user's own "daemon"
    saying tenant a's store is a file of root's: root's command writes where the file says, as root would
    without that place."""
    target = Path("/root") / f"forged-{site.a.name}.sqlite"
    place = Path(f"/run/taskserver/u{site.a.uid}")
    Path("/run/taskserver").mkdir(mode=0o755, exist_ok=True)
    fake = _forge(site, place, site.a, _forged(site, target))
    try:
        res = _enqueue(site, "a", ["/bin/true"])
    finally:
        fake.kill()
        fake.wait()
        subprocess.run(["rm", "-rf", str(place)], check=False)
    assert res.returncode == 0 and FELL_BACK in res.stderr, res
    assert not target.exists()
    assert [r[7] for r in _rows(site, "a")] == ['["/bin/true"]']


@pytest.mark.parametrize("swap", ["symlink", "user's file", "group-writable"])
def test_a_replaced_info_file_is_not_read(site: Site, swap: str) -> None:
    """The daemon's .info replaced by a link to a user's file, by a user's file, or made writable by a
    group: the lean path does not read it (opened without following links, root's and 0644 only)."""
    site.world.daemon(site.cfg)
    info = Path(pidfile.probe(site.cfg).path).with_suffix(".info")
    real, elsewhere = json.loads(info.read_text()), site.a.home / "elsewhere.sqlite"
    forged = write(site.a.home / "info.json", json.dumps({**real, KEY: _forged(site, elsewhere)}), site.a)
    saved = info.with_name(info.name + ".saved")
    os.rename(info, saved)
    try:
        if swap == "symlink":
            info.symlink_to(forged)
        else:
            write(info, forged.read_text(), site.a if swap == "user's file" else None,
                  0o664 if swap == "group-writable" else 0o644)
        res = _enqueue(site, "a", ["/bin/true"], user=site.a)
    finally:
        info.unlink(missing_ok=True)
        os.rename(saved, info)
    assert res.returncode == 0 and FELL_BACK in res.stderr, res
    assert _rows(site, "b") == [] and not elsewhere.exists()
    assert [r[7] for r in _rows(site, "a")] == ['["/bin/true"]']


def test_a_file_changed_since_the_daemon_read_it_is_read_again(site: Site) -> None:
    """The admin disables tenant a in the file without a reload: the command follows the file, as the full
    path does, not what the daemon published."""
    daemon = site.world.daemon(site.cfg)
    text = site.cfg.read_text().replace("    login: shop-a\n", "    login: shop-a\n    enabled: false\n")
    write(site.cfg, text)
    lean, full = (_enqueue(site, "a", ["/bin/true"], user=site.a, lean=flag) for flag in (True, False))
    assert lean.returncode == 2 and FELL_BACK in lean.stderr, lean
    assert _said(lean) == _said(full)
    assert "has no login" in lean.stderr
    assert _rows(site, "a") == []
    # once the daemon has read the file again (a reload), the lean path serves it again
    time.sleep(2.1)  # settled before the reload reads it
    daemon.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _published_identity(site) == list(config.file_identity(site.cfg.stat())))
    res = _enqueue(site, "plain", ["/bin/true"])
    assert res.returncode == 0 and FELL_BACK not in res.stderr, res


def _published_identity(site: Site) -> object:
    info = pidfile.probe(site.cfg).info() or {}
    return (info.get(KEY) or {}).get("identity")
