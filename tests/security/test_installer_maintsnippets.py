"""The emitted maintainer-script snippets run the tool isolated (``python3 -I``): dpkg runs them as root, and
under ``DPKG_ROOT`` without a chroot the current directory is the target root, which others may have filled.
With ``-m`` and without ``-I`` Python puts the current directory first on sys.path, so a planted
``taskserver/`` package there would run as root.

The proof runs the interpreter with exactly the flags the snippets use, in a directory a throwaway user
filled with such a package, and shows the package is imported without those flags (the plant works) and not
with them.
"""

from __future__ import annotations

import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
from installer_lab import as_user, user_dir

TOOL = Path(sys.executable).parent / "taskserver-install"
CALL = re.compile(r"python3'? ((?:-\w+ )*)-m taskserver\.installer\.cli ")


def snippet_flags(fmt: str) -> set[tuple[str, ...]]:
    text = subprocess.run(
        [str(TOOL), "--emit-maintscripts", fmt], capture_output=True, text=True, check=True
    ).stdout
    calls = CALL.findall(text)
    assert calls and text.count("-m taskserver.installer.cli") == len(calls), text
    return {tuple(c.split()) for c in calls}


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_every_snippet_call_is_isolated(fmt: str) -> None:
    assert all("-I" in flags for flags in snippet_flags(fmt))


def planted_import_runs(cwd: Path, flags: tuple[str, ...], marker: Path) -> bool:
    subprocess.run(
        [sys.executable, *flags, "-m", "taskserver.installer.cli", "--help"],
        cwd=cwd,
        capture_output=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
    )
    return marker.exists()


def test_a_package_planted_in_the_current_directory_is_not_imported(user: pwd.struct_passwd) -> None:
    (flags,) = snippet_flags("deb")
    with user_dir(user) as cwd:
        marker = cwd / "imported-as-root"
        as_user(user, "mkdir", cwd / "taskserver")
        as_user(user, "sh", "-c", f"echo \"open('{marker}', 'w')\" > {cwd}/taskserver/__init__.py")
        assert planted_import_runs(cwd, ("-B",), marker), "control: without -I the plant is imported"
        marker.unlink()
        assert not planted_import_runs(cwd, flags, marker)
