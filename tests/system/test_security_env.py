"""Issue 7 class 6: a job's environment is clean. The daemon runs as root with a throwaway run_as user and
secrets in its own environment; the real job (`env`) shows exactly the variables the rules give it. An
env_file another user could change is refused with the config's FILE:LINE:COL, and nothing starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import runns
from daemonlab import TASKSERVER, cli, sandbox_env
from throwaway import User, users

from taskserver.runtime.jobenv import SAFE_PATH

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="drops root to throwaway users: needs root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd"),
]

SECRETS = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "SSH_AUTH_SOCK": "/tmp/ssh-XXXX/agent.1",
           "SUDO_USER": "alice", "PATH": "/root/bin:/usr/local/bin:/usr/bin:/bin", "MY_TOKEN": "t0k3n",
           "LANG": "de_DE.UTF-8", "TZ": "Asia/Tokyo", "PYTHONPATH": "/root/lib"}
OWN = {"TASKSERVER_TENANT", "TASKSERVER_JOB", "TASKSERVER_RUN_ID", "TASKSERVER_STATUS_FILE",
       "TASKSERVER_LOGIN", "TASKSERVER_CONFIG", "TASKSERVER_INSTANCE"}


@pytest.fixture
def two() -> Iterator[list[User]]:
    with users(2) as made:
        yield made


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ts-secenv-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(base: Path, user: User, env_file: Path) -> Path:
    cfg = base / "app.yaml"
    cfg.write_text(f"""\
task_server:
  run_as: {user.name}
  state_dir: {base / 'state'}
tenants:
  t:
    login: {user.name}
    inherit_env: [LANG]
    env_file: {env_file}
    environment: {{SHARED: tenant, T_ONLY: "yes"}}
    jobs:
      show-env:
        command: [env]
        inherit_env: [TZ]
        environment: {{SHARED: job}}
""")
    cfg.chmod(0o644)
    return cfg


def _run_once(cfg: Path) -> None:
    env = {**sandbox_env(cfg), **SECRETS}
    res = subprocess.run([*runns.prefix(), TASKSERVER, "-c", str(cfg), "run", "--once"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr


def _env_of_run(cfg: Path, run_id: int) -> dict[str, str]:
    run = json.loads(cli(cfg, "jobs", "show", str(run_id), "--json").stdout)
    assert run["state"] == "OK", run
    return dict(line.split("=", 1) for line in run["output"].splitlines())


def test_a_job_sees_only_what_the_rules_give_it(two: list[User], base: Path) -> None:
    user = two[0]
    env_file = base / "t.env"
    env_file.write_text("# read by the daemon as root\nFROM_FILE=kept\nSHARED=file\n")
    env_file.chmod(0o600)
    cfg = _config(base, user, env_file)
    job_run = int(cli(cfg, "jobs", "run", "show-env").stdout)
    task_run = int(cli(cfg, "jobs", "enqueue", "--", "env").stdout)
    _run_once(cfg)
    job = _env_of_run(cfg, job_run)
    assert job.keys() == {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "FROM_FILE", "SHARED",
                          "T_ONLY"} | OWN, job
    assert (job["PATH"], job["USER"], job["LOGNAME"]) == (SAFE_PATH, user.name, user.name)
    assert (job["HOME"], job["SHELL"]) == (f"/home/{user.name}", "/bin/sh")
    assert (job["LANG"], job["TZ"]) == ("de_DE.UTF-8", "Asia/Tokyo")
    assert (job["SHARED"], job["FROM_FILE"], job["T_ONLY"]) == ("job", "kept", "yes")
    task = _env_of_run(cfg, task_run)  # an enqueued command gets the tenant's part only
    assert task.keys() == job.keys() - {"TZ"} and task["SHARED"] == "tenant"
    assert not set(SECRETS) - {"LANG", "TZ", "PATH"} & (job.keys() | task.keys())


def test_an_env_file_others_could_change_is_refused(two: list[User], base: Path) -> None:
    user, other = two
    env_file = base / "t.env"
    env_file.write_text("A=1\n")
    env_file.chmod(0o600)
    os.chown(env_file, other.uid, other.gid)
    cfg = _config(base, user, env_file)
    where = f"{cfg}:8:15: env_file {env_file}"
    for argv in (["check"], ["start"]):
        res = cli(cfg, *argv, check=False)
        assert res.returncode == 2, res
        assert f"{where}: owned by uid {other.uid}" in res.stderr and "hint:" in res.stderr, res.stderr
    os.chown(env_file, 0, 0)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # root's file, in a directory anyone can swap it in
    os.rename(env_file, shared / "t.env")
    cfg = _config(base, user, shared / "t.env")
    res = cli(cfg, "check", check=False)
    assert res.returncode == 2 and f"its directory {shared} can be changed by others" in res.stderr, res
    assert cli(cfg, "status", check=False).returncode == 3
