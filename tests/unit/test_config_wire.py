"""A Config crosses a pipe packed (runtime/config_wire.py, runtime/isolate.py): every kind of value comes back
equal, frozen, with its own types, and what the jobs repeat comes back as one object."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import time
from pathlib import Path

import pytest

from taskserver.runtime import config_parse, config_wire, isolate, model
from taskserver.runtime.model import Config

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


def test_values_the_jobs_repeat_come_back_shared(tmp_path: Path) -> None:
    """The daemon holds one object for what many jobs repeat (tenant and file names, commands, schedules,
    retries, environments), each still equal to what was parsed, with its own types."""
    jobs = "".join(f"      j{i}: {{cron: \"{i % 2} 3 * * *\", command: [/bin/true, x]}}\n" for i in range(6))
    text = f"tenants:\n  a:\n    login: app\n    jobs:\n{jobs}      f: {{every: 1, command: [/bin/true]}}\n" \
           "      g: {every: 1.0, command: [/bin/true]}\n"
    parsed = config_parse.parse(text, tmp_path / "c.yaml", tmp_path)
    cfg = isolate.load_in_child(lambda: parsed)
    assert cfg == parsed
    jobs_back = cfg.tenants[0].jobs
    assert jobs_back[0].command is jobs_back[5].command and jobs_back[0].tenant is jobs_back[5].tenant
    assert jobs_back[0].trigger is jobs_back[2].trigger and jobs_back[0].trigger is not jobs_back[1].trigger
    assert jobs_back[0].retry is jobs_back[1].retry and jobs_back[0].env is jobs_back[1].env
    assert jobs_back[0].loc is not jobs_back[1].loc and jobs_back[0].loc.file is jobs_back[1].loc.file
    def seconds(cfg: Config) -> list[type]:
        return [type(getattr(j.trigger, "seconds", None)) for j in cfg.tenants[0].jobs[6:]]

    assert seconds(cfg) == seconds(parsed)


def test_repeats_sent_by_number_come_back_in_place(tmp_path: Path) -> None:
    """A value equal to one sent before goes as that one's number (config_wire's table): repeats inside
    values that hold others (a notify entry's webhook or email), interleaved with new ones, and numbers
    written as 1 or 1.0 each come back where they were, with their own types."""
    base = config_parse.parse(TEXT, tmp_path / "c.yaml", tmp_path)
    hooks = [model.Webhook(url=f"https://h{i % 2}.example/x", retries=i % 3) for i in range(6)]
    mails = [model.Email(to=(f"ops{i % 3}@example.org",)) for i in range(6)]
    notes = [model.NotifyDef(webhook=hooks[i]) if i % 2 else model.NotifyDef(email=mails[i])
             for i in range(6)]
    triggers: list[model.Cron | model.Every] = [model.Every(1), model.Cron("0 3 * * *"), model.Every(1.0)] * 2
    jobs = tuple(dataclasses.replace(base.tenants[0].jobs[0], name=f"j{i}", trigger=triggers[i],
                                     notify=(notes[i], notes[-1 - i]), retry=model.Retry(count=i % 2))
                 for i in range(6))
    tenant = dataclasses.replace(base.tenants[0], jobs=jobs, notify=(notes[3],))
    cfg = dataclasses.replace(base, tenants=(tenant, *base.tenants[1:]))
    back = isolate.load_in_child(lambda: cfg)
    assert back == cfg
    assert [j.notify for j in back.tenants[0].jobs] == [j.notify for j in jobs]
    assert [type(getattr(j.trigger, "seconds", "")) for j in back.tenants[0].jobs] == [int, str, float] * 2
    assert back.tenants[0].jobs[0].retry is back.tenants[0].jobs[2].retry
    assert back.tenants[0].jobs[0].trigger is back.tenants[0].jobs[3].trigger
    assert back.tenants[0].jobs[0].trigger is not back.tenants[0].jobs[2].trigger  # Every(1), Every(1.0)


def test_every_field_of_a_job_crosses() -> None:
    """The wire names each of JobDef's fields once (a field added to JobDef must be added there), and a
    job with every field set, and one without a position, come back equal."""
    assert sorted([*config_wire.INLINE, *config_wire.TABLED, *config_wire.OTHERS]) == sorted(
        model.JobDef.__slots__)
    full = model.JobDef(
        name="j", tenant="t", trigger=model.Every(2.5), command=("/bin/x", "y"), call=None, shell=False,
        timeout=30, windows=(model.Window(frozenset({0, 4}), time(1), time(5)),),
        catch_up=model.CatchUp.ALL, max_late=3600.0, retry=model.Retry(2, 5), queue="q", enabled=False,
        timezone="Europe/Berlin", loc=model.Loc("c.yaml", 7, 9),
        env=model.EnvDef(environment=(("A", "1"),), env_file=Path("/etc/e"), file_vars=(("B", "2"),),
                         inherit=("LANG",), loc=model.Loc("c.yaml", 8, 3)),
        notify=(model.NotifyDef(on=frozenset({model.Event.FAILURE}), command=("/bin/n",)),))
    bare = dataclasses.replace(full, name="k", loc=None, trigger=None, call="m:f", command=None)
    tenant = model.TenantDef(name="t", login="app", jobs=(full, bare))
    cfg = model.Config(path=Path("c.yaml"), exists=True, server=model.ServerSettings(),
                       tenants=(tenant, model.TenantDef(name="u", login=None)))
    back = isolate.load_in_child(lambda: cfg)
    assert back == cfg
    assert [type(j.timeout) for j in back.tenants[0].jobs] == [int, int]
    assert back.tenants[0].jobs[1].loc is None and back.tenants[1].jobs == ()
