"""The console's server-side guards, met with a plain HTTPS client holding real session cookies
(real sign-ins through PAM as real Unix users): every route x every role, CSRF, lockout per user and
per address, the idle timeout, sign-out, and no caller number or search term in any log line.
Skips without root, chromium, chromedriver or openssl (the same site as test_browser.py).
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from console_harness import LOCKOUT_FAILURES, ConsoleProcess, Site, callers, client, csrf_of, free_port

pytestmark = pytest.mark.integration

ROLES = ("manager", "staff", "technician", "auditor")
FORBIDDEN = "この操作を行う権限がありません。"  # console/i18n.py error.forbidden, as the guard says it


def routes() -> list:  # type: ignore[type-arg]
    from console import app  # noqa: F401  (imports every page module, which registers its routes)
    from console.web import ROUTES

    return [r for r in ROUTES if not r.public]


def concrete(path: str, rid: str) -> str:
    """A route's path with its parameters filled: a real recording, made-up tickets and numbers."""
    values = {"id": rid, "ticket": "A" * 43, "n": "1", "h": "1", "lang": "ja"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), path)


@pytest.fixture(scope="module")
def clients(console_site: Site) -> Iterator[dict[str, tuple[httpx.Client, str]]]:
    """One signed-in client per role, with its session's CSRF token (from a page's sign-out form)."""
    out = {}
    for role in ROLES:
        c = console_site.signed_in(role)
        page = c.get("/status")
        assert page.status_code == 200, page.text[:500]
        out[role] = (c, csrf_of(page.text))
    yield out
    for c, _ in out.values():
        c.close()


def test_every_route_refuses_every_role_it_is_not_for(console_site: Site, clients) -> None:  # type: ignore[no-untyped-def]
    rid = console_site.recordings[0]["id"]
    table = routes()
    assert len(table) >= 20, [r.path for r in table]  # the whole console, not just the frame
    wrong: list[str] = []
    for route in table:
        path = concrete(route.path, rid)
        for method in route.methods:
            for role in ROLES:
                c, token = clients[role]
                if role in route.roles and method != "GET":
                    continue  # not done for real here (a hold, a sign-out): the CSRF test below posts them
                if method == "GET":
                    reply = c.get(path)
                else:  # the right token: a refusal here is the role's, not the CSRF check's
                    reply = c.request(method, path, data={"csrf": token}, headers={"origin": console_site.url})
                refused = reply.status_code == 403 and FORBIDDEN in reply.text  # the guard's refusal of the role
                if role in route.roles:  # (a page may still say 403 of a made-up ticket: not of the role)
                    if refused or reply.status_code == 401 or reply.headers.get("location", "").startswith("/signin"):
                        wrong.append(f"{method} {route.path} as {role}: {reply.status_code} (the route is for {role})")
                elif not refused:
                    wrong.append(f"{method} {route.path} as {role}: {reply.status_code}, not the 403 of the role check")
    assert not wrong, "\n".join(wrong)


def test_every_post_without_the_csrf_token_is_refused_even_for_the_right_role(console_site: Site, clients) -> None:  # type: ignore[no-untyped-def]
    rid = console_site.recordings[0]["id"]
    posts = [(r, m) for r in routes() for m in r.methods if m != "GET"]
    assert posts
    wrong = []
    for route, method in posts:
        path = concrete(route.path, rid)
        role = next(r for r in ROLES if r in route.roles)
        c, token = clients[role]
        for form, headers in (({}, {}), ({"csrf": "x" + token[1:]}, {}), ({"csrf": token}, {"origin": "https://evil.example"})):
            reply = c.request(method, path, data=form, headers=headers)
            if reply.status_code != 403:
                wrong.append(f"{method} {route.path} as {role} with {form and 'a wrong token' or 'no token'} "
                             f"{headers and 'from another origin' or ''}: {reply.status_code}")
    assert not wrong, "\n".join(wrong)
    for role in ROLES:  # the sessions are still good: the refusals were of the requests, not of the people
        assert clients[role][0].get("/status").status_code == 200


def test_without_a_session_every_page_sends_to_the_sign_in_and_every_post_is_refused(console_site: Site) -> None:
    rid = console_site.recordings[0]["id"]
    with client(console_site.url) as c:
        c.cookies.set("recorderd_session", "made-up-" + "x" * 40)
        for route in routes():
            for method in route.methods:
                reply = c.request(method, concrete(route.path, rid), data={"csrf": "x"})
                if method == "GET":
                    assert reply.status_code == 303 and reply.headers["location"].startswith("/signin"), route.path
                else:
                    assert reply.status_code == 401, (route.path, reply.status_code)


# -- sign-in lockout ----------------------------------------------------------------------------


def _sign_in(site: Site, source: str, user: str, password: str) -> httpx.Response:
    with client(site.url, source=source) as c:
        return c.post("/signin", data={"user": user, "password": password})


def test_lockout_per_user_refuses_even_the_right_password_from_another_address(console_site: Site) -> None:
    site = console_site
    user = site.user("lock")
    for i in range(LOCKOUT_FAILURES):
        assert _sign_in(site, "127.0.0.2", user, f"wrong-{i}").status_code == 401
    # The right password, from an address that has not failed: still refused (the name is locked).
    locked = _sign_in(site, "127.0.0.3", user, site.password("lock"))
    assert locked.status_code == 429 and "recorderd_session" not in locked.cookies
    rows = site.audit(user=user, action="console-signin")
    results = [r["result"] for r in rows]
    assert len([r for r in results if r != "allowed"]) >= LOCKOUT_FAILURES + 1 and "allowed" not in results, results
    assert any("locked" in json_text(r) for r in rows), rows
    assert {r["detail"].get("client_ip") for r in rows} >= {"127.0.0.2", "127.0.0.3"}
    # Others are not locked out by it.
    assert _sign_in(site, "127.0.0.3", site.user("staff"), site.password("staff")).status_code == 303


def test_lockout_per_address_refuses_everyone_from_that_address(console_site: Site) -> None:
    site = console_site
    for i in range(LOCKOUT_FAILURES):  # a guesser trying names
        assert _sign_in(site, "127.0.0.4", f"w3guess{i}", "password").status_code == 401
    assert _sign_in(site, "127.0.0.4", site.user("manager"), site.password("manager")).status_code == 429
    assert _sign_in(site, "127.0.0.5", site.user("manager"), site.password("manager")).status_code == 303


def json_text(row: dict) -> str:
    import json

    return json.dumps(row, ensure_ascii=False)


# -- sessions -------------------------------------------------------------------------------------


def test_sign_out_ends_the_session_on_the_server(console_site: Site) -> None:
    c = console_site.signed_in("staff")
    page = c.get("/search")
    assert page.status_code == 200
    cookie = c.cookies.get("recorderd_session")
    out = c.post("/signout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"].startswith("/signin")
    with client(console_site.url) as replay:  # the old cookie, sent again
        replay.cookies.set("recorderd_session", cookie)
        again = replay.get("/search")
        assert again.status_code == 303 and again.headers["location"].startswith("/signin")
        assert replay.post("/recordings/x/hold", data={"csrf": csrf_of(page.text)}).status_code == 401
    rows = console_site.audit(user=console_site.user("staff"), action="console-signout")
    assert rows and rows[-1]["detail"].get("via") == "console", rows


def test_an_idle_session_is_gone_after_the_idle_timeout(console_site: Site) -> None:
    """A second console on the same daemon whose clock runs ten times fast (libfaketime): the
    configured 1 minute of idleness passes in 6 s, on the console's own clock."""
    from conftest import needs_tool

    needs_tool("faketime")
    site = console_site
    port = free_port()
    base = site.base / "idle"
    base.mkdir()
    config = site.base / "recorderd-idle.yaml"
    text = site.config.read_text().replace(f"port: {site.console.port}", f"port: {port}")
    config.write_text(text)
    config.chmod(0o644)
    log = site.base / "console-idle.log"
    site.console_logs.append(log)
    console = ConsoleProcess(site.python, config, port, log, faketime="+0 x10")
    try:
        with client(console.url) as c:
            reply = c.post("/signin", data={"user": site.user("technician"), "password": site.password("technician")})
            assert reply.status_code == 303, reply.text[:300]
            for _ in range(3):  # used every 2 s (20 s of its clock), 6 s in all: kept
                time.sleep(2)
                assert c.get("/status").status_code == 200
            time.sleep(7)  # 70 s of its clock without a request
            gone = c.get("/status")
            assert gone.status_code == 303 and gone.headers["location"].startswith("/signin"), gone.status_code
            assert "expired" in gone.headers["location"]
            again = c.get("/status")  # and it stays gone
            assert again.status_code == 303
    finally:
        console.stop()


# -- logs -----------------------------------------------------------------------------------------


def test_no_caller_number_nor_search_term_in_any_log_line(console_site: Site) -> None:
    """The console's output and the daemon's of the whole session (run after the other tests): a
    search by caller digits is made here so that there is something to leak even when run alone."""
    site = console_site
    term = "451234567"
    c = site.signed_in("manager")
    assert c.get("/search", params={"caller": term, "match": "ends"}).status_code == 200
    assert c.get("/search", params={"caller": "0451234567"}).status_code == 200
    c.close()
    time.sleep(0.5)
    logs = site.logs()
    assert "GET /search" in logs  # the console's access log is there, and read
    leaked = sorted(n for n in callers() | {term} if n in logs)
    assert not leaked, [line for line in logs.splitlines() if any(n in line for n in leaked)][:5]
