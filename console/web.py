"""The console's pages: each declared once with the roles that may use it, and guarded here.

``@page(path, roles, methods)`` registers a handler ``async def h(req: Req) -> Response``. Before it
runs: a signed-in session (else the sign-in page), one of ``roles`` (else 403: a hidden button is
never the only guard, and the daemon checks again), and for every method but GET a valid CSRF token
(form field ``csrf`` or header ``X-CSRF-Token``) and an Origin, when sent, that is this console's
own. :data:`ROUTES` is the table the tests walk (every route x every role).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from recorderd import client, ops

from . import i18n
from .sessions import COOKIE, Session

log = logging.getLogger("console")

MANAGER, STAFF, TECHNICIAN, AUDITOR = "manager", "staff", "technician", "auditor"
EVERYONE = (MANAGER, STAFF, TECHNICIAN, AUDITOR)
MAX_FORM_BYTES = 64 * 1024
SAFE_METHODS = ("GET", "HEAD")  # change nothing: no CSRF token asked (a route that would, refuses HEAD itself)


@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]
    roles: tuple[str, ...]
    handler: Callable[[Req], Awaitable[Response]]
    public: bool = False  # the sign-in page and static files: no session needed


ROUTES: list[Route] = []


def page(path: str, roles: tuple[str, ...], methods: tuple[str, ...] = ("GET",), *, public: bool = False) -> Callable[..., Any]:
    def register(fn: Callable[[Req], Awaitable[Response]]) -> Callable[[Req], Awaitable[Response]]:
        ROUTES.append(Route(path, methods, roles, fn, public))
        return fn

    return register


class Req:
    """One request as a page sees it: the session, the language, the daemon acting for the person."""

    def __init__(self, request: Request, session: Session | None) -> None:
        self.request = request
        self.session = session
        self.app = request.app.state.console
        self.lang = i18n.lang_of(request.cookies.get("lang"))
        self.form: dict[str, str] = {}

    @property
    def user(self) -> str:
        assert self.session is not None
        return self.session.user

    @property
    def ip(self) -> str:
        return self.request.client.host if self.request.client else "0.0.0.0"

    def t(self, key: str, **values: Any) -> str:
        return i18n.t(key, self.lang, **values)

    def time(self, value: Any, *, seconds: bool = True) -> str:
        return i18n.local_time(value, self.app.tz, seconds=seconds)

    async def call(self, action: str, args: dict[str, Any] | None = None, **kw: Any) -> ops.Reply:
        """The daemon's reply to ``action`` done for this person (raises :class:`DaemonDown`)."""
        try:
            return await self.app.daemon.call(action, args or {}, user=self.user, ip=self.ip, **kw)
        except client.Busy as exc:
            raise DaemonDown("error.busy") from exc
        except (client.Unreachable, OSError) as exc:
            raise DaemonDown("error.daemon") from exc

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        templates: Jinja2Templates = self.app.templates
        return templates.TemplateResponse(self.request, template, {"r": self, "t": self.t, **context}, status_code=status)

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)

    def error(self, key: str, status: int) -> HTMLResponse:
        return self.render("error.html", status=status, message=self.t(key))

    def refused(self, reply: ops.Reply) -> HTMLResponse:
        """The daemon said no (or failed): its words, with the status a browser understands."""
        status = {2: 400, 3: 403}.get(reply.rc, 409 if reply.rc == 1 else 500)
        return self.render("error.html", status=status, message=reply.error or reply.text)


class DaemonDown(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def same_origin(request: Request) -> bool:
    """An Origin (or, without one, a Referer) that names this console, or none at all."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null" and request.headers.get("origin") is None:
        return True
    parts = urlsplit(sent)
    return parts.scheme == "https" and parts.netloc == request.headers.get("host", "")


def guard(route: Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        console = request.app.state.console
        session, expired = console.sessions.get(request.cookies.get(COOKIE))
        req = Req(request, session)
        if route.public:
            return await _run(route, req)
        if session is None:
            if request.method not in SAFE_METHODS:
                return req.error("signin.expired", 401)
            return req.redirect("/signin?expired=1" if expired else "/signin")
        if request.method not in SAFE_METHODS:
            if not same_origin(request):
                return req.error("error.csrf", 403)
            try:
                req.form = await read_form(request)
            except ValueError:
                return req.error("error.internal", 413)
            if not session.csrf_ok(req.form.get("csrf") or request.headers.get("x-csrf-token")):
                return req.error("error.csrf", 403)
        if not session.has(*route.roles):
            return req.error("error.forbidden", 403)
        return await _run(route, req)

    return endpoint


FORM_DEADLINE = 10.0  # seconds for a whole form body


async def read_form(request: Request) -> dict[str, str]:
    """The posted form, at most ``MAX_FORM_BYTES``, text fields only, all of it within
    ``FORM_DEADLINE`` seconds (a body sent a byte at a time does not hold the request for ever)."""
    import anyio

    body = b""
    try:
        with anyio.fail_after(FORM_DEADLINE):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    raise ValueError("form too large")
    except TimeoutError:
        raise ValueError("form too slow") from None
    if not body:
        return {}
    from urllib.parse import parse_qsl

    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


async def _run(route: Route, req: Req) -> Response:
    try:
        if route.public and req.request.method not in SAFE_METHODS:
            try:
                req.form = await read_form(req.request)
            except ValueError:
                return req.error("error.internal", 413)
        return await route.handler(req)
    except DaemonDown as exc:
        return req.error(exc.key, 503)
