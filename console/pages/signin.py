"""Sign in, sign out, the language switch, and the landing page of each role."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from .. import i18n
from ..sessions import COOKIE
from ..web import AUDITOR, EVERYONE, MANAGER, STAFF, TECHNICIAN, Req, page


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
    console = r.app
    user = r.form.get("user", "").strip()[:64]
    password = r.form.get("password", "")
    keys = ("user:" + user.lower(), "ip:" + r.ip)
    if not user:
        return r.render("signin.html", status=400, error=r.t("signin.failed"))
    if console.lockout.locked(*keys):
        await _account(r, user, "locked")
        return r.render("signin.html", status=429, error=r.t("signin.locked"))
    ok = await run_in_threadpool(console.authenticate, user, password)
    if not ok:
        console.lockout.failed(*keys)
        await _account(r, user, "failed")
        return r.render("signin.html", status=401, error=r.t("signin.failed"))
    reply = await _account(r, user, "ok")
    roles = tuple((reply.data or {}).get("roles", ())) if reply.rc == 0 else ()
    if not roles:
        return r.render("signin.html", status=403, error=r.t("signin.norole"))
    console.lockout.succeeded(keys[0])
    session = console.sessions.create(user, roles, r.ip)
    response = r.redirect(landing(roles))
    response.set_cookie(COOKIE, session.id, httponly=True, secure=True, samesite="strict", path="/")
    return response


async def _account(r: Req, user: str, result: str):  # type: ignore[no-untyped-def]
    """The daemon audits every sign-in (and answers the roles of a good one)."""
    return await r.app.daemon.call("console-signin", {"result": result}, user=user, ip=r.ip)


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
