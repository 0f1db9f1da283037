"""Hostile configuration files and command lines, generated from a seed (the same cases on every run).

``configs()`` mutates a valid file: a value swapped for a hostile one, structure that breaks limits (deep
nesting, recursive aliases, tags, many keys), control characters and truncation at random places. Each
case says whether it must be refused (``must_fail``); a mutation that may well give a valid file (a value
swapped for another valid one) is left to the checks on what was accepted.

``command_lines()`` builds `taskserver` argument lists that each hold at least one value the command must
refuse: ids and counts out of range or in other scripts' digits, queue names with '/' or line breaks, empty
or NUL-holding commands, over-long values, unknown tenants and jobs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEED = 20261201

BASE = """\
task_server:
  max_parallel: 4
  stop_timeout: 30s
  keep_ok: 14d
  keep_err: 90d
  output_tail: 4K
  memory_limit: 512M
tenants:
  shop:
    login: shop
    timezone: Europe/Berlin
    store: {sqlite: shop.sqlite}
    jobs:
      nightly:
        cron: "30 2 * * *"
        command: [/bin/true, --all]
        timeout: 1h
        catch_up: latest
        max_late: 6h
        retries: {count: 2, backoff: 5m}
        window: "mon-fri 01:00-05:00"
      poll:
        every: 90s
        call: "json:dumps"
        queue: polling
        enabled: true
  blog:
    login: blog
    jobs:
      sweep:
        every: 1h
        shell: true
        command: "echo sweep"
"""

# (old text in BASE, must a hostile replacement be refused?)
SLOTS = ["4", "30s", "14d", "90d", "4K", "512M", "shop.sqlite", "Europe/Berlin", '"30 2 * * *"', "1h",
         "latest", "6h", "2", "5m", '"mon-fri 01:00-05:00"', "90s", '"json:dumps"', "polling", "true",
         '"echo sweep"', "/bin/true", "shop", "blog"]

HOSTILE_VALUES = [
    ".nan", ".inf", "-.inf", "1e308", "-1", "-5s", "99999999999999999999d", "1" * 400, "9" * 30,
    "1000000000000000000000", '"\\0"', '"a\\0b"', '"\\x1b[31mred"', '"x\\ny"', '"\u0663"',
    '"\u0661\u0662:\u0660\u0660-\u0661\u0663:\u0660\u0660"',
    '"monkey"', '"fridge 22:00-23:00"', '"mon-fri 25:00-26:00"', '"* * * * * *"', '"61 * * * *"',
    '"0 0 30 2 *"', "/etc/passwd", "/dev/null", "../../etc/shadow", '""', "[]", "{}", "[[[]]]",
    "{a: {b: {c: 1}}}", "!foo bar", "!!binary aGVsbG8=", "!!python/object:os.system x", "*undefined",
    '"' + "x" * 70000 + '"', "null", "yes", "2024-01-01", "0x1F", "1_000", '"Etc/../../etc/passwd"',
    '"Mars/Olympus"', '"@weekly2"', '"a/b"', '"a b"', "[1, 2]", '"' + "é" * 100 + '"',
    "5e-324", "1e-300", "0.0000004", '"\\ud800"', '"x\\U0000DC00"', "&h false", '"*/ * * * *"',
]

NAMED = {
    "deep flow nesting": "a: " + "[" * 400 + "]" * 400 + "\n",
    "deep block nesting": "".join("  " * i + f"k{i}:\n" for i in range(300)),
    "NUL character": "tenants:\n  t:\n    login: a\x00b\n",
    "ESC character": "tenants:\n  t:\n    login: a\x1b[2Jb\n",
    "recursive merge key": "x: &x {<<: *x}\n",
    "recursive alias": "a: &a [1, *a]\n",
    "anchor defined twice": "task_server: &x {debug: true}\ntenants: &x {}\n",
    "memory_limit of 400 digits": "task_server:\n  memory_limit: " + "9" * 400 + "\n",
    "every .nan": "tenants:\n  t:\n    jobs:\n      j: {every: .nan, command: [x]}\n",
    "every .inf": "tenants:\n  t:\n    jobs:\n      j: {every: .inf, command: [x]}\n",
    "timeout 1e308": "tenants:\n  t:\n    jobs:\n      j: {timeout: 1e308, command: [x]}\n",
    "every 99999999999999999999d": "tenants:\n  t:\n    jobs:\n      j: {every: 99999999999999999999d, "
                                   "command: [x]}\n",
    "retries 10^21": "tenants:\n  t:\n    jobs:\n      j: {retries: 1000000000000000000000, command: [x]}\n",
    "NUL in a path": 'task_server:\n  state_dir: "/var/\\0lib"\n',
    "NUL in a command": 'tenants:\n  t:\n    jobs:\n      j: {command: ["/bin/true\\0x"]}\n',
    "install_dir missing": "task_server:\n  install_dir: /nonexistent/taskserver/app\n",
    "run_as naming no user": "task_server:\n  run_as: no-such-user-4711\n",
    "store /etc/passwd": "tenants:\n  t:\n    store: {sqlite: /etc/passwd}\n",
    "store /dev/null": "tenants:\n  t:\n    store: {sqlite: /dev/null}\n",
    "store ../../etc/shadow": "tenants:\n  t:\n    store: {sqlite: ../../etc/shadow}\n",
    "window monkey": 'tenants:\n  t:\n    jobs:\n      j: {window: "monkey", command: [x]}\n',
    "window fridge": 'tenants:\n  t:\n    jobs:\n      j: {window: "fridge 22:00-23:00", command: [x]}\n',
    "Unicode digits in cron": 'tenants:\n  t:\n    jobs:\n      j: {cron: "\u0663 * * * *", command: [x]}\n',
    "Unicode digits in a window": 'tenants:\n  t:\n    jobs:\n      j: {window: "\u0662\u0662:00-23:00", '
                                  'command: [x]}\n',
    "unknown tag": "tenants: !include other.yaml\n",
    "unknown tag on a value": "task_server:\n  debug: !secret true\n",
    "10 MB of comments": ("# " + "x" * 97 + "\n") * 100_000,
    "100,000 unknown keys": "".join(f"key{i}: {i}\n" for i in range(100_000)),
    "60,000 jobs": "tenants:\n  t:\n    jobs:\n" + "".join(f"      j{i}: {{command: [x]}}\n"
                                                       for i in range(60_000)),
    "20,000 jobs in less than 1 MiB": "tenants:\n  t:\n    jobs:\n" + "".join(
        f"      j{i}: {{command: [x]}}\n" for i in range(20_000)),
    "50,000 unknown keys in less than 1 MiB": "".join(f"k{i}: 1\n" for i in range(50_000)),
    "10 MB value": "task_server:\n  run_as: " + "x" * 10_000_000 + "\n",
    "number of 5000 digits": "task_server:\n  max_parallel: " + "7" * 5000 + "\n",
    # each merge copies the anchor's entries: ruamel's add_referent made the load quadratic (68 s, and hours)
    "256 keys merged into 999 jobs": "tenants:\n  t:\n    environment: &e {" + ", ".join(
        f"E{i}: v" for i in range(256)) + "}\n    jobs:\n" + "".join(
        f"      j{i}: {{command: [/bin/true], environment: {{<<: *e}}}}\n" for i in range(999)),
    "9,990 keys merged into 999 jobs": "tenants:\n  t:\n    jobs:\n      j0: &e {" + ", ".join(
        f"E{i}: v" for i in range(9_990)) + "}\n" + "".join(
        f"      j{i}: {{<<: *e}}\n" for i in range(1, 999)),
    "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
}


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    must_fail: bool


def _swap_value(rng: random.Random) -> Case:
    slot = rng.choice(SLOTS)
    value = rng.choice(HOSTILE_VALUES)
    start = BASE.index(slot)
    text = BASE[:start] + value + BASE[start + len(slot):]
    return Case(f"value {slot!r} -> {value[:30]!r}", text, must_fail=False)


def _nest(rng: random.Random) -> Case:
    depth = rng.randint(33, 3000)
    if rng.random() < 0.5:
        return Case(f"flow nesting {depth}", "tenants: " + "{a: " * depth + "1" + "}" * depth + "\n", True)
    return Case(f"block nesting {depth}", "".join("  " * i + "- \n" for i in range(min(depth, 400))), True)


def _control(rng: random.Random) -> Case:
    at = rng.randrange(len(BASE))
    char = rng.choice("\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\ufeff\ufffe")
    return Case(f"control {char!r} at {at}", BASE[:at] + char + BASE[at:], must_fail=char not in "\x85\ufeff")


def _truncate(rng: random.Random) -> Case:
    at = rng.randrange(1, len(BASE))
    return Case(f"truncated at {at}", BASE[:at], must_fail=False)


def _garbage(rng: random.Random) -> Case:
    at = rng.randrange(len(BASE))
    junk = "".join(rng.choice("{}[]:,&*!|>'\"%@`#- \n\t?\u0663é") for _ in range(rng.randint(1, 12)))
    return Case(f"junk {junk!r} at {at}", BASE[:at] + junk + BASE[at:], must_fail=False)


def _aliases(rng: random.Random) -> Case:
    kind = rng.choice(["self", "merge-self", "many", "tag"])
    if kind == "self":
        return Case("alias inside its anchor", "tenants: &t {x: *t}\n", True)
    if kind == "merge-self":
        return Case("merge key on itself", "task_server: &s\n  <<: *s\n  debug: true\n", True)
    if kind == "many":
        n = rng.randint(1001, 3000)
        return Case(f"{n} aliases", "a: &a 1\nb: [" + ", ".join(["*a"] * n) + "]\n", True)
    tag = rng.choice(["!x", "!!set", "!!omap", "!!python/name:os.system", "!<tag:example.com,2000:x>"])
    return Case(f"tag {tag}", f"tenants: {tag} {{}}\n", True)


def _keys(rng: random.Random) -> Case:
    n = rng.randint(200, 3000)
    keys = "".join(f"  unknown_{i}_{rng.randrange(10**6)}: {i}\n" for i in range(n))
    return Case(f"{n} unknown keys", "task_server:\n" + keys, True)


GENERATORS = [_swap_value] * 6 + [_nest, _control, _control, _truncate, _garbage, _garbage, _aliases, _keys]


def configs(n: int, seed: int = SEED) -> list[Case]:
    """``n`` generated cases (deterministic for a seed), then the named ones from the issue."""
    rng = random.Random(seed)
    cases = [rng.choice(GENERATORS)(rng) for _ in range(n)]
    return cases + [Case(name, text, True) for name, text in NAMED.items()]


# -- command lines ----------------------------------------------------------------------------------------
BAD_NUMBERS = ["0", "-1", "99999999999999999999999", "1" * 400, "\u0663", "\u00b2", "1e3", "0x10", "", " 1",
               "1.5",
               "nan", "9223372036854775808"]
BAD_NAMES = ["", "a/b", "../..", "x\nstate=OK", "x\x1b[2J", "-", "a b", "é", "x" * 100_000, "\u2028", "..",
             ".hidden"]
BAD_ARGV = [[""], ["", "x"], ["a\x00b"], ["/bin/true", "a\x00"], ["x" * 200_000], ["/bin/true"] * 5000]


def command_lines(n: int, seed: int = SEED) -> list[tuple[str, list[str]]]:
    """``n`` (name, argv) pairs for `taskserver -c CFG ...`, each with a value the command must refuse."""
    rng = random.Random(seed)
    makers = [
        lambda: ["jobs", "show", rng.choice(BAD_NUMBERS)],
        lambda: ["jobs", "finish", rng.choice(BAD_NUMBERS), "--status", "ok"],
        lambda: ["jobs", "history", "--limit", rng.choice(BAD_NUMBERS)],
        lambda: ["jobs", "enqueue", "--queue", rng.choice(BAD_NAMES), "--", "/bin/true"],
        lambda: ["jobs", "enqueue", "--", *rng.choice(BAD_ARGV)],
        lambda: ["jobs", "run", rng.choice(BAD_NAMES)],
        lambda: ["jobs", "list", "--tenant", rng.choice(BAD_NAMES)],
        lambda: ["jobs", "history", rng.choice(BAD_NAMES)],
        lambda: ["jobs", "finish", "1", "--status", "ok", "--message", "m" * rng.randint(4097, 200_000)],
        lambda: ["jobs", "finish", "1", "--status", rng.choice(["OK", "maybe", ""])],
        lambda: ["tenants", "enable", rng.choice(BAD_NAMES[1:]), "--login", rng.choice(BAD_NAMES)],
        lambda: ["tenants", "disable", rng.choice(BAD_NAMES)],
        lambda: ["init-config", rng.choice(["/proc/x/taskserver.yaml", "/dev/null", "/", "x" * 5000])],
        lambda: ["run", "--time-limit", rng.choice(["-5", "nan", "inf", "0", "1e400", "x"])],
        lambda: [rng.choice(["nope", "jobs nope", "--bogus", "jobs show"])],
    ]
    out = []
    for i in range(n):
        argv = makers[i % len(makers)]()
        out.append((f"{i}: {' '.join(a[:20] for a in argv)[:80]!r}", argv))
    return out
