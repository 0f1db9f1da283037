"""The environment keys of tenants and jobs: ``environment:``, ``env_file:`` and ``inherit_env:``.

``env_file`` is read by the daemon (as root when started by root), so it is trusted exactly like the config:
it must belong to root or to the config's owner, nobody else may write it or its directory, and its content
is bounded and checked line by line (errors name FILE:LINE:COL). It is read when the config is loaded, so
`check` reports its mistakes and `reload` picks up its changes.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import config_values as v
from .model import Config, EnvDef, Loc

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap

    from .config_parse import _Walker
    from .config_yaml import ConfigError

ENV_KEYS = ("environment", "env_file", "inherit_env")
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_VARS = 256  # per environment:, env_file: or inherit_env:
MAX_VALUE = 32 * 1024  # characters of one value
MAX_FILE = 64 * 1024  # bytes of one env_file
# names a job never sets or inherits: the run's own identity, and what a supervisor gave the daemon itself
RESERVED = re.compile(r"TASKSERVER_.*|NOTIFY_SOCKET|WATCHDOG_.*|LISTEN_.*")
NAME_HINT = "names are letters, digits and '_', not starting with a digit (TASKSERVER_* is taken)"


def _short(text: str) -> str:
    """A value cut to a readable length for an error message."""
    return text if len(text) <= 60 else text[:57] + "..."


def name(value: object) -> str:
    text = v.text(value)
    if not VAR_NAME.fullmatch(text):
        raise ValueError(f"bad variable name {_short(text)!r}")
    if RESERVED.fullmatch(text):
        raise ValueError(f"{text} is set by taskserver (or its supervisor) and cannot be changed")
    return text


def value(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"expected text or a number, got {v.kind(raw)}")
    text = str(raw)
    if "\0" in text:
        raise ValueError("a value cannot contain a NUL character")
    if len(text) > MAX_VALUE:
        raise ValueError(f"a value is at most {MAX_VALUE} characters, this one has {len(text)}")
    return text


def parse(w: _Walker, node: CommentedMap, where: str) -> EnvDef:
    """The three keys of one tenant or job section (errors are recorded on the walker)."""
    if not any(key in node for key in ENV_KEYS):  # most jobs (10,000 at a start): what the reads would give
        return EnvDef(loc=Loc(w.file, 1, 1))
    env_file = w.value(node, "env_file", v.abs_path, where)
    return EnvDef(environment=_environment(w, node, where), env_file=env_file,
                  inherit=_inherit(w, node, where), loc=w.loc(node, "env_file", value=True))


def _environment(w: _Walker, node: CommentedMap, where: str) -> tuple[tuple[str, str], ...]:
    raw = w.mapping(node.get("environment"), f"{where}.environment", w.loc(node, "environment", value=True))
    out: dict[str, str] = {}
    if raw is None:
        return ()
    for key in raw:
        try:
            out[name(key)] = value(raw[key])
        except ValueError as exc:
            w.error(w.loc(raw, key), f"{where}.environment: {exc}", NAME_HINT)
    if len(out) > MAX_VARS:
        w.error(w.loc(node, "environment"), f"{where}.environment: at most {MAX_VARS} variables")
    return tuple(out.items())


def _inherit(w: _Walker, node: CommentedMap, where: str) -> tuple[str, ...]:
    raw = node.get("inherit_env")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_VARS:
        w.error(w.loc(node, "inherit_env", value=True),
                f"{where}.inherit_env: expected a list of at most {MAX_VARS} names, got {v.kind(raw)}",
                "inherit_env: [LANG, TZ]")
        return ()
    return tuple(dict.fromkeys(w.each(raw, name, f"{where}.inherit_env", NAME_HINT)))


# --- env_file -----------------------------------------------------------------------------------------


def names_files(config: Config) -> bool:
    """Whether any tenant or job of ``config`` names an env_file."""
    return any(t.env.env_file or any(j.env.env_file for j in t.jobs) for t in config.tenants)


def read_files(config: Config, owner: int) -> Config:
    """``config`` with every env_file read into ``file_vars``; raises ConfigInvalid listing every mistake.

    ``owner``: the uid owning the config file, the only one besides root whose env files are believed.
    The parser's module (for its error types) is imported only for a mistake: a daemon's start from its
    kept parse (runtime/config_cache.py) runs this without ruamel.yaml."""
    errors: list[ConfigError] = []
    tenants = []
    for tenant in config.tenants:  # a copy only where a file is named: a config may hold 10,000s of jobs
        jobs = tuple(replace(j, env=_with_file(j.env, owner, errors)) if j.env.env_file else j
                     for j in tenant.jobs)
        tenants.append(replace(tenant, env=_with_file(tenant.env, owner, errors), jobs=jobs))
    if errors:
        from .config_yaml import ConfigInvalid  # noqa: PLC0415

        raise ConfigInvalid(errors)
    return replace(config, tenants=tuple(tenants))


def _with_file(env: EnvDef, owner: int, errors: list[ConfigError]) -> EnvDef:
    if env.env_file is None:
        return env
    where = env.loc or Loc(str(env.env_file), 1, 1)
    try:
        text = _read(env.env_file, owner)
    except ValueError as exc:
        from .config_yaml import ConfigError  # noqa: PLC0415

        errors.append(ConfigError(where, f"env_file {env.env_file}: {exc}", _FILE_HINT))
        return env
    found, bad = parse_file(text, str(env.env_file))
    if bad:
        from .config_yaml import ConfigError  # noqa: PLC0415

        errors.extend(ConfigError(loc, msg, "write NAME=VALUE lines; # starts a comment") for loc, msg in bad)
    return replace(env, file_vars=found)


_FILE_HINT = "it must be a regular file of root (or of the config's owner) that nobody else can write"


def _read(path: Path, owner: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror} (a symlink is not followed)") from None
    try:
        st = os.fstat(fd)
        _check_owner(path, st, owner)
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None


def _check_owner(path: Path, st: os.stat_result, owner: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    if st.st_uid not in (0, owner) or st.st_mode & 0o022:
        raise ValueError(f"owned by uid {st.st_uid} with mode {stat.filemode(st.st_mode)}: refusing it")
    parent = os.stat(path.parent)
    if parent.st_uid not in (0, owner) or (parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX):
        raise ValueError(f"its directory {path.parent} can be changed by others: refusing it")


def parse_file(text: str, file: str) -> tuple[tuple[tuple[str, str], ...], list[tuple[Loc, str]]]:
    """``NAME=VALUE`` lines (blank lines and ``#`` comments skipped, ``export`` allowed, one pair of
    surrounding quotes removed, nothing expanded) -> the pairs, and the mistakes with their places."""
    found: dict[str, str] = {}
    bad: list[tuple[Loc, str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        col = len(line) - len(line.lstrip()) + 1
        if body.startswith("export "):
            body = body[len("export "):].lstrip()
        key, eq, raw = body.partition("=")
        try:
            if not eq:
                raise ValueError(f"expected NAME=VALUE, got {_short(body)!r}")
            found[name(key.strip())] = value(_unquote(raw.strip()))
        except ValueError as exc:
            bad.append((Loc(file, number, col), str(exc)))
    if len(found) > MAX_VARS:
        bad.append((Loc(file, 1, 1), f"at most {MAX_VARS} variables"))
    return tuple(found.items()), bad


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw

