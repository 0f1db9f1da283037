"""A tenant's ``jobs:`` -> ``JobDef``s, every mistake recorded on the walker with its file:line:column.

It runs once per job of a 10,000-job file at each start, so it looks a key up only when the job has it
(a job's keys are read into a set once, not tried one by one through CommentedMap's Python lookups),
works out a position only for an error or for the job itself, and shares what jobs repeat: a command, a
schedule, the default retry and environment are one object for all jobs that have them (also on the way
to the daemon: runtime/config_wire.py sends each once). The checks, their order and their words are
those of every other section (config_parse).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from . import config_env, config_notify, limits
from . import config_values as v
from .config_values import CALL, NAME
from .model import CatchUp, Cron, EnvDef, Every, JobDef, Loc, Retry
from .schedule import next_fire
from .windows import WINDOW_HINT, parse_window
from .yaml_raw import RawBody, RawSeq

if TYPE_CHECKING:
    from .config_parse import _Walker

JOB_KEYS = ("cron", "every", "command", "shell", "call", "timeout", "window", "catch_up", "max_late",
            "retries", "queue", "enabled", "timezone", "notify", *config_env.ENV_KEYS)
SPLIT_HINT = "run several servers, one file each (taskserver -c FILE)"
ARGV_HINT = 'write the argv as a list, e.g. command: ["/usr/bin/backup", "--all"] (or set shell: true)'
CALL_VALUE = v.pattern(CALL, "module:function")
QUEUE_VALUE = v.pattern(NAME, "a queue name")
COUNT_VALUE = v.whole(0)
NO_RETRY = Retry()
_ENV_KEYS = frozenset(config_env.ENV_KEYS)
# the keys of a job built straight from libyaml's events (_plain_job), and how their values convert
PLAIN_VALUES = (("cron", v.cron_expr), ("every", v.positive_duration), ("timeout", v.positive_duration),
                ("catch_up", v.catch_up), ("max_late", v.duration), ("queue", QUEUE_VALUE),
                ("enabled", v.boolean), ("timezone", v.zone))
PLAIN_KEYS = frozenset(("command", *(key for key, _ in PLAIN_VALUES)))


class Shared:
    """What the jobs of one file repeat, one object each: argv lists, the environment of a job without
    env keys (it names the file's first position, as config_env gives it), schedules."""

    def __init__(self, file: str) -> None:
        self.argv: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.no_env = EnvDef(loc=Loc(file, 1, 1))
        self.every: dict[tuple[type, float], Every] = {}


def jobs(w: _Walker, tenant: str, node: CommentedMap, tz: str) -> tuple[JobDef, ...]:
    """The jobs of tenant ``tenant`` (``node``: its section; ``tz``: its time zone)."""
    where = f"tenants.{tenant}.jobs"
    raw = dict.get(node, "jobs")
    found = raw if isinstance(raw, CommentedMap) else w.mapping(raw, where, w.loc(node, "jobs", value=True))
    shared = w.shared
    out = []
    for name, body in OrderedDict.items(found) if found is not None else ():
        loc = w.loc(found, name)
        if w.jobs == limits.MAX_JOBS:
            w.error(loc, f"{where}: more than {limits.MAX_JOBS} jobs in one file", SPLIT_HINT)
            break
        w.jobs += 1
        if not isinstance(name, str) or not NAME.fullmatch(name):
            w.bad_name(found, name, "job", where)
            continue
        if isinstance(body, RawBody):
            job = _plain_job(w, shared, (tenant, name, loc), body)
            if job is not None:
                out.append(job)
                continue
        job_node = body.to_map() if isinstance(body, RawBody) else body if isinstance(
            body, CommentedMap) else w.mapping(body, f"{where}.{name}", w.loc(found, name, value=True))
        if job_node is not None:
            job = _job(w, shared, f"{where}.{name}", (tenant, name, loc), job_node)
            _check_fires(w, job_node, job, tz, f"{where}.{name}")
            out.append(job)
    return tuple(out)


def _job(w: _Walker, shared: Shared, where: str, who: tuple[str, str, Loc], node: CommentedMap) -> JobDef:
    keys = dict.keys(node)
    w.check_keys(node, JOB_KEYS, where)
    shell = "shell" in keys and bool(w.value(node, "shell", v.boolean, where))
    command = _command(w, shared, node, where, shell) if "command" in keys else None
    call = w.value(node, "call", CALL_VALUE, where) if "call" in keys else None
    _command_or_call(w, node, where, who[2], shell)
    catch_up = w.value(node, "catch_up", v.catch_up, where) if "catch_up" in keys else None
    enabled = w.value(node, "enabled", v.boolean, where) if "enabled" in keys else None
    tenant, name, loc = who
    return JobDef(
        name, tenant, _trigger(w, shared, node, where), command, call, shell,
        w.value(node, "timeout", v.positive_duration, where) if "timeout" in keys else None,
        _windows(w, node, where) if "window" in keys else (), catch_up or CatchUp.LATEST,
        w.value(node, "max_late", v.duration, where) if "max_late" in keys else None,
        _retry(w, node, where) if "retries" in keys else NO_RETRY,
        w.value(node, "queue", QUEUE_VALUE, where) if "queue" in keys else None,
        enabled if enabled is not None else True,
        w.value(node, "timezone", v.zone, where) if "timezone" in keys else None, loc,
        config_env.parse(w, node, where) if not _ENV_KEYS.isdisjoint(keys) else shared.no_env,
        config_notify.parse(w, node, where) if "notify" in keys else (),
    )


def _plain_job(w: _Walker, shared: Shared, who: tuple[str, str, Loc], body: RawBody) -> JobDef | None:
    """``_job``'s JobDef for a job whose keys are all PLAIN_KEYS, with a list for command: and a plain value
    for each other key, each of which converts; else None, and the job is read from its tree (``_job``
    words what is wrong). With only these keys every other field is its default."""
    got = body.entries
    if not PLAIN_KEYS.issuperset(got) or "command" not in got or ("cron" in got and "every" in got):
        return None
    command = _plain_argv(shared, got["command"][0])
    if command is None or any(isinstance(got[k][0], RawSeq) for k in got if k != "command"):
        return None
    try:
        values = {k: w.convert(conv, got[k][0]) for k, conv in PLAIN_VALUES if k in got}
    except ValueError:
        return None
    trigger = values.get("cron")
    if "every" in values:
        seconds = values["every"]
        trigger = shared.every.setdefault((type(seconds), seconds), Every(seconds))
    tenant, name, loc = who
    enabled = values.get("enabled")
    return JobDef(name, tenant, trigger, command, None, False, values.get("timeout"), (),
                  values.get("catch_up") or CatchUp.LATEST, values.get("max_late"), NO_RETRY,
                  values.get("queue"), enabled if enabled is not None else True, values.get("timezone"), loc,
                  shared.no_env, ())


def _plain_argv(shared: Shared, raw: object) -> tuple[str, ...] | None:
    """``_command``'s answer for a list that passes its checks, else None."""
    if not isinstance(raw, RawSeq):
        return None
    argv = tuple(item for item, _ in raw.items)
    try:
        known = shared.argv.get(argv)
    except TypeError:
        return None
    if known is not None:
        return known
    if not argv or not all(isinstance(a, str) and a for a in argv) or limits.argv_problem(argv) is not None:
        return None
    return shared.argv.setdefault(argv, tuple(str(a) for a in argv))


def _command_or_call(w: _Walker, node: CommentedMap, where: str, loc: Loc, shell: bool) -> None:
    keys = dict.keys(node)
    if "command" in keys and "call" in keys:
        w.error(w.loc(node, "call"), f"{where}: a job has command: or call:, not both", "remove one of them")
    elif "command" not in keys and "call" not in keys:
        w.error(loc, f"{where}: a job needs command: (an argv list) or call: (module:function)",
                'add e.g. command: ["/usr/local/bin/report"] or call: "myapp.jobs:cleanup"')
    if shell and "call" in keys:
        w.error(w.loc(node, "shell"), f"{where}: shell: applies to command:, not call:", "remove shell:")


def _command(w: _Walker, shared: Shared, node: CommentedMap, where: str,
             shell: bool) -> tuple[str, ...] | None:
    raw = dict.__getitem__(node, "command")
    if shell:
        return _shell_command(w, node, where, raw)
    # read once, by the list's own iterator: a CommentedSeq's iterates through a Python __getitem__ per item
    argv = tuple(list.__iter__(raw)) if isinstance(raw, list) else ()
    try:
        known = shared.argv.get(argv)  # an argv equal to one checked before: the same checks, the same answer
    except TypeError:  # a list or mapping in it (unhashable): the check below words it
        known = None
    if known is not None:
        return known
    if not isinstance(raw, list) or not all(isinstance(a, str) and a for a in argv):
        w.error(w.loc(node, "command", value=True),
                f"{where}.command: expected a list of non-empty strings, got {v.kind(raw)}", ARGV_HINT)
        return None
    problem = limits.argv_problem(argv)
    if problem is not None:
        w.error(w.loc(node, "command", value=True), f"{where}.command: {problem}", ARGV_HINT)
        return None
    return shared.argv.setdefault(argv, tuple(str(a) for a in argv))


def _shell_command(w: _Walker, node: CommentedMap, where: str, raw: object) -> tuple[str, ...] | None:
    loc = w.loc(node, "command", value=True)
    problem = limits.argv_problem([raw]) if isinstance(raw, str) and raw.strip() else None
    if problem is not None:
        w.error(loc, f"{where}.command: {problem}", "write the shell command without it")
        return None
    if isinstance(raw, str) and raw.strip():
        return (raw,)
    w.error(loc, f"{where}.command: with shell: true the command is one string, got {v.kind(raw)}",
            'command: "pg_dump app | gzip > /var/backups/app.gz"')
    return None


def _trigger(w: _Walker, shared: Shared, node: CommentedMap, where: str) -> Cron | Every | None:
    keys = dict.keys(node)
    if "cron" in keys and "every" in keys:
        w.error(w.loc(node, "every"), f"{where}: a job has cron: or every:, not both",
                "remove one; a job with neither runs only when enqueued")
        return None
    if "cron" in keys:
        result: Cron | None = w.value(node, "cron", v.cron_expr, where)  # one Cron per expression (w.value)
        return result
    seconds = w.value(node, "every", v.positive_duration, where) if "every" in keys else None
    if seconds is None:
        return None
    # 1 and 1.0 are equal, not the same value: a number keeps its type
    return shared.every.setdefault((type(seconds), seconds), Every(seconds))


def _retry(w: _Walker, node: CommentedMap, where: str) -> Retry:
    raw = dict.__getitem__(node, "retries")
    if raw is None:
        return NO_RETRY
    if isinstance(raw, CommentedMap):
        w.check_keys(raw, ("count", "backoff"), f"{where}.retries")
        count = w.value(raw, "count", COUNT_VALUE, f"{where}.retries")
        backoff = w.value(raw, "backoff", v.duration, f"{where}.retries")
        return Retry(count=count or 0, backoff=backoff if backoff is not None else Retry().backoff)
    count = w.value(node, "retries", COUNT_VALUE, where)
    return Retry(count=count or 0)


def _windows(w: _Walker, node: CommentedMap, where: str) -> tuple[Any, ...]:
    raw = dict.__getitem__(node, "window")
    if raw is None:
        return ()
    items = list(enumerate(raw)) if isinstance(raw, CommentedSeq) else [(None, raw)]
    out = []
    for i, text in items:
        loc = w.loc(raw, i) if i is not None else w.loc(node, "window", value=True)
        try:
            out.append(parse_window(v.ascii_text(text)))
        except ValueError as exc:
            w.error(loc, f"{where}.window: bad window: {limits.clip(str(exc), 120)}", WINDOW_HINT)
    return tuple(out)


def _check_fires(w: _Walker, node: CommentedMap, job: JobDef, tz: str, where: str) -> None:
    """A cron whose matches all fall outside the job's windows would never run: say so now."""
    if isinstance(job.trigger, Cron) and job.windows and next_fire(job, tz, datetime.now(UTC)) is None:
        w.error(w.loc(node, "window"), f"{where}: the cron expression never matches inside the window",
                "widen the window or change the cron times so they meet")
