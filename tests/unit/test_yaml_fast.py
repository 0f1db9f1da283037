"""The libyaml path (runtime/yaml_fast.py) builds the same tree as the checked round-trip loader (values,
their types, the line and column of every key, value and item, flow or block style), or declines; it
declines on every broken limit and every error, so the checked loader words them (FILE:LINE:COL) and nothing
over a limit is ever built. Compared on hand-written files and on each limit
(tests/fuzz/test_fuzz_yaml_fast.py compares them on the fuzz suite's 700 hostile files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from taskserver.runtime import config_parse, config_yaml, limits, yaml_fast

pytestmark = pytest.mark.skipif(yaml_fast.CParser is None, reason="the C parser is not installed")

DOCS = [
    "a: 1\nb: [x, y]\n",
    "# comment\ntenants:\n  t:\n    login: \u00fcser  # \u00e4\u00f6\n    jobs:\n"
    "      j\u00e9: {cron: '* * * * *'}\n"
    "      k:\n        command: [\"/bin/echo\", \"\u2603 snow\"]\n        every: 1m\n",
    "base: &b {x: 1, y: [1, 2.5, true, null, 0o17, 0x1F, 1_000, 2026-01-01, .inf, -0.0]}\nother: *b\n",
    "list:\n- one\n- - nested\n  - items\n- key: value\n- {}\n- []\n",
    "a: |\n  literal\n  text\nb: >\n  folded\n  text\nc: &t plain\nd: *t\ne: 'single'\nf: \"dbl\\t\"\n",
    "1: int key\n2.5: float key\nfalse: bool key\n~: null key\nyes: no\n",
    "empty:\nalso: ~\n'': blank key\nlast:\n",
    "- \n- x\n- a:\n  b:\n- c:\n",
    "x:\n  a:\n\n\n# c\nb: 1\n",
    "",
    "---\n",
    "- just\n- a list\n- \U0001f600 wide: [\U0001f600, x]\n",
    "plain scalar\n",
]


def shape(node: Any, seen: dict[int, int] | None = None) -> list[Any]:
    """Values with their types, each mapping's and list's position table and style, depth first; a
    collection met again (an alias) is named by when it was first met, so alias bombs stay cheap."""
    seen = {} if seen is None else seen
    out: list[Any] = [type(node).__name__]
    if isinstance(node, CommentedMap | CommentedSeq):
        if id(node) in seen:
            return [*out, "again", seen[id(node)]]
        seen[id(node)] = len(seen)
        out += [(node.lc.line, node.lc.col), dict(node.lc.data or {}), node.fa.flow_style()]
        items = node.items() if isinstance(node, CommentedMap) else enumerate(node)
        for key, item in items:
            out += [repr(key), type(key).__name__, *shape(item, seen)]
    else:
        out.append(repr(node))
    return out


def pure(text: str) -> Any:
    return config_yaml.load_yaml(text, "f.yaml")


@pytest.mark.parametrize("text", DOCS)
def test_same_tree_types_and_positions(text: str) -> None:
    fast = yaml_fast.load(text)
    assert fast == pure(text)
    assert shape(fast) == shape(pure(text))


LIMITS = {
    "depth": "a: " + "[" * 40 + "]" * 40 + "\n",
    "aliases": "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n",
    "entries": "a: [" + ", ".join(["1"] * 10_001) + "]\n",
    "entries of a mapping": "{" + ", ".join(f"k{i}: 1" for i in range(10_001)) + "}\n",
    "value": "a: '" + "x" * 70_000 + "'\n",
    "number": "a: " + "1" * 101 + "\n",
    "tag": "a: !!python/object:os.system x\n",
    "local tag": "a: !foo [1]\n",
    "anchor twice": "a: &x 1\nb: &x 2\n",
    "alias inside its anchor": "x: &x {a: *x}\n",
    "undefined alias": "x: *nope\n",
    "nodes": "a: [" + "], [".join(", ".join(["1"] * 9_999) for _ in range(11)) + "]\n",
    "duplicate key": "a: 1\na: 2\n",
    "merge key": "b: &b {x: 1}\nc:\n  <<: *b\n",
    "two documents": "a: 1\n---\nb: 2\n",
    "syntax": "a: [1, 2\n",
    "control character": "a: \x07\n",
    "empty value in flow style": "a: {b: }\n",
    "empty key": "? \n: x\n",
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_the_fast_path_declines_and_the_checked_loader_answers(name: str) -> None:
    text = LIMITS[name]
    with pytest.raises(yaml_fast.NotFast):
        yaml_fast.load(text)
    try:
        expected: Any = pure(text)
    except config_yaml.ConfigInvalid as exc:
        with pytest.raises(config_yaml.ConfigInvalid) as got:
            config_yaml.load_tree(text, "f.yaml")
        assert str(got.value) == str(exc) and str(got.value).startswith("f.yaml:")
        assert got.value.hint == exc.hint
    else:  # a rare feature the fast path leaves to the checked loader (merge keys)
        assert shape(config_yaml.load_tree(text, "f.yaml")) == shape(expected)


def test_limits_hold_on_the_fast_path_too() -> None:
    """Just under each limit the fast path builds the tree; one over, it declines."""
    deep = "a: " + "[" * (limits.MAX_DEPTH - 1) + "]" * (limits.MAX_DEPTH - 1) + "\n"
    assert yaml_fast.load(deep) == pure(deep)
    too_deep = "a: " + "[" * limits.MAX_DEPTH + "]" * limits.MAX_DEPTH + "\n"
    with pytest.raises(yaml_fast.NotFast):
        yaml_fast.load(too_deep)
    with pytest.raises(config_yaml.ConfigInvalid, match=f"more than {limits.MAX_DEPTH} levels"):
        config_yaml.load_tree(too_deep, "f.yaml")
    many = "a: [" + ", ".join(["1"] * limits.MAX_ENTRIES) + "]\n"
    assert len(yaml_fast.load(many)["a"]) == limits.MAX_ENTRIES


def test_a_yaml_version_line_takes_the_checked_path() -> None:
    assert not yaml_fast.available("%YAML 1.1\n---\na: yes\n")
    assert config_yaml.load_tree("%YAML 1.1\n---\na: yes\n", "f.yaml") == {"a": True}


def test_a_big_config_is_built_by_the_fast_path(tmp_path: Path) -> None:
    jobs = "".join(f"      j{i}:\n        cron: \"{i % 60} 3 * * *\"\n        command: [\"/bin/true\"]\n"
                   for i in range(200))
    text = f"tenants:\n  t:\n    login: me\n    jobs:\n{jobs}"
    assert shape(yaml_fast.load(text)) == shape(pure(text))
    cfg = config_parse.parse(text, tmp_path / "c.yaml", tmp_path)
    assert [j.name for j in cfg.tenants[0].jobs] == [f"j{i}" for i in range(200)]
    assert cfg.tenants[0].jobs[7].loc is not None and cfg.tenants[0].jobs[7].loc.line == 4 + 7 * 3 + 1
