"""The daemon side of the web console: requests made *for* a signed-in person, accepted only from
the console's uid, on a real ControlServer over its real socket. The cases with several Unix users
(the console's, a manager's, another's) make them with useradd (prefix ``k``) and need root."""
from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root, python_for

from recorderd import client, control
from recorderd.config import load
from recorderd.control import ControlServer
from storage.audit import AuditLog

ME = getpass.getuser()


def _rows(site: Site) -> list:
    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows()]
    finally:
        log.close()


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Site, str]]:
    """A site whose console user is ``request.param`` (default: the user running the tests)."""
    console = getattr(request, "param", ME)
    site = Site(tmp_path, None, f"console: {{user: {console}}}\n").init()
    assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield site, control.socket_path(load(str(site.config)))
    finally:
        server.stop()


def test_the_console_acting_for_a_person_is_audited_as_that_person_via_console(served: tuple[Site, str]) -> None:
    site, sock = served
    reply = client.call(sock, "list", {}, {}, acting_for={"user": ME, "ip": "192.0.2.10"})
    assert reply.rc == 0, reply.error
    [row] = [r for r in _rows(site) if r.action == "list"]
    assert (row.user, row.uid, row.result) == (ME, os.getuid(), "allowed")
    assert row.detail["via"] == "console" and row.detail["client_ip"] == "192.0.2.10"
    assert "login_uid" not in row.detail


def test_an_ipv6_address_is_kept_in_its_short_form(served: tuple[Site, str]) -> None:
    site, sock = served
    assert client.call(sock, "status", {}, {}, acting_for={"user": ME, "ip": "2001:DB8:0::7"}).rc == 0
    [row] = [r for r in _rows(site) if r.action == "status"]
    assert row.detail["client_ip"] == "2001:db8::7"


@pytest.mark.parametrize("ip", ["", "localhost", "192.0.2.1:443", "fe80::1%eth0", "192.0.2.1 ", "1" * 60, None, 7])
def test_a_client_address_that_is_not_an_ip_literal_is_refused(served: tuple[Site, str], ip: object) -> None:
    site, sock = served
    reply = client.call(sock, "list", {}, {}, acting_for={"user": ME, "ip": ip})  # type: ignore[dict-item]
    assert reply.rc == 3 and "client address" in reply.error
    [row] = [r for r in _rows(site) if r.action == "list"]
    assert row.result.startswith("denied: the console sent no valid client address")


@pytest.mark.parametrize("name", ["k-nobody-such-user", "../etc", "", "a" * 200, "root\n"])
def test_acting_for_an_unknown_user_is_refused_and_audited(served: tuple[Site, str], name: str) -> None:
    site, sock = served
    reply = client.call(sock, "list", {}, {}, acting_for={"user": name, "ip": "192.0.2.10"})
    assert reply.rc == 3 and "does not know" in reply.error
    [row] = [r for r in _rows(site) if r.action == "list"]
    assert row.user == ME and row.detail["via"] == "console" and row.detail["client_ip"] == "192.0.2.10"
    assert row.result == "denied: the console asked to act for a user this box does not know"


@pytest.mark.parametrize("action", ["init", "decommission"])
def test_the_console_may_never_do_a_direct_only_action(served: tuple[Site, str], action: str) -> None:
    site, sock = served
    reply = client.call(sock, action, {}, {}, acting_for={"user": ME, "ip": "192.0.2.10"})
    assert reply.rc == 3 and "works on the store directly" in reply.error
    row = [r for r in _rows(site) if r.action == action][-1]  # (init: after the store's own init row)
    assert row.result.startswith("denied:") and row.detail["via"] == "console"


@pytest.mark.parametrize("served", ["nobody"], indirect=True)
def test_for_from_a_uid_that_is_not_the_consoles_is_refused_and_audited(served: tuple[Site, str]) -> None:
    site, sock = served
    reply = client.call(sock, "list", {}, {}, acting_for={"user": ME, "ip": "192.0.2.10"})
    assert reply.rc == 3 and "only the console (user nobody) may act for another user" in reply.error
    [row] = [r for r in _rows(site) if r.action == "list"]
    assert row.user == ME and row.detail["via"] == "socket" and "client_ip" not in row.detail
    assert row.result.startswith("denied: only the console") and row.detail["acting_for"] == ME
    assert client.call(sock, "list", {}, {}).rc == 0  # the same user asking for themselves: as ever


# -- with real Unix users ----------------------------------------------------------------------


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


CLIENT = """
import json, sys
from recorderd import client
sock, action, args, acting = sys.argv[1:5]
reply = client.call(sock, action, json.loads(args), {}, acting_for=json.loads(acting))
print(json.dumps({"rc": reply.rc, "error": reply.error, "data": reply.data}))
"""


class Users:
    def __init__(self, tag: str, base: Path, site: Site, sock: str) -> None:
        self.tag, self.base, self.site, self.sock = tag, base, site, sock
        self.console, self.manager, self.other = f"{tag}c", f"{tag}m", f"{tag}x"
        self.python: list[str] = []

    def call(self, user: str, action: str, args: dict | None = None, acting: dict | None = None) -> dict:
        cmd = ["runuser", "-u", user, "--", *self.python, "-c", CLIENT, self.sock, action, json.dumps(args or {}),
               json.dumps(acting)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def users() -> Iterator[Users]:
    needs_root("the console's acting-for is checked with real Unix users", *USER_TOOLS, "gpasswd", "runuser")
    tag = f"k{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="kconsole-", dir="/tmp"))
    os.chmod(base, 0o755)
    groups = [f"{tag}-mgr", f"{tag}-sta", f"{tag}-tec", f"{tag}-aud"]
    made_users: list[str] = []
    made_groups: list[str] = []
    server = None
    try:
        for g in groups:
            _sh("groupadd", g)
            made_groups.append(g)
        for user, extra in ((f"{tag}c", []), (f"{tag}m", ["-G", f"{tag}-mgr"]), (f"{tag}x", [])):
            _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, user)
            made_users.append(user)
        roles = ", ".join(f"{r}_group: {g}" for r, g in zip(("manager", "staff", "technician", "auditor"), groups, strict=False))
        site = Site(base, None, f"roles: {{{roles}}}\nconsole: {{user: {tag}c}}\n")
        for name in ("recorderd.yaml", "dids.yaml"):
            os.chmod(base / name, 0o644)
        assert site.ctl("init") == 0
        assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
        config = load(str(site.config))
        server = ControlServer(config)
        assert server.start()
        u = Users(tag, base, site, control.socket_path(config))
        u.python = python_for(u.console)
        yield u
    finally:
        if server is not None:
            server.stop()
        for user in made_users:
            subprocess.run(["userdel", user], capture_output=True)
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_the_console_uid_acting_for_a_manager_is_allowed_and_audited(users: Users) -> None:
    out = users.call(users.console, "list", {"json": True}, {"user": users.manager, "ip": "198.51.100.4"})
    assert out["rc"] == 0, out
    [row] = [r for r in _rows(users.site) if r.action == "list"]
    assert row.user == users.manager and row.result == "allowed"
    assert (row.detail["role"], row.detail["via"], row.detail["client_ip"]) == ("manager", "console", "198.51.100.4")


def test_another_uid_sending_for_is_refused_and_audited(users: Users) -> None:
    out = users.call(users.other, "list", {}, {"user": users.manager, "ip": "198.51.100.4"})
    assert out["rc"] == 3 and f"only the console (user {users.console})" in out["error"]
    [row] = [r for r in _rows(users.site) if r.action == "list"]
    assert row.user == users.other and row.detail["via"] == "socket" and row.detail["acting_for"] == users.manager
    assert row.result.startswith("denied: only the console")


def test_a_group_removed_takes_effect_at_the_next_request(users: Users) -> None:
    acting = {"user": users.manager, "ip": "198.51.100.4"}
    assert users.call(users.console, "list", {}, acting)["rc"] == 0
    _sh("gpasswd", "-d", users.manager, f"{users.tag}-mgr")
    out = users.call(users.console, "list", {}, acting)
    assert out["rc"] == 3 and "in none of the recorderd role groups" in out["error"]
    rows = [r for r in _rows(users.site) if r.action == "list"]
    assert [r.result.split(":")[0] for r in rows] == ["allowed", "denied"]
    assert rows[1].user == users.manager and rows[1].detail["via"] == "console"


def test_the_consoles_uid_may_hold_more_slots_than_one_user() -> None:
    slots = control.Slots(control.MAX_CLIENTS, control.MAX_PER_UID)
    for _ in range(control.MAX_PER_UID):
        assert slots.take(1000) is None
    assert slots.take(1000) == "uid-limit"
    for _ in range(control.CONSOLE_SLOTS - control.MAX_PER_UID):
        assert slots.take(1000, control.CONSOLE_SLOTS) is None
    assert slots.take(1000, control.CONSOLE_SLOTS) == "uid-limit"


# -- status for the technician's page ------------------------------------------------------------


def test_status_gives_the_technicians_overview_with_packets_per_second_and_recent_warnings(tmp_path: Path) -> None:
    import logging
    import time

    from recorderd.service import build_pipeline

    site = Site(tmp_path, None, f"console: {{user: {ME}}}\n").init()
    config = load(str(site.config))
    store = site.open_store()
    pipeline = build_pipeline(config, store)
    server = ControlServer(config, pipeline=pipeline)
    assert server.start()
    try:
        sock = control.socket_path(config)
        client.call(sock, "status", {}, {}, acting_for={"user": ME, "ip": "192.0.2.10"})
        pipeline.counters["packets"] += 5000
        pipeline.counters["keep_failures"] = 2
        logging.getLogger("storage.store").warning("could not keep recording %s", "20261201-100409-3f9a0c12b4",
                                                   extra={"EVENT": "keep-failed"})
        logging.getLogger("storage.store").warning("again", extra={"EVENT": "keep-failed"})
        time.sleep(1.1)
        reply = client.call(sock, "status", {}, {}, acting_for={"user": ME, "ip": "192.0.2.10"})
        assert reply.rc == 0, reply.error
        o = reply.data["overview"]
        assert o["capture_running"] is True and o["keep_failures"] == 2 and o["active_calls"] == 0
        assert 1000 < o["packets_per_s"] <= 5000
        assert o["store_free_bytes"] > 0 and "last_erasure" in o and "next_erasure" in o and "kernel_drops" in o
        [w] = o["recent_warnings"]
        assert w["kind"] == "keep-failed" and w["count"] == 2 and w["last"].endswith("+09:00")
        assert "20261201" not in json.dumps(o["recent_warnings"])  # the kind and time only, never the message
    finally:
        server.stop()
        store.close()
    assert server.warnings not in logging.getLogger().handlers
