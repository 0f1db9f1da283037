"""YAML text -> ``Config``, collecting every mistake with its file:line:column.

Each section is read against a table of allowed keys, so an unknown key is an error (with a "did you mean"
hint) instead of a silently ignored typo. Values are converted by small functions that raise ValueError with
the expectation; the walker turns that into a ``ConfigError`` at the value's position.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq, LineCol

from . import config_env, config_http, config_jobs, config_notify, limits
from . import config_values as v
from .config_values import NAME, NAME_HINT, USER
from .config_yaml import ConfigError, ConfigInvalid, load_tree
from .limits import shown
from .model import (
    Config,
    Loc,
    Outline,
    ServerSettings,
    StoreDef,
    TenantDef,
)
from .pgdsn import scrub
from .yaml_fast import Prune, Pruned

SERVER_KEYS: dict[str, Callable[[object], object]] = {
    "run_as": v.run_as,
    "debug": v.boolean,
    "state_dir": v.abs_path,
    "install_dir": v.abs_path,
    "memory_limit": v.memory_limit,
    "max_parallel": v.whole(1),
    "stop_timeout": v.duration,
    "keep_ok": v.duration,
    "keep_err": v.duration,
    "output_tail": v.output_tail,
}
TENANT_KEYS = ("login", "run_as", "enabled", "store", "timezone", "jobs", "notify", *config_env.ENV_KEYS)
STORE_KINDS = ("sqlite", "postgresql")
VALUE_HINT = "docs/configuration.md lists each key's values and limits"
SPLIT_HINT = "run several servers, one file each (taskserver -c FILE)"
LC = LineCol.attrib
# a plain key's text from where it starts: after any anchor, up to the ':' (or ',', '}', ']' in flow style)
_PLAIN_KEY = re.compile(r"(?:&\S+\s+)?(.*?)\s*(?::(?=[\s,\]}]|$)|[,\]}]|$)")
_ABSENT = object()
_SCALARS = frozenset({str, int, float, bool, type(None)})
# the key sets checked once per job or tenant, by id: a set's one C call instead of a loop per key
_KNOWN = {id(keys): frozenset(keys) for keys in (config_jobs.JOB_KEYS, TENANT_KEYS)}


class _Walker:
    def __init__(self, file: str, text: str = "") -> None:
        self.file = file
        self.text = text  # the file's text, for a name YAML read as something else (``written``)
        self.lines: list[str] | None = None
        self.errors: list[ConfigError] = []
        self.more = 0  # errors past MAX_ERRORS: counted, not kept (and no "did you mean" worked out)
        self.jobs = 0
        # converted values by converter and raw value: a file's jobs repeat their schedules and settings,
        # and the jobs then share one object for each (a converter is a function of the value alone)
        self.converted: dict[tuple[object, type, object], object] = {}
        self.shared = config_jobs.Shared(file)

    def loc(self, node: Any, key: object = None, *, value: bool = False) -> Loc:
        """Position of ``key`` (or its value, or a list item) in ``node``; the node itself without key."""
        try:
            lc = getattr(node, LC)  # as ``node.lc`` reads it, without the property's call
            if key is None:
                line, col = lc.line, lc.col
            else:
                at = lc.data[key]
                line, col = (at[2], at[3]) if value and not isinstance(node, CommentedSeq) else (at[0], at[1])
        except (AttributeError, KeyError, TypeError):
            return Loc(self.file, 1, 1)
        return Loc(self.file, line + 1, col + 1)

    def written(self, node: Any, key: object) -> str:
        """``key`` of ``node`` for a message as the file has it: ``2020-01-01``, not datetime.date(2020, 1,
        1); ``1e3``, not 1000.0."""
        if isinstance(key, str):
            return shown(key)
        if isinstance(key, Mapping | tuple | list):  # a mapping or list as a key (CommentedKeyMap, ...Seq)
            return "a mapping" if isinstance(key, Mapping) else "a list"
        loc = self.loc(node, key)
        if self.lines is None:
            self.lines = self.text.split("\n")
        line = self.lines[loc.line - 1] if 0 < loc.line <= len(self.lines) else ""
        got = _PLAIN_KEY.match(line, loc.col - 1)
        return limits.clip(got.group(1)) if got and got.group(1) else shown(key)

    def bad_name(self, node: Any, name: object, what: str, where: str) -> None:
        """The error for a tenant's or job's name that is not one. A name YAML reads as a number, a date, a
        boolean... is shown as written, with the quotes that make it text."""
        written, loc = self.written(node, name), self.loc(node, name)
        if isinstance(name, str | Mapping | tuple | list):
            self.error(loc, f"{where}: bad {what} name {written}", NAME_HINT)
            return
        hint = f"quote it to make it text: '{written}':" if NAME.fullmatch(written) else NAME_HINT
        self.error(loc, f"{where}: bad {what} name {written} (YAML reads it as {v.read_as(name)})", hint)

    @property
    def full(self) -> bool:
        return len(self.errors) >= limits.MAX_ERRORS

    def error(self, loc: Loc, message: str, hint: str | None = None) -> None:
        if self.full:
            self.more += 1
        else:
            self.errors.append(ConfigError(loc, message, hint or VALUE_HINT))

    def mapping(self, node: Any, where: str, loc: Loc) -> CommentedMap | None:
        if node is None:
            return CommentedMap()
        if not isinstance(node, CommentedMap):
            self.error(loc, f"{where}: expected a mapping (key: value lines), got {v.kind(node)}",
                       "write its keys as `key: value` lines indented below it")
            return None
        return node

    def check_keys(self, node: CommentedMap, allowed: tuple[str, ...] | list[str], where: str) -> None:
        known = _KNOWN.get(id(allowed))
        if known is not None and known.issuperset(dict.keys(node)):  # a job's keys: the usual case
            return
        for key in node:
            if key not in allowed and self.full:
                self.more += 1
            elif key not in allowed:
                close = difflib.get_close_matches(str(key)[:100], list(allowed), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(allowed)
                self.error(self.loc(node, key), f"{where}: unknown key {self.written(node, key)}", hint)

    def value(self, node: CommentedMap, key: str, conv: Callable[[object], Any], where: str) -> Any:
        """Converted value of ``key``, or None when it is absent or wrong (then an error is recorded)."""
        raw = dict.get(node, key, _ABSENT)  # the mapping's own lookup, not CommentedMap's Python one
        if raw is _ABSENT:
            return None
        try:
            return self.convert(conv, raw)
        except ValueError as exc:
            hint = v.zone_hint(raw) if conv is v.zone else v.HINTS.get(conv, VALUE_HINT)
            self.error(self.loc(node, key, value=True), f"{where}.{key}: {exc}", hint)
            return None

    def convert(self, conv: Callable[[object], Any], raw: object) -> Any:
        """``conv(raw)``, once per converter and value (with its type: 1, 1.0 and True stay apart); raises
        its ValueError (never kept: each place a wrong value stands is reported)."""
        memo = (conv, type(raw), raw) if type(raw) in _SCALARS else None
        if memo is not None and memo in self.converted:
            return self.converted[memo]
        got = conv(raw)
        if memo is not None:
            self.converted[memo] = got
        return got

    def each(self, seq: list[Any], conv: Callable[[object], Any], where: str, hint: str) -> list[Any]:
        """The converted items of a list; each wrong one is recorded at its own place and left out."""
        out = []
        for i, item in enumerate(seq):
            try:
                out.append(conv(item))
            except ValueError as exc:
                self.error(self.loc(seq, i), f"{where}: {exc}", hint)
        return out


def _server(w: _Walker, node: CommentedMap, state_dir: Path) -> ServerSettings:
    w.check_keys(node, [*SERVER_KEYS, "http", "notify"], "task_server")
    got = {k: w.value(node, k, conv, "task_server") for k, conv in SERVER_KEYS.items()}
    got["http"] = config_http.parse(w, node) if "http" in node else None
    fields: dict[str, Any] = {k: x for k, x in got.items() if x is not None and not k.startswith("keep_")}
    if got["keep_ok"] is not None:
        fields["keep_ok_days"] = got["keep_ok"] / 86400
    if got["keep_err"] is not None:
        fields["keep_err_days"] = got["keep_err"] / 86400
    fields.setdefault("state_dir", state_dir)
    fields["notify"] = config_notify.parse(w, node, "task_server")
    return ServerSettings(**fields)


def _store(w: _Walker, node: CommentedMap, where: str, state_dir: Path) -> StoreDef:
    raw = node.get("store")
    loc = w.loc(node, "store", value=True)
    hint = "store: {sqlite: PATH} (relative to state_dir) or store: {postgresql: DSN}"
    if raw is None:
        return StoreDef()
    if not isinstance(raw, CommentedMap) or len(raw) != 1 or next(iter(raw)) not in STORE_KINDS:
        w.error(loc, f"{where}.store: expected exactly one of sqlite: or postgresql:", hint)
        return StoreDef()
    kind = next(iter(raw))
    conv = v.text if kind == "postgresql" else v.store_file
    target = w.value(raw, kind, conv, f"{where}.store")
    if target is None:
        return StoreDef()
    if kind == "postgresql":
        return StoreDef(kind="postgresql", dsn=target)
    return StoreDef(kind="sqlite", path=state_dir / target)


def _tenant(w: _Walker, name: str, node: CommentedMap, loc: Loc, state_dir: Path) -> TenantDef:
    where = f"tenants.{name}"
    w.check_keys(node, TENANT_KEYS, where)
    has_login = node.get("login") is not None  # "login:" left empty means no login
    login = w.value(node, "login", v.pattern(USER, "a user name"), where) if has_login else None
    enabled = w.value(node, "enabled", v.boolean, where) is not False
    tz = w.value(node, "timezone", v.zone, where) or "UTC"
    return TenantDef(
        name=name, login=login if enabled else None, store=_store(w, node, where, state_dir), timezone=tz,
        jobs=config_jobs.jobs(w, name, node, tz), enabled=enabled,
        disabled_login=None if enabled else login, loc=loc, env=config_env.parse(w, node, where),
        run_as=w.value(node, "run_as", v.run_as, where), notify=config_notify.parse(w, node, where),
    )


def _tenants(w: _Walker, root: CommentedMap, state_dir: Path) -> list[TenantDef]:
    tenant_map = w.mapping(root.get("tenants"), "tenants", w.loc(root, "tenants", value=True))
    tenants = []
    for i, (name, body) in enumerate((tenant_map or {}).items()):
        loc = w.loc(tenant_map, name)
        if i == limits.MAX_TENANTS:
            w.error(loc, f"tenants: more than {limits.MAX_TENANTS} tenants in one file", SPLIT_HINT)
            break
        if not isinstance(name, str) or not NAME.fullmatch(name):
            w.bad_name(tenant_map, name, "tenant", "tenants")
            continue
        node = w.mapping(body, f"tenants.{name}", w.loc(tenant_map, name, value=True))
        if node is not None:
            tenants.append(_tenant(w, name, node, loc, state_dir))
    return tenants


def parse(text: str, path: Path, default_state_dir: Path, *, host: bool = False,
          prune: Prune | None = None, pruned: Pruned | None = None, raw_jobs: bool = True) -> Config:
    """Validate ``text`` (the contents of ``path``) into a Config; raises ConfigInvalid listing all errors.

    ``host``: the file is for this machine, so also check what it names here (the run_as user exists,
    install_dir is a directory); off for a file read for another root (an image, a package tree).
    ``prune``: key paths (tenants.NAME, tenants.NAME.jobs) left unread but for the YAML's syntax and the
    input limits (config_yaml.load_tree), for a command that acts on one tenant; listed in ``pruned``.
    ``raw_jobs``: jobs with only plain values are built from libyaml's events without their tree
    (runtime/yaml_raw.py); off, every job is read from the tree (the same Config, the same errors).
    """
    w = _Walker(str(path), text)
    pruned = pruned if pruned is not None else Pruned()
    tree = load_tree(text, str(path), prune, pruned, raw_jobs=raw_jobs)
    root = w.mapping(tree, "file", Loc(str(path), 1, 1))
    server, tenants = ServerSettings(state_dir=default_state_dir), []
    if root is not None:
        w.check_keys(root, ("task_server", "tenants"), "top level")
        section = w.mapping(root.get("task_server"), "task_server", w.loc(root, "task_server", value=True))
        if section is not None:
            server = _server(w, section, default_state_dir)
            if host:
                _host_checks(w, section, server)
        tenants = _tenants(w, root, server.state_dir)
        _own_stores(w, tenants, server.state_dir)
        if host:
            _store_checks(w, root, tenants)
            config_notify.host_checks(w, server, tenants)
    if w.errors or w.more:
        raise ConfigInvalid(sorted(w.errors, key=lambda e: (e.loc.line, e.loc.col)), w.more)
    return Config(path=path, exists=True, server=server, tenants=tuple(tenants),
                  outline=_outline(pruned))


def _own_stores(w: _Walker, tenants: list[TenantDef], state_dir: Path) -> None:
    """Every tenant has a SQLite file of its own: one file named by two tenants mixed their runs (a token
    of one tenant read the other's through the web side; the daemon refused with a misleading lock error).
    A PostgreSQL store keeps each tenant's rows apart by its name, so a database may be shared."""
    seen: dict[Path, str] = {}
    for t in tenants:
        if t.store.kind != "sqlite":
            continue
        own = state_dir / "tenants" / t.name if t.run_as is not None else state_dir
        path = t.store.path or own / f"{t.name}.sqlite"
        other = seen.setdefault(path, t.name)
        if other != t.name:
            w.error(t.loc or Loc(w.file, 1, 1), f"tenants.{t.name}.store: {path} is tenant {other}'s store "
                    "too", "give each tenant its own file: store: {sqlite: NAME.sqlite}, or leave store: out")


def _outline(pruned: Pruned) -> Outline | None:
    """The jobs' spans; config.load adds which file they are in."""
    return ((), tuple(pruned.spans)) if pruned.spans else None


def _store_checks(w: _Walker, root: CommentedMap, tenants: list[TenantDef]) -> None:
    """A postgresql store: the driver is installed here and the DSN is one libpq can read (nothing is
    connected to: `check` works offline)."""
    shared = [(t.name, t.store.dsn) for t in tenants if t.store.kind == "postgresql" and t.store.dsn]
    if not shared:
        return
    tenant_map = root.get("tenants")
    try:
        from psycopg import conninfo  # noqa: PLC0415 - only for a config that names a shared store
    except ImportError:
        loc = w.loc(tenant_map[shared[0][0]], "store", value=True)
        w.error(loc, f"tenants.{shared[0][0]}.store: the postgresql store needs the psycopg driver, which is "
                "not installed", "pip install 'taskserver[postgresql]'")
        return
    for name, dsn in shared:
        loc = w.loc(tenant_map[name], "store", value=True)
        try:
            conninfo.conninfo_to_dict(dsn)
        except Exception as exc:  # libpq's words may quote the password: never shown
            w.error(loc, f"tenants.{name}.store.postgresql: not a DSN libpq can read: "
                    f"{shown(scrub(' '.join(str(exc).split()), dsn))}",
                    "postgresql://USER@HOST/DB or 'host=H dbname=D'; a password's % @ / as %25 %40 %2F")


def _host_checks(w: _Walker, node: CommentedMap, server: ServerSettings) -> None:
    """What the daemon would otherwise find out only when it starts: `check` must refuse it now."""
    for key, value, conv in (("run_as", server.run_as, v.existing_user),
                             ("install_dir", server.install_dir, v.existing_dir)):
        if value is not None:
            try:
                conv(value)
            except ValueError as exc:
                w.error(w.loc(node, key, value=True), f"task_server.{key}: {exc}", v.HINTS.get(conv))
