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
- ``cron``: sh quoting in which each ``%`` is ``\\%`` outside the quotes and each backslash a quoted
  piece of its own (cron turns a bare ``%`` into a newline, Debian's cron ``\\\\`` into ``\\``).
- ``upstart``: one stanza argument in double quotes with ``\\`` and ``"`` escaped.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from ..runtime.errors import UserError
from .safefs import Tree
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
    return " ".join(_cron_word(_plain(w)) for w in words)


CRON_TOKEN = re.compile(r"[%\\]|[^%\\]+")


def _cron_word(text: str) -> str:
    """One sh word for a crontab command field, read the same by Debian's cron and by vixie cron/cronie.

    cron turns each ``%`` not escaped as ``\\%`` into a newline (the rest of the line becomes stdin) and
    ``\\%`` into ``%``; Debian's cron also turns ``\\\\`` into ``\\`` (upstream keeps both). Other
    backslashes are passed on. So the word is built from pieces in which a backslash only ever stands
    right before a quote or as the escape of a ``%``: each ``%`` of the value is ``\\%`` outside the sh
    quotes, each backslash is its own quoted piece ``'\\'``, and the text between is sh-quoted (which writes
    no backslashes). sh joins the pieces back into the value."""
    pieces = {"%": "\\%", "\\": "'\\'"}
    return "".join(pieces.get(t) or shlex.quote(t) for t in CRON_TOKEN.findall(text)) or "''"


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


class OverrideLoader(jinja2.BaseLoader):
    """The admin's override of a template (read by ``read_override``), else the packaged one. Templates an
    override includes or extends come through here too, so each of them is checked the same way."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.package = jinja2.FileSystemLoader(str(package_templates()))

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        text = read_override(self.spec, template)
        if text is None:
            return self.package.get_source(environment, template)
        return text, str(self.spec.template_override_dir / template), lambda: False


def environment(spec: ServiceSpec) -> jinja2.Environment:
    """Templates render in jinja2's sandbox: an override (a user's own, for their user unit) is text for a
    boot file, and must not reach Python (``cycler.__init__.__globals__.os``) in root's process."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=OverrideLoader(spec),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # boot files, not HTML: every value goes through a syntax filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def _owners(spec: ServiceSpec) -> set[int]:
    """Who may own an override and its directories: root (or the installing user); for a user unit also the
    unit's user, since it runs as them and their own override gives them nothing new."""
    owners = {0, os.geteuid()}
    if spec.user_scope:
        st = Tree(spec.root).stat(spec.home)
        if st is not None:
            owners.add(st.st_uid)
    return owners


def _refuse(where: Path, problem: str) -> UserError:
    return UserError(
        f"template override {where} {problem}: it would become a boot file that root runs",
        hint=f"make it and its directories real directories owned by root, chmod go-w {where}; "
        "or remove the override",
    )


def _check(st: os.stat_result, where: Path, owners: set[int]) -> None:
    if st.st_uid not in owners:
        raise _refuse(where, f"is owned by uid {st.st_uid}, not root")
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir:
        raise _refuse(where, "is group- or world-writable")


def _step(fd: int, name: str, where: Path, flags: int) -> int:
    """Open ``name`` in the directory ``fd`` without following a link; a link is refused, not followed."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) or (
            stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        ):
            raise _refuse(where, "is (or runs through) a symbolic link") from exc
        raise


def read_override(spec: ServiceSpec, template: str) -> str | None:
    """The override of ``template`` as one read: every directory from the target's ``/`` down and the file
    are opened once, without following links, and checked on the opened descriptor (owner, not writable by
    others); the text returned is what was read from that descriptor, so nothing can be swapped between the
    check and the use. None when there is no override."""
    path = spec.config.parent / "templates" / "/".join(jinja2.loaders.split_template_path(template))
    if not _present(spec, path):
        return None  # nothing there now; one appearing later is simply not used
    try:
        data = _read_checked(spec, path)
    except FileNotFoundError:
        return None  # removed meanwhile: the packaged template is used
    except OSError as exc:
        raise _refuse(spec.target(path), f"cannot be read ({exc.strerror})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"template override {spec.target(path)} is not UTF-8 text: {exc}", hint="fix it"
        ) from exc


def _present(spec: ServiceSpec, path: Path) -> bool:
    """Whether an override seems to be there, looked up inside the target (only a hint: what is used is
    decided by the checked walk)."""
    try:
        return Tree(spec.root).lstat(path) is not None
    except OSError:
        return True  # something odd on the way (a link loop...): let the walk say what


def _read_checked(spec: ServiceSpec, path: Path) -> bytes:
    owners, where = _owners(spec), Path("/")
    fd = os.open(spec.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in path.parts[1:]:
            _check(os.fstat(fd), spec.target(where), owners)
            where = where / name
            flags = os.O_RDONLY | (os.O_NONBLOCK if where == path else os.O_DIRECTORY)
            nxt = _step(fd, name, spec.target(where), flags)
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(spec.target(path), "is not a regular file")
        _check(st, spec.target(path), owners)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def render(spec: ServiceSpec, template: str, **context: Any) -> str:
    """Render ``template`` (e.g. ``systemd/taskserver.service.j2``) with ``spec`` and ``context``."""
    try:
        from .spec import local_database  # noqa: PLC0415 - spec imports this module

        context.setdefault("local_postgresql", local_database(spec))
        return environment(spec).get_template(template).render(spec=spec, **context)
    except jinja2.TemplateError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise UserError(
            f"template {template}{where}: {exc}",
            hint=f"fix or remove the override under {spec.template_override_dir}",
        ) from exc
