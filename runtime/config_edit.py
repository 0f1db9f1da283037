"""In-place edits of the config file that keep every other byte as the operator wrote it.

ruamel.yaml's round-trip loader gives the position of each key and value; the edit then splices only the
lines it changes into the original text, so comments, order, quoting and indentation elsewhere stay
byte-for-byte (a full re-dump would normalise indentation and line wrapping). The result is parsed and
validated again before it is written; the write is atomic (temp file in the same directory, fsync, rename,
fsync of the directory) and keeps the file's mode and owner.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from .config_yaml import load_yaml
from .errors import UserError

Change = Callable[[str, str], str]  # (text, file name) -> new text
FLOW_HINT = "write that mapping in block style (one key per line) and run the command again"
SHARED_HINT = "edit the file by hand, or write that mapping out in full without anchors, aliases or <<"


def _scalar_end(line: str, col: int) -> int:
    """End column of the single-line scalar starting at ``col`` (quotes included, comment excluded)."""
    quote = line[col] if col < len(line) else ""
    if quote in "'\"":
        end = line.find(quote, col + 1)
        while quote == "'" and end != -1 and line[end + 1 : end + 2] == "'":  # '' escapes a quote
            end = line.find(quote, end + 2)
        if end == -1:
            raise UserError("cannot edit a value that spans several lines", hint=FLOW_HINT)
        return end + 1
    comment = line.find(" #", col)
    stop = comment if comment != -1 else len(line.rstrip("\r\n"))
    return len(line[:stop].rstrip())


def _block(node: Any, what: str) -> CommentedMap:
    if not isinstance(node, CommentedMap):
        raise UserError(f"{what} is not a mapping", hint=FLOW_HINT)
    if node.fa.flow_style():
        raise UserError(f"{what} is written in flow style ({{...}})", hint=FLOW_HINT)
    if node.anchor.value is not None:  # named by an alias elsewhere: an edit here changes that place too
        raise UserError(f"{what} is an anchored mapping (&{node.anchor.value}) that aliases may share",
                        hint=SHARED_HINT)
    if getattr(node, "merge", None):  # keys merged in (<<) live in another mapping
        raise UserError(f"{what} merges another mapping (<<)", hint=SHARED_HINT)
    return node


class _Text:
    """The file as lines plus its parsed tree; edits go to the lines."""

    def __init__(self, text: str, file: str) -> None:
        self.lines = text.splitlines(keepends=True)
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"
        self.root = load_yaml(text, file)

    def text(self) -> str:
        return "".join(self.lines)

    def set_value(self, node: CommentedMap, key: str, value: str) -> None:
        line, col = node.lc.value(key)
        key_line = node.lc.key(key)[0]
        if line != key_line or node[key] is None or isinstance(node[key], dict | list):
            raise UserError(f"cannot edit the value of {key!r}: it is not a one-line value", hint=FLOW_HINT)
        old = self.lines[line]
        self.lines[line] = old[:col] + value + old[_scalar_end(old, col) :]

    def child_indent(self, node: CommentedMap) -> int:
        """Indentation of keys inside ``node`` (a non-empty block mapping)."""
        return int(node.lc.key(next(iter(node)))[1])

    def put(self, node: CommentedMap, key: str, value: str) -> None:
        """Set ``key`` in non-empty block mapping ``node``; a new key goes before the mapping's first."""
        if key in node:
            self.set_value(node, key, value)
            return
        first_line = node.lc.key(next(iter(node)))[0]
        self.lines.insert(first_line, " " * self.child_indent(node) + f"{key}: {value}\n")

    def insert_after(self, line: int, new: list[str]) -> None:
        self.lines[line + 1 : line + 1] = new

    def block_end(self, key_line: int, key_col: int) -> int:
        """Index of the last content line of the block that starts at ``key_line``."""
        last = key_line
        for i in range(key_line + 1, len(self.lines)):
            stripped = self.lines[i].strip()
            if not stripped or stripped.startswith("#"):
                continue
            if len(self.lines[i]) - len(self.lines[i].lstrip(" ")) <= key_col:
                break
            last = i
        return last


def _steps(t: _Text, tenants: CommentedMap | None) -> tuple[int, int]:
    """(column of tenant names, extra indentation of their keys), copied from the file when possible."""
    if tenants:
        name = next(iter(tenants))
        col = int(tenants.lc.key(name)[1])
        body = tenants[name]
        if isinstance(body, CommentedMap) and body and not body.fa.flow_style():
            return col, t.child_indent(body) - col
        return col, 2
    return 2, 2


def _tenants(t: _Text) -> CommentedMap | None:
    if t.root is None:
        return None
    root = _block(t.root, "the top level")
    node = root.get("tenants")
    if isinstance(node, CommentedMap) and not node:
        _drop_empty_flow(t, root)  # "tenants: {}" becomes "tenants:" so a block can follow
        return None
    return _block(node, "tenants:") if node is not None else None


def _drop_empty_flow(t: _Text, root: CommentedMap) -> None:
    line, col = root.lc.value("tenants")
    text = t.lines[line]
    if not text[col:].startswith("{"):
        return  # already dropped
    end = text.index("}", col) + 1
    rest = text[end:]
    t.lines[line] = text[:col].rstrip() + (" " + rest.lstrip(" ") if rest.strip() else "\n")


def _add_tenant(t: _Text, name: str, body: list[str]) -> None:
    tenants = _tenants(t)
    col, step = _steps(t, tenants)
    new = [" " * col + f"{name}:\n"] + [" " * (col + step) + line for line in body]
    root = t.root
    if isinstance(root, CommentedMap) and "tenants" in root:
        key_line, key_col = root.lc.key("tenants")
        t.insert_after(t.block_end(key_line, key_col), new)
    else:
        t.lines.append("tenants:\n")
        t.lines.extend(new)


def _set_in_tenant(t: _Text, name: str, key: str, value: str) -> None:
    tenants = _tenants(t)
    assert tenants is not None and name in tenants
    body = tenants[name]
    if body is None:
        col, step = _steps(t, tenants)
        t.insert_after(tenants.lc.key(name)[0], [" " * (col + step) + f"{key}: {value}\n"])
        return
    node = _block(body, f"tenant {name!r}")
    if not node:
        raise UserError(f"tenant {name!r} is an empty flow mapping", hint=FLOW_HINT)
    t.put(node, key, value)


def enable_tenant(text: str, file: str, name: str, login: str | None) -> str:
    """Text with tenant ``name`` present, given ``login`` (if not None) and not disabled."""
    t = _Text(text, file)
    tenants = _tenants(t)
    if tenants is None or name not in tenants:
        if login is None:
            raise UserError(f"tenant {name!r} does not exist yet", hint="add it with --login USER")
        _add_tenant(t, name, [f"login: {login}\n"])
        return t.text()
    if login is not None:
        _set_in_tenant(t, name, "login", login)
        t = _Text(t.text(), file)  # positions moved
    body = _tenants(t)
    assert body is not None
    node = body[name]
    if isinstance(node, CommentedMap) and "enabled" in node:
        _set_in_tenant(t, name, "enabled", "true")
    return t.text()


def disable_tenant(text: str, file: str, name: str) -> str:
    """Text with ``enabled: false`` set on tenant ``name`` (its login and jobs stay)."""
    t = _Text(text, file)
    tenants = _tenants(t)
    if tenants is None or name not in tenants:
        raise UserError(f"no tenant {name!r} in {file}", hint="`taskserver tenants list` shows the tenants")
    _set_in_tenant(t, name, "enabled", "false")
    return t.text()


def write_atomic(path: Path, data: str, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Replace (or, with ``exclusive``, create) ``path`` so readers see the old or the new file, never half.

    An existing file keeps its mode and owner. With ``exclusive`` an existing file is never overwritten.
    """
    uid = gid = -1
    if not exclusive:
        st = os.stat(path)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8"))
            os.fchmod(f.fileno(), mode)
            if uid != -1 and (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(f.fileno(), uid, gid)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        hint = "remove it first or pick another path"
        raise UserError(f"{path} already exists; not overwriting it", hint=hint) from None
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _locked(path: Path) -> int:
    """An fd of ``path`` holding an exclusive flock, so concurrent edits run one after the other.

    An editor replaces the file by rename, so after waiting for the lock the path may name a newer file:
    then lock that one instead (otherwise the other editor's change would be lost).
    """
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def edit_file(path: Path, change: Callable[[str], str], validate: Callable[[str], None]) -> bool:
    """Apply ``change`` to the file's text, check the result with ``validate``, write it atomically.

    Returns False (and writes nothing) when the text did not change.
    """
    real = Path(os.path.realpath(path))  # edit the file a symlink points at, keep the link
    try:
        fd = _locked(real)
    except FileNotFoundError:
        hint = f"create it with `taskserver init-config {path}`"
        raise UserError(f"{path} does not exist", hint=hint) from None
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            old = f.read().decode("utf-8")
        new = change(old)
        if new == old:
            return False
        validate(new)
        write_atomic(real, new)
        return True
    finally:
        os.close(fd)  # releases the lock
