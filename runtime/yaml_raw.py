"""A job's mapping read straight from libyaml's events, for the config reader (yaml_fast.load with
``raw_jobs``): no round-trip mapping, list, position table and style object per job.

A job of a 10,000-job file is a handful of keys with a value or a list of values each. Such a body is kept
as a ``RawBody`` (its keys with their values and the marks of both, in file order), which
runtime/config_jobs.py builds a ``JobDef`` from when every value is one it takes as it is; for any other
job it asks ``to_map`` for the very tree the round-trip path builds (the same values, positions and
styles), and reads that as every job was read before, so each mistake is worded by the one walker. A body
with anything else in it (a mapping inside, an anchor, an alias, a tag, an empty value) is handed back to
yaml_fast's general loop at that event, with what was read so far, and built as before.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq, Format, LineCol
from ruamel.yaml.compat import ordereddict
from ruamel.yaml.events import MappingEndEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent

from . import limits


class RawSeq:
    """A list of plain values: its start (event), style, and items with their marks."""

    __slots__ = ("first", "items")

    def __init__(self, first: Any) -> None:
        self.first = first
        self.items: list[tuple[Any, Any]] = []

    def to_list(self) -> CommentedSeq:
        seq = CommentedSeq()
        data = _placed(seq, self.first.start_mark)
        for i, (item, mark) in enumerate(self.items):
            data[i] = [mark.line, mark.column]
            list.append(seq, item)
        _styled(seq, bool(self.items), self.first.flow_style)
        return seq


class RawBody:
    """A job's block mapping: its start (event) and its entries, key -> (value, value mark, key mark)."""

    __slots__ = ("entries", "first")

    def __init__(self, first: Any) -> None:
        self.first = first
        self.entries: dict[str, tuple[Any, Any, Any]] = {}

    def to_map(self) -> CommentedMap:
        """The round-trip mapping yaml_fast builds for this body (values, positions, styles)."""
        body = CommentedMap()
        data = _placed(body, self.first.start_mark)
        for key, (raw, at, key_at) in self.entries.items():
            value = raw.to_list() if isinstance(raw, RawSeq) else raw
            data[key] = [key_at.line, key_at.column, at.line, at.column]
            ordereddict.__setitem__(body, key, value)
            body._ok.add(key)
        _styled(body, bool(self.entries), self.first.flow_style)
        return body


def _placed(value: Any, mark: Any) -> dict[Any, list[int]]:
    lc = LineCol()  # as yaml_fast's _Open sets it
    lc.line, lc.col = mark.line, mark.column
    lc.data = {}
    setattr(value, LineCol.attrib, lc)
    return lc.data


def _styled(value: Any, filled: bool, flow: Any) -> None:
    if filled and flow is not None:  # as yaml_fast's close
        style = Format()
        style._flow_style = flow is True
        setattr(value, Format.attrib, style)


class NotFast(Exception):
    """This path does not build the tree (an error, a broken limit or a rare feature): ask the checked
    loader."""


def _plain(event: Any) -> bool:
    """A scalar this reader takes: no anchor, no tag, not an empty plain value (placed elsewhere)."""
    return event.anchor is None and event.ctag is None and (bool(event.value) or bool(event.style))


def read_body(builder: Any, first: Any, depth: int, nodes: int) -> tuple[RawBody, list[Any], int]:
    """Read the job mapping ``first`` opens (``depth``: its parents), within the limits of yaml_fast's
    loop. Returns the body, and the values counted so far; when the body holds more than plain keys and
    values, also the yaml_fast collections to go on with (the body, and a list being read), filled with
    what was read: the general loop then reads on from the next event."""
    peek, get = builder.parser.peek_event, builder.parser.get_event
    got = _Reading(first)
    while True:
        event = peek()
        kind = type(event)
        if kind is MappingEndEvent and got.key is None:
            get()
            return got.body, [], nodes
        if kind is SequenceEndEvent and got.seq is not None:
            get()
            got.put(got.seq, got.seq.first.start_mark)
            continue
        nodes += 1
        taken = len(got.seq.items) if got.seq is not None else len(got.body.entries)
        # as yaml_fast's loop counts: the body and the list being read are open collections too
        if nodes > limits.MAX_NODES or depth + 1 + (got.seq is not None) >= limits.MAX_DEPTH or (
                taken >= limits.MAX_ENTRIES):
            raise NotFast("limit")
        if kind is ScalarEvent and _plain(event):
            get()
            if not got.scalar(builder.scalar(event), event.start_mark):
                return got.body, _opened(builder, got), nodes
        elif kind is SequenceStartEvent and got.seq is None and got.key is not None and (
                event.anchor is None and event.ctag is None):
            get()
            got.seq = RawSeq(event)
        else:
            return got.body, _opened(builder, got), nodes - 1  # the general loop counts it


class _Reading:
    """A body being read: its entries so far, the key waiting for its value, the list being read."""

    __slots__ = ("body", "key", "key_at", "seq")

    def __init__(self, first: Any) -> None:
        self.body = RawBody(first)
        self.seq: RawSeq | None = None
        self.key: Any = None
        self.key_at: Any = None

    def scalar(self, value: Any, mark: Any) -> bool:
        """Take a scalar (an item, a key, a value); False: a key that is not text (the tree takes it)."""
        if self.seq is not None:
            self.seq.items.append((value, mark))
        elif self.key is None:
            self.key, self.key_at = value, mark
            return type(value) is str
        else:
            self.put(value, mark)
        return True

    def put(self, value: Any, mark: Any) -> None:
        if self.key in self.body.entries:
            raise NotFast("duplicate key")  # the checked loader names both places
        self.body.entries[self.key] = (value, mark, self.key_at)
        self.key = self.seq = None


def _opened(builder: Any, got: _Reading) -> list[Any]:
    """yaml_fast's open collections holding what was read: the body's mapping, with the key waiting for its
    value, and the list being read for it."""
    body, key, key_at, seq = got.body, got.key, got.key_at, got.seq
    mapping = builder.start(body.first, True)
    for name, (raw, at, name_at) in body.entries.items():
        mapping.put(name, name_at)
        mapping.put(raw.to_list() if isinstance(raw, RawSeq) else raw, at)
    opened = [mapping]
    if key is not None:
        mapping.put(key, key_at)
    if seq is not None:
        items = builder.start(seq.first, False)
        for item, at in seq.items:
            items.put(item, at)
        opened.append(items)
    return opened
