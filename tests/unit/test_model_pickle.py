"""A Config crosses a pipe pickled (runtime/isolate.py): every kind of value comes back equal and frozen."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from taskserver.runtime import config_parse, isolate

TEXT = """\
task_server:
  max_parallel: 3
  memory_limit: 64M
tenants:
  a:
    login: app
    timezone: Europe/Berlin
    store: {sqlite: a.db}
    jobs:
      nightly: {cron: "30 2 * * *", command: [/bin/true], window: "mon-fri 01:00-05:00", retries: {count: 2}}
      often: {every: 90s, call: "mod.sub:fn", catch_up: all, max_late: 1h, queue: q, timeout: 30s}
      shell: {command: "echo hi | cat", shell: true, enabled: false}
  b:
    login:
"""


def test_a_config_round_trips(tmp_path: Path) -> None:
    cfg = config_parse.parse(TEXT, tmp_path / "c.yaml", tmp_path)
    back = pickle.loads(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == cfg
    assert back.tenants[0].jobs[0].windows == cfg.tenants[0].jobs[0].windows
    assert back.tenants[0].jobs[1].loc == cfg.tenants[0].jobs[1].loc
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.tenants[0].jobs[0].name = "x"  # type: ignore[misc]


def test_through_the_loader_child(tmp_path: Path) -> None:
    cfg = isolate.load_in_child(lambda: config_parse.parse(TEXT, tmp_path / "c.yaml", tmp_path))
    assert cfg == config_parse.parse(TEXT, tmp_path / "c.yaml", tmp_path)
