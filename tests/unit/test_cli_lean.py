"""`taskserver status` and `taskserver jobs enqueue` load only what they need: a plain `status` is read
without building argparse's parsers (and means exactly what argparse would make of it), and neither command
imports ctypes (a libc lookup that runs ldconfig) or the PostgreSQL driver when no tenant uses it; `status`
not even the YAML parser, SQLite, the dataclass machinery or typing.
Checked in a fresh interpreter, as the command runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskserver.runtime import cli

FORMS = [
    ["status"], ["-c", "x.yaml", "status"], ["--config", "x.yaml", "status"], ["-v", "-c", "x", "status"],
    ["--debug", "status"], ["-c", "a", "-v", "status"], ["status", "-v"], ["-c", "", "status"],
    # not plain: left to argparse (which may refuse them)
    ["-c", "-x", "status"], ["status", "-c", "x"], ["--config=x", "status"], ["status", "extra"],
    ["-c"], ["status", "--", "x"],
]


def _config_env(monkeypatch: pytest.MonkeyPatch, env: str | None) -> None:
    """TASKSERVER_CONFIG unset (None) or set to ``env``."""
    if env is None:
        monkeypatch.delenv("TASKSERVER_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TASKSERVER_CONFIG", env)


@pytest.mark.parametrize("words", FORMS, ids=" ".join)
@pytest.mark.parametrize("env", [None, "/etc/from-env.yaml"])
def test_a_plain_status_means_what_argparse_makes_of_it(words: list[str], env: str | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _config_env(monkeypatch, env)
    hoisted = cli._hoist_global_flags(words)
    lean = cli._plain_status(hoisted)
    try:
        full = vars(cli.build_parser().parse_args(hoisted))
    except SystemExit:
        assert lean is None  # argparse refuses it, and words the refusal
        return
    assert lean is None or _as_parsed(lean) == full


def _as_parsed(lean: Any) -> dict[str, Any]:
    """The lean namespace with its config path as argparse types it: the lean forms keep it as text
    (runtime/confpath.py), which names the same file."""
    got = dict(vars(lean))
    assert got["config"] is None or isinstance(got["config"], str)
    got["config"] = Path(got["config"]) if got["config"] is not None else None
    return got


def _modules_after(argv: list[str], tmp_path: Path, more: list[str] | None = None) -> tuple[int, list[str]]:
    """Exit code and the heavy modules loaded by `taskserver ARGV` (and ``more`` of them), run in a fresh
    interpreter without the site hook (an editable install's import hook loads pathlib itself)."""
    heavy = ["ctypes", "dataclasses", "psycopg", "ruamel.yaml", "sqlite3", "typing", "zoneinfo"]
    heavy += more or []
    top = str(Path(cli.__file__).parent.parent.parent)
    paths = [p for p in sys.path if p.endswith("-packages")]  # the full path's YAML parser, when it comes
    code = (
        f"import sys\nsys.path[:0] = [{top!r}]\nsys.path += {paths!r}\nfrom taskserver.runtime import cli\n"
        f"try:\n    code = cli.main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print(__import__('json').dumps([code, [m for m in {heavy!r} if m in sys.modules]]))\n"
    )
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    env.pop("TASKSERVER_CONFIG", None)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=tmp_path)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return int(got[0]), list(got[1])


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"task_server:\n  state_dir: {tmp_path / 'state'}\ntenants:\n  t:\n    login: app\n"
                    "    jobs:\n      j:\n        cron: '0 3 * * *'\n        command: [/bin/true]\n")
    path.chmod(0o644)
    return path


def test_status_loads_none_of_the_heavy_modules(tmp_path: Path) -> None:
    code, heavy = _modules_after(["-c", str(_config(tmp_path)), "status"], tmp_path, ["pathlib"])
    assert code == 3  # not running
    assert heavy == []  # not even pathlib (runtime/confpath.py)


def test_enqueue_loads_only_what_it_writes_with(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        tmp_path.chmod(0o755)  # the trust rules: no directory above the config writable by others
    code, heavy = _modules_after(["-c", str(_config(tmp_path)), "jobs", "enqueue", "--", "/bin/true"],
                                 tmp_path)
    assert code == 0
    # the config's values (frozen dataclasses) and YAML, the store, the tenant's zone (the full path: no
    # daemon vouches for this config): no ctypes, no PostgreSQL driver
    assert heavy == ["dataclasses", "ruamel.yaml", "sqlite3", "typing", "zoneinfo"]


def test_the_daemon_loads_only_the_store_backends_its_config_names(tmp_path: Path) -> None:
    """The daemon's code does not import every backend (the PostgreSQL driver is 20 MB of memory); the
    backends a config names are imported before the privilege drop (control._become_daemon_user)."""
    code = (
        "import sys\nfrom taskserver.runtime import daemon, store\n"
        "before = 'psycopg' in sys.modules\nstore.load_backends({'sqlite'})\n"
        "print(before, 'psycopg' in sys.modules, sorted(store.BACKENDS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["False", "False", "['sqlite']"]


ENQUEUE_FORMS = [
    ["jobs", "enqueue", "--", "/bin/true"],
    ["-c", "x.yaml", "jobs", "enqueue", "--", "/bin/echo", "a b", "-x"],
    ["jobs", "enqueue", "--tenant", "t1", "--queue", "q.1", "--json", "--", "c", "--json"],
    ["jobs", "enqueue", "--json", "--", "c", "--", "d"], ["-v", "jobs", "enqueue", "--", "c"],
    ["jobs", "enqueue", "--queue", "q", "--", "-c"], ["jobs", "enqueue", "--", ""],
    ["--debug", "jobs", "enqueue", "--tenant", "a", "--", "x", "$(id)", "; rm -rf /"],
    ["jobs", "enqueue", "--", "c", "-v"],
    # not plain: left to argparse (which may refuse them)
    ["jobs", "enqueue", "c"], ["jobs", "enqueue", "--queue=q", "--", "c"],
    ["jobs", "enqueue", "--que", "q", "--", "c"],
    ["jobs", "enqueue", "--queue", "q", "--queue", "r", "--", "c"],
    ["jobs", "enqueue", "--"], ["jobs", "enqueue", "--tenant", "-x", "--", "c"],
    ["jobs", "enqueue", "--tenant", "a b", "--", "c"], ["jobs", "enqueue", "--queue", "", "--", "c"],
    ["jobs", "enqueue", "--json", "--json", "--", "c"], ["jobs", "enqueue", "-h"],
    ["jobs", "enqueue", "--", "--", "c"], ["jobs", "enqueue", "--tenant"], ["jobs", "list"],
    ["jobs", "enqueue", "--bogus", "--", "c"], ["-c", "-x", "jobs", "enqueue", "--", "c"],
]


@pytest.mark.parametrize("words", ENQUEUE_FORMS, ids=" ".join)
@pytest.mark.parametrize("env", [None, "/etc/from-env.yaml"])
def test_a_plain_enqueue_means_what_argparse_makes_of_it(words: list[str], env: str | None,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The lean `jobs enqueue` (runtime/cli_enqueue.py) reads its command line as argparse would, or leaves
    it to argparse; only the handler differs (the lean one falls back to argparse's own)."""
    _config_env(monkeypatch, env)
    hoisted = cli._hoist_global_flags(words)
    lean = cli._plain_enqueue(hoisted)
    try:
        full = vars(cli.build_parser(only_jobs=True).parse_args(hoisted))
    except SystemExit:
        capsys.readouterr()
        assert lean is None  # argparse refuses it, and words the refusal
        return
    if lean is None:
        return
    from taskserver.runtime import cli_enqueue, cli_jobs

    got = _as_parsed(lean)
    handlers = (got.pop("func"), got.pop("lean"), full.pop("func"))
    assert handlers == (cli_enqueue.enqueue, True, cli_jobs._enqueue)
    assert got == full


def _published(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default: Path | None) -> Any:
    """What a daemon of this file publishes for `jobs enqueue` (control._summary, through JSON), the file
    taken as unchanged for long enough (config.SETTLED_NS)."""
    from taskserver.runtime import config, control

    path = tmp_path / "c.yaml"
    path.write_text(text)
    path.chmod(0o644)
    monkeypatch.setattr(config, "SETTLED_NS", 0)
    return json.loads(json.dumps(control._summary(config.load(path), 0.0, default)))["enqueue"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a config root controls: only then are settings published")
def test_the_daemon_publishes_what_enqueue_needs_and_which_tenants_need_the_full_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "env").write_text("A=1\n")
    (tmp_path / "env").chmod(0o644)
    text = (f"task_server:\n  state_dir: {tmp_path / 'state'}\ntenants:\n  plain:\n    login: app\n"
            f"  envs:\n    login: app\n    env_file: {tmp_path / 'env'}\n  off:\n    enabled: false\n"
            "    login: x\n  own:\n    login: app\n    run_as: root\n    store: {sqlite: own.sqlite}\n")
    got = _published(text, tmp_path, monkeypatch, tmp_path / "elsewhere")
    assert got["identity"] == list(config_identity(tmp_path / "c.yaml"))
    assert (got["state_dir"], got["state_default"], got["run_as"]) == (str(tmp_path / "state"), False, None)
    assert got["tenants"] == [
        {"name": "plain", "login": "app", "run_as": None, "store": None, "lean": True},
        {"name": "envs", "login": "app", "run_as": None, "store": None, "lean": False},  # read at each load
        {"name": "off", "login": None, "run_as": None, "store": None, "lean": True},
        {"name": "own", "login": "app", "run_as": "root", "store": str(tmp_path / "state" / "own.sqlite"),
         "lean": True}]
    # the state dir the daemon would use anyway: a command compares it with its own default
    assert _published(text, tmp_path, monkeypatch, tmp_path / "state")["state_default"] is True
    assert _published(text, tmp_path, monkeypatch, None) is None  # not known (a reload cannot tell)


def config_identity(path: Path) -> tuple[int, ...]:
    from taskserver.runtime import config

    return config.file_identity(path.stat())


@pytest.mark.skipif(os.geteuid() != 0, reason="a config root controls: only then are settings published")
def test_after_a_reload_a_state_dir_the_file_does_not_name_is_told_from_one_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload hands the running state dir down (control.py); the settings say whether the file named it
    (a command uses it) or not (a command would use its own default), also after the trip from the parse
    child (pickled)."""
    import pickle

    from taskserver.runtime import config, control

    tmp_path.chmod(0o755)
    path, running = tmp_path / "c.yaml", tmp_path / "running"
    monkeypatch.setattr(config, "SETTLED_NS", 0)
    for text, named in ((f"task_server:\n  state_dir: {running}\ntenants:\n  t:\n    login: a\n", True),
                        ("tenants:\n  t:\n    login: a\n", False)):
        path.write_text(text)
        path.chmod(0o644)
        handed_down = config.InheritedStateDir(running)
        cfg = pickle.loads(pickle.dumps(config.load(path, default_state=handed_down)))
        got = control._summary(cfg, 0.0, tmp_path / "the-daemons-own-default")["enqueue"]
        assert (got["state_dir"], got["state_default"]) == (str(running), not named)
