"""``task_server: http:`` (runtime/config_http.py): what `taskserver run` serves the web side on. A bad value
is reported at its file:line:column with a hint; the same address rules serve `taskserver web --listen`."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserver.runtime.config import ConfigInvalid, parse_text
from taskserver.runtime.config_http import parse_listen, tokens_path
from taskserver.runtime.plans import restart_settings

F = Path("/etc/taskserver/t.yaml")


def server(http: str) -> str:
    return f"task_server:\n  max_parallel: 2\n  http:{http}\ntenants: {{}}\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        parse_text(text, F)
    return [f"{e} || {e.hint}" for e in info.value.errors]


@pytest.mark.parametrize(("http", "where", "words"), [
    ("\n    listen: 8080\n", "4:13", "expected text"),
    ("\n    listen: localhost\n", "4:13", "expected HOST:PORT with a port from 1 to 65535"),
    ("\n    listen: 127.0.0.1:0\n", "4:13", "a port from 1 to 65535"),
    ("\n    listen: 127.0.0.1:65536\n", "4:13", "a port from 1 to 65535"),
    ("\n    listen: example.org:80\n", "4:13", "'example.org' is not an IP address (or localhost)"),
    ("\n    listen: ::1:8080\n", "4:13", "write an IPv6 address in brackets: [::1]:8080"),
    ("\n    listen: '127.0.0.1:\uff18\uff10'\n", "4:13", "only ASCII"),
    ("\n    listen: 1.2.3.4:80\n    anonymous_read: yes\n", "5:21", "expected true or false"),
    ("\n    lisen: 1.2.3.4:80\n", "4:5", "unknown key 'lisen' || did you mean 'listen'?"),
    (" 8080\n", "3:9", "task_server.http: expected a mapping"),
    ("\n    max_connections: 0\n", "4:22", "max_connections: expected a number of at least 1"),
    ("\n    max_connections: 1000001\n", "4:22", "expected a number of at most 100000"),
    ("\n    max_connections: many\n", "4:22", "expected a whole number"),
    ("\n    header_timeout: 0\n", "4:21", "header_timeout: expected a duration above zero"),
    ("\n    header_timeout: soon\n", "4:21", "|| write a duration like 90s"),
    ("\n    client_timeout: -1s\n", "4:21", "client_timeout: expected a duration"),
    ("\n    idle_timeout: true\n", "4:19", "idle_timeout: expected a duration"),
    ("\n    sweep_max_age: 11y\n", "4:20", "sweep_max_age: expected a duration"),
])
def test_a_bad_http_section_is_one_error_at_its_place(http: str, where: str, words: str) -> None:
    errs = errors(server(http))
    assert len(errs) == 1, errs
    assert errs[0].startswith(f"{F}:{where}: task_server.http"), errs
    assert words in errs[0], errs
    if "listen:" in http and "lisen" not in http and "anonymous" not in http:
        assert "listen: 127.0.0.1:8181" in errs[0]  # the hint shows a good value


def test_defaults_and_values() -> None:
    cfg = parse_text(server("\n"), F)
    assert cfg.server.http is not None
    http = cfg.server.http
    assert (http.host, http.port, http.anonymous_read) == ("127.0.0.1", 8181, False)
    assert tokens_path(F, http.tokens) == Path("/etc/taskserver/tokens")
    text = server("\n    listen: '[::1]:9000'\n    tokens: web/tokens\n    anonymous_read: true\n")
    cfg = parse_text(text, F)
    http = cfg.server.http
    assert http is not None and (http.host, http.port, http.anonymous_read) == ("::1", 9000, True)
    assert tokens_path(F, http.tokens) == Path("/etc/taskserver/web/tokens")
    assert parse_text("task_server: {}\ntenants: {}\n", F).server.http is None
    assert (http.max_connections, http.header_timeout, http.client_timeout, http.idle_timeout,
            http.sweep_max_age) == (256, 10.0, 30.0, 5.0, 5.0)
    text = server("\n    max_connections: 2\n    header_timeout: 1500ms\n    client_timeout: 1m\n"
                  "    idle_timeout: 0\n    sweep_max_age: 0\n")
    http = parse_text(text, F).server.http
    assert http is not None and (http.max_connections, http.header_timeout, http.client_timeout,
                                 http.idle_timeout, http.sweep_max_age) == (2, 1.5, 60.0, 0.0, 0.0)
    assert "task_server.http" in restart_settings(cfg)  # a reload names it as needing a restart


@pytest.mark.parametrize(("text", "got"), [("0.0.0.0:80", ("0.0.0.0", 80)), ("localhost:1", ("localhost", 1)),
                                           ("[::]:8181", ("::", 8181)), ("[fe80::1]:2", ("fe80::1", 2))])
def test_listen_addresses(text: str, got: tuple[str, int]) -> None:
    assert parse_listen(text) == got
