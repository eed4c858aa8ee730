"""The UI's guard: one ASGI middleware in front of every request.

In order, for each HTTP request:

1. the Host header must name this server (``127.0.0.1:PORT``, ``localhost:PORT`` or the bound
   address), which defeats DNS rebinding (400 otherwise);
2. ``?token=T`` with the token printed by ``batchframe ui`` is exchanged for an HttpOnly,
   SameSite=Strict cookie, and the browser is sent to the same URL without it;
3. every page needs that cookie (401 without it, 403 with a wrong one); static files do not;
4. anything but GET/HEAD must be a POST of a urlencoded form, with an Origin (or Referer) of this
   server and a ``csrf`` field that matches the session (403 otherwise);
5. every response carries a strict Content-Security-Policy and the other protective headers; no
   CORS header is ever sent.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import URL, Headers, MutableHeaders, QueryParams
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "batchframe_ui"  # + "_PORT": cookies ignore ports, and two servers must not share one
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 1024 * 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
_FORM_TYPE = "application/x-www-form-urlencoded"


def url_host(host: str) -> str:
    """``host`` as it appears in a URL or a Host header (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values this server answers to."""
    return frozenset(f"{name}:{port}" for name in ("127.0.0.1", "localhost", url_host(host)))


def csrf_token(secret: bytes, session: str) -> str:
    """The CSRF token of a session: an HMAC of its cookie, so it needs no storage."""
    return hmac.new(secret, session.encode("utf-8"), hashlib.sha256).hexdigest()


class SecurityMiddleware:
    """Host check, token-to-cookie exchange, session check, CSRF and Origin checks, security headers.

    Args:
        app: the application behind it.
        token: the secret of the URL ``batchframe ui`` prints; also the session cookie's value.
        secret: the key of the CSRF tokens (random per server).
        hosts: the Host header values accepted.
        public_prefixes: paths served without a session (the vendored static files).
        port: the server's port, part of the cookie's name.

    The CSRF token of the request's session is put in ``request.state.csrf`` for the templates.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        secret: bytes,
        hosts: Iterable[str],
        public_prefixes: tuple[str, ...] = ("/static/",),
        port: int,
    ) -> None:
        self.app = app
        self.token = token
        self.secret = secret
        self.hosts = frozenset(hosts)
        self.public_prefixes = public_prefixes
        self.cookie_name = f"{COOKIE_NAME}_{port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        send = _with_headers(send, static=scope["path"].startswith(self.public_prefixes))
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None and scope["method"] == "POST":
            body, refusal = await self._checked_form(headers, receive)
            if refusal is None:
                receive = _replay(body, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["csrf"] = csrf_token(self.secret, self.token)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        """The response that refuses this request before its body is read, or None to go on."""
        if headers.get("host", "") not in self.hosts:
            return _page(400, "Invalid Host header", "This server only answers to its own address.")
        method = scope["method"]
        query = QueryParams(scope["query_string"])
        if method in ("GET", "HEAD") and "token" in query:
            return self._exchange(URL(scope=scope), query.get("token", ""))
        if scope["path"].startswith(self.public_prefixes) and method in ("GET", "HEAD"):
            return None
        session = _cookie(headers, self.cookie_name)
        if session is None:
            return _page(401, "Open the link from the terminal", _OPEN_THE_LINK)
        if not hmac.compare_digest(session.encode(), self.token.encode()):
            return _page(403, "This session is not valid", _OPEN_THE_LINK)
        if method not in ("GET", "HEAD", "POST"):
            return _page(405, "Method not allowed", "Pages are read with GET and changed with POST.")
        if method == "POST" and not _same_origin(headers):
            return _page(403, "Cross-origin request refused", "Only this server's own pages may post to it.")
        return None

    def _exchange(self, url: URL, given: str) -> Response:
        """Trade the printed URL's token for a session cookie, and drop it from the address bar."""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _page(403, "This link is not valid", _OPEN_THE_LINK)
        rest = url.remove_query_params("token")
        response = RedirectResponse(rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303)
        response.set_cookie(self.cookie_name, self.token, httponly=True, samesite="strict", path="/")
        return response

    async def _checked_form(self, headers: Headers, receive: Receive) -> tuple[bytes, Response | None]:
        """Read a POST's body (bounded) and check its CSRF field; the body is returned to be replayed."""
        if headers.get("content-type", "").split(";")[0].strip().lower() != _FORM_TYPE:
            return b"", _page(415, "Unsupported form", "Forms are posted as application/x-www-form-urlencoded.")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", _page(400, "Request interrupted", "The request ended before its form was sent.")
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM_BYTES:
                return b"", _page(413, "Form too large", "A form may hold at most 1 MiB.")
        given = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get(CSRF_FIELD, [""])[0]
        expected = csrf_token(self.secret, self.token)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return b"", _page(403, "Form expired", "Reload the page and try again (the form's CSRF token is wrong).")
        return bytes(body), None


_OPEN_THE_LINK = (
    "Open the URL that batchframe ui printed when it started (http://127.0.0.1:PORT/?token=...). "
    "The token changes each time the server starts."
)


def _same_origin(headers: Headers) -> bool:
    """The request comes from one of this server's pages: its Origin (else its Referer) is this host."""
    expected = f"http://{headers.get('host', '')}"
    origin = headers.get("origin")
    if origin is not None:
        return hmac.compare_digest(origin.encode(), expected.encode())
    referer = urlsplit(headers.get("referer", ""))
    return f"{referer.scheme}://{referer.netloc}" == expected


def _cookie(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        value = cookie_parser(header).get(name)
        if value is not None:
            return value
    return None


def _page(status: int, title: str, text: str) -> HTMLResponse:
    """A small stand-alone page for a refusal (no template: it must work before anything else)."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)} - batchframe</title><link rel="stylesheet" href="/static/style.css">'
        f'</head><body><main class="refusal"><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></main>'
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _with_headers(send: Send, *, static: bool) -> Send:
    """Wrap ``send`` so that every response start carries the security headers."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers[name] = value
            if not static and "cache-control" not in headers:
                headers["cache-control"] = "no-store"  # pages carry the CSRF token and live state
        await send(message)

    return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body the middleware already read, then the real messages."""
    sent = False

    async def receiving() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receiving
