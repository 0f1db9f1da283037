"""Jobs read straight from libyaml's events (runtime/yaml_raw.py, config_jobs._plain_job) are the jobs the
tree gives: the same Config (values and their types), the same errors word for word, and a job's body that
goes back to the tree (any key or value the direct reader does not take, met at any point of the body) is
the tree's own mapping (values, positions, styles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_yaml_fast import shape

from taskserver.runtime import config_parse, config_yaml, yaml_fast
from taskserver.runtime.yaml_raw import RawBody

pytestmark = pytest.mark.skipif(yaml_fast.CParser is None, reason="the C parser is not installed")

HEAD = "task_server:\n  max_parallel: 2\ntenants:\n  t:\n    login: app\n    jobs:\n"
BODIES = [
    # taken as they are
    '      a:\n        cron: "0 3 * * *"\n        command: [/bin/x, "y z"]\n',
    "      a:\n        every: 90\n        command:\n          - /bin/x\n          - 'q'\n"
    "        timeout: 1.5\n",
    "      a: {every: 1m, command: [/bin/x], queue: q, catch_up: all, max_late: 2h, enabled: false}\n",
    "      a:\n        command: [/bin/x]\n        timezone: Europe/Berlin\n        enabled: true\n",
    "      a:\n        command: [/bin/x]\n      b:\n        command: [/bin/x]\n        every: 1.0\n"
    "      c:\n        command: [/bin/x]\n        every: 1\n",
    # read from the tree: other keys, nested values, anchors, aliases, tags, empty values, met anywhere
    "      a:\n        command: [/bin/x]\n        retries: {count: 2}\n        every: 5\n",
    "      a:\n        every: 5\n        command: [/bin/x]\n        window: [mon-fri 01:00-02:00]\n",
    "      a:\n        command: [/bin/x, [y]]\n",
    "      a:\n        command: [/bin/x, &v y]\n      b:\n        command: [/bin/x, *v]\n",
    "      a:\n        command: &c [/bin/x]\n      b:\n        command: *c\n",
    "      a: &j\n        command: [/bin/x]\n      b: *j\n",
    "      a:\n        command: [/bin/x, !!str y]\n",
    "      a:\n        command:\n          - /bin/x\n          -\n",
    "      a:\n        command: [/bin/x]\n        every:\n",
    "      a:\n        command: [/bin/x]\n        env_file: /etc/e\n",
    "      a:\n        command: [/bin/x]\n        environment: {A: b}\n        notify: {email: o@x.org}\n",
    "      a:\n        command: '/bin/x y'\n        shell: true\n",
    "      a:\n        call: m:f\n        every: 5\n",
    "      a:\n        1: x\n        command: [/bin/x]\n",
    "      a:\n        ? [k]\n        : v\n",
    "      a:\n        command: [/bin/x]\n        command: [/bin/y]\n",
    "      a:\n        command: [/bin/x]\n        cron: [a, b]\n",
    # mistakes: worded by the walker on the tree
    '      a:\n        cron: "0 25 * * *"\n        command: [/bin/x]\n',
    '      a:\n        cron: "0 3 * * *"\n        every: 5\n        command: [/bin/x]\n',
    "      a:\n        command: [/bin/x, '']\n        every: -1\n",
    "      a:\n        command: []\n",
    "      a:\n        command: /bin/x\n",
    "      a:\n        command: [/bin/x]\n        timout: 5\n",
    "      a:\n        every: 5\n",
    "      a:\n        command: [/bin/x]\n        timeout: yes\n        queue: 'bad queue'\n"
    "        timezone: Mars\n",
    "      a:\n        command: [/bin/x]\n        enabled: 1\n        catch_up: most\n",
    "      a: {}\n      b:\n      c: [x]\n",
]


def outcome(text: str, raw: bool) -> str:
    try:
        return repr(config_parse.parse(text, Path("/c.yaml"), Path("/s"), raw_jobs=raw))  # with the types
    except config_yaml.ConfigInvalid as exc:
        return "\n".join(f"{e} || {e.hint}" for e in exc.errors) + f" +{exc.more}"


@pytest.mark.parametrize("body", BODIES)
def test_the_same_config_or_the_same_errors(body: str) -> None:
    text = HEAD + body
    assert outcome(text, raw=True) == outcome(text, raw=False)


def built(node: Any) -> Any:
    """``node`` with each RawBody made into its mapping."""
    if isinstance(node, RawBody):
        return node.to_map()
    if isinstance(node, dict):
        for key, value in node.items():
            dict.__setitem__(node, key, built(value))
    return node


@pytest.mark.parametrize("body", BODIES)
def test_a_body_is_the_trees_mapping(body: str) -> None:
    text = HEAD + body
    try:
        expected = yaml_fast.load(text)
    except yaml_fast.NotFast:
        with pytest.raises(yaml_fast.NotFast):
            yaml_fast.load(text, raw_jobs=True)
        return
    assert shape(built(yaml_fast.load(text, raw_jobs=True))) == shape(expected)


def test_plain_jobs_are_read_straight() -> None:
    """The common job (a schedule and a command) never becomes a tree."""
    text = HEAD + BODIES[0] + BODIES[2].replace("      a:", "      b:")
    tree = yaml_fast.load(text, raw_jobs=True)
    assert all(isinstance(body, RawBody) for body in tree["tenants"]["t"]["jobs"].values())
