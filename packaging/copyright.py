"""The packages' copyright file (DEP-5): taskserver's own paragraphs plus one per bundled distribution.

    python3 packaging/copyright.py HEADER LICENSES PAYLOAD_ROOT > copyright

HEADER is packaging/debian/copyright (taskserver's paragraphs), LICENSES is packaging/licenses (distribution
-> SPDX), PAYLOAD_ROOT a staged tree holding opt/taskserver. Each distribution in the venv's site-packages
gets a Files paragraph naming its files and the copyright lines of its own license files; each license named
gets one stand-alone paragraph: a pointer to /usr/share/common-licenses where Debian has the text, else the
text of the first distribution under that license alone. build.sh runs it for every package it builds.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import Distribution, distributions
from pathlib import Path

VENV = Path("opt/taskserver")
COMMON = Path("/usr/share/common-licenses")
# SPDX identifier -> the file Debian keeps its text in
COMMON_NAMES = {"Apache-2.0": "Apache-2.0", "LGPL-2.1-or-later": "LGPL-2.1", "LGPL-3.0-only": "LGPL-3",
                "MPL-2.0": "MPL-2.0", "GPL-2.0-or-later": "GPL-2", "GPL-3.0-or-later": "GPL-3"}
COPYRIGHT_LINE = re.compile(r"^\s*Copyright\s+(?:\(c\)\s*)?(\d{4}.*?)\s*$", re.IGNORECASE)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def table(path: Path) -> dict[str, str]:
    rows = (line.split(None, 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {name: spdx.strip() for name, spdx in rows}


def license_files(dist: Distribution, info: Path) -> list[Path]:
    names = dist.metadata.get_all("License-File") or []
    found = [p for n in names for p in (info / n, info / "licenses" / n) if p.is_file()]
    return found or sorted(p for p in info.iterdir() if p.name.upper().startswith(("LICENSE", "COPYING")))


def files_of(dist: Distribution, site: Path, root: Path) -> list[str]:
    """The distribution's top-level entries, as DEP-5 patterns relative to the package root."""
    tops: set[str] = set()
    for entry in dist.files or []:
        path = (site / str(entry)).resolve()
        rel = path.relative_to(root.resolve())
        depth = len(site.relative_to(root).parts) + 1
        tops.add("/".join(rel.parts[:depth]) + ("/*" if len(rel.parts) > depth else ""))
    return sorted(tops)


def text_block(text: str) -> str:
    return "\n".join(f" {line.rstrip()}" if line.strip() else " ." for line in text.strip().splitlines())


def paragraphs(root: Path, licenses: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    (site,) = (root / VENV / "lib").glob("python3*/site-packages")
    out: list[str] = []
    texts: dict[str, str] = {}
    for dist in sorted(distributions(path=[str(site)]), key=lambda d: normalize(d.metadata["Name"])):
        name = normalize(dist.metadata["Name"])
        if name == "taskserver":
            continue
        spdx = licenses[name]  # build.sh has checked that every distribution is listed
        info = Path(str(next(f for f in dist.files or [] if f.name == "METADATA").locate())).parent
        files = license_files(dist, info)
        # a license's own template line ("Copyright [yyyy] [name of copyright owner]") is no holder
        lines = [m.group(1) for f in files for line in f.read_text(errors="replace").splitlines()
                 if (m := COPYRIGHT_LINE.match(line)) and "{" not in line and "[" not in line]
        author = dist.metadata["Author"] or dist.metadata["Maintainer"]
        holders = list(dict.fromkeys(lines)) or [author or f"the {dist.metadata['Name']} authors"]
        out.append(f"Files: {' '.join(files_of(dist, site, root))}\n"
                   f"Copyright: {chr(10).join(' ' + h if i else h for i, h in enumerate(holders))}\n"
                   f"License: {spdx.replace(' AND ', ' and ')}")
        if " AND " not in spdx and files:
            texts.setdefault(spdx, "\n".join(f.read_text(errors="replace") for f in files))
    return out, texts


def standalone(spdx: str, texts: dict[str, str]) -> str:
    common = COMMON_NAMES.get(spdx)
    if common and (COMMON / common).is_file():
        body = f"On Debian systems, the complete text of this license can be found in\n{COMMON / common}."
    else:
        body = texts.get(spdx, "The full text is in the license files of the .dist-info directories above.")
    return f"License: {spdx}\n{text_block(body)}"


def main(header: Path, licenses_path: Path, root: Path) -> None:
    own = header.read_text().rstrip("\n")
    used_by_header = set(re.findall(r"^License: (\S+)$", own, re.MULTILINE))
    parts, texts = paragraphs(root, table(licenses_path))
    named = {n for p in parts for n in p.rsplit("License: ", 1)[1].split(" and ")}
    extra = [standalone(n, texts) for n in sorted(named - used_by_header)]
    print("\n\n".join([own, *parts, *extra]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
