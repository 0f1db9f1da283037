"""The HTTP side: routes, status codes, and the dashboard pages (Starlette; handlers that read one tenant are
plain functions run in Starlette's thread pool, so a slow store read never blocks another client; what
reads every tenant, /healthz, /metrics and the dashboard, shares its readings and runs in threads of its
own: runtime/web/sweep.py)."""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import anyio.to_thread
import jinja2
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import UserError
from ..store import StoreError
from . import metrics
from .auth import COOKIE, SESSION_SECONDS, Auth, Who
from .reader import BadRequest, Conflict, NotFound, Reader, stamp
from .sweep import Sweep, heavy
from .timeline import timeline_svg

TEMPLATES = Path(__file__).parent / "templates"
MAX_BODY = 1 << 20
SyncHandler = Callable[[Request, Who], Response]
AsyncHandler = Callable[[Request, Who], Awaitable[Response]]
Handler = SyncHandler | AsyncHandler
Endpoint = Callable[[Request], Awaitable[Response]]
SWEEP_MAX_AGE = 5.0  # seconds a reading of every store answers /healthz and /metrics (http.sweep_max_age)


class JSONText(JSONResponse):
    """JSON in ASCII: a value that is not valid text (an argv's byte that is not UTF-8, a lone surrogate
    in Python) is written as its \\u escape; the UTF-8 encoding made every page that showed it a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _bytes(html: str) -> bytes:
    """A page as UTF-8, with what is not valid text (see JSONText) as backslash escapes."""
    return html.encode("utf-8", "backslashreplace")


class RunId(Convertor[int]):
    """A run id in a path: at most 18 digits (a store's ids are SQLite integers). Starlette's ``int`` took
    any number of digits: 20 overflowed SQLite's integer, 5,000 Python's int parsing, each a 500 and a
    traceback in the log for anyone to cause; a longer one now matches no route (404)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("runid", RunId())


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@functools.cache
def templates() -> jinja2.Environment:
    """Every template read and compiled once: a server started by root does it before it drops privileges
    (the installation's files may be readable by root only)."""
    sources = {p.name: p.read_text() for p in TEMPLATES.glob("*.html")}
    env = jinja2.Environment(loader=jinja2.DictLoader(sources), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    for name in sources:
        env.get_template(name)
    return env


class Views:
    """The handlers; each takes the request and who asked (checked by ``guarded``)."""

    def __init__(self, reader: Reader, auth: Auth, sweep_max_age: float) -> None:
        self.reader, self.auth = reader, auth
        self.env = templates()
        self.health = Sweep(reader.health, sweep_max_age)
        self.scrape = Sweep(functools.partial(metrics.snapshot, reader), sweep_max_age)

    async def healthz(self, request: Request) -> Response:
        """The shared reading (its start and serial in the answer): never a sweep per request."""
        got = await self.health.get()
        return JSONText({"status": "ok" if not got.value else "unhealthy", "reasons": got.value,
                         "checked": stamp(got.started), "sweep": got.serial},
                        status_code=200 if not got.value else 503)

    async def metrics(self, request: Request, who: Who) -> Response:
        got = await self.scrape.get()
        text = got.value.text
        if who.token is not None and who.token.tenants is not None:
            # a token scoped to some tenants gets their series only, as every other read (security.md)
            text = await run_in_threadpool(metrics.render, got.value.families,
                                           lambda name: _visible(who, name))
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    def tenants(self, request: Request, who: Who) -> Response:
        return JSONText([t for t in self.reader.tenants() if _visible(who, t["name"])])

    def jobs(self, request: Request, who: Who) -> Response:
        return JSONText(self.reader.jobs(request.path_params["tenant"]))

    def runs(self, request: Request, who: Who) -> Response:
        q = request.query_params
        return JSONText(self.reader.runs(
            request.path_params["tenant"], job=q.get("job") or None, state=q.get("state") or None,
            since=_time(q.get("since")), until=_time(q.get("until")), before=_int(q.get("before")),
            limit=min(_int(q.get("limit")) or 50, 500)))

    def run(self, request: Request, who: Who) -> Response:
        return JSONText(self.reader.run(request.path_params["tenant"], request.path_params["id"]))

    def queues(self, request: Request, who: Who) -> Response:
        return JSONText(self.reader.queues(request.path_params["tenant"]))

    def enqueue(self, request: Request, who: Who) -> Response:
        body = _json_body(request)
        tenant = request.path_params["tenant"]
        run_id, warnings = self.reader.enqueue(tenant, body.get("argv"), body.get("queue"))
        return JSONText({"id": run_id, "tenant": tenant, "warnings": warnings}, status_code=201)

    def run_now(self, request: Request, who: Who) -> Response:
        tenant = request.path_params["tenant"]
        run_id, warnings = self.reader.run_now(tenant, request.path_params["job"])
        return JSONText({"id": run_id, "tenant": tenant, "warnings": warnings}, status_code=201)

    def cancel(self, request: Request, who: Who) -> Response:
        tenant, run_id = request.path_params["tenant"], request.path_params["id"]
        return JSONText(self.reader.cancel(tenant, run_id, who.name))

    def pause(self, request: Request, who: Who) -> Response:
        tenant, job = request.path_params["tenant"], request.path_params["job"]
        return JSONText(self.reader.pause(tenant, job, who.name, True))

    def resume(self, request: Request, who: Who) -> Response:
        tenant, job = request.path_params["tenant"], request.path_params["job"]
        return JSONText(self.reader.pause(tenant, job, who.name, False))

    async def dashboard(self, request: Request, who: Who) -> Response:
        # it reads every visible tenant's store: in the threads for such work (sweep.heavy), so that many
        # at once (anonymous_read lets anyone ask) wait in line instead of taking every worker thread
        html = await anyio.to_thread.run_sync(self._dashboard, who, limiter=heavy())
        return HTMLResponse(_bytes(html), headers=_page_headers())

    def _dashboard(self, who: Who) -> str:
        return self.env.get_template("index.html").render(**_page(self.reader, who, self.auth))

    def run_page(self, request: Request, who: Who) -> Response:
        tenant, run_id = request.path_params["tenant"], request.path_params["id"]
        html = self.env.get_template("run.html").render(run=self.reader.run(tenant, run_id), tenant=tenant,
                                                        who=who.name)
        return HTMLResponse(_bytes(html), headers=_page_headers())

    def login_page(self, request: Request) -> Response:
        html = self.env.get_template("login.html").render(error=None)
        return HTMLResponse(_bytes(html), headers=_page_headers())

    async def login(self, request: Request) -> Response:
        try:
            raw = await _bounded_body(request)
        except ClientDisconnect:  # closed for sending its body too slowly (runtime/web/guard.py)
            return _error(400, "the client went away")
        if raw is None:
            return _error(413, f"request body over {MAX_BODY} bytes")
        fields = parse_qs(raw.decode(errors="replace"))
        token = (fields.get("token") or [""])[0]
        cookie = self.auth.login(token) if token else None
        if cookie is None:
            html = self.env.get_template("login.html").render(error="That token is not valid.")
            return HTMLResponse(_bytes(html), status_code=401, headers=_page_headers())
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
        return resp

    def logout(self, request: Request, who: Who) -> Response:
        self.auth.logout(who)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp


def guarded(auth: Auth, handler: Handler, *, write: bool = False, page: bool = False) -> Endpoint:
    """Authenticate, check the tenant scope (and write right and CSRF for actions), map errors to codes.
    A plain handler runs in Starlette's thread pool, a coroutine in the event loop."""
    async def endpoint(request: Request) -> Response:
        try:
            who = _who(request, auth, write=write)
            tenant = request.path_params.get("tenant")
            if tenant is not None and who.token is not None and not who.token.allows(tenant):
                raise HTTPError(403, f"this token may not act on tenant {tenant!r}")
            if inspect.iscoroutinefunction(handler):
                return await cast(AsyncHandler, handler)(request, who)
            return await run_in_threadpool(cast(SyncHandler, handler), request, who)
        except HTTPError as exc:
            if page and exc.status == 401:
                return RedirectResponse("/login", status_code=303)
            return _error(exc.status, str(exc))
        except (NotFound, BadRequest, Conflict, UserError) as exc:
            return _error(_status(exc), exc.message if isinstance(exc, UserError) else str(exc))
        except ClientDisconnect:  # closed for sending its body too slowly (runtime/web/guard.py)
            return _error(400, "the client went away")
    return endpoint


def _status(exc: Exception) -> int:
    """A store that cannot be used now: 503 (try again); the jobs commands' own refusal: 403 for a
    permission (their exit code 4), else 409."""
    if isinstance(exc, UserError):
        return 503 if isinstance(exc, StoreError) else 403 if exc.exit_code == 4 else 409
    return {NotFound: 404, BadRequest: 400, Conflict: 409}[type(exc)]


def create_app(reader: Reader, auth: Auth, sweep_max_age: float = SWEEP_MAX_AGE) -> Starlette:
    v = Views(reader, auth, sweep_max_age)
    t = "/api/v1/tenants/{tenant}"
    post = ["POST"]

    def read(h: Handler, page: bool = False) -> Endpoint:
        return guarded(auth, h, page=page)

    def act(h: Handler) -> Endpoint:
        return guarded(auth, h, write=True)

    return Starlette(routes=[
        Route("/healthz", v.healthz),
        Route("/metrics", read(v.metrics)),
        Route("/api/v1/tenants", read(v.tenants)),
        Route(f"{t}/jobs", read(v.jobs)),
        Route(f"{t}/runs", read(v.runs)),
        Route(t + "/runs/{id:runid}", read(v.run)),
        Route(f"{t}/queues", read(v.queues)),
        Route(f"{t}/tasks", act(v.enqueue), methods=post),
        Route(t + "/jobs/{job}/run", act(v.run_now), methods=post),
        Route(t + "/runs/{id:runid}/cancel", act(v.cancel), methods=post),
        Route(t + "/jobs/{job}/pause", act(v.pause), methods=post),
        Route(t + "/jobs/{job}/resume", act(v.resume), methods=post),
        Route("/", read(v.dashboard, page=True)),
        Route("/runs/{tenant}/{id:runid}", read(v.run_page, page=True)),
        Route("/login", v.login_page, methods=["GET"]),
        Route("/login", v.login, methods=post),
        Route("/logout", read(v.logout), methods=post),
    ])


def _who(request: Request, auth: Auth, *, write: bool) -> Who:
    who = auth.identify(request.headers.get("authorization"), request.cookies.get(COOKIE))
    if who is None:
        raise HTTPError(401, "a valid token is needed: Authorization: Bearer TOKEN")
    if write:
        if who.token is None:
            raise HTTPError(401, "actions need a token: Authorization: Bearer TOKEN")
        if not who.token.write:
            raise HTTPError(403, f"token {who.token.name!r} may only read")
        if not auth.csrf_ok(who, request.headers.get("x-csrf-token"), request.headers.get("origin"),
                            request.headers.get("host")):
            raise HTTPError(403, "missing or wrong X-CSRF-Token for this session")
    return who


def _visible(who: Who, tenant: str) -> bool:
    return who.token is None or who.token.allows(tenant)


def _error(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONText({"error": message}, status_code=status, headers=headers)


def _json_body(request: Request) -> dict[str, Any]:
    import anyio.from_thread  # noqa: PLC0415 - handlers run in a worker thread

    raw = anyio.from_thread.run(_bounded_body, request)
    if raw is None:
        raise BadRequest(f"request body over {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # a list nested 100,000 deep is not a task either
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"argv": ["cmd", "arg"], "queue": "q"}')
    return body


async def _bounded_body(request: Request) -> bytes | None:
    """The body, None when it is over MAX_BODY: read no further than that, whatever a client sends (a
    body read whole first let unauthenticated clients fill the server's memory)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length[:12]) > MAX_BODY):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _int(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(f"{text[:20]!r} is not a whole number")
    return int(text)


def _time(text: str | None) -> float | None:
    """ISO 8601 (naive means UTC) or POSIX seconds."""
    if not text:
        return None
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else _iso(text)
    except ValueError:
        raise BadRequest(f"{text[:40]!r} is not a time (ISO 8601 or POSIX seconds)") from None


def _iso(text: str) -> float:
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


def _tenant_page(reader: Reader, name: str, login: str | None, now: float) -> dict[str, Any]:
    """One tenant's part of the dashboard; a store that cannot be read is said on the page, and the other
    tenants are shown all the same."""
    try:
        jobs = reader.jobs(name)
        recent = reader.runs(name, since=now - 86400, limit=500)
        queues = reader.queues(name)
    except StoreError as exc:
        return {"name": name, "login": login, "jobs": [], "queues": [], "runs": [], "timeline": "",
                "error": f"its store cannot be read: {exc.message}"}
    picture = timeline_svg([j["name"] for j in jobs], recent, now)
    return {"name": name, "login": login, "jobs": jobs, "queues": queues, "runs": recent[:30],
            "timeline": picture, "error": None}


def _page(reader: Reader, who: Who, auth: Auth) -> dict[str, Any]:
    now = time.time()
    tenants = []
    for t in reader.config.tenants:
        if _visible(who, t.name):
            tenants.append(_tenant_page(reader, t.name, t.login, now))
    return {"tenants": tenants, "who": who.name, "csrf": auth.csrf(who),
            "can_write": who.token is not None and who.token.write,
            "daemon": reader.daemon_pid(), "now": datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S UTC")}
