"""taskserver-install's command line, called in-process (main(argv) -> exit code) on fake roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskserver.installer.cli import main


def test_detect_text_and_json_on_a_fake_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --root tree is another system's files: offline however alive it looks (its /run says systemd),
    with what it has installed as the target; its release file is still read (inside the tree)."""
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/systemctl").write_text("#!/bin/sh\n")
    (tmp_path / "usr/bin/systemctl").chmod(0o755)
    (tmp_path / "etc/os-release").parent.mkdir()
    (tmp_path / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    assert main(["--detect", "--root", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("init system: offline (installed: systemd)\n"), text
    assert "is a tree (--root): always offline" in text
    assert main(["--detect", "--json", "--root", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["init"], data["target"], data["live"], data["distro_id"]) == (
        "offline",
        "systemd",
        False,
        "debian",
    )


def test_maintscript_hook_needs_format_and_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--maintscript", "deb"]) == 2
    err = capsys.readouterr().err
    assert "--maintscript needs FORMAT ACTION" in err and "hint:" in err


def test_modes_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--detect", "--uninstall"])
    assert exc.value.code == 2


def test_missing_root_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path / "nope"), "--init", "systemd"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_status_of_nothing_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--status", "--json", "--root", str(tmp_path), "--init", "systemd"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["installed"], data["enabled"], data["running"]) == (False, False, False)


def test_dry_run_json_plan_on_an_empty_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--init", "upstart", "--root", str(tmp_path), "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and data["files"] == [{"path": "/etc/init/taskserver.conf", "state": "created"}]
    assert list(tmp_path.iterdir()) == []


def test_help_explains_modes_files_exit_codes_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    for needle in ("Without a mode option it installs", "--uninstall", "--status", "--emit-maintscripts",
                   "/var/lib/taskserver-install/NAME.json", "templates/<init>/",
                   "exit codes: 0 done; 2 bad input",
                   "--uninstall --name ts-b", "--root DIR", "default: taskserver"):
        assert needle in text, needle
