"""The cron backend with the real `crontab` binary and a real user: our entry comes and goes, every other
line of the user's crontab stays byte for byte (`crontab -l` before == after uninstall)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOL = str(Path(sys.executable).parent / "taskserver-install")
OTHERS = 'MAILTO=""\n# the user\'s own job\n*/5 * * * * /bin/echo "50% done" >/dev/null\n'


def sh(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, input=input, check=check, timeout=60)


@pytest.fixture
def cron_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a test user")
    if shutil.which("crontab") is None or shutil.which("useradd") is None:
        pytest.skip("needs crontab (Debian package cron; scripts/test.sh installs it) and useradd")
    user = f"tsi-cron{secrets.token_hex(3)}"  # a user of its own: tests run side by side (-n 2)
    sh("useradd", "-m", "-s", "/bin/sh", user)
    sh("crontab", "-u", user, "-", input=OTHERS)
    try:
        yield pwd.getpwnam(user)
    finally:
        sh("crontab", "-u", user, "-r", check=False)
        sh("userdel", "-r", user, check=False)


def crontab_of(user: str) -> str:
    return sh("crontab", "-u", user, "-l").stdout


def as_user(pw: pwd.struct_passwd, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", TOOL, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=60)


def test_cron_as_the_user_keeps_other_entries(cron_user: pwd.struct_passwd) -> None:
    res = as_user(cron_user, "--init", "cron")
    assert res.returncode == 0, res.stderr
    assert "crontab -" in res.stdout
    text = crontab_of(cron_user.pw_name)
    assert text.startswith(OTHERS)
    ours = text[len(OTHERS) :].splitlines()
    assert ours[0].startswith("# taskserver-install: taskserver ")
    assert ours[1].startswith("* * * * * ") and ours[1].endswith(" run --once --time-limit 55")
    assert f"{cron_user.pw_dir}/.config/taskserver/taskserver.yaml" in ours[1]  # the user's own config

    again = as_user(cron_user, "--init", "cron")
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert crontab_of(cron_user.pw_name) == text

    status = as_user(cron_user, "--status")
    assert "installed: True" in status.stdout and "enabled: True" in status.stdout

    res = as_user(cron_user, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert crontab_of(cron_user.pw_name) == OTHERS
    assert not os.path.exists(f"{cron_user.pw_dir}/.local/state/taskserver-install/taskserver.json")


def test_cron_for_another_user_as_root(cron_user: pwd.struct_passwd) -> None:
    res = subprocess.run(
        [TOOL, "--init", "cron", "--run-as", cron_user.pw_name, "--name", "ts-cron"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert f"crontab -u {cron_user.pw_name} -" in res.stdout
    assert "# taskserver-install: ts-cron " in crontab_of(cron_user.pw_name)
    res = subprocess.run(
        [TOOL, "--uninstall", "--name", "ts-cron"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert crontab_of(cron_user.pw_name) == OTHERS


def test_cron_refuses_root_dir_clearly(tmp_path: Path) -> None:
    res = subprocess.run(
        [TOOL, "--init", "cron", "--root", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert "cannot install into --root" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_cron_entry_is_updated_in_place_when_the_config_changes(cron_user: pwd.struct_passwd) -> None:
    assert as_user(cron_user, "--init", "cron").returncode == 0
    res = as_user(cron_user, "--init", "cron", "--config", f"{cron_user.pw_dir}/other.yaml")
    assert res.returncode == 0, res.stderr
    text = crontab_of(cron_user.pw_name)
    assert text.startswith(OTHERS) and text.count("# taskserver-install: taskserver ") == 1
    assert f"{cron_user.pw_dir}/other.yaml" in text
    assert as_user(cron_user, "--uninstall").returncode == 0
    assert crontab_of(cron_user.pw_name) == OTHERS


def test_an_entry_the_user_edited_is_theirs_and_stays(cron_user: pwd.struct_passwd) -> None:
    """The marker and the entry after it are the registration: edited since (another schedule), uninstall
    removed the edited line and a re-install replaced it; now both leave it, saying so, and --force takes it
    out or replaces it."""
    assert as_user(cron_user, "--init", "cron").returncode == 0
    text = crontab_of(cron_user.pw_name)
    edited = text.replace("\n* * * * * ", "\n*/10 * * * * ")
    assert edited != text
    sh("crontab", "-u", cron_user.pw_name, "-", input=edited)
    res = as_user(cron_user, "--init", "cron")
    assert res.returncode == 1 and "is not the one taskserver-install wrote; not replacing" in res.stderr
    assert crontab_of(cron_user.pw_name) == edited
    res = as_user(cron_user, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert "entry is not the one taskserver-install wrote: the admin's now" in res.stdout
    assert crontab_of(cron_user.pw_name) == edited
    assert as_user(cron_user, "--init", "cron").returncode == 1  # not installed, but the entry is not ours
    assert as_user(cron_user, "--init", "cron", "--force").returncode == 0
    assert crontab_of(cron_user.pw_name) == text
    sh("crontab", "-u", cron_user.pw_name, "-", input=edited)
    res = as_user(cron_user, "--uninstall", "--force")
    assert res.returncode == 0, res.stderr
    assert crontab_of(cron_user.pw_name) == OTHERS


def status_of(pw: pwd.struct_passwd) -> dict[str, object]:
    res = as_user(pw, "--status", "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


# how the user changed the entry after the install -> (the crontab they leave, what --status says of it)
EDITS = {
    "edited": (lambda t: t.replace("\n* * * * * ", "\n*/10 * * * * "), "changed", "edited by hand"),
    "marker removed": (lambda t: OTHERS + t[len(OTHERS):].split("\n", 1)[1], "changed", "kept by hand"),
    "removed": (lambda t: OTHERS, "missing", "is missing (removed by hand)"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_status_names_an_entry_the_user_changed(cron_user: pwd.struct_passwd, edit: str) -> None:
    """--status reported an edited unit file, but nothing of the crontab entry: edited, kept without its
    marker line, or removed by hand, it still said `files_changed: []` as if the entry were the one written.
    """
    assert as_user(cron_user, "--init", "cron").returncode == 0
    ours = status_of(cron_user)
    assert ours["registration_changed"] == [] and ours["notes"] == [], ours
    change, state, said = EDITS[edit]
    text = crontab_of(cron_user.pw_name)
    sh("crontab", "-u", cron_user.pw_name, "-", input=change(text))
    assert crontab_of(cron_user.pw_name) != text
    status = status_of(cron_user)
    what = f"the crontab of {cron_user.pw_name}: the taskserver entry"
    assert status["registration_changed"] == [{"what": what, "state": state}], status
    notes = status["notes"]
    assert isinstance(notes, list) and len(notes) == 1 and said in notes[0], notes
    plain = as_user(cron_user, "--status").stdout
    assert f"note: {what} " in plain, plain
