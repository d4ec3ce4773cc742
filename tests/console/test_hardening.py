"""The console's transport and sessions against a hostile client (issue 12, hostile review): the
real uvicorn server with TLS exactly as console/server.py configures it (``uvicorn_config``), in a
thread of the test, over the real daemon (a ControlServer on a real store, acting for real Unix
users with the prefix ``h2``). Clients are real TLS sockets from distinct loopback addresses.

Only the password check is the test's (PAM is tested in test_browser.py / test_routes.py).
"""
from __future__ import annotations

import logging
import os
import pwd
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import USER_TOOLS, Site, needs_root, needs_tool

from console import server as console_server
from console.app import create_app
from recorderd.config import load
from recorderd.control import ControlServer

PASSWORD = "h2-correct horse"
ROLES = ("manager", "staff", "technician", "auditor")
USERS = {role: f"h2{role[:4]}" for role in ROLES}  # h2mana, h2staf, h2tech, h2audi
GROUP = "h2-{}".format
HALF_HEAD = b"GET /signin HTTP/1.1\r\nHost: x\r\n"  # never the blank line that ends the head


def _remove_users() -> None:
    for user in USERS.values():
        subprocess.run(["userdel", "-f", user], capture_output=True)
    for role in ROLES:
        subprocess.run(["groupdel", GROUP(role)], capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines(logging.Handler):
    """The console's access log lines, as the journal would get them (one record, one message)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Console:
    def __init__(self, site: Site, app, port: int, cert: Path, lines: Lines) -> None:  # type: ignore[no-untyped-def]
        self.site, self.app, self.port, self.cert, self.lines = site, app, port, cert, lines
        self.url = f"https://127.0.0.1:{port}"

    def tls(self, source: str, timeout: float = 20.0) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(raw)

    def http(self, source: str) -> httpx.Client:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, follow_redirects=False, timeout=5)

    def raw_get(self, target: bytes, source: str = "127.0.0.1") -> bytes:
        with self.tls(source, timeout=10) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        return answer


def _closed_by_peer(s: ssl.SSLSocket, within: float) -> bool:
    """Whether the console ends the connection (EOF or reset) within ``within`` seconds."""
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (ConnectionError, ssl.SSLError, OSError) as exc:
        return not isinstance(exc, TimeoutError)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    needs_root("the console acts for real Unix users in each role (useradd)", *USER_TOOLS)
    needs_tool("openssl")
    _remove_users()
    root = tmp_path_factory.mktemp("h2site")
    daemon = thread = uv = None
    access = logging.getLogger("console.access")
    lines, level = Lines(), access.level
    try:
        for role, user in USERS.items():
            subprocess.run(["groupadd", GROUP(role)], check=True, capture_output=True)
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", GROUP(role), user],
                           check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(root / "key.pem"),
                        "-out", str(root / "cert.pem")], check=True, capture_output=True)
        runner = pwd.getpwuid(os.getuid()).pw_name  # the daemon trusts acting_for from this uid: the console's
        port = _free_port()
        roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
        site = Site(root, settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}, listen: 127.0.0.1, port: {port}, "
                                   f"tls_cert: {root / 'cert.pem'}, tls_key: {root / 'key.pem'}}}\n")
        site.init()
        daemon = ControlServer(load(str(site.config)))
        assert daemon.start()
        config = load(str(site.config), dids_optional=True)
        app = create_app(config, authenticate=lambda user, password: user in USERS.values() and password == PASSWORD)
        access.setLevel(logging.INFO)
        access.addHandler(lines)
        uv = uvicorn.Server(console_server.uvicorn_config(app, config))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        for _ in range(200):
            if uv.started:
                break
            time.sleep(0.05)
        assert uv.started, "uvicorn did not start"
        yield Console(site, app, port, root / "cert.pem", lines)
    finally:
        if uv is not None:
            uv.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        access.removeHandler(lines)
        access.setLevel(level)
        if daemon is not None:
            daemon.stop()
        _remove_users()


# -- 1. slow clients -------------------------------------------------------------------------------


def test_200_half_sent_request_heads_do_not_keep_the_console_from_everyone(console: Console) -> None:
    """200 connections (20 from each of 10 addresses, so the per-address cap does not save it)
    that never finish their request head: a normal GET from another address is answered 200
    within 15 s (was: 503 ``Exceeded concurrency limit`` to everyone for as long as they stay)."""
    attackers = [console.tls(f"127.0.0.{10 + i // 20}") for i in range(200)]
    try:
        for s in attackers:
            s.sendall(HALF_HEAD)
        time.sleep(0.5)
        started, status = time.monotonic(), 0
        with console.http("127.0.0.2") as c:
            while time.monotonic() - started < 15:
                try:
                    status = c.get("/signin").status_code
                except httpx.HTTPError:
                    status = -1
                if status == 200:
                    break
                time.sleep(0.5)
        assert status == 200, f"still {status} after 15 s"
        assert time.monotonic() - started < 15
        assert all(_closed_by_peer(s, 3) for s in attackers[:20]), "a half-sent head was kept open"
    finally:
        for s in attackers:
            s.close()


def test_one_address_holds_at_most_20_connections_and_others_are_served(console: Console) -> None:
    held = [console.tls("127.0.0.30") for _ in range(20)]
    try:
        for s in held:
            s.sendall(HALF_HEAD)
        time.sleep(0.3)
        extra = console.tls("127.0.0.30")
        try:
            extra.sendall(HALF_HEAD)
        except (ConnectionError, ssl.SSLError):
            pass
        assert _closed_by_peer(extra, 2), "the 21st connection from one address was kept"
        extra.close()
        with console.http("127.0.0.31") as c:
            assert c.get("/signin").status_code == 200
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)  # the 20 are gone: the address is served again
    with console.http("127.0.0.30") as c:
        assert c.get("/signin").status_code == 200


def test_a_form_body_that_never_ends_is_cut_off(console: Console) -> None:
    """A POST whose head is complete and whose body trickles in: answered (413) within ~10 s, the
    request does not wait for ever on the body."""
    with console.tls("127.0.0.40") as s:
        s.sendall(b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 1000\r\n\r\nuser=h2")
        s.settimeout(14)
        started = time.monotonic()
        try:
            answer = s.recv(65536)
        except TimeoutError:
            answer = b""
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert time.monotonic() - started < 13


# -- 2. proxy headers ------------------------------------------------------------------------------


def test_x_forwarded_for_is_not_believed_the_audit_keeps_the_peer_address(console: Console) -> None:
    """From 127.0.0.1: the address uvicorn trusts by default (``forwarded_allow_ips``), where a
    local user's curl or anything on the box comes from."""
    from storage.audit import AuditLog

    with console.http("127.0.0.1") as c:
        reply = c.post("/signin", data={"user": USERS["staff"], "password": "wrong"},
                       headers={"X-Forwarded-For": "198.51.100.1", "X-Real-IP": "198.51.100.2",
                                "Forwarded": "for=198.51.100.3", "X-Forwarded-Proto": "http"})
    assert reply.status_code == 401
    log = AuditLog(str(console.site.store / "audit.sqlite"))
    try:
        rows = [r[1] for r in log.rows() if r[1].action == "console-signin" and r[1].user == USERS["staff"]]
    finally:
        log.close()
    assert rows, "the failed sign-in was not audited"
    assert rows[-1].detail.get("client_ip") == "127.0.0.1", rows[-1].detail
    assert not any("198.51.100" in str(r.detail) for r in rows)
    assert not any("198.51.100" in line for line in console.lines.messages)


# -- 4. the access log ------------------------------------------------------------------------------


def test_the_access_log_names_the_route_never_the_typed_path(console: Console) -> None:
    forged = b"/x%0a2026-12-01%2009:00:00,000%20INFO%20console.access:%20198.51.100.9%20GET%20/audit%20200%201%20ms"
    targets = {
        forged: "(no-route)",
        b"/0312345678": "(no-route)",  # a phone number typed in a wrong URL
        b"/recordings/0312345678": "/recordings/{id}",
        b"/audio/tIcKeT0312345678": "/audio/{ticket}",
        b"/static/console.css": "/static/…",
        b"/search?caller=0312345678": "/search",
    }
    for target, route in targets.items():
        before = len(console.lines.messages)
        answer = console.raw_get(target, source="127.0.0.50")
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
        for _ in range(50):
            if any(m.startswith("127.0.0.50 ") for m in console.lines.messages[before:]):
                break
            time.sleep(0.02)
        # (this test's requests come from 127.0.0.50: a line from elsewhere, another test process that
        # hit this port, is not one of them)
        new = [m for m in console.lines.messages[before:] if m.startswith("127.0.0.50 ")]
        assert len(new) == 1, new  # one request, one line
        [line] = new
        assert "\n" not in line and "\r" not in line, line
        assert line.startswith("127.0.0.50 GET " + route + " "), line
        for typed in ("0312345678", "2026-12-01", "198.51.100.9", "tIcKeT"):
            assert typed not in line, line


# -- 5. headers -------------------------------------------------------------------------------------


def test_no_referer_ever_leaves_a_page(console: Console) -> None:
    """same-origin: no Referer to any other site (a search's URL carries caller digits); the
    console's own posts keep their Origin (tests/console/test_browser.py posts forms for real)."""
    with console.http("127.0.0.60") as c:
        for path in ("/signin", "/search?caller=0312345678", "/static/console.css"):
            assert c.get(path).headers["referrer-policy"] == "same-origin", path


# -- 3. sessions --------------------------------------------------------------------------------------


def test_a_full_session_table_refuses_the_new_sign_in_and_signs_nobody_out(console: Console) -> None:
    sessions = console.app.state.console.sessions
    from console.sessions import COOKIE, MAX_SESSIONS

    first = sessions.create("h2someone0", ("staff",), "127.0.0.70")
    others = [sessions.create(f"h2someone{i}", ("staff",), "127.0.0.70") for i in range(1, MAX_SESSIONS)]
    try:
        with console.http("127.0.0.71") as c:
            refused = c.post("/signin", data={"user": USERS["staff"], "password": PASSWORD})
        assert refused.status_code == 503 and COOKIE not in refused.cookies, refused.text[:300]
        assert "しばらく" in refused.text and "try again later" in refused.text
        with console.http("127.0.0.70") as c:
            c.cookies.set(COOKIE, first.id)
            assert c.get("/").headers["location"] == "/search"  # still signed in (was: dropped for the newcomer)
    finally:
        for s in [first, *others]:
            sessions.end(s.id)
    with console.http("127.0.0.71") as c:  # room again: the sign-in works
        assert c.post("/signin", data={"user": USERS["staff"], "password": PASSWORD}).status_code == 303
