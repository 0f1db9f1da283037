"""Who is asking: a bearer token, or a browser session made from one; what they may do; CSRF for sessions.

Sessions are HMAC-signed cookies (HttpOnly, SameSite=Strict) naming the token they came from; a token
removed from the file ends its sessions at the next start. A browser's state-changing request must carry
the session's CSRF value in ``X-CSRF-Token`` (a page of this server reads it from its own HTML; another
site's page cannot) and, when the browser sends one, an ``Origin`` that is this server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from .tokens import Token, find

COOKIE = "taskserver_session"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Who:
    token: Token | None  # None: an anonymous reader
    session: str | None  # the session nonce when the request came with a cookie (CSRF applies)
    expires: float = 0.0  # when that session ends on its own

    @property
    def name(self) -> str:
        return self.token.name if self.token else "anonymous"


class Auth:
    def __init__(self, tokens: list[Token], anonymous_read: bool) -> None:
        self.tokens = tokens
        self.anonymous_read = anonymous_read
        self.secret = secrets.token_bytes(32)  # per process: a restart logs browsers out
        self.ended: dict[str, float] = {}  # nonces of sessions signed out -> when they would have expired

    def identify(self, authorization: str | None, cookie: str | None) -> Who | None:
        if authorization:
            scheme, _, value = authorization.partition(" ")
            tok = find(self.tokens, value.strip()) if scheme.lower() == "bearer" else None
            return Who(tok, None) if tok else None
        if cookie:
            return self._session(cookie)
        return Who(None, None) if self.anonymous_read else None

    def login(self, presented: str) -> str | None:
        """A session cookie value for a valid token, else None."""
        tok = find(self.tokens, presented)
        if tok is None:
            return None
        body = json.dumps({"t": tok.name, "e": int(time.time()) + SESSION_SECONDS,
                           "n": secrets.token_urlsafe(12)}).encode()
        payload = base64.urlsafe_b64encode(body).decode()
        return f"{payload}.{self._sign(payload)}"

    def _session(self, cookie: str) -> Who | None:
        payload, _, sig = cookie.partition(".")
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload))
            name, expires, nonce = str(data["t"]), int(data["e"]), str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        tok = next((t for t in self.tokens if t.name == name), None)
        if tok is None or expires < time.time() or nonce in self.ended:
            return None
        return Who(tok, nonce, expires)

    def logout(self, who: Who) -> None:
        """End a browser's session here too: its cookie stops working at once, not when it expires."""
        if who.session is None:
            return
        now = time.time()
        for nonce in [n for n, until in self.ended.items() if until < now]:  # expired anyway
            del self.ended[nonce]
        self.ended[who.session] = who.expires

    def csrf(self, who: Who) -> str:
        return self._sign(f"csrf:{who.session}") if who.session else ""

    def csrf_ok(self, who: Who, header: str | None, origin: str | None, host: str | None) -> bool:
        if who.session is None:
            return True  # a bearer token is never sent by a browser on its own
        if origin is not None and host is not None and origin.split("://", 1)[-1] != host:
            return False
        return header is not None and hmac.compare_digest(header, self.csrf(who))

    def _sign(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()
