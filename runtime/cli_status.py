"""``taskserver status``: what the running daemon published about itself (its pid file's ``.info``).

Monitoring runs it every few seconds, so this module imports only the pid file's code: not argparse's
parsers, the daemon's life cycle (control.py), logging, YAML or SQLite. The config is parsed only when the
daemon published nothing, or for the tenants whose store several hosts share.
"""

from __future__ import annotations

import os
import time

from . import confpath
from .pidfile import probe

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (runtime/cli_enqueue.py: its lean path)
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any

EXIT_NOT_RUNNING_STATUS = 3


def config_path(args: argparse.Namespace) -> Path:
    """The config of the daemon's life-cycle commands (runtime/control.py). Absolute: the daemon changes
    directory, and reload must find the same file."""
    from pathlib import Path  # noqa: PLC0415 - not on `status`'s own path (runtime/confpath.py)

    return Path(args.config).absolute() if args.config is not None else Path(confpath.default_config_path())


def _status_path(args: argparse.Namespace) -> str:
    """The config `status` asks about, as text (runtime/confpath.py): the pid file's name is made from its
    absolute path, so only what is shown differs from config_path (``..`` resolved in the text)."""
    return os.path.abspath(args.config) if args.config is not None else confpath.default_config_path()


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(max(seconds, 0))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if d or h else "") + (f"{m}m" if d or h or m else "") + f"{s}s"


def _tenants(tenants: list[dict[str, Any]]) -> str:
    parts = []
    for t in tenants:
        if t.get("login") is None:
            parts.append(f"{t['name']} runs nothing (no login)")
        else:
            n = int(t.get("jobs", 0))
            parts.append(f"{t['name']} ({t['login']}, {n} job{'s' if n != 1 else ''})")
    return "; ".join(parts) if parts else "none"


def _notifications(counts: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{t} {c.get('sent', 0)} sent, {c.get('failed', 0)} failed, "
                     f"{c.get('dropped', 0)} dropped" for t, c in sorted(counts.items()))


def cmd_status(args: argparse.Namespace) -> int:
    # the config is parsed only when the daemon published nothing: status stays fast with 10,000 jobs
    path = _status_path(args)
    state = probe(path)
    if state.running:
        info = state.info()
        if info is None:
            from .control import _load, _summary  # noqa: PLC0415 - only when the daemon published nothing

            info = _summary(_load(args), time.time() - (state.age() or 0))
        up = _uptime(time.time() - float(info["started"]))
        # one line per tenant whose store failed (runtime/health.py): the first on the summary line
        held = str(info.get("status") or "").splitlines() if str(info.get("status")).startswith("degraded") \
            else []
        note = f"; {held[0]}" if held else ""
        print(f"taskserver running: pid {state.pid}, up {up}, tenants: {_tenants(info['tenants'])}{note}")
        for line in held[1:]:
            print(f"  {line}")
        if info.get("notifications"):
            print(f"  notifications since start: {_notifications(info['notifications'])}")
        if any(t.get("shared") for t in info["tenants"]):
            _shared_daemons(args)
        return 0
    if state.stale:
        # the lock is free, so the daemon is gone; its pid may live on in another process since
        from .liveness import alive  # noqa: PLC0415 - pathlib and more: not for a plain `status`

        gone = "is now another process" if state.pid and state.pid > 0 and alive(state.pid) else "is gone"
        print(f"taskserver dead: pid {state.pid} {gone} but its pid file {state.path} remains")
        return 1
    print(f"taskserver not running (config {path})")
    return EXIT_NOT_RUNNING_STATUS


def _shared_daemons(args: argparse.Namespace) -> None:
    """The live daemons of each tenant whose store several hosts share, with their last heartbeat."""
    from . import logs  # noqa: PLC0415 - a store may log; `status` alone logs nothing
    from .control import _load  # noqa: PLC0415
    from .store import StoreError, open_store  # noqa: PLC0415 - only for shared stores

    logs.setup(verbose=args.verbose, debug=args.debug)
    cfg = _load(args)
    for tenant in (t for t in cfg.tenants if t.store.kind != "sqlite" and t.login is not None):
        try:
            store = open_store(tenant, cfg.server.state_dir, create=False)
        except StoreError as exc:
            print(f"  tenant {tenant.name}: its shared store cannot be read: {exc.message}")
            continue
        try:
            now = time.time()
            leases = [i for i in store.instances() if i.expires >= now]
        finally:
            store.close()
        print(f"  tenant {tenant.name}: {len(leases)} live daemon(s) share its store")
        for i in leases:
            print(f"    {i.host} pid {i.pid}, up {_uptime(now - i.started)}, "
                  f"last heartbeat {max(0.0, now - i.heartbeat):.0f} s ago")
