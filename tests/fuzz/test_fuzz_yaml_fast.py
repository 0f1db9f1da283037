"""The libyaml path (runtime/yaml_fast.py) on the fuzz suite's 700 generated hostile files: for each file the
fast path reads, the tree it builds equals the checked loader's in values, types, positions and styles, or it
declines (and load_tree then gives the checked loader's own answer, tree or error)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fuzzgen import configs

from taskserver.runtime import config_parse, config_yaml, limits, yaml_fast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_yaml_fast import pure, shape

pytestmark = pytest.mark.skipif(yaml_fast.CParser is None, reason="the C parser is not installed")


def _fast(text: str) -> Any:
    """The fast path as load_tree takes it (for files within the size limits that it reads)."""
    if len(text) > limits.MAX_FILE_BYTES or not yaml_fast.available(text):
        raise yaml_fast.NotFast("not taken")
    return yaml_fast.load(text)


def test_the_fuzz_files_give_the_same_tree_or_the_checked_loaders_answer() -> None:
    """Every generated hostile file: the fast tree equals the checked loader's, or the fast path declines
    (then load_tree gives the checked loader's own answer, tree or error)."""
    built = declined = 0
    for case in configs(700):
        try:
            fast = _fast(case.text)
        except yaml_fast.NotFast:
            declined += 1
            continue
        built += 1
        try:
            expected = pure(case.text)
        except config_yaml.ConfigInvalid as exc:
            pytest.fail(f"{case.name}: the fast path built a tree the checked loader refuses: {exc}")
        assert shape(fast) == shape(expected), case.name
    assert built > 100 and declined > 50  # both paths were exercised


def _outcome(text: str, raw: bool) -> str:
    try:
        return repr(config_parse.parse(text, Path("/c.yaml"), Path("/s"), raw_jobs=raw))
    except config_yaml.ConfigInvalid as exc:
        return "\n".join(f"{e} || {e.hint}" for e in exc.errors) + f" +{exc.more}"


def test_the_fuzz_files_give_the_same_config_with_jobs_read_straight() -> None:
    """Every generated hostile file: the config reader gives the same Config (with its types) or the same
    errors whether plain jobs are built straight from libyaml's events (runtime/yaml_raw.py) or from the
    tree."""
    for case in configs(700):
        assert _outcome(case.text, raw=True) == _outcome(case.text, raw=False), case.name
