"""The sign-in under attack (issue 12's hostile review): simultaneous guesses, a busy daemon, a
locked name hammered, a password oracle for accounts in no role or system accounts.

As in test_pages.py: ``create_app`` against the REAL daemon (a ControlServer on a real store, over
its real socket) acting for real Unix users (prefix ``h3``), the requests made concurrently on one
event loop as uvicorn serves them (httpx over ASGI). The password check is the test's function,
which counts its calls and sleeps like a failed PAM call: what it counts is what reaches PAM.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import USER_TOOLS, Site, needs_root

from console.app import create_app
from recorderd import control
from recorderd.config import load
from recorderd.control import ControlServer

PASSWORD = "h3-right password"
FAILURES = 5
GROUPS = {role: f"h3-{role}" for role in ("manager", "staff", "technician", "auditor")}
PEOPLE = {"h3mana": "manager", "h3staf": "staff", "h3none": None, "h3svc": "manager"}  # h3svc: a system account


def _remove() -> None:
    for user in PEOPLE:
        subprocess.run(["userdel", "-f", user], capture_output=True)
    for group in GROUPS.values():
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture(scope="module")
def people() -> Iterator[None]:
    needs_root("the sign-in acts for real Unix users (useradd)", *USER_TOOLS)
    _remove()
    try:
        for group in GROUPS.values():
            subprocess.run(["groupadd", group], check=True, capture_output=True)
        for user, role in PEOPLE.items():
            extra = ["-G", GROUPS[role]] if role else []
            system = ["-r"] if user == "h3svc" else []
            subprocess.run(["useradd", "-M", "-N", *system, "-s", "/usr/sbin/nologin", *extra, user],
                           check=True, capture_output=True)
        assert pwd.getpwnam("h3svc").pw_uid < 1000 <= pwd.getpwnam("h3mana").pw_uid
        yield
    finally:
        _remove()


@pytest.fixture(scope="module")
def site(people: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    runner = pwd.getpwuid(os.getuid()).pw_name  # the daemon trusts acting_for from this uid: the console's
    roles = ", ".join(f"{role}_group: {group}" for role, group in GROUPS.items())
    site = Site(tmp_path_factory.mktemp("h3site"),
                settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}, lockout_failures: {FAILURES}, lockout_min: 15}}\n")
    site.init()
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield site
    finally:
        server.stop()


class Pam:
    """The password check: right for every h3 user with PASSWORD (and for root), counted, and as
    slow as a failed PAM call (pam_faildelay), so simultaneous attempts overlap."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay, self.calls, self.running, self.most = delay, 0, 0, 0
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay)
            return password == PASSWORD
        finally:
            with self._lock:
                self.running -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(site: Site, pam: Pam, clock: Clock | None = None):  # type: ignore[no-untyped-def]
    app = create_app(load(str(site.config), dids_optional=True), authenticate=pam)
    if clock is not None:
        app.state.console.lockout.clock = clock
    return app


def _signins(app, attempts: list[tuple[str, str, str]]) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """(user, password, client address) each POSTed to /signin at the same time."""

    async def one(user: str, password: str, ip: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            return await c.post("/signin", data={"user": user, "password": password})

    async def all_at_once() -> list[httpx.Response]:
        return await asyncio.gather(*(one(*a) for a in attempts))

    return asyncio.run(all_at_once())


def _rows(site: Site) -> list:
    from storage.audit import AuditLog

    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows() if r[1].action == "console-signin"]
    finally:
        log.close()


# -- 1. the lockout holds under simultaneous attempts ---------------------------------------------


def test_forty_simultaneous_guesses_of_one_name_reach_pam_at_most_lockout_failures_times(site: Site) -> None:
    pam = Pam()
    app = _app(site, pam)
    attempts = [("h3staf", f"guess-{i}", f"192.0.2.{i + 1}") for i in range(39)] + [("h3staf", PASSWORD, "192.0.2.200")]
    answers = _signins(app, attempts)
    assert pam.calls <= FAILURES, pam.calls
    assert [a.status_code for a in answers].count(429) >= 40 - FAILURES
    assert all(a.status_code in (401, 429, 303) for a in answers)


def test_forty_simultaneous_guesses_from_one_address_reach_pam_at_most_lockout_failures_times(site: Site) -> None:
    pam = Pam()
    app = _app(site, pam)
    answers = _signins(app, [(f"h3guess{i}", "wrong", "198.51.100.7") for i in range(40)])
    assert pam.calls <= FAILURES, pam.calls
    assert [a.status_code for a in answers].count(401) == pam.calls


def test_pam_runs_at_most_four_at_a_time_so_failed_calls_cannot_fill_the_worker_threads(site: Site) -> None:
    pam = Pam(delay=0.2)
    app = _app(site, pam)
    answers = _signins(app, [(f"h3many{i}", "wrong", f"203.0.113.{i + 1}") for i in range(24)])
    assert pam.calls == 24 and [a.status_code for a in answers] == [401] * 24
    assert pam.most <= 4, pam.most


# -- 2. every failure is audited, even when the daemon is busy ------------------------------------


def test_a_burst_against_a_busy_daemon_gives_as_many_audit_rows_as_401s(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "CONSOLE_SLOTS", 1)  # the daemon's real busy answer (rc 5), sooner
    pam = Pam(delay=0.2)
    app = _app(site, pam)
    before = len([r for r in _rows(site) if r.result == "denied: sign-in failed"])
    answers = _signins(app, [(f"h3busy{i}", "wrong", f"100.64.0.{i + 1}") for i in range(40)])
    codes = [a.status_code for a in answers]
    rows = [r for r in _rows(site) if r.result == "denied: sign-in failed"][before:]
    assert codes.count(401) == len(rows), (codes, len(rows))
    assert set(codes) <= {401, 503} and 503 in codes, codes  # the busy ones said so, and nobody got in
    busy = next(a for a in answers if a.status_code == 503)
    assert "混み合っています" in busy.text


# -- 3. a locked name hammered adds a few audit rows, not thousands --------------------------------


def test_a_thousand_locked_attempts_add_a_few_audit_rows_and_one_summary_with_their_count(site: Site) -> None:
    clock = Clock()
    pam = Pam(delay=0.0)
    app = _app(site, pam, clock)
    _signins(app, [("h3mana", "wrong", f"10.9.0.{i + 1}") for i in range(FAILURES)])  # the name is locked now
    assert pam.calls == FAILURES
    before = len(_rows(site))
    # from a thousand addresses (the name's lock), then a thousand times from one (its rate limit)
    spread = _signins(app, [("h3mana", PASSWORD, f"10.10.{i // 250}.{i % 250 + 1}") for i in range(1000)])
    same = _signins(app, [("h3mana", PASSWORD, "10.11.0.1") for _ in range(1000)])
    assert [a.status_code for a in spread + same] == [429] * 2000
    assert pam.calls == FAILURES  # none reached PAM
    added = _rows(site)[before:]
    assert len(added) <= 3, [(r.user, r.result) for r in added]
    # The lock's window ends: the next attempt (the right password) signs in, and the refusals not
    # audited one by one are in one row each with their count.
    clock.now += 15 * 60 + 1
    ok = _signins(app, [("h3mana", PASSWORD, "10.12.0.1")])[0]
    assert ok.status_code == 303
    summaries = [r for r in _rows(site)[before + len(added):] if "count" in r.detail]
    counted = {r.result: r.detail["count"] for r in summaries}
    assert sum(counted.values()) + len(added) == 2000, counted
    assert counted.get("denied: sign-in rate-limited", 0) > 0


# -- 4. no password oracle: no role, system accounts ---------------------------------------------


def test_a_right_password_of_an_account_in_no_role_answers_exactly_as_a_wrong_one(site: Site) -> None:
    pam = Pam(delay=0.0)
    app = _app(site, pam)
    before = len(_rows(site))
    wrong, right = (_signins(app, [("h3none", password, "172.16.0.1")])[0] for password in ("wrong", PASSWORD))
    assert (wrong.status_code, wrong.text) == (right.status_code, right.text) == (401, wrong.text)
    assert "recorderd_session" not in right.headers.get("set-cookie", "")
    rows = _rows(site)[before:]
    assert [r.result.split(":")[0] for r in rows] == ["denied", "denied"]
    assert rows[0].result == "denied: sign-in failed" and "none of the recorderd role groups" in rows[1].result
    # ... and counted by the lockout like any failure
    answers = [_signins(app, [("h3none", PASSWORD, "172.16.0.2")])[0].status_code for _ in range(FAILURES)]
    assert answers == [401] * (FAILURES - 2) + [429, 429]


@pytest.mark.parametrize("user", ["h3svc", "root"])
def test_root_and_system_accounts_do_not_sign_in_even_in_a_role_group(site: Site, user: str) -> None:
    pam = Pam(delay=0.0)
    app = _app(site, pam)
    wrong = _signins(app, [(user, "wrong", "172.17.0.1")])[0]
    right = _signins(app, [(user, PASSWORD, "172.17.0.2")])[0]
    assert pam.calls == 2
    assert (right.status_code, right.text) == (wrong.status_code, wrong.text) == (401, wrong.text)
    assert "system account" in _rows(site)[-1].result


def test_the_summaries_of_many_locked_names_are_written_a_few_per_attempt() -> None:
    from console.sessions import Lockout

    clock = Clock()
    lock = Lockout(failures=1, window=60.0, clock=clock, per_minute=10**6)
    for i in range(100):  # a hundred names locked, then each refused three times: one audited, two counted
        assert lock.begin(f"user:n{i}", f"ip:10.0.0.{i}").verdict == "go"
        refusals = [lock.begin(f"user:n{i}", f"ip:10.{j}.1.{i}") for j in range(1, 4)]
        assert [(a.verdict, a.audit) for a in refusals] == [("locked", True), ("locked", False), ("locked", False)]
    clock.now += 61
    written = []
    while True:
        attempt = lock.begin("user:someone", "ip:203.0.113.9")
        if not attempt.summaries:
            break
        assert len(attempt.summaries) <= Lockout.SUMMARIES_AT_ONCE
        written += attempt.summaries
    assert sorted(written) == sorted(("locked", f"user:n{i}", 2) for i in range(100))
