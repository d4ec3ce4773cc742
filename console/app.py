"""The console's ASGI application: routes from :data:`console.web.ROUTES`, static files from the
box (no CDN: the box has no internet), and the headers a browser needs to keep the pages to
themselves (CSP without inline script, no framing, HSTS, no caching of personal data).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorderd import client
from recorderd.config import Config

from . import pages, web  # noqa: F401  (pages registers the routes)
from .daemon import Daemon
from .sessions import Lockout, Sessions, SessionsFull

log = logging.getLogger("console")
access = logging.getLogger("console.access")
HERE = Path(__file__).parent

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # a search's URL carries caller digits: no Referer ever leaves the console. Not "no-referrer":
    # under it Chromium sends "Origin: null" on the console's own form posts, which the Origin check
    # (rightly) refuses
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


@dataclass
class Console:
    config: Config
    daemon: Daemon
    sessions: Sessions
    lockout: Lockout
    templates: Jinja2Templates
    tz: ZoneInfo
    authenticate: Any  # (user, password) -> bool; PAM (console.auth) unless a test gives another


class Guard:
    """Security headers on every answer, ``no-store`` on everything but static files, an access log
    line that names the route, never the path typed (a search's caller digits, a phone number in a
    wrong URL, a playback ticket or a ``%0a`` never reach a log), and no stack trace to the browser."""

    def __init__(self, app: ASGIApp, routes: dict[Any, str] | None = None) -> None:
        self.app = app
        self.routes = routes or {}  # endpoint -> its route's template, e.g. /recordings/{id}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [0]
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in (b"server", b"cache-control")]
                headers += SECURITY_HEADERS
                headers.append((b"cache-control", b"private, max-age=3600" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # no trace to the browser; in the log only the kind and the route
            log.error("console: %s on %s %s", type(exc).__name__, scope.get("method"), self.logged_route(scope),
                      extra={"EVENT": "console-error"})
            if status[0] == 0:
                await PlainTextResponse("internal error / 内部エラー", status_code=500)(scope, receive, send_with_headers)
        finally:
            client = scope.get("client") or ("-", 0)
            access.info("%s %s %s %d %.0f ms", client[0], scope.get("method"), self.logged_route(scope), status[0],
                        (time.monotonic() - started) * 1000)  # (the route only: never the query string)

    def logged_route(self, scope: Scope) -> str:
        """The matched route's template (the router put its endpoint in the scope), ``/static/…``, or
        ``(no-route)``: nothing of what the client typed."""
        if scope["path"].startswith("/static/"):
            return "/static/…"
        return self.routes.get(scope.get("endpoint"), "(no-route)")


def text_node(value: object) -> Markup:
    """``value`` escaped for an element's text, and only there (never an attribute's value): ``&``,
    ``<`` and ``>`` escaped, quotes left as they are. The audit page's JSON details: autoescape
    wrote each of their quotes as ``&#34;``, five bytes more, and a hundred searches' rows went over
    the 200 KB a page may weigh (issue 12)."""
    return Markup(str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def create_app(config: Config, *, authenticate: Any = None, daemon: Daemon | None = None) -> Starlette:
    from . import auth

    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    templates.env.filters["text"] = text_node
    console = Console(
        config=config,
        daemon=daemon or Daemon(client.socket_path(config)),
        sessions=Sessions(config["console.idle_timeout_min"] * 60.0, config["console.absolute_timeout_h"] * 3600.0),
        lockout=Lockout(config["console.lockout_failures"], config["console.lockout_min"] * 60.0),
        templates=templates,
        tz=config["retention.timezone"],
        authenticate=authenticate or auth.pam_authenticate,
    )
    routes: list[Any] = [Route(r.path, web.guard(r), methods=list(r.methods)) for r in web.ROUTES]
    templates_of = {route.endpoint: route.path for route in routes}
    routes.append(Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"))
    app = Starlette(routes=routes, middleware=[Middleware(Guard, routes=templates_of)],
                    exception_handlers={404: _not_found, SessionsFull: _sessions_full})
    app.state.console = console
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("ページが見つかりません / Not found", status_code=404)


async def _sessions_full(request: Request, exc: Exception) -> Response:
    """Every session slot is taken: the sign-in is refused (nobody else's session is dropped for it)."""
    log.warning("console: sign-in refused, the session table is full", extra={"EVENT": "console-sessions-full"})
    return PlainTextResponse("サインインしている人が多すぎます。しばらくしてからもう一度お試しください。 / "
                             "Too many sessions are open; try again later.", status_code=503,
                             headers={"retry-after": "60"})
