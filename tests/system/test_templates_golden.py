"""Golden files for every init system's rendered output, plus format checks where no live peer runs here.

No upstart and no chkconfig can run on this machine (neither is packaged for Debian), so the upstart job and
the chkconfig/LSB headers are checked against their documented grammars instead: upstart's stanza list
(init(5)), ``# chkconfig: <runlevels> <start> <stop>`` (chkconfig(8)) and the LSB init-info keys (LSB core,
"Comment conventions for init scripts"). Set UPDATE_GOLDEN=1 to rewrite the expected files after a
deliberate template change, and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from taskserver.installer.backends.base import get, names
from taskserver.installer.spec import ServiceSpec, build_spec

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
EXE = "/opt/taskserver/bin/taskserver"


def spec_for(tmp: Path, run_as: str | None = None, name: str = "taskserver") -> ServiceSpec:
    (tmp / "etc").mkdir(exist_ok=True)
    (tmp / "etc/passwd").write_text("taskserver:x:990:990::/var/lib/taskserver:/usr/sbin/nologin\n")
    (tmp / "etc/group").write_text("taskserver:x:990:\n")
    return build_spec(
        name=name,
        executable=EXE,
        config="/etc/taskserver/taskserver.yaml",
        run_as=run_as,
        root=tmp,
        home="/home/op",
    )


# Every registered init system, as root and with a non-root --run-as: adding a backend adds its cases.
RUN_AS = {"root": None, "run-as": "taskserver"}
CASES = [(init, label) for init in names() for label in RUN_AS]


def rendered_files(tmp: Path, init: str, run_as: str | None) -> dict[str, str]:
    """Target path -> text of everything the backend renders (cron: its crontab entry)."""
    spec = spec_for(tmp, run_as)
    for d in ("etc/sv", "etc/service"):  # runit's directories, as a Debian root has them
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return {str(f.path): f.content for f in get(init)(live=False, registrar="update-rc.d").rendered(spec)}


def rendered(tmp: Path, init: str, run_as: str | None) -> str:
    (text,) = rendered_files(tmp, init, run_as).values()
    return text


@pytest.mark.parametrize(("init", "label"), CASES)
def test_rendered_output_matches_golden_file(tmp_path: Path, init: str, label: str) -> None:
    """golden/<init>/<root|run-as>/<target path>: one expected file per rendered file."""
    files = rendered_files(tmp_path, init, RUN_AS[label])
    assert files, f"{init} renders nothing"
    base = GOLDEN / init / label
    if os.environ.get("UPDATE_GOLDEN"):
        for path, text in files.items():
            (base / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (base / path.lstrip("/")).write_text(text)
    stored = {"/" + str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
    assert stored == set(files), f"{init}/{label}: golden files {sorted(stored)} != rendered {sorted(files)}"
    for path, text in files.items():
        expected = (base / path.lstrip("/")).read_text()
        assert text == expected, f"{init}/{label}{path} differs; UPDATE_GOLDEN=1 rewrites it (review it)"


UPSTART_STANZAS = {
    "description", "author", "version", "emits", "start", "stop", "respawn", "kill", "setuid", "setgid",
    "chdir", "exec", "env", "export", "console", "normal", "umask", "nice", "limit", "task", "expect",
    "pre-start", "post-start", "pre-stop", "post-stop", "script", "end", "instance", "manual", "oom",
    "chroot", "usage", "apparmor", "cgroup", "reload",
}  # fmt: skip


def test_upstart_job_follows_the_stanza_grammar_no_live_upstart(tmp_path: Path) -> None:
    """No live upstart runs here (none is packaged): check init(5)'s stanza grammar instead."""
    for run_as in RUN_AS.values():
        lines = [
            ln for ln in rendered(tmp_path, "upstart", run_as).splitlines() if ln and not ln.startswith("#")
        ]
        for line in lines:
            assert line.split()[0] in UPSTART_STANZAS, line
            assert line.count('"') % 2 == 0, f"unbalanced quotes: {line}"
        assert "start on runlevel [2345]" in lines
        assert "stop on runlevel [!2345]" in lines
        assert "respawn" in lines
        assert any(re.fullmatch(r"respawn limit \d+ \d+", ln) for ln in lines)
        assert any(re.fullmatch(r"kill timeout \d+", ln) for ln in lines)
        assert sum(ln.startswith("exec ") for ln in lines) == 1
        assert any(re.fullmatch(r'chdir "/[^"]*"', ln) for ln in lines)
        # upstart's setuid would apply to pre-start too: the daemon drops to the config's run_as itself
        assert not any(ln.startswith(("setuid", "setgid")) for ln in lines)


LSB_KEYS = {
    "Provides", "Required-Start", "Required-Stop", "Should-Start", "Should-Stop", "Default-Start",
    "Default-Stop", "Short-Description", "Description",
}  # fmt: skip


def test_sysv_headers_follow_lsb_and_chkconfig_formats_no_live_chkconfig(tmp_path: Path) -> None:
    """No chkconfig runs here (not packaged for Debian): check chkconfig(8)'s and the LSB header formats."""
    text = rendered(tmp_path, "sysv", None)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    begin, end = lines.index("### BEGIN INIT INFO"), lines.index("### END INIT INFO")
    keys: dict[str, str] = {}
    for line in lines[begin + 1 : end]:
        m = re.fullmatch(r"# ([A-Za-z-]+):\s+(.*)", line)
        if m:
            assert m.group(1) in LSB_KEYS or m.group(1).startswith("X-"), line
            keys[m.group(1)] = m.group(2)
        else:
            assert re.fullmatch(r"#(\t|  )\s*\S.*", line), f"not a key nor a continuation: {line!r}"
    assert keys["Provides"] == "taskserver"
    assert keys["Default-Start"].split() == ["2", "3", "4", "5"]
    assert keys["Default-Stop"].split() == ["0", "1", "6"]
    chk = [ln for ln in lines if ln.startswith("# chkconfig:")]
    assert len(chk) == 1
    m = re.fullmatch(r"# chkconfig: (-|[0-6]+) (\d{1,2}) (\d{1,2})", chk[0])
    assert m, chk[0]
    assert m.group(1) == "".join(keys["Default-Start"].split())  # both headers agree on the runlevels
    assert int(m.group(2)) > int(m.group(3)) or int(m.group(2)) + int(m.group(3)) == 100
    assert any(re.fullmatch(r"# description: \S.*", ln) for ln in lines)
    pid = [ln for ln in lines if ln.startswith("# pidfile: ")]
    assert len(pid) == 1 and pid[0].split(": ", 1)[1].startswith("/run/taskserver/")
    # the pid file named is the one the daemon really uses for this config
    from taskserver.runtime.pidfile import pidfile_name

    assert pid[0].endswith("/" + pidfile_name(Path("/etc/taskserver/taskserver.yaml")))
