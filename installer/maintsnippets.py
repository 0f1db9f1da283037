"""Ready-to-paste maintainer-script snippets (``taskserver-install --emit-maintscripts deb|rpm``).

Each snippet calls this installation's own interpreter with ``-I -B -m taskserver.installer.cli`` (so it
also works under ``DPKG_ROOT``, where the tool's ``#!`` line would name a path of the other root) and hands
over the arguments dpkg or rpm passed. When that interpreter cannot run (its ``/usr/bin/python3`` is missing
or of another version), the script fails with one line saying so: dpkg and rpm then report the failure
instead of a package that "installed" without its boot integration. Only ``postrm`` and ``%postun 0`` run
after the payload is gone by design, so they alone call the tool only when it is there. Two things cannot go
through the tool for that reason: removing bytecode from the payload (every ``prerm``, as dh_python3's
py3clean does, and ``%preun 0``, after the tool ran), and ``postrm purge``, which removes the paths
``maintscript.purge_paths`` names, rendered here as literal, quoted shell words.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

HEADER = "# Added by taskserver-install --emit-maintscripts {fmt}: the service {name}'s boot integration.\n"
PURGE_NOTE = "# the payload and the tool are gone: remove what the tool kept (paths named at build time)"
# the version of the venv's interpreter, which its site-packages are for
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
ERASED_NOTE = "# erase: the payload is gone and %preun 0 did the work; an upgrade has the new payload here"


def _tool_opts(args: argparse.Namespace) -> str:
    opts = ["--name", args.name]
    for flag, value in (("--init", args.init), ("--config", args.config), ("--run-as", args.run_as)):
        if value:
            opts += [flag, value]
    return " ".join(shlex.quote(w) for w in opts)


def _call(python: str, opts: str, fmt_script: str, arg: str, name: str | None = None) -> str:
    """The tool's call; with ``name``, a payload that cannot run fails the script with one line on stderr
    (without it the call is skipped: only for scripts that run after the payload is gone by design)."""
    if name is None:
        return f"if [ -x {python} ]; then\n\t{_tool(python, opts, fmt_script, arg)}\nfi\n"
    reason = shlex.quote(f"cannot run (it needs /usr/bin/python3 of version {PYVER}): {fmt_script} failed")
    return (
        f"if [ -x {python} ]; then\n"
        f"\t{_tool(python, opts, fmt_script, arg)}\n"
        "else\n"
        f"\tprintf '%s: %s %s\\n' {shlex.quote(name)} {python} {reason} >&2\n"
        "\texit 1\n"
        "fi\n"
    )


def _tool(python: str, opts: str, fmt_script: str, arg: str) -> str:
    # -I (isolated): no current directory on sys.path (dpkg runs the script with the target root as cwd
    # under DPKG_ROOT, so a planted taskserver/ there would be imported as root), no PYTHON* variables, no
    # user site; -B: no bytecode written into the payload
    return f"{python} -I -B -m taskserver.installer.cli {opts} --maintscript {fmt_script} {arg}"


def _drop_bytecode(venv: str, indent: str = "\t") -> str:
    lines = [
        "# the payload's bytecode (compiled at install time, or written by Python at run time) goes with it",
        f"if [ -d {venv} ]; then",
        f"\tfind {venv} -depth -type d -name __pycache__ -exec rm -rf {{}} +",
        "fi",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


def render(fmt: str, args: argparse.Namespace, venv: Path, purge: list[Path], dirs: list[Path]) -> str:
    """The snippets; deb sections start with ``# --- postinst ---`` etc., rpm ones with ``%post``."""
    parts = sections(fmt, args, venv, purge, dirs)
    if fmt == "rpm":
        return "\n".join(f"%{name}\n{body}" for name, body in parts.items())
    return "\n".join(f"# --- {name} ---\n{body}" for name, body in parts.items())


def sections(
    fmt: str, args: argparse.Namespace, venv: Path, purge: list[Path], dirs: list[Path]
) -> dict[str, str]:
    """Script name (postinst, prerm, postrm / post, preun, postun) -> its snippet, ready to paste."""
    head = HEADER.format(fmt=fmt, name=args.name)
    opts = _tool_opts(args)
    if fmt == "rpm":
        python = shlex.quote(str(venv / "bin" / "python3"))
        bodies = {
            "post": head + _call(python, opts, "rpm post", '"$1"', args.name),
            "preun": head + _call(python, opts, "rpm preun", '"$1"', args.name)
            + 'if [ "$1" -eq 0 ]; then\n' + _drop_bytecode(shlex.quote(str(venv))) + "fi\n",
            "postun": head + f'if [ "$1" -eq 0 ]; then\n\t{ERASED_NOTE}\n\texit 0\nfi\n'
            + _call(python, opts, "rpm postun", '"$1"', args.name),
        }
        # rpmbuild expands macros in scriptlet bodies: a `%` of a path or name must reach sh as itself
        return {name: body.replace("%", "%%") for name, body in bodies.items()}
    root = '"$DPKG_ROOT"'
    python = root + shlex.quote(str(venv / "bin" / "python3"))
    words = " ".join(root + shlex.quote(str(p)) for p in purge)
    empty_dirs = " ".join(root + shlex.quote(str(d)) for d in dirs)
    postrm = _call(python, opts, "deb postrm", '"$@"').replace(
        "fi\n",
        'elif [ "$1" = purge ]; then\n'
        f"\t{PURGE_NOTE}\n"
        # a DPKG_ROOT tree's own links must not lead the removal onto this machine: a path with a link
        # on its way below $DPKG_ROOT is left (rm -rf of the path itself removes a link, not its target)
        f"\tfor p in {words}; do\n"
        '\t\td=$(dirname -- "$p")\n'
        '\t\twhile [ "$d" != "${DPKG_ROOT:-/}" ] && [ "$d" != / ] && [ ! -L "$d" ]; do '
        'd=$(dirname -- "$d"); done\n'
        '\t\tif [ -L "$d" ]; then echo "not removing $p: $d is a symbolic link" >&2; '
        'else rm -rf -- "$p"; fi\n'
        "\tdone\n"
        f"\trmdir --ignore-fail-on-non-empty -- {empty_dirs} 2>/dev/null || true\n"
        "fi\n",
    )
    return {
        "postinst": head + _call(python, opts, "deb postinst", '"$@"', args.name),
        # every prerm, as py3clean: an upgrade must not leave bytecode of modules the new version dropped
        "prerm": head + _call(python, opts, "deb prerm", '"$@"', args.name)
        + _drop_bytecode(root + shlex.quote(str(venv)), indent=""),
        "postrm": head + postrm,
    }
