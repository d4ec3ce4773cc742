"""Sign in, sign out, the language switch, and the landing page of each role."""
from __future__ import annotations

import asyncio
import weakref

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from recorderd import client

from .. import i18n
from ..sessions import COOKIE
from ..web import AUDITOR, EVERYONE, MANAGER, STAFF, Req, page


def landing(roles: tuple[str, ...]) -> str:
    """Where a person starts: the search for those who handle calls, else what their role is for."""
    if MANAGER in roles or STAFF in roles:
        return "/search"
    if AUDITOR in roles:
        return "/audit"
    return "/status"


@page("/", EVERYONE)
async def home(r: Req) -> Response:
    assert r.session is not None
    return r.redirect(landing(r.session.roles))


@page("/signin", (), public=True)
async def signin_form(r: Req) -> Response:
    if r.session is not None:
        return r.redirect(landing(r.session.roles))
    note = "signin.expired" if r.request.query_params.get("expired") else "signin.signedout" if r.request.query_params.get("out") else None
    return r.render("signin.html", note=r.t(note) if note else None)


@page("/signin", (), ("POST",), public=True)
async def signin(r: Req) -> Response:
    """Every attempt is counted before PAM is asked (:meth:`Lockout.begin`), PAM runs at most
    ``PAM_AT_ONCE`` at a time, and a wrong password, a person in no role and a system account all
    get the same 401 page: the console tells nobody which passwords of the box are right."""
    console = r.app
    user = r.form.get("user", "").strip()[:64]
    password = r.form.get("password", "")
    keys = ("user:" + user.lower(), "ip:" + r.ip)
    if not user:
        return r.render("signin.html", status=400, error=r.t("signin.failed"))
    attempt = console.lockout.begin(*keys)
    for kind, key, count in attempt.summaries:  # refusals counted, not audited one by one, of a window now over
        name = key.split(":", 1)[1]
        if key.startswith("user:"):
            await _account(r, name, kind, count=count)
        else:
            await _account(r, "", kind, ip=name, count=count)
    if attempt.verdict != "go":
        if attempt.audit and not _recorded(await _account(r, user, attempt.verdict)):
            return r.render("signin.html", status=503, error=r.t("error.busy"))
        return r.render("signin.html", status=429, error=r.t("signin.locked"))
    async with _pam_slots():
        ok = await run_in_threadpool(console.authenticate, user, password)
    reply = await _account(r, user, "ok" if ok else "failed")
    if not _recorded(reply):  # the daemon could not audit it: nobody signs in unaudited
        return r.render("signin.html", status=503, error=r.t("error.busy"))
    roles = tuple((reply.data or {}).get("roles", ())) if ok and reply.rc == 0 else ()
    if not roles:  # a wrong password, or a right one of an account in no role: the same answer
        return r.render("signin.html", status=401, error=r.t("signin.failed"))
    console.lockout.succeeded(*keys, at=attempt.at)
    session = console.sessions.create(user, roles, r.ip)
    response = r.redirect(landing(roles))
    response.set_cookie(COOKIE, session.id, httponly=True, secure=True, samesite="strict", path="/")
    return response


PAM_AT_ONCE = 4  # PAM calls at a time: a failed one sleeps 2-3 s (pam_faildelay) in a worker thread
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.Semaphore] = weakref.WeakKeyDictionary()


def _pam_slots() -> anyio.Semaphore:
    """The PAM semaphore of the running event loop (the worker threads are shared with every daemon call)."""
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = anyio.Semaphore(PAM_AT_ONCE)
    return slots


def _recorded(reply) -> bool:
    """The daemon wrote the audit row: rc 0, or 3 (refused: a person in no role, audited as such)."""
    return reply is not None and reply.rc in (0, 3)


async def _account(r: Req, user: str, result: str, *, ip: str | None = None, count: int | None = None):
    """The daemon audits every sign-in (and answers the roles of a good one); None if it is not there."""
    args: dict = {"result": result} if count is None else {"result": result, "count": count}
    try:
        return await r.app.daemon.call("console-signin", args, user=user, ip=ip or r.ip)
    except (client.Busy, client.Unreachable, OSError):
        return None


@page("/signout", EVERYONE, ("POST",))
async def signout(r: Req) -> Response:
    assert r.session is not None
    r.app.sessions.end(r.session.id)
    await r.call("console-signout")
    response = r.redirect("/signin?out=1")
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@page("/lang/{lang}", (), public=True)
async def switch_language(r: Req) -> Response:
    lang = i18n.lang_of(r.request.path_params.get("lang"))
    back = r.request.query_params.get("back", "/")
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"  # only a page of this console
    response = RedirectResponse(back, status_code=303)
    response.set_cookie("lang", lang, max_age=365 * 86400, secure=True, samesite="strict", path="/")
    return response
