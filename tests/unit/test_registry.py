"""The one registry of init systems: what reads it (CLI, detection) and what must not bypass it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskserver.installer.backends.base import Backend, FileSpec, get, names, ordered
from taskserver.installer.cli import build_parser, main
from taskserver.installer.spec import ServiceSpec

INSTALLER = Path(__file__).resolve().parents[2] / "installer"


def test_every_backend_module_is_registered_in_detection_order() -> None:
    files = (INSTALLER / "backends").glob("*.py")
    modules = sorted(p.stem for p in files if p.stem not in ("base", "__init__"))
    assert sorted(names()) == modules
    order = names()
    assert order[0] == "systemd"  # sd_booted is the most specific evidence
    assert order.index("sysv") > max(order.index(n) for n in ("upstart", "openrc", "runit"))
    assert [cls.detect_order for cls in ordered()] == sorted(cls.detect_order for cls in ordered())


def test_cli_offers_exactly_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert "init system to install for: " + ", ".join(names()) in help_text
    assert main(["--init", "launchd", "--dry-run"]) == 2
    assert "|".join(names()) in capsys.readouterr().err


def test_no_branch_on_a_backend_name_outside_the_backends() -> None:
    """Capabilities and hooks decide; `backend.name == "systemd"` outside installer/backends/ is a bug."""
    alternatives = "|".join(re.escape(n) for n in names())
    compare = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({alternatives})["']""")
    offenders = [
        f"{path.name}:{no}: {line.strip()}"
        for path in INSTALLER.glob("*.py")
        for no, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(line)
    ]
    assert offenders == []


def test_a_backend_defined_elsewhere_is_no_init_system(capsys: pytest.CaptureFixture[str]) -> None:
    class Elsewhere(Backend):
        name = "elsewhere"

        def files(self, spec: ServiceSpec) -> list[FileSpec]:
            return []

    assert "elsewhere" not in names() and "elsewhere" not in build_parser().format_help()
    assert main(["--init", "elsewhere", "--dry-run"]) == 2  # not offered
    assert get("elsewhere") is Elsewhere  # but found by name, as a manifest written with it names it


@pytest.mark.parametrize("init", names())
def test_each_backend_declares_what_it_can_do(init: str) -> None:
    cls = get(init)
    assert cls.registrars, f"{init} names no registrar"
    assert cls.caps.live_start or not cls.caps.supervision  # a supervisor that cannot start makes no sense
