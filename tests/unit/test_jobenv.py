"""The job environment: what `environment:`, `env_file:` and `inherit_env:` add to a clean base, in which
order, and which mistakes the config check reports with FILE:LINE:COL."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from taskserver.runtime import config, jobenv
from taskserver.runtime.config_env import parse_file
from taskserver.runtime.config_parse import ConfigInvalid

USER = jobenv.RunUser("app", "/home/app", "/bin/bash")
DAEMON_ENV = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "SSH_AUTH_SOCK": "/tmp/agent", "SUDO_USER": "alice",
              "PATH": "/root/bin:/usr/bin", "LANG": "de_DE.UTF-8", "TZ": "Europe/Berlin", "HOME": "/root"}


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return config.load(path)


def _env_of(cfg: config.Config, job: str | None) -> dict[str, str]:
    tenant = cfg.tenants[0]
    jobdef = next((j for j in tenant.jobs if j.name == job), None)
    return jobenv.build(USER, tenant, jobdef, {"TASKSERVER_JOB": job or ""}, DAEMON_ENV)


def test_base_is_clean_and_names_the_run_user(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "tenants:\n  t:\n    login: app\n")
    env = _env_of(cfg, None)
    assert env == {"PATH": jobenv.SAFE_PATH, "HOME": "/home/app", "USER": "app", "LOGNAME": "app",
                   "SHELL": "/bin/bash", "TASKSERVER_JOB": ""}


def test_job_overrides_tenant_and_inherit_passes_exactly_what_is_named(tmp_path: Path) -> None:
    envfile = tmp_path / "t.env"
    envfile.write_text("# tenant secrets\nexport FROM_FILE='one two'\nBOTH=file\n\nEMPTY=\n")
    envfile.chmod(0o600)
    cfg = _load(tmp_path, f"""\
tenants:
  t:
    login: app
    inherit_env: [LANG, NOT_SET_IN_DAEMON]
    env_file: {envfile}
    environment: {{BOTH: tenant, T_ONLY: "1", PATH: /opt/app/bin:/usr/bin}}
    jobs:
      j:
        command: [/bin/true]
        inherit_env: [TZ]
        environment: {{BOTH: job, NUM: 5}}
""")
    env = _env_of(cfg, "j")
    assert env["BOTH"] == "job" and env["T_ONLY"] == "1" and env["NUM"] == "5"
    assert env["FROM_FILE"] == "one two" and env["EMPTY"] == ""
    assert (env["LANG"], env["TZ"], env["PATH"]) == ("de_DE.UTF-8", "Europe/Berlin", "/opt/app/bin:/usr/bin")
    assert not {"AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "SUDO_USER", "NOT_SET_IN_DAEMON"} & env.keys()
    assert env["HOME"] == "/home/app"  # not the daemon's /root
    other = jobenv.build(USER, cfg.tenants[0], None, {}, DAEMON_ENV)
    assert "TZ" not in other and other["BOTH"] == "tenant"  # the job's own keys stay the job's


@pytest.mark.parametrize(("snippet", "expect"), [
    ("environment: {TASKSERVER_JOB: x}", ":5:19: tenants.t.environment: TASKSERVER_JOB is set by taskserver"),
    ("environment: {NOTIFY_SOCKET: x}", ":5:19: tenants.t.environment: NOTIFY_SOCKET is set by"),
    ("environment: {'A B': x}", ":5:19: tenants.t.environment: bad variable name 'A B'"),
    ("environment: {A: [1]}", ":5:19: tenants.t.environment: expected text or a number, got a list"),
    ("environment: {A: \"x\\0y\"}", ":5:19: tenants.t.environment: a value cannot contain a NUL"),
    ("inherit_env: LANG", ":5:18: tenants.t.inherit_env: expected a list"),
    ("inherit_env: [LANG, 9X]", ":5:25: tenants.t.inherit_env: bad variable name '9X'"),
    ("env_file: relative.env", ":5:15: tenants.t.env_file: expected an absolute path"),
    ("enviroment: {A: b}", ":5:5: tenants.t: unknown key 'enviroment'"),
])
def test_bad_keys_name_file_line_col(tmp_path: Path, snippet: str, expect: str) -> None:
    with pytest.raises(ConfigInvalid) as err:
        _load(tmp_path, f"task_server: {{}}\ntenants:\n  t:\n    login: app\n    {snippet}\n")
    assert str(err.value).startswith(str(tmp_path / "c.yaml") + expect), str(err.value)


def test_env_file_lines_are_checked_with_their_place() -> None:
    pairs, bad = parse_file("A=1\nnot a pair\n  B C=2\nTASKSERVER_RUN_ID=9\nD=x\0y\nE='q'\n", "/e.env")
    assert dict(pairs) == {"A": "1", "E": "q"}
    assert [(str(loc), msg) for loc, msg in bad] == [
        ("/e.env:2:1", "expected NAME=VALUE, got 'not a pair'"),
        ("/e.env:3:3", "bad variable name 'B C'"),
        ("/e.env:4:1", "TASKSERVER_RUN_ID is set by taskserver (or its supervisor) and cannot be changed"),
        ("/e.env:5:1", "a value cannot contain a NUL character"),
    ]


def test_env_file_that_others_can_write_or_too_big_is_refused(tmp_path: Path) -> None:
    envfile = tmp_path / "t.env"
    text = f"tenants:\n  t:\n    login: app\n    env_file: {envfile}\n"
    envfile.write_text("A=1\n")
    envfile.chmod(0o666)
    with pytest.raises(ConfigInvalid) as err:
        _load(tmp_path, text)
    expect = f"c.yaml:4:15: env_file {envfile}: owned by uid {os.geteuid()} with mode -rw-rw-rw-"
    assert expect in str(err.value)
    envfile.chmod(0o600)
    envfile.write_text("A=" + "x" * 70000 + "\n")
    with pytest.raises(ConfigInvalid, match="larger than 64 KiB"):
        _load(tmp_path, text)
    envfile.unlink()
    envfile.symlink_to(tmp_path / "c.yaml")
    with pytest.raises(ConfigInvalid, match="a symlink is not followed"):
        _load(tmp_path, text)


def test_a_runs_environment_is_its_jobs_whole_build_and_only_a_job_of_its_own_is_kept(tmp_path: Path) -> None:
    """The daemon builds a run's environment from its tenant's, made once (runtime/runplace.py): each run gets
    exactly what jobenv.build gives its job, with its own TASKSERVER_* values, and only a job that adds
    variables of its own keeps an environment of its own (10,000 jobs must not each hold one)."""
    from taskserver.runtime import liveness, runplace

    me = pwd.getpwuid(os.geteuid()).pw_name
    cfg = _load(tmp_path, f"""\
task_server:
  run_as: {me}
  state_dir: {tmp_path / 'state'}
tenants:
  t:
    login: {me}
    environment: {{T_ONLY: "1", BOTH: tenant}}
    jobs:
      plain:
        command: [/bin/true]
      other:
        command: [/bin/true]
      own:
        command: [/bin/true]
        environment: {{BOTH: job}}
""")
    tenant = cfg.tenants[0]
    place = runplace.Place(cfg, "t", tenant, "inst")
    place.identity()
    user = jobenv.RunUser.of_uid(os.geteuid())
    for job, run_id in (("plain", 7), ("other", 8), ("own", 9), ("plain", 10), ("", 11)):
        jobdef = next((j for j in tenant.jobs if j.name == job), None)
        got = place.environment(job, jobdef, run_id, f"/s/{run_id}")
        want = jobenv.build(user, tenant, jobdef, {
            "TASKSERVER_TENANT": "t", "TASKSERVER_JOB": job, "TASKSERVER_RUN_ID": str(run_id),
            "TASKSERVER_STATUS_FILE": f"/s/{run_id}", "TASKSERVER_LOGIN": me,
            "TASKSERVER_CONFIG": str(cfg.path.absolute()), liveness.INSTANCE_ENV: "inst"})
        assert list(got.items()) == list(want.items())  # the same values, in the same order
    assert [key for key, _ in place._envs] == ["own"]
