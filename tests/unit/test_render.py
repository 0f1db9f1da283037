"""The quoting filters, each checked against the real parser of its target where one runs here (sh), and
against the documented escaping rules otherwise (systemd's are proven by systemd-analyze in
tests/system/test_templates_contract.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from taskserver.installer import render
from taskserver.installer.spec import build_spec
from taskserver.runtime.errors import UserError

HOSTILE = ["plain", "with space", "$HOME", "100%", "it's", 'say "hi"', "back\\slash", "*", "-n", "", "a;b|c&"]


@pytest.mark.parametrize("value", HOSTILE)
def test_sh_quoting_round_trips_through_a_real_sh(value: str) -> None:
    out = subprocess.run(
        ["sh", "-c", f"printf %s {render.sh(value)}"], capture_output=True, text=True, check=True
    )
    assert out.stdout == value


def test_cron_escapes_percent_and_round_trips_after_crons_unescape() -> None:
    line = render.cron(HOSTILE)
    assert "%" not in line.replace("\\%", "")
    words = subprocess.run(
        ["sh", "-c", f'for a in {line.replace(chr(92) + "%", "%")}; do echo "[$a]"; done'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert words == [f"[{v}]" for v in HOSTILE]


def cron_unescape(line: str, *, debian: bool) -> str:
    """cron's do_command.c loop: ``\\%`` -> ``%`` (Debian also ``\\\\`` -> ``\\``), a bare ``%`` ends the
    command. The real daemon runs the same lines in tests/security/test_installer_cron.py."""
    out, escaped = [], False
    for ch in line:
        if escaped:
            if ch == "%" or (debian and ch == "\\"):
                out[-1] = ch
            else:
                out.append(ch)
            escaped = False
            continue
        if ch == "%":
            break
        out.append(ch)
        escaped = ch == "\\"
    return "".join(out)


@pytest.mark.parametrize("debian", [True, False])
def test_cron_words_survive_either_crons_unescape_and_sh(debian: bool) -> None:
    values = [*HOSTILE, "a\\%b", "\\\\%", "%\\", "\\", "x%%y"]
    line = cron_unescape(render.cron(values), debian=debian)
    words = subprocess.run(
        ["sh", "-c", f"printf '[%s]\\n' {line}"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert words == [f"[{v}]" for v in values]


def test_sd_exec_escapes_arguments_but_not_dollar_in_the_executable() -> None:
    assert render.sd_exec(["/opt/a $b %c/ts", "-c", '/etc/x $y %z "q" \\']) == (
        '"/opt/a $b %%c/ts" "-c" "/etc/x $$y %%z \\"q\\" \\\\"'
    )


@pytest.mark.parametrize("exe", ["/opt/it's/ts", '/opt/"q"/ts', "/opt/b\\s/ts"])
def test_sd_exec_refuses_what_systemd_refuses_in_an_executable_path(exe: str) -> None:
    with pytest.raises(UserError) as err:
        render.sd_exec([exe, "run"])
    assert err.value.exit_code == 2


def test_sd_value_and_words() -> None:
    assert render.sd_value("/srv/100% done") == "/srv/100%% done"
    assert render.sd_words(["/a b", "/c%d"], "-") == '"-/a b" "-/c%%d"'
    for bad in ["/srv/x\\", " /srv/x", "/srv/x "]:
        with pytest.raises(UserError):
            render.sd_value(bad)


@pytest.mark.parametrize("ch", ["\n", "\r", "\x00", "\x1b", "\x7f"])
def test_every_filter_refuses_control_characters(ch: str) -> None:
    for fn in (render.sh, render.sd_value, render.upstart):
        with pytest.raises(UserError):
            fn(f"/a{ch}b")
    with pytest.raises(UserError):
        render.sd_exec(["/bin/ts", f"a{ch}b"])


def test_upstart_argument_quoting() -> None:
    assert render.upstart('/srv/a "b" \\c') == '"/srv/a \\"b\\" \\\\c"'


def test_strict_undefined_in_an_override_is_a_clear_error(tmp_path: Path) -> None:
    spec = build_spec(executable="/opt/ts/bin/taskserver", config=tmp_path / "etc/taskserver.yaml")
    override = tmp_path / "etc/templates/systemd/taskserver.service.j2"
    override.parent.mkdir(parents=True)
    override.write_text("[Service]\nExecStart={{ no_such_value }}\n")
    with pytest.raises(UserError) as err:
        render.render(spec, "systemd/taskserver.service.j2", exec_start=[])
    assert "no_such_value" in err.value.message and "override" in (err.value.hint or "")


def test_override_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    spec = build_spec(executable="/opt/ts/bin/taskserver", config=tmp_path / "etc/taskserver.yaml")
    override = tmp_path / "etc/templates/sysv/taskserver.init.j2"
    override.parent.mkdir(parents=True)
    override.write_text("#!/bin/sh\n{% if %}\n")
    with pytest.raises(UserError) as err:
        render.render(spec, "sysv/taskserver.init.j2", pidfile="/run/x.pid")
    assert "taskserver.init.j2:2" in err.value.message
