"""When a tenant's store is the PostgreSQL server on this machine, every boot file starts the daemon after it
(systemd After=/Wants=, the LSB header's Should-Start, OpenRC's `use`), and not when the server is remote.
The rendered files still pass their checkers (systemd-analyze verify, shellcheck)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskserver.installer.backends.base import get
from taskserver.installer.spec import build_spec, dsn_hosts

LOCAL = ["postgresql://app@/jobs?host=/run/postgresql", "dbname=jobs", "host=localhost dbname=jobs",
         "postgresql://app@[::1]:5432/jobs", "host='/var/run/postgresql' dbname=jobs"]
REMOTE = ["postgresql://app@db.internal/jobs", "host=10.0.0.5 dbname=jobs"]


def render(tmp_path: Path, init: str, dsn: str) -> str:
    cfg = tmp_path / "etc" / "taskserver" / "taskserver.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'tenants:\n  t:\n    login: app\n    store: {{postgresql: "{dsn}"}}\n')
    # the real executable: systemd-analyze verify checks that ExecStart's program exists
    spec = build_spec(executable=Path(sys.executable).parent / "taskserver", root=tmp_path,
                      config="/etc/taskserver/taskserver.yaml")
    (file,) = get(init)(live=False, registrar="update-rc.d").rendered(spec)
    return file.content


@pytest.mark.parametrize("dsn", LOCAL + REMOTE)
def test_boot_files_order_after_a_local_server_only(tmp_path: Path, dsn: str) -> None:
    local = dsn in LOCAL
    unit = render(tmp_path, "systemd", dsn)
    ordered = "After=postgresql.service" in unit and "Wants=postgresql.service" in unit
    assert ordered == local, dsn_hosts(dsn)
    assert ("# Should-Start:      postgresql" in render(tmp_path, "sysv", dsn)) == local
    assert ("use logger net postgresql" in render(tmp_path, "openrc", dsn)) == local


def test_the_ordered_files_pass_their_checkers(tmp_path: Path) -> None:
    unit = tmp_path / "taskserver.service"
    unit.write_text(render(tmp_path, "systemd", LOCAL[0]))
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                             check=False)
        assert (res.returncode, res.stderr) == (0, ""), res.stderr
    script = tmp_path / "taskserver.init"
    script.write_text(render(tmp_path, "sysv", LOCAL[0]))
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True,
                             check=False)
        assert res.returncode == 0, res.stdout
