"""`check -v` for `call:` jobs: can the run's user import the job's module, the way a run would?

A run of ``call: pkg.mod:func`` is ``<this python> -m taskserver.runtime.runner pkg.mod:func`` started in
``install_dir`` (``/`` without one), as the tenant's user, so the module is looked up in install_dir first,
then $PYTHONPATH, then this interpreter's site-packages. The probe asks the same interpreter, in the same
directory, as the same user, with ``importlib.util.find_spec``: it finds the module without running it
(a dotted name imports its parent packages, as a run would).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from typing import Any

from . import privs
from .model import Config, TenantDef

PROBE = ("import importlib.util, sys\n"
         "try:\n    found = importlib.util.find_spec(sys.argv[1]) is not None\n"
         "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}'[:200]); sys.exit(3)\n"
         "sys.exit(0 if found else 4)\n")
TIMEOUT = 30.0


def _as_user(cfg: Config, tenant: TenantDef) -> dict[str, Any]:
    """Popen arguments that run the probe as the run's user: the tenant's run_as, else the server's, else
    (root running a config another user controls) that user. Only root can switch; a run as root is probed
    as root only when root's own config says so."""
    spec = privs.tenant_spec(cfg, tenant)
    if spec is None or os.geteuid() != 0:
        return {}
    ident = privs.resolve(spec)
    if ident.uid == 0:
        return {}
    return {"user": ident.uid, "group": ident.gid, "extra_groups": list(ident.groups)}


def _who(cfg: Config, tenant: TenantDef) -> str:
    spec = privs.tenant_spec(cfg, tenant)
    if spec is not None and os.geteuid() == 0:
        return privs.resolve(spec).user
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def importable(cfg: Config, tenant: TenantDef, module: str) -> str | None:
    """None when ``module`` can be imported as a run would; else what went wrong, in a few words."""
    cwd = str(cfg.server.install_dir or "/")
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE, module], cwd=cwd, capture_output=True,
                              text=True, timeout=TIMEOUT, check=False, **_as_user(cfg, tenant))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {sys.executable}: {getattr(exc, 'strerror', None) or exc}"
    if proc.returncode == 0:
        return None
    if proc.returncode == 4:
        return f"no module {module!r} in {cwd}, $PYTHONPATH or {sys.executable}'s site-packages"
    said = proc.stdout.strip() or "".join(proc.stderr.strip().splitlines()[-1:]) or "the probe failed"
    return said[:200]


def report(cfg: Config) -> list[str]:
    """One line per `call:` job, saying whether its module can be imported as the run's user."""
    lines = []
    for t in cfg.tenants:
        who = _who(cfg, t)
        for job in t.jobs:
            if job.call is None:
                continue
            module = job.call.partition(":")[0]
            problem = importable(cfg, t, module)
            verdict = f"importable as {who}" if problem is None else f"NOT importable as {who}: {problem}"
            lines.append(f"  {t.name}/{job.name}: call {job.call}: {verdict}")
    return lines
