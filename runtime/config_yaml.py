"""YAML text -> round-trip tree (positions and comments kept), within the limits of ``limits``.

ruamel.yaml's composer is wrapped so that a hostile file is refused while it is read, at the spot where it
goes wrong: nesting deeper than MAX_DEPTH (the composer and constructor recurse: a few hundred levels were a
RecursionError), more than MAX_NODES values, over-long keys and values, numbers of thousands of digits (the
interpreter refuses to convert them), any explicit tag (``!foo``, ``!!python/...``, ``!!binary``: a config
needs none, and ruamel kept unknown ones as objects no check expected), more than MAX_ALIASES aliases, and an
alias used inside its own anchor (``x: &x {<<: *x}``, which recursed without end). Every refusal, and every
reader, scanner or parser error, becomes a ``ConfigInvalid`` naming FILE:LINE:COL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from . import limits, yaml_fast
from .errors import UserError
from .limits import clip
from .model import Loc

_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# half of a UTF-16 pair: only a double-quoted escape (\ud800) makes one; no file, argv or environment can
# hold it (encoding it to UTF-8 raises), so every value read is refused here, once, wherever it stands
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_HINT = ("\\ud800-\\udfff are halves of a UTF-16 pair, not characters: write the character "
                  "itself, or \\U0001F600 for one above \\uffff")
MAX_NUMBER_CHARS = 100
SPLIT_HINT = "split the servers into several files (one per -c)"
MERGE_HINT = "merge smaller anchors, or set what all jobs share once (a tenant's environment:)"
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class ConfigError:
    loc: Loc
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}"


class ConfigInvalid(UserError):
    """The file has one or more mistakes; ``errors`` lists them in file order (at most MAX_ERRORS of them;
    ``more`` counts the rest)."""

    def __init__(self, errors: list[ConfigError], more: int = 0) -> None:
        first = errors[0]
        rest = len(errors) - 1 + more
        super().__init__(f"{first}" + (f" (and {rest} more)" if rest else ""), hint=first.hint)
        self.errors = errors
        self.more = more


class Refused(Exception):
    """A limit or rule broken at ``mark`` (a ruamel position)."""

    def __init__(self, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.mark, self.message, self.hint = mark, message, hint


class _GuardedComposer(Composer):
    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self.nodes = 0
        self.aliases = 0
        self.open_anchors: set[str] = set()
        self.merged: dict[int, int] = {}  # id of a mapping node -> the entries its merge keys copy into it

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        self._check_size(event, parent)
        if isinstance(event, AliasEvent):
            self._check_alias(event)
            node = super().compose_node(parent, index)
        else:
            anchor = self._check_node(event)
            if anchor is not None:
                self.open_anchors.add(anchor)
            try:
                node = super().compose_node(parent, index)
            finally:
                self.open_anchors.discard(anchor)
        if isinstance(index, ScalarNode) and index.tag == MERGE_TAG:
            self._count_merged(parent, index, node)
        return node

    def _count_merged(self, parent: Any, key: Any, merged: Any) -> None:
        """A merge key's entries are copied into ``parent`` when it is built: each counts against the limits
        as if written there (a few lines merging a big anchor into every job made a quadratic load that ran
        for hours, within the limits as written). Counted here, before anything is built."""
        sources = merged.value if isinstance(merged, SequenceNode) else [merged]
        added = sum(self.merged.get(id(m), 0) + len(m.value) for m in sources if isinstance(m, MappingNode))
        self.merged[id(parent)] = self.merged.get(id(parent), 0) + added
        self.nodes += 2 * added  # a key and a value each
        if self.nodes > limits.MAX_NODES:
            raise Refused(key.start_mark, f"more than {limits.MAX_NODES} values in one file, counting each "
                          "entry a merge key (<<) copies", MERGE_HINT)
        if len(parent.value) + self.merged[id(parent)] > limits.MAX_ENTRIES:
            raise Refused(key.start_mark, f"more than {limits.MAX_ENTRIES} entries in one mapping, counting "
                          "those a merge key (<<) copies", MERGE_HINT)

    def _check_size(self, event: Any, parent: Any) -> None:
        self.nodes += 1
        if self.nodes > limits.MAX_NODES:
            raise Refused(event.start_mark, f"more than {limits.MAX_NODES} values in one file", SPLIT_HINT)
        if parent is not None and len(parent.value) >= limits.MAX_ENTRIES:
            # one mapping or list this long is refused as soon as it is seen, not after the whole file
            raise Refused(event.start_mark, f"more than {limits.MAX_ENTRIES} entries in one mapping or list",
                          SPLIT_HINT)

    def _check_node(self, event: Any) -> str | None:
        """No tag, no anchor name used twice; returns the node's anchor."""
        if event.ctag is not None and str(event.ctag) != "!":
            raise Refused(event.start_mark, f"YAML tag {clip(str(event.ctag))!r} is not supported",
                          "remove the tag; quote a value to make it text")
        anchor: str | None = event.anchor
        if anchor is not None and anchor in self.anchors:  # ruamel only warned, on stderr, in many lines
            raise Refused(event.start_mark, f"anchor &{clip(str(anchor))} is defined twice",
                          "give each anchor its own name")
        return anchor

    def _check_alias(self, event: Any) -> None:
        self.aliases += 1
        if self.aliases > limits.MAX_ALIASES:
            raise Refused(event.start_mark, f"more than {limits.MAX_ALIASES} aliases (*name) in one file",
                          "write the values out, or use fewer aliases")
        if event.anchor in self.open_anchors:
            raise Refused(event.start_mark, f"alias *{clip(str(event.anchor))} is used inside its own anchor",
                          "an anchor cannot contain itself; copy the values instead")

    def compose_scalar_node(self, anchor: Any) -> Any:
        node = super().compose_scalar_node(anchor)
        value = node.value
        if len(value) > limits.MAX_VALUE_CHARS:
            raise Refused(node.start_mark, f"a value of {len(value)} characters (at most "
                          f"{limits.MAX_VALUE_CHARS})", "shorten the value")
        lone = _SURROGATE.search(value)
        if lone is not None:
            raise Refused(node.start_mark, f"a value that is not valid text (a lone surrogate "
                          f"{lone.group()!r} at character {lone.start() + 1})", SURROGATE_HINT)
        if str(node.tag) in _NUMBER_TAGS and len(value) > MAX_NUMBER_CHARS:
            raise Refused(node.start_mark, f"a number of {len(value)} characters "
                          f"(at most {MAX_NUMBER_CHARS})", "write a smaller number")
        return node


class _Referents(list[Any]):
    """A mapping's list of the mappings that merge it (CommentedMap._ref), asked for membership by
    identity. ruamel's list compares each one it holds by value (CommentedMap.__eq__ builds a dict): an
    anchor merged into 1,000 jobs cost 500,000 comparisons of whole mappings, a quadratic load."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def __contains__(self, item: object) -> bool:
        return id(item) in self.ids

    def append(self, item: Any) -> None:
        self.ids.add(id(item))
        super().append(item)


class _Constructor(RoundTripConstructor):
    def construct_yaml_map(self, node: Any) -> Iterator[CommentedMap]:
        steps = super().construct_yaml_map(node)
        data = next(steps)
        data._ref = _Referents()
        yield data
        for _ in steps:  # its entries
            pass


_Constructor.add_constructor("tag:yaml.org,2002:map", _Constructor.construct_yaml_map)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Composer = _GuardedComposer
    yaml.Constructor = _Constructor
    yaml.max_depth = limits.MAX_DEPTH
    return yaml


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` in ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _precheck(text: str, file: str) -> tuple[Loc, str, str] | None:
    """Limits that are cheap to see before parsing: they keep a huge file from taking minutes to refuse."""
    if len(text) > limits.MAX_FILE_BYTES:
        return (Loc(file, 1, 1), f"the file is larger than {limits.MAX_FILE_BYTES >> 20} MiB, the limit",
                SPLIT_HINT)
    # a line break ends a line, it does not start one: a last line without a break still counts
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines > limits.MAX_LINES:
        return (Loc(file, limits.MAX_LINES + 1, 1),
                f"the file has {lines} lines (at most {limits.MAX_LINES})", SPLIT_HINT)
    return None


def load_tree(text: str, file: str, prune: yaml_fast.Prune | None = None,
              pruned: yaml_fast.Pruned | None = None, *, raw_jobs: bool = False) -> Any:
    """``load_yaml``'s tree without comments, built from libyaml's events within the same limits when the C
    parser is installed (runtime/yaml_fast.py); the checked loader below whenever that path declines, so
    every error and broken limit is worded by it with FILE:LINE:COL. ``prune``: the mappings and lists
    whose key paths it accepts are left out either way, their paths listed in ``pruned``. ``raw_jobs``:
    see yaml_fast.load (the checked loader builds every job's mapping)."""
    if _precheck(text, file) is None and yaml_fast.available(text):
        try:
            tree = yaml_fast.load(text, prune, pruned, raw_jobs=raw_jobs)
        except yaml_fast.NotFast:
            if pruned is not None:
                pruned.paths.clear()
                pruned.spans.clear()
        else:
            return _plain_booleans(tree) if "&" in text else tree
    tree = load_yaml(text, file)
    if "&" in text:
        _plain_booleans(tree)
    if prune is not None:
        _prune(tree, (), prune, pruned if pruned is not None else yaml_fast.Pruned())
    return tree


def _plain_booleans(tree: Any) -> Any:
    """``tree`` with each anchored boolean (``&d false``) made the plain bool it stands for. ruamel keeps
    one as a ScalarBoolean, an int, for its anchor's sake: every check then took it for the number 0 or 1
    (``debug: &d false`` was refused, ``timeout: &t true`` was a second). Only a file with an anchor has
    one; its keys are left as they are (a name check words them as written). Each collection is walked
    once, however many aliases share it (a "billion laughs" file is a few shared lists)."""
    todo, seen = [tree], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            pairs: Any = dict.items(node)
        elif isinstance(node, list):
            pairs = enumerate(list.__iter__(node))
        else:
            continue
        for key, value in list(pairs):
            if isinstance(value, ScalarBoolean):
                (dict.__setitem__ if isinstance(node, dict) else list.__setitem__)(node, key, bool(value))
            elif isinstance(value, dict | list):
                todo.append(value)
    return tree


def _prune(node: Any, path: tuple[Any, ...], prune: yaml_fast.Prune, pruned: yaml_fast.Pruned) -> None:
    """What yaml_fast's pruning leaves out, taken out of a tree the checked loader built."""
    if not isinstance(node, dict) or len(path) >= yaml_fast.PRUNE_DEPTH:
        return
    for key, value in list(node.items()):
        at = (*path, key)
        if not isinstance(value, dict | list) or not all(isinstance(k, str) for k in at):
            continue
        if prune(at):
            pruned.paths.append(at)
            del node[key]
        else:
            _prune(value, at, prune, pruned)


def load_yaml(text: str, file: str) -> Any:
    """Round-trip YAML tree of ``text`` (keeps positions); any syntax error or broken limit raises
    ConfigInvalid naming FILE:LINE:COL."""
    def invalid(loc: Loc, message: str, hint: str | None) -> ConfigInvalid:
        return ConfigInvalid([ConfigError(loc, message, hint)])

    early = _precheck(text, file)
    if early is not None:
        raise invalid(*early)
    try:
        return _yaml().load(text)
    except Refused as exc:
        raise invalid(_loc(file, exc.mark), exc.message, exc.hint) from None
    except MarkedYAMLError as exc:
        raise invalid(*_marked(file, exc)) from None
    except ReaderError as exc:
        line, col = _position(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        raise invalid(Loc(file, line, col), f"the character {char!r} is not allowed in a YAML file",
                      "remove it; in double quotes write control characters as escapes (\\t)") from None
    except (YAMLError, RecursionError, ValueError, TypeError, AttributeError, KeyError) as exc:
        # a construction ruamel does not guard itself; the position of the whole file is all that is known
        raise invalid(Loc(file, 1, 1), f"cannot read the YAML: {clip(str(exc) or type(exc).__name__)}",
                      "simplify the file (no tags, no recursive aliases)") from None


def _loc(file: str, mark: Any) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1) if mark is not None else Loc(file, 1, 1)


def _marked(file: str, exc: MarkedYAMLError) -> tuple[Loc, str, str]:
    mark = exc.problem_mark or exc.context_mark
    problem = clip(exc.problem or exc.context or "YAML syntax error", 200)
    hint = "check indentation, quoting and ':' placement"
    if "maximum depth" in problem:
        problem = f"values nested more than {limits.MAX_DEPTH} levels deep"
        hint = "flatten the structure"
    elif "duplicate key" in problem and exc.context_mark is not None:
        problem = problem.split(" with value")[0]
        hint = f"the first one is at line {exc.context_mark.line + 1}; names must be unique"
    return _loc(file, mark), problem, hint
