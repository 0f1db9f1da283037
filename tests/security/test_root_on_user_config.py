"""Root running commands on a config another user controls does only what that user could do: every command.

The daemon and the `jobs` commands became the config's owner before; these are the commands and reads that
did not: `check -v` (its import probe), `tenants enable|disable` and `init-config` (they write beside the
file), `web`, the env files a load reads, and `inherit_env` (root's environment). Each attack is set up by
a real throwaway user and triggered by root, as an admin would with `taskserver -c ~user/...`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from secusers import (
    TASKSERVER,
    USER_ENV,
    USER_TASKSERVER,
    Lab,
    User,
    as_user,
    lab,
    needs_root,
    one_error,
    snapshot,
    wait_for,
    write,
)

pytestmark = needs_root


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        yield the_lab


def _owned(path: Path, user: User) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, user.uid, user.gid)


def test_check_v_probes_a_users_call_job_as_that_user(world: Lab) -> None:
    """`check -v` asks an interpreter in install_dir whether a `call:` job's module imports, which runs the
    package's __init__: for a user's config (no run_as at all) that ran as root."""
    u = world.user("prob")
    app = u.home / "app" / "evilpkg"
    marker = u.home / "probe-ran-as"
    write(app / "__init__.py", f"import os\nopen({str(marker)!r}, 'a').write(f'{{os.geteuid()}}\\n')\n")
    _owned(u.home / "app", u)
    cfg = write(u.home / "ts.yaml", f"task_server:\n  install_dir: {u.home}/app\n  state_dir: {u.home}/st\n"
                "tenants:\n  t:\n    login: x\n    jobs:\n      j:\n        call: evilpkg.mod:f\n", owner=u)
    res = _root_check(world, cfg)
    assert f"importable as {u.name}" in res.stdout, res.stdout
    assert marker.read_text().split() == [str(u.uid)]  # the probe ran, as the user, never as root
    assert marker.stat().st_uid == u.uid


def test_check_v_probes_as_the_tenants_own_user(world: Lab) -> None:
    """A root config whose tenant runs as T: the probe imports as T, as the tenant's runs do."""
    t = world.user("tprb")
    app = world.base / "app" / "probed"
    marker = world.base / "marks" / "ran-as"
    marker.parent.mkdir(mode=0o777)
    marker.parent.chmod(0o777)
    write(app / "__init__.py", f"import os\nopen({str(marker)!r}, 'a').write(f'{{os.geteuid()}}\\n')\n")
    cfg = write(world.base / "etc" / "ts.yaml", f"task_server:\n  install_dir: {world.base}/app\n"
                f"  state_dir: {world.base}/st\ntenants:\n  t:\n    login: x\n    run_as: {t.name}\n"
                "    jobs:\n      j:\n        call: probed.mod:f\n")
    res = _root_check(world, cfg)
    assert f"importable as {t.name}" in res.stdout, res.stdout
    assert marker.read_text().split() == [str(t.uid)]


def _root_check(world: Lab, cfg: Path) -> subprocess.CompletedProcess[str]:
    """`check -v` as root through an interpreter the users can run too (the probe is that interpreter)."""
    res = subprocess.run([*USER_TASKSERVER, "-c", str(cfg), "check", "-v"], env=world.env(USER_ENV),
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res


RACER = """
import fcntl, os, sys, time
d, victim = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(d, "ts.yaml"), os.O_RDONLY)
end = time.time() + 60
while time.time() < end:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:  # root holds the lock: it has read the file and is about to write beside it
        os.rename(d, d + ".real")
        os.symlink(victim, d)
        print("swapped", flush=True)
        break
    time.sleep(0.0002)
"""


def test_tenants_disable_never_writes_where_the_user_swapped_the_directory(world: Lab) -> None:
    """`tenants disable` replaces the file through its directory (temporary file, rename). The user swaps
    that directory for a link to a root directory while root edits: root's own file of that name there
    (a script root runs) must keep its text."""
    u = world.user("swap")
    victim_dir = world.base / "victim"
    victim = write(victim_dir / "ts.yaml", "#!/bin/sh\necho root's own script\n", mode=0o755)
    before = snapshot(victim_dir)
    d = u.home / "d"
    d.mkdir()
    cfg = write(d / "ts.yaml", "#!/bin/sh\ntenants:\n  t:\n    login: x\n    jobs:\n      j:\n"
                "        command: [/bin/true]\n", owner=u)
    _owned(d, u)
    racer = subprocess.Popen(as_user(u, ["/usr/bin/python3", "-c", RACER, str(d), str(victim_dir)]),
                             stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the racer has opened the file
    res = world.ts(cfg, "tenants", "disable", "t")
    out, _ = racer.communicate(timeout=90)
    assert "Traceback" not in res.stderr, res.stderr
    assert snapshot(victim_dir) == before, (out, res.stdout, res.stderr)
    assert victim.read_text() == "#!/bin/sh\necho root's own script\n"
    if out.strip() != "swapped":  # the racer lost: root's edit, made as the user, landed in the user's file
        assert "enabled: false" in cfg.read_text()
    assert not any(p.stat().st_uid == 0 for p in u.home.rglob("*") if not p.is_symlink())


def test_init_config_in_a_users_directory_writes_as_that_user(world: Lab) -> None:
    """`sudo taskserver init-config ~u/c/ts.yaml`: the file is the user's (so it is a valid config of
    theirs), and a directory the user pointed at a root directory gets nothing from root."""
    u = world.user("init")
    res = world.ts(None, "init-config", str(u.home / "conf" / "ts.yaml"))
    assert res.returncode == 0, res.stderr
    made = u.home / "conf" / "ts.yaml"
    assert made.stat().st_uid == u.uid and made.parent.stat().st_uid == u.uid
    assert world.ts(made, "check", user=u).returncode == 0
    root_dir = world.base / "rootdir"
    root_dir.mkdir(mode=0o755)
    before = snapshot(root_dir)
    link = u.home / "elsewhere"
    link.symlink_to(root_dir)
    os.lchown(link, u.uid, u.gid)
    line = one_error(world.ts(None, "init-config", str(link / "ts.yaml")))
    assert "Permission denied" in line, line
    assert snapshot(root_dir) == before


def test_init_config_refuses_a_path_below_two_users_directories(world: Lab) -> None:
    a, b = world.user("twoa"), world.user("twob")
    inner = a.home / "shared"
    inner.mkdir()
    os.chown(inner, b.uid, b.gid)
    line = one_error(world.ts(None, "init-config", str(inner / "ts.yaml")))
    assert "two users" in line, line
    assert not (inner / "ts.yaml").exists()


def test_a_users_env_file_is_read_with_that_users_rights(world: Lab) -> None:
    """A root-only file named as env_file in a user's config: root's check and run read it as the user,
    so its lines reach neither an error message nor the user's job."""
    u = world.user("envr")
    secret_dir = world.base / "secret"
    secret_dir.mkdir(mode=0o700)
    write(secret_dir / "env", "ROOTSECRET=only-root-may-read\n", mode=0o600)
    out = u.home / "env.out"
    cfg = write(u.home / "ts.yaml", f"task_server:\n  state_dir: {u.home}/st\ntenants:\n  t:\n    login: x\n"
                f"    env_file: {secret_dir}/env\n    jobs:\n      leak:\n        shell: true\n"
                f'        command: "env > {out}"\n', owner=u)
    for argv in (["check"], ["jobs", "run", "leak"], ["run", "--once"]):
        res = world.ts(cfg, *argv)
        line = one_error(res)
        assert "env_file" in line and "Permission denied" in line, (argv, line)
        assert "only-root-may-read" not in res.stdout + res.stderr
    assert not out.exists()
    write(secret_dir / "env", "root:*:20228:0:99999:7:::\n", mode=0o600)  # lines quoted in errors
    res = world.ts(cfg, "check")
    assert "20228" not in res.stderr, res.stderr


def test_inherit_env_gets_nothing_of_roots_environment_for_a_users_config(world: Lab) -> None:
    u = world.user("inhr")
    out = u.home / "env.out"
    cfg = write(u.home / "ts.yaml", f"task_server:\n  state_dir: {u.home}/st\ntenants:\n  t:\n    login: x\n"
                "    inherit_env: [ROOT_TOKEN, LANG]\n    jobs:\n      leak:\n        shell: true\n"
                f'        command: "env > {out}"\n', owner=u)
    env = {"ROOT_TOKEN": "root-aws-secret", "LANG": "C.UTF-8"}
    assert world.ts(cfg, "jobs", "run", "leak", env=env).returncode == 0
    res = world.ts(cfg, "run", "--once", env=env)
    assert res.returncode == 0, res.stderr
    got = out.read_text()
    assert "root-aws-secret" not in got and "ROOT_TOKEN" not in got, got
    assert f"USER={u.name}" in got
    assert "inherit_env passes nothing" in res.stderr, res.stderr
    out.unlink()  # the user running their own config inherits what they were given
    assert world.ts(cfg, "jobs", "run", "leak", user=u).returncode == 0
    res = world.ts(cfg, "run", "--once", user=u, env={"ROOT_TOKEN": "the-users-own"})
    assert res.returncode == 0, res.stderr
    assert "ROOT_TOKEN=the-users-own" in out.read_text()


def test_web_for_a_users_config_serves_as_that_user(world: Lab) -> None:
    """`taskserver web` dropped to task_server.run_as only: for a user's config (none set) it served as
    root with every capability, reading whatever the config's paths led to (a link to another tenant's
    directory of root's daemon)."""
    pytest.importorskip("uvicorn", reason="the web side is the optional extra taskserver[web]")
    u = world.user("webu")
    cfg = write(u.home / "ts.yaml", f"task_server:\n  state_dir: {u.home}/st\ntenants:\n  t:\n    login: x\n",
                owner=u)
    port = _free_port()
    proc = subprocess.Popen([TASKSERVER, "-c", str(cfg), "web", "--listen", f"127.0.0.1:{port}",
                             "--anonymous-read"], env=world.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: _listening(port) or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()[0]
        assert _ids(proc.pid, "Uid") == [u.uid] * 4
        assert _ids(proc.pid, "CapEff") == [0]
    finally:
        proc.terminate()
        proc.wait(30)


def test_web_token_add_for_a_users_config_writes_as_that_user(world: Lab) -> None:
    """`web token-add` as root appended to the tokens file the user's config names, replacing it by rename
    as root: any root file (its text and one more line), wherever the user pointed."""
    u = world.user("tokn")
    victim = write(world.base / "rootdir" / "tokens", "# root's own file\n", mode=0o600)
    before = snapshot(victim.parent)
    cfg = write(u.home / "ts.yaml", f"task_server:\n  state_dir: {u.home}/st\n  http:\n"
                f"    tokens: {victim}\ntenants:\n  t:\n    login: x\n", owner=u)
    line = one_error(world.ts(cfg, "web", "token-add", "ops"))
    assert "Permission denied" in line, line
    assert snapshot(victim.parent) == before
    own = write(u.home / "own.yaml",
                f"task_server:\n  state_dir: {u.home}/st\ntenants:\n  t:\n    login: x\n", owner=u)
    made = world.ts(own, "web", "token-add", "ops")
    assert made.returncode == 0, made.stderr
    assert (u.home / "tokens").stat().st_uid == u.uid


def test_roots_parse_of_a_users_config_tells_nothing_of_what_only_root_sees(world: Lab) -> None:
    """`check` of a user's config checks that install_dir is a directory and that an email's sendmail can
    run. As root it looked with root's rights: the answer told the user whether a path inside a directory
    only root may enter exists. It now looks with the user's: an existing hidden path and a missing one get
    the same answer."""
    u = world.user("look")
    hidden = world.base / "rootonly"
    hidden.mkdir(mode=0o700)
    (hidden / "there").mkdir()
    write(hidden / "mailer", "#!/bin/sh\nexit 0\n", mode=0o755)
    said = {}
    for name in ("there", "missing"):
        cfg = write(u.home / f"{name}.yaml", f"task_server:\n  state_dir: {u.home}/st\n"
                    f"  install_dir: {hidden / name}\ntenants:\n  t:\n    login: x\n", owner=u)
        said[name] = one_error(world.ts(cfg, "check")).replace(name, "NAME")
    assert said["there"] == said["missing"], said
    assert "cannot be reached here: Permission denied" in said["there"], said
    for name in ("mailer", "nomailer"):
        cfg = write(u.home / f"{name}.yaml", f"task_server:\n  state_dir: {u.home}/st\n"
                    "tenants:\n  t:\n    login: x\n    notify:\n      email: {to: a@example.com, sendmail: "
                    f"{hidden / name}}}\n", owner=u)
        said[name] = one_error(world.ts(cfg, "check")).replace(name, "NAME")
    assert said["mailer"] == said["nomailer"], said


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ids(pid: int, key: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return [int(x, 16 if key.startswith("Cap") else 10) for x in line.split()[1:]]
    raise AssertionError(f"no {key} line")
