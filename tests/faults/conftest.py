"""The fault suite uses the system tests' daemon helpers (and the security tests' throwaway users) and prints
its figures at the end of the session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "system"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "security"))  # secusers: throwaway users

FIGURES: list[str] = []


@pytest.fixture
def figures() -> list[str]:
    return FIGURES


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist a worker hands its figures to the controller, which prints them."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["fault_figures"] = list(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    FIGURES.extend(getattr(node, "workeroutput", {}).get("fault_figures", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault injection figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
