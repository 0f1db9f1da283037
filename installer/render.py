"""Render boot-file templates with Jinja2 (StrictUndefined) and one quoting filter per target syntax.

Templates come from the package's ``templates/<init>/``; an admin overrides one by placing a file of the
same name under ``<config dir>/templates/<init>/`` (e.g. /etc/taskserver/templates/systemd/
taskserver.service.j2). No value reaches a boot file without going through the filter for its syntax:

- ``sd_exec``: a list of argv words -> an ExecStart= command line: each word in double quotes with ``\\`` and
  ``"`` escaped, ``%`` doubled (specifiers) and, in the arguments, ``$`` doubled (variable expansion). The
  executable word gets no ``$$`` (systemd does not expand it) and may not hold quotes or backslashes.
- ``sd_words``: a list of paths -> a space-separated, double-quoted list (ReadWritePaths=): ``%`` doubled;
  an optional prefix goes inside the quotes (``-`` = ignore a missing path), where systemd reads it.
- ``sd_value``: one raw value (Description=, WorkingDirectory=, EnvironmentFile=): ``%`` doubled; refuses a
  trailing backslash (it would continue the line) and leading/trailing whitespace (the parser strips it).
- ``sh``: POSIX sh single-quoting (SysV scripts, upstart ``exec``, runit ``run``).
- ``sh_eval``: sh-quoted twice, for OpenRC's variables that openrc-run passes through ``eval``.
- ``cron``: sh quoting, then ``%`` escaped as ``\\%`` (cron turns a bare ``%`` into a newline).
- ``upstart``: one stanza argument in double quotes with ``\\`` and ``"`` escaped.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..runtime.errors import UserError
from .spec import FORBIDDEN, ServiceSpec


def _plain(value: object) -> str:
    text = str(value)
    for ch in FORBIDDEN:
        if ch in text:
            raise UserError(
                f"value {text!r} cannot be written into a boot file", hint="remove control characters"
            )
    return text


def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


SD_UNSAFE_EXE = ("\\", '"', "'")


def sd_exec(words: Iterable[object]) -> str:
    first, *rest = [_plain(w) for w in words]
    # systemd expands no variables in the executable path (so no `$$` there) and refuses a path with
    # quotes or backslashes in it outright ("Executable name contains special characters").
    if any(ch in first for ch in SD_UNSAFE_EXE):
        raise UserError(
            f"executable path {first!r} has a quote or backslash, which systemd refuses in ExecStart=",
            hint="install taskserver under a path without quotes or backslashes",
        )
    return " ".join(
        [_dq(first.replace("%", "%%")), *(_dq(w.replace("%", "%%").replace("$", "$$")) for w in rest)]
    )


def sd_words(words: Iterable[object], prefix: str = "") -> str:
    return " ".join(_dq(prefix + _plain(w).replace("%", "%%")) for w in words)


def sd_value(value: object) -> str:
    text = _plain(value)
    if text != text.strip() or text.endswith("\\"):
        raise UserError(
            f"{text!r} cannot be written as a systemd setting (surrounding space or trailing backslash)",
            hint="rename the path",
        )
    return text.replace("%", "%%")


def sh(value: object) -> str:
    return shlex.quote(_plain(value))


def sh_words(words: Iterable[object]) -> str:
    return " ".join(sh(w) for w in words)


def sh_eval(value: object) -> str:
    """A value that a shell assignment stores and a later ``eval`` parses back into the same word(s)
    (openrc-run evals command, command_args, command_user...): a list becomes several words."""
    if isinstance(value, (list, tuple)):
        return sh(sh_words(value))
    return sh(sh(value))


def cron(words: Iterable[object]) -> str:
    return " ".join(sh(w).replace("%", "\\%") for w in words)


def upstart(value: object) -> str:
    return _dq(_plain(value))


FILTERS: dict[str, Any] = {
    "sd_exec": sd_exec,
    "sd_words": sd_words,
    "sd_value": sd_value,
    "sh": sh,
    "sh_words": sh_words,
    "sh_eval": sh_eval,
    "cron": cron,
    "upstart": upstart,
}


def package_templates() -> Path:
    return Path(str(resources.files("taskserver") / "templates"))


def environment(spec: ServiceSpec) -> jinja2.Environment:
    search = [str(package_templates())]
    override = spec.template_override_dir
    if override.is_dir():
        search.insert(0, str(override))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - boot files, not HTML: every value goes through a syntax filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def check_override(spec: ServiceSpec, template: str) -> None:
    """An override becomes a boot file that root runs: whoever may write it or its directories owns the
    machine. Refuse one that is not owned by root (or the installing user) or is group/world-writable."""
    base = spec.template_override_dir
    path = base / template
    if not path.exists():
        return
    owners = {0, os.geteuid()}
    if spec.user_scope:  # a user unit runs as its owner: their own override gives them nothing new
        owners.add(spec.target(spec.home).stat().st_uid)
    for full in [path, *(base / d for d in path.relative_to(base).parents)]:
        st = full.stat()
        if st.st_uid not in owners:
            problem = f"is owned by uid {st.st_uid}, not root"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = "is group- or world-writable"
        else:
            continue
        raise UserError(
            f"template override {full} {problem}: it would become a boot file that root runs",
            hint=f"chown root and chmod go-w {full}, or remove the override",
        )


def render(spec: ServiceSpec, template: str, **context: Any) -> str:
    """Render ``template`` (e.g. ``systemd/taskserver.service.j2``) with ``spec`` and ``context``."""
    check_override(spec, template)
    try:
        return environment(spec).get_template(template).render(spec=spec, **context)
    except jinja2.TemplateError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise UserError(
            f"template {template}{where}: {exc}",
            hint=f"fix or remove the override under {spec.template_override_dir}",
        ) from exc
