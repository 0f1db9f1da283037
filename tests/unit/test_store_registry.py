"""Backends are found through the registry in runtime/store.py: the daemon core and the `jobs` commands
import no backend module, and a store kind nobody registered is a clear error."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from taskserver.runtime import store
from taskserver.runtime.errors import UserError
from taskserver.runtime.model import StoreDef, TenantDef

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
CORE = ["daemon.py", "runs.py", "stores.py", "orphans.py", "health.py", "housekeeping.py", "plans.py",
        "cli_jobs.py", "cli_read.py", "executor.py"]


def imported(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_backend(name: str) -> None:
    # a backend's modules (sqlite_store, sqlite_schema, sqlite_guard) and its driver (sqlite3) share a prefix
    prefixes = {m.rsplit(".", 1)[1].split("_")[0] for m in store.MODULES.values()}
    found = {n for n in imported(RUNTIME / name) if n.split(".")[-1].startswith(tuple(prefixes))}
    assert not found, f"{name} imports {found}"


def test_a_store_is_opened_by_its_kind_through_the_registry(tmp_path: Path) -> None:
    opened = store.open_store(TenantDef(name="t", login="x"), tmp_path)
    try:
        assert type(opened).__module__ == store.MODULES["sqlite"]
    finally:
        opened.close()
    with pytest.raises(UserError, match="store kind 'nosuch' is not available") as err:
        store.open_store(TenantDef(name="t", login="x", store=StoreDef(kind="nosuch")), tmp_path)
    assert "sqlite" in (err.value.hint or "")


def test_no_store_yet_is_told_apart_from_a_broken_one(tmp_path: Path) -> None:
    with pytest.raises(store.NoStore):
        store.open_store(TenantDef(name="t", login="x"), tmp_path, create=False)
    assert not (tmp_path / "t.sqlite").exists()
