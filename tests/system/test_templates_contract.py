"""Contract: every template of every init system, rendered across option sets, passes the real checkers.

systemd units go through ``systemd-analyze verify`` (any output at all fails) and ``systemd-analyze security
--offline=true`` (score printed; <= 3.0 for the defaults); SysV scripts through ``shellcheck -s sh`` and
``dash -n`` and are then run for real against the real daemon; cron lines through a real ``sh``. The paths
are hostile on purpose (spaces, ``$``, ``%``, quotes, backslashes): each ExecStart/exec binary really exists
at that path in tmp_path, so a quoting mistake shows up as "not found".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from taskserver.installer.backends.base import get
from taskserver.installer.spec import SYSTEM, USER, ServiceSpec, build_spec
from taskserver.runtime.errors import UserError

HOSTILE = "opt/my venv $HOME $(id) `id` %n 'q' \"dq\" back\\slash;&"
# systemd refuses quotes and backslashes in an executable path (not in arguments): see test below
SD_HOSTILE = "opt/my venv $HOME ${X} %n %% ; &"
REAL_DAEMON = Path(sys.executable).parent / "taskserver"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/test.sh installs it)")
    return path


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, env=env, timeout=60
    )


def executable_at(base: Path, hostile: str = HOSTILE) -> Path:
    """A `taskserver` at a hostile path that hands over to the real daemon of this installation."""
    exe = base / hostile / "bin" / "taskserver"
    exe.parent.mkdir(parents=True)
    exe.write_text(f'#!/bin/sh\nexec "{REAL_DAEMON}" "$@"\n')
    exe.chmod(0o755)
    return exe


def option_sets(tmp: Path, hostile: str = HOSTILE) -> dict[str, ServiceSpec]:
    exe = executable_at(tmp, hostile)
    odd = tmp / "data %i $x 'a' \\b"
    config = tmp / "etc ts %h $v $(id) `id` 'q' \"d\" \\b" / "taskserver.yaml"
    base = build_spec(name="taskserver", executable=exe, config=config, home=tmp)
    # `daemon` is in every Debian base passwd; systemd warns about User=nobody, so it is not used here
    have_daemon = run("getent", "passwd", "daemon").returncode == 0
    sets = {
        "defaults": base,
        "named-instance": replace(base, name="ts-blue.2", config=tmp / "blue.yaml", watchdog=60),
        "user-scope": replace(base, scope=USER),
        "env-workdir-writable": replace(
            base, env_file=odd / "env file", working_dir=odd, writable_paths=(odd, tmp / "plain")
        ),
    }
    if have_daemon:
        sets["run-as"] = build_spec(
            name="taskserver", executable=exe, config=tmp / "c.yaml", run_as="daemon:daemon", home=tmp
        )
    return sets


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, ServiceSpec]:
    return option_sets(tmp_path)


@pytest.fixture
def sd_specs(tmp_path: Path) -> dict[str, ServiceSpec]:
    return option_sets(tmp_path, SD_HOSTILE)


def render_one(init: str, spec: ServiceSpec) -> str:
    files = get(init)(live=False, registrar="update-rc.d").files(spec)
    assert len(files) == 1
    return files[0].content


SECURITY_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def test_systemd_units_verify_silently_and_score(tmp_path: Path, sd_specs: dict[str, ServiceSpec]) -> None:
    need("systemd-analyze")
    scores = {}
    # a short path: user sockets under it (gpg-agent's) must fit a socket address (108 bytes), also under
    # pytest-xdist's longer temp dirs
    xdg = Path(tempfile.mkdtemp(prefix="xdg-", dir="/tmp"))
    for label, spec in sd_specs.items():
        unit = tmp_path / "units" / label / f"{spec.name}.service"
        unit.parent.mkdir(parents=True)
        unit.write_text(render_one("systemd", spec))
        args = ["systemd-analyze", "verify"]
        if spec.scope == USER:
            args.append("--user")
        res = run(*args, unit, env={**os.environ, "XDG_RUNTIME_DIR": str(xdg)})
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), f"{label}:\n{unit.read_text()}"
        if spec.scope == SYSTEM:
            sec = run("systemd-analyze", "security", "--offline=true", unit)
            match = SECURITY_RE.search(sec.stdout)
            assert match, sec.stdout + sec.stderr
            scores[label] = float(match.group(1))
    print("systemd-analyze security --offline=true exposure:", scores)
    assert scores["defaults"] <= 3.0
    assert all(score <= 3.0 for score in scores.values()), scores


def test_systemd_exec_start_quoting_reaches_the_real_binary(
    tmp_path: Path, sd_specs: dict[str, ServiceSpec]
) -> None:
    """A unit whose ExecStart is mangled by bad quoting names a missing binary, which verify reports."""
    need("systemd-analyze")
    spec = sd_specs["defaults"]
    broken = replace(spec, executable=Path(str(spec.executable) + "-missing"))
    unit = tmp_path / "broken.service"
    unit.write_text(render_one("systemd", broken))
    res = run("systemd-analyze", "verify", unit)
    assert "-missing" in res.stderr  # the checker sees the exact path, escapes undone


def test_sysv_scripts_pass_shellcheck_and_dash(tmp_path: Path, specs: dict[str, ServiceSpec]) -> None:
    need("shellcheck")
    need("dash")
    for label, spec in specs.items():
        if spec.scope == USER:
            continue
        script = tmp_path / f"{label}.init"
        script.write_text(render_one("sysv", spec))
        sc = run("shellcheck", "-s", "sh", script)
        assert sc.returncode == 0, f"{label}: {sc.stdout}{sc.stderr}"
        dn = run("dash", "-n", script)
        assert (dn.returncode, dn.stderr) == (0, ""), label


def test_sysv_script_drives_the_real_daemon(tmp_path: Path, specs: dict[str, ServiceSpec]) -> None:
    """status 3 stopped; start, status 0, reload, restart, stop, status 3: the real daemon, hostile path."""
    spec = specs["defaults"]
    script = tmp_path / "taskserver.init"
    script.write_text(render_one("sysv", spec))
    (tmp_path / "run").mkdir(mode=0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    assert run("sh", script, "status", env=env).returncode == 3
    started = run("sh", script, "start", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert run("sh", script, "status", env=env).returncode == 0
        assert run("sh", script, "reload", env=env).returncode == 0
        assert run("sh", script, "restart", env=env).returncode == 0
        assert run("sh", script, "status", env=env).returncode == 0
    finally:
        stopped = run("sh", script, "stop", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert run("sh", script, "status", env=env).returncode == 3
    assert run("sh", script, "bogus", env=env).returncode == 2  # LSB: invalid argument


def test_sysv_script_without_the_daemon_reports_lsb_codes(
    tmp_path: Path, specs: dict[str, ServiceSpec]
) -> None:
    spec = replace(specs["defaults"], executable=tmp_path / "gone" / "taskserver")
    script = tmp_path / "gone.init"
    script.write_text(render_one("sysv", spec))
    assert run("sh", script, "status").returncode == 4
    assert run("sh", script, "start").returncode == 5
    assert run("sh", script, "stop").returncode == 0


def test_cron_entry_runs_the_exact_argv_through_sh(tmp_path: Path, specs: dict[str, ServiceSpec]) -> None:
    """The entry's command, after cron's own `\\%` -> `%` step, gives sh exactly our argv."""
    from taskserver.installer.backends.cron import Cron

    spec = specs["defaults"]
    probe = tmp_path / "argv probe %x"
    probe.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    probe.chmod(0o755)
    block = Cron(live=False).block(replace(spec, executable=probe))
    entry = block.splitlines()[1]
    assert entry.startswith("* * * * * ")
    command = entry.removeprefix("* * * * * ")
    assert re.search(r"(?<!\\)%", command) is None, "a bare % would become a newline in cron"
    res = run("sh", "-c", command.replace("\\%", "%"))
    assert res.stdout.splitlines() == ["-c", str(spec.config), "run", "--once", "--time-limit", "55"]


def test_upstart_exec_line_gives_sh_the_exact_argv(tmp_path: Path, specs: dict[str, ServiceSpec]) -> None:
    """No upstart runs here: upstart hands an exec line with shell characters to /bin/sh -e -c; check that."""
    text = render_one("upstart", specs["defaults"])
    exec_line = next(line for line in text.splitlines() if line.startswith("exec "))
    res = run("sh", "-e", "-c", "set -- " + exec_line.removeprefix("exec ") + '; printf "%s\\n" "$@"')
    assert res.stdout.splitlines() == [
        str(specs["defaults"].executable),
        "-c",
        str(specs["defaults"].config),
        "run",
    ]


def test_systemd_refuses_executable_paths_it_cannot_carry(specs: dict[str, ServiceSpec]) -> None:
    """Quotes/backslashes in the executable path: systemd itself rejects them, so we refuse (exit 2) first."""
    with pytest.raises(UserError) as err:
        render_one("systemd", specs["defaults"])
    assert err.value.exit_code == 2 and "quote or backslash" in err.value.message


def test_user_scope_is_not_available_for_sysv_upstart_cron() -> None:
    for init in ("sysv", "upstart", "cron"):
        assert not get(init).supports_user_scope
    assert get("systemd").supports_user_scope


def test_admin_override_template_is_used(sd_specs: dict[str, ServiceSpec]) -> None:
    """An admin's templates/systemd/taskserver.service.j2 next to the config replaces the packaged one."""
    spec = sd_specs["defaults"]
    override = spec.template_override_dir / "systemd" / "taskserver.service.j2"
    override.parent.mkdir(parents=True)
    override.write_text("[Service]\nExecStart={{ exec_start | sd_exec }}\n# admin's own\n")
    assert render_one("systemd", spec).endswith("# admin's own\n")


@pytest.mark.parametrize("place", ["default", "sysconfig"])
def test_sysv_script_sources_etc_default_or_sysconfig(
    tmp_path: Path, specs: dict[str, ServiceSpec], place: str
) -> None:
    """/etc/default/NAME (Debian) or /etc/sysconfig/NAME (RHEL/SUSE) is sourced and may override settings:
    run in a private mount namespace with a tmpfs over /etc, so the host's /etc is not touched."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace)")
    spec = replace(specs["defaults"], name="ts-defaults-probe")
    script = tmp_path / "probe.init"
    script.write_text(render_one("sysv", spec))
    probe = tmp_path / "probe"
    probe.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    probe.chmod(0o755)
    setup = (
        f'mount -t tmpfs tmpfs /etc && mkdir /etc/{place} && '
        f'printf "DAEMON=%s\\n" "$1" > /etc/{place}/ts-defaults-probe && exec sh "$2" status'
    )
    res = run("unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh", probe, script)
    assert res.stdout.splitlines() == ["-c", str(spec.config), "status"], res.stdout + res.stderr
