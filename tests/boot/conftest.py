"""Fixtures for boot tests: host check, cached roots, wheels, and per-test machines on overlays.

Boot tests need root, systemd-nspawn and debootstrap. Where those are missing they skip with the reason,
except on CI (CI=true), where scripts/test.sh installs them, so a missing tool is a failure there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import lab
import pytest
from lab_machine import Machines

TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "chroot", "mount", "umount")


def host_problem() -> str | None:
    """Why this host cannot run boot tests, or None."""
    if os.geteuid() != 0:
        return "boot tests need root (they mount overlays and boot containers with systemd-nspawn)"
    missing = [t for t in TOOLS if shutil.which(t, path=lab.CLEAN_PATH) is None]
    if missing:
        return (f"boot tests need {', '.join(missing)} "
                "(Debian packages systemd-container and debootstrap; scripts/test.sh installs them)")
    return None


@pytest.fixture(scope="session")
def bootlab_host() -> None:
    problem = host_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the boot tests: {problem}", pytrace=False)
        pytest.skip(problem)
    lab.cleanup_stale()
    lab.prune_cache()
    # Build the roots (network + dpkg) while the wheels build (compiling pystemd): on a fresh CI machine
    # that overlaps about a minute. Errors are not lost: variant_root() retries and raises in the test.
    threading.Thread(target=_build_roots, name="bootlab-roots", daemon=True).start()


def _build_roots() -> None:
    with contextlib.suppress(Exception):
        for name in lab.VARIANTS:
            lab.variant_root(name)


@pytest.fixture(scope="session")
def variant(bootlab_host: None) -> lab.Roots:
    """variant("systemd"|"sysv") -> the lower layers of that root (built on first use, then cached)."""
    return lambda name: [lab.variant_root(name)]


@pytest.fixture(scope="session")
def wheel_dir(bootlab_host: None, repo: Path) -> Path:
    """Wheels of the project as its sources are now, plus its dependencies ([systemd] included)."""
    return lab.wheels(repo)


@pytest.fixture(scope="session")
def packages(wheel_dir: Path, repo: Path) -> Path:
    """The .deb and .rpm of each lab.PACKAGE_VERSIONS, built from wheel_dir (cached beside the roots)."""
    return lab.packages(repo, wheel_dir)


@pytest.fixture(scope="session")
def installed(wheel_dir: Path) -> lab.Roots:
    """installed(variant) -> lower layers of that root with /opt/taskserver pip-installed from wheel_dir."""
    cache: dict[str, list[Path]] = {}

    def get(name: str) -> list[Path]:
        if name not in cache:
            cache[name] = lab.venv_layer(name, wheel_dir)
        return cache[name]

    return get


@pytest.fixture
def machines(bootlab_host: None, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Machines]:
    m = Machines(tmp_path, request.node.name)
    try:
        yield m
    finally:
        m.teardown()
