"""Root policy and identity resolution (the real privilege drop is proven in tests/system/test_privs.py)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from taskserver.runtime import privs
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import Config, Every, JobDef, ServerSettings, TenantDef


def _config(run_as: str | None, login: str | None, enabled: bool = True) -> Config:
    job = JobDef(name="j", tenant="t", trigger=Every(60), command=("/bin/true",), enabled=enabled)
    tenant = TenantDef(name="t", login=login, jobs=(job,))
    return Config(path=Path("/x.yaml"), exists=True, server=ServerSettings(run_as=run_as), tenants=(tenant,))


def test_resolve_user_and_group() -> None:
    me = pwd.getpwuid(0)
    ident = privs.resolve("root")
    assert (ident.user, ident.uid, ident.gid) == (me.pw_name, 0, me.pw_gid)
    assert privs.resolve("0:0").uid == 0


def test_resolve_unknown_user_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no such user 'no-such-user-xyz'"):
        privs.resolve("no-such-user-xyz")
    with pytest.raises(UserError, match="no such group"):
        privs.resolve("root:no-such-group-xyz")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root policy applies only when started as root")
def test_root_without_run_as_refuses_when_jobs_would_run() -> None:
    with pytest.raises(UserError, match="without run_as") as info:
        privs.check_root_policy(_config(None, "alice"))
    assert info.value.hint is not None and "run_as: root" in info.value.hint
    # explicit root, no login, or only disabled jobs: allowed
    privs.check_root_policy(_config("root", "alice"))
    privs.check_root_policy(_config(None, None))
    privs.check_root_policy(_config(None, "alice", enabled=False))


_SWITCH_PROBE = """
import os, pwd
from taskserver.runtime import privs
from taskserver.runtime.errors import UserError
try:
    privs.check_can_switch("root")
except UserError as err:
    print("refused:", err)
else:
    print("allowed")
privs.check_can_switch(pwd.getpwuid(os.geteuid()).pw_name)
print("own user: allowed")
"""


def test_non_root_cannot_switch_to_another_user() -> None:
    """Run as a real unprivileged process: as root (CI), drop to nobody with setpriv first."""
    argv = [sys.executable, "-c", _SWITCH_PROBE]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused:") and "needs root" in lines[0], proc.stdout
    assert lines[1] == "own user: allowed"
