"""The configuration's YAML tree built from libyaml's events (ruamel.yaml's C parser: ruamel.yaml.clib, or
ruamel.yaml.clibz), within the same limits.

The checked pure-Python loader (config_yaml.load_yaml) spends about half a millisecond per job of a 10,000-job
file scanning comments the daemon never reads, and its composer and constructor as much again. Here the C
parser only tokenizes; this module builds the round-trip values (``CommentedMap``, ``CommentedSeq``, scalars
resolved by ruamel's YAML 1.2 rules, the line and column of every key, value and item) in one loop without
recursion, and enforces every limit of config_yaml's composer on the way: depth, values in the file, entries
in one mapping or list, characters of a value or a number, no tag, no anchor defined twice, aliases counted
and never inside their own anchor. It stops at the first broken limit, so the C parser never reads further.

Whatever this path does not build exactly as the round-trip loader would (merge keys ``<<``, duplicate or
non-text keys of collections, several documents) and every error or broken limit raises ``NotFast``: the
caller then asks the checked loader, which words the error with FILE:LINE:COL (or builds the rare tree).
Comments are not kept: config_edit.py, which writes the file back, uses the round-trip loader.

``prune`` (for the commands that act on one tenant): a mapping or list whose key path it accepts is read
through without being built, within the same limits, and left out of its mapping; its path is listed in
``Pruned.paths``. An alias to a pruned value makes the checked loader build the whole tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq, Format, LineCol
from ruamel.yaml.compat import ordereddict
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.serializer import templated_id

from . import limits
from .yaml_raw import NotFast, read_body

__all__ = ["NotFast", "Prune", "Pruned", "available", "load"]

CParser: Any
try:
    from ruamel.yaml import cyaml

    CParser = cyaml.CParser  # type: ignore[attr-defined]
except ImportError:  # no C parser (not CPython, or not installed): the checked loader does the whole job
    CParser = None

STR_TAG = "tag:yaml.org,2002:str"
NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_NUMBER_CHARS = 100  # config_yaml's limit (repeated: importing it would load the pure parser)
_DIFFERENT = re.compile("%YAML|[\t\r\x85\u2028\u2029\ufeff]")  # what the two parsers read differently


def available(text: str) -> bool:
    """True when the C parser is installed and ``text`` is one it reads as the checked loader does: no YAML
    version of its own (``%YAML 1.1`` changes how scalars resolve), no tab (libyaml accepts tabs in places
    the checked loader refuses), no byte order mark (they count columns after it differently), no line
    break but ``\\n`` (libyaml also breaks lines at NEL, LS and PS), ending with a line break (they place an
    empty last value differently)."""
    return CParser is not None and text.endswith("\n") and _DIFFERENT.search(text) is None


Prune = Callable[[tuple[Any, ...]], bool]
PRUNE_DEPTH = 3  # paths up to tenants.NAME.jobs are offered to ``prune``


class Pruned:
    """The key paths of the values left out, in file order; and where each tenant's jobs that were built
    start and end in the text (``spans``: tenant, first and last character + 1), for config.load_tenant."""

    def __init__(self) -> None:
        self.paths: list[tuple[Any, ...]] = []
        self.spans: list[tuple[str, int, int]] = []


def load(text: str, prune: Prune | None = None, pruned: Pruned | None = None, *,
         raw_jobs: bool = False) -> Any:
    """The round-trip tree of the single YAML document in ``text`` (None for none); raises NotFast.
    ``raw_jobs``: a job's mapping (tenants.NAME.jobs.JOB) that holds only plain keys and values is a
    yaml_raw.RawBody in the tree, for the config reader (runtime/config_jobs.py)."""
    try:
        return _Builder(text, prune, pruned, raw_jobs).document()
    except NotFast:
        raise
    except Exception as exc:  # any parser or constructor error: the checked loader words it
        raise NotFast(str(exc)) from None


class _Resolver(VersionedResolver):
    @property
    def processing_version(self) -> Any:
        # YAML 1.2, as the round-trip loader resolves a file without a %YAML line; the inherited lookup
        # goes through two AttributeErrors per scalar
        return (1, 2)


_STR = _Resolver.DEFAULT_SCALAR_TAG  # what resolve() returns for text (one shared object)
# first characters of the plain values that may resolve to more than text (numbers, booleans, null, merge
# keys...); the others are text, whose only limit is their length
_RESOLVED = frozenset(_Resolver().versioned_resolver)  # with "" (empty values)


class _Open:
    """A mapping or list being filled: its value and position table, where it starts, its anchor, style."""

    __slots__ = ("anchor", "count", "data", "flow", "jobs_of", "lc", "start", "value")

    def __init__(self, value: Any, event: Any, anchor: str | None) -> None:
        self.value, self.start, self.anchor, self.flow = value, event.start_mark, anchor, event.flow_style
        self.count = 0  # entries so far
        self.jobs_of: str | None = None  # the tenant, when this is its jobs: mapping
        self.lc = LineCol()  # set as the round-trip constructor does (_yaml_set_line_col), without its calls
        self.lc.line, self.lc.col = self.start.line, self.start.column
        setattr(value, LineCol.attrib, self.lc)
        # the position table, also of an empty collection (the round-trip loader's is None: both mean none)
        self.data: dict[Any, list[int]] = {}
        self.lc.data = self.data

    def put(self, value: Any, mark: Any) -> None:
        """Add ``value`` (starting at ``mark``): an item, or a mapping's key, then its value."""
        raise NotImplementedError

    def pending(self) -> bool:
        """A key waits for its value."""
        raise NotImplementedError


class _OpenSeq(_Open):
    __slots__ = ()

    def put(self, value: Any, mark: Any) -> None:
        self.data[self.count] = [mark.line, mark.column]
        list.append(self.value, value)  # CommentedSeq.append moves comments along: there are none
        self.count += 1

    def pending(self) -> bool:
        return False


class _OpenMap(_Open):
    __slots__ = ("key", "key_at")

    def __init__(self, value: Any, event: Any, anchor: str | None) -> None:
        super().__init__(value, event, anchor)
        self.key: Any = _NO_KEY

    def put(self, value: Any, mark: Any) -> None:
        key = self.key
        if key is _NO_KEY:
            if isinstance(value, CommentedMap | CommentedSeq):
                raise NotFast("a collection as a key")  # built by the round-trip constructor only
            self.key, self.key_at = value, (mark.line, mark.column)
            return
        target = self.value
        if ordereddict.__contains__(target, key):
            raise NotFast("duplicate key")  # the checked loader names both places
        self.data[key] = [*self.key_at, mark.line, mark.column]
        ordereddict.__setitem__(target, key, value)  # CommentedMap.__setitem__ for a new key
        target._ok.add(key)
        self.key = _NO_KEY
        self.count += 1

    def pending(self) -> bool:
        return self.key is not _NO_KEY


_NO_KEY = object()


def _is_jobs(stack: list[_Open]) -> bool:
    """The collection opening below ``stack`` is tenants.NAME.jobs."""
    keys = [getattr(o, "key", None) for o in stack]
    return keys[0] == "tenants" and isinstance(keys[1], str) and keys[2] == "jobs" and all(
        isinstance(o, _OpenMap) for o in stack)
_PRUNED = object()  # an anchored collection that was read through, not built


class _Skipped:
    """A collection being read through: its anchor, style, events so far, and a mapping's keys."""

    __slots__ = ("anchor", "flow", "keys", "seen")

    def __init__(self, anchor: str | None, flow: Any, mapping: bool) -> None:
        self.anchor, self.flow, self.seen = anchor, flow, 0
        self.keys: set[str] | None = set() if mapping else None


class _Builder:
    def __init__(self, text: str, prune: Prune | None = None, pruned: Pruned | None = None,
                 raw_jobs: bool = False) -> None:
        self.parser = CParser(text)
        self.raw_jobs = raw_jobs
        self.prune, self.pruned = prune, pruned if pruned is not None else Pruned()
        self.resolver = _Resolver()
        self.tags: dict[str, Any] = {}  # plain scalar -> its resolved tag (job files repeat the same keys)
        self.anchors: dict[str, tuple[Any, Any]] = {}  # name -> (value, its start mark)
        self.open_anchors: set[str] = set()
        self.aliases = 0
        self.constructor: RoundTripConstructor | None = None

    def document(self) -> Any:
        get = self.parser.get_event
        _expect(get(), StreamStartEvent)
        event = get()
        if isinstance(event, StreamEndEvent):
            return None
        _expect(event, DocumentStartEvent)
        root = self.tree()
        _expect(get(), DocumentEndEvent)
        _expect(get(), StreamEndEvent)  # a second document: the checked loader says so
        return root

    def tree(self) -> Any:
        """The document's root value: one loop over the events, no recursion. Each value is counted
        against config_yaml's composer limits before it is built: values in the file, depth, entries of
        its mapping or list. Written flat: it runs once per value of a 10,000-job file."""
        get = self.parser.get_event
        stack: list[_Open] = []
        nodes = 0
        empty: _Open | None = None  # a block mapping whose last value was empty, waiting for its position
        while True:
            event = get()
            kind = type(event)
            if empty is not None:  # the round-trip loader places an empty value where the next thing starts
                empty.put(None, event.start_mark)
                empty = None
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                done = stack.pop()
                value, at = self.close(done, event), done.start
            else:
                nodes += 1
                depth = len(stack)
                if nodes > limits.MAX_NODES or depth >= limits.MAX_DEPTH or (
                        depth and stack[-1].count >= limits.MAX_ENTRIES):
                    raise NotFast("limit")
                at = event.start_mark
                if kind is ScalarEvent:
                    value = self.scalar(event)
                    if value is None and not event.value and not event.style and depth:
                        empty = self.place_empty(stack[-1])
                        if empty is not None:
                            continue
                elif kind is AliasEvent:
                    value, at = self.alias(event)  # at the anchored value's place, as the composer shares it
                elif kind is MappingStartEvent or kind is SequenceStartEvent:
                    nodes = self.open(event, stack, nodes)
                    continue
                else:
                    raise NotFast("unexpected event")
            if not stack:
                return value
            stack[-1].put(value, at)

    def open(self, event: Any, stack: list[_Open], nodes: int) -> int:
        """A mapping or list starts: opened on ``stack``, or read through when pruned. Returns the values
        counted so far."""
        if self.prune is not None and len(stack) <= PRUNE_DEPTH and self.pruning(stack):
            return self.skip(event, nodes, len(stack))
        parent = stack[-1] if stack else None
        if self.raw_jobs and parent is not None and parent.jobs_of is not None and parent.pending() and (
                type(event) is MappingStartEvent and event.anchor is None and event.ctag is None):
            body, going_on, nodes = read_body(self, event, len(stack), nodes)  # a job's mapping
            if going_on:
                stack.extend(going_on)  # more than plain values: built here from where it stopped
            else:
                parent.put(body, event.start_mark)
            return nodes
        opened = self.start(event, type(event) is MappingStartEvent)
        if len(stack) == PRUNE_DEPTH and _is_jobs(stack):
            opened.jobs_of = stack[1].key  # type: ignore[attr-defined]
        stack.append(opened)
        return nodes

    def pruning(self, stack: list[_Open]) -> bool:
        """Whether the collection starting now is a mapping's value whose key path ``prune`` accepts; if so
        its key is dropped and the path recorded."""
        parent = stack[-1] if stack else None
        if not isinstance(parent, _OpenMap) or not parent.pending():
            return False
        path = tuple(getattr(o, "key", None) for o in stack)  # a list in the way: not offered
        if self.prune is None or not all(isinstance(k, str) for k in path) or not self.prune(path):
            return False
        self.pruned.paths.append(path)
        parent.key = _NO_KEY
        parent.count += 1  # it still counts against the mapping's entries
        return True

    def skip(self, first: Any, nodes: int, depth: int) -> int:
        """Read the collection ``first`` starts through to its end without building it, within the limits
        of ``tree`` (values, depth, entries, value sizes, tags, anchors, aliases) and refusing what the
        loaders read differently (empty keys, empty flow values, duplicate or collection keys), so a file
        is accepted here only if the checked loader accepts it. Returns the values counted so far. Flat,
        as ``tree``: it runs once per value of the jobs left out."""
        get = self.parser.get_event
        open_: list[_Skipped] = [self.skip_open(first)]
        while open_:
            event = get()
            kind = type(event)
            top = open_[-1]
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                self.skip_close(open_.pop())
                continue
            nodes += 1
            keys = top.keys
            is_key = keys is not None and not top.seen & 1
            entries = top.seen >> 1 if keys is not None else top.seen
            if (nodes > limits.MAX_NODES or depth + len(open_) >= limits.MAX_DEPTH
                    or entries >= limits.MAX_ENTRIES):
                raise NotFast("limit")
            top.seen += 1
            if kind is ScalarEvent:
                value = event.value
                if (not event.style and event.implicit[0] and value[:1] in _RESOLVED) or (
                        event.anchor is not None or event.ctag is not None or len(value) > MAX_NUMBER_CHARS):
                    self.skip_scalar(event, top, is_key)  # what it resolves to, and its limits
                if is_key:
                    if value in keys:  # type: ignore[operator]
                        raise NotFast("duplicate key")  # or one text quoted two ways: the checked one decides
                    keys.add(value)  # type: ignore[union-attr]
            elif kind is AliasEvent and not is_key:
                self.alias(event)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if is_key:
                    raise NotFast("a collection as a key")
                open_.append(self.skip_open(event))
            else:
                raise NotFast("unexpected event")
        return nodes

    def skip_open(self, event: Any) -> _Skipped:
        anchor = self.check_node(event) if event.anchor is not None or event.ctag is not None else None
        if anchor is not None:
            self.open_anchors.add(anchor)
        return _Skipped(anchor, event.flow_style, type(event) is MappingStartEvent)

    def skip_close(self, done: _Skipped) -> None:
        if done.keys is not None and done.seen & 1:
            raise NotFast("a key without a value")
        if done.anchor is not None:
            self.open_anchors.discard(done.anchor)
            self.anchors[done.anchor] = (_PRUNED, None)

    def skip_scalar(self, event: Any, top: _Skipped, is_key: bool) -> None:
        if not event.value and not event.style and (is_key or top.flow is not False):
            raise NotFast("an empty key, or an empty value in flow style")
        self.scalar(event)  # its limits, tag, anchor (an alias may use its value) and construction

    def start(self, event: Any, mapping: bool) -> _Open:
        anchor = self.check_node(event) if event.anchor is not None or event.ctag is not None else None
        if mapping:
            opened: _Open = _OpenMap(CommentedMap(), event, anchor)
        else:
            opened = _OpenSeq(CommentedSeq(), event, anchor)
        if anchor is not None:
            self.open_anchors.add(anchor)
            if not templated_id(anchor):
                opened.value.yaml_set_anchor(anchor)
        return opened

    def close(self, done: _Open, end: Any) -> Any:
        value = done.value
        if done.pending():
            raise NotFast("a key without a value")
        if done.jobs_of is not None:
            self.pruned.spans.append((done.jobs_of, done.start.index, end.end_mark.index))
        if done.count and done.flow is not None:  # as ``value.fa.set_flow_style()`` or block style, directly
            style = Format()
            style._flow_style = done.flow is True
            setattr(value, Format.attrib, style)
        if done.anchor is not None:
            self.open_anchors.discard(done.anchor)
            self.anchors[done.anchor] = (value, done.start)
        return value

    def place_empty(self, parent: _Open) -> _Open | None:
        """Where an empty plain value goes: a block list's item at its own place (returns None), a block
        mapping's value at the next event's (returns the mapping); elsewhere the loaders place it
        differently, so the checked one builds the tree."""
        if parent.flow is not False or (isinstance(parent, _OpenMap) and not parent.pending()):
            raise NotFast("an empty key, or an empty value in flow style")
        return parent if isinstance(parent, _OpenMap) else None

    def check_node(self, event: Any) -> str | None:
        if event.ctag is not None and event.ctag != "!":
            raise NotFast("tag")
        anchor: str | None = event.anchor
        if anchor is not None and (anchor in self.anchors or anchor in self.open_anchors):
            raise NotFast("anchor defined twice")
        return anchor

    def alias(self, event: Any) -> tuple[Any, Any]:
        self.aliases += 1
        name = event.anchor
        if self.aliases > limits.MAX_ALIASES or name in self.open_anchors or name not in self.anchors:
            raise NotFast("alias")
        if self.anchors[name][0] is _PRUNED:
            raise NotFast("an alias to a pruned value")  # only an error in the pruned part itself is fine
        return self.anchors[name]

    def scalar(self, event: Any) -> Any:
        anchor = self.check_node(event) if event.anchor is not None or event.ctag is not None else None
        value: str = event.value
        if len(value) > limits.MAX_VALUE_CHARS:
            raise NotFast("limit")
        style = event.style or None
        if style is None and event.implicit[0] and anchor is None and value[:1] not in _RESOLVED:
            return value  # text: no implicit resolver looks at a value starting so (a job's name, a path)
        if style is None and event.implicit[0]:
            tag = self.tags.get(value)
            if tag is None:
                tag = self.tags[value] = self.resolver.resolve(ScalarNode, value, (True, False))
            if tag is not _STR:
                if str(tag) in NUMBER_TAGS and len(value) > MAX_NUMBER_CHARS:
                    raise NotFast("limit")
                if str(tag) != STR_TAG:
                    return self.construct(tag, value, event, style, anchor)
        if anchor is None and style not in {"|", ">"}:
            return value
        return self.construct(self.resolver.resolve(ScalarNode, value, (False, True)), value, event, style,
                              anchor)

    def construct(self, tag: Any, value: str, event: Any, style: str | None, anchor: str | None) -> Any:
        """A scalar the round-trip constructor makes into more than text (numbers, booleans, null, block
        and anchored text), by that constructor."""
        if str(tag) == MERGE_TAG:
            raise NotFast("merge key")  # merged mappings are built by the round-trip constructor only
        if self.constructor is None:
            from ruamel.yaml import YAML  # noqa: PLC0415 - only files with such values need it

            self.constructor = YAML(typ="rt").constructor
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, style=style, anchor=anchor)
        built = self.constructor.construct_object(node)
        if anchor is not None:
            self.anchors[anchor] = (built, event.start_mark)
        return built


def _expect(event: Any, kind: type) -> None:
    if not isinstance(event, kind):
        raise NotFast(f"expected {kind.__name__}")
