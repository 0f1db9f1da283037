"""The C-parser path (runtime/yaml_fast.py) builds the same tree, with the same positions, as the pure
round-trip loader, and a bad file gets the pure loader's error either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from taskserver.runtime import config_parse, yaml_fast

pytestmark = pytest.mark.skipif(not yaml_fast.available(""), reason="the C parser is not installed")

DOCS = [
    "a: 1\nb: [x, y]\n",
    "# comment\ntenants:\n  t:\n    login: \u00fcser  # \u00e4\u00f6\n    jobs:\n"
    "      j\u00e9: {cron: '* * * * *'}\n"
    "      k:\n        command: [\"/bin/echo\", \"\u2603 snow\"]\n        every: 1m\n",
    "base: &b {x: 1, y: [1, 2.5, true, null, 0o17, 2026-01-01]}\nother:\n  <<: *b\n  z: no\n",
    "list:\n- one\n- - nested\n  - items\n- key: value\n",
    "",
]


def _positions(node: Any) -> list[Any]:
    """Each mapping's and list's own position table (key/item -> line and column), depth first."""
    out: list[Any] = []
    if isinstance(node, CommentedMap | CommentedSeq):
        out += [(node.lc.line, node.lc.col), dict(node.lc.data or {})]
        for item in node.values() if isinstance(node, CommentedMap) else node:
            out += _positions(item)
    return out


@pytest.mark.parametrize("text", DOCS)
def test_same_tree_and_positions(text: str) -> None:
    pure = YAML(typ="rt").load(text)
    fast = yaml_fast.load(text)
    assert fast == pure
    assert type(fast) is type(pure)
    assert _positions(fast) == _positions(pure)


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "a: [1, 2\n", "a:\n  - x\n b: y\n",
                                  "\u00e4\u00f6: 1\n  bad: : x\n"])
def test_errors_are_the_pure_loaders(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(config_parse.ConfigInvalid) as fast:
        config_parse.load_yaml(text, "f.yaml")
    monkeypatch.setattr(yaml_fast, "available", lambda _text: False)  # the pure loader alone
    with pytest.raises(config_parse.ConfigInvalid) as pure:
        config_parse.load_yaml(text, "f.yaml")
    assert str(fast.value) == str(pure.value)
    assert fast.value.hint == pure.value.hint


def test_a_yaml_version_line_takes_the_pure_path() -> None:
    assert not yaml_fast.available("%YAML 1.1\n---\na: yes\n")
    assert config_parse.load_yaml("%YAML 1.1\n---\na: yes\n", "f.yaml") == {"a": True}


def test_a_big_config_loads(tmp_path: Path) -> None:
    jobs = "".join(f"      j{i}:\n        cron: \"{i % 60} 3 * * *\"\n        command: [\"/bin/true\"]\n"
                   for i in range(200))
    text = f"tenants:\n  t:\n    login: me\n    jobs:\n{jobs}"
    cfg = config_parse.parse(text, tmp_path / "c.yaml", tmp_path)
    assert [j.name for j in cfg.tenants[0].jobs] == [f"j{i}" for i in range(200)]
    assert cfg.tenants[0].jobs[7].loc is not None and cfg.tenants[0].jobs[7].loc.line == 4 + 7 * 3 + 1
