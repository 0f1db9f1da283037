"""Ready-to-paste maintainer-script snippets (``taskserver-install --emit-maintscripts deb|rpm``).

Each snippet calls this installation's own interpreter with ``-I -B -m taskserver.installer.cli`` (so it
also works under ``DPKG_ROOT``, where the tool's ``#!`` line would name a path of the other root) and hands
over the arguments dpkg or rpm passed. Two things cannot go through the tool, because dpkg runs ``postrm``
and rpm runs ``%postun`` after the payload is gone: removing the bytecode Python wrote into the payload at
run time (done in ``prerm remove`` / ``%preun 0`` after the tool ran), and ``postrm purge``, which removes
the paths ``maintscript.purge_paths`` names, rendered here as literal, quoted shell words.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HEADER = "# Added by taskserver-install --emit-maintscripts {fmt}: the service {name}'s boot integration.\n"
PURGE_NOTE = "# the payload and the tool are gone: remove what the tool kept (paths named at build time)"


def _tool_opts(args: argparse.Namespace) -> str:
    opts = ["--name", args.name]
    for flag, value in (("--init", args.init), ("--config", args.config), ("--run-as", args.run_as)):
        if value:
            opts += [flag, value]
    return " ".join(shlex.quote(w) for w in opts)


def _call(python: str, opts: str, fmt_script: str, arg: str) -> str:
    # -I (isolated): no current directory on sys.path (dpkg runs the script with the target root as cwd
    # under DPKG_ROOT, so a planted taskserver/ there would be imported as root), no PYTHON* variables, no
    # user site; -B: no bytecode written into the payload
    return (
        f"if [ -x {python} ]; then\n"
        f"\t{python} -I -B -m taskserver.installer.cli {opts} --maintscript {fmt_script} {arg}\n"
        "fi\n"
    )


def _drop_bytecode(venv: str) -> str:
    return (
        "\t# bytecode that Python wrote at run time is not part of the package: remove it with the package\n"
        f"\tif [ -d {venv} ]; then\n"
        f"\t\tfind {venv} -depth -type d -name __pycache__ -exec rm -rf {{}} +\n"
        "\tfi\n"
    )


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
            "post": head + _call(python, opts, "rpm post", '"$1"'),
            "preun": head + _call(python, opts, "rpm preun", '"$1"')
            + 'if [ "$1" -eq 0 ]; then\n' + _drop_bytecode(shlex.quote(str(venv))) + "fi\n",
            "postun": head + _call(python, opts, "rpm postun", '"$1"'),
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
        f"\trm -rf -- {words}\n"
        f"\trmdir --ignore-fail-on-non-empty -- {empty_dirs} 2>/dev/null || true\n"
        "fi\n",
    )
    return {
        "postinst": head + _call(python, opts, "deb postinst", '"$@"'),
        "prerm": head + _call(python, opts, "deb prerm", '"$@"')
        + 'if [ "$1" = remove ]; then\n' + _drop_bytecode(root + shlex.quote(str(venv))) + "fi\n",
        "postrm": head + postrm,
    }
