"""Export requests (guideline Art. 5(5), four eyes) and the console's sign-in accounting, through
the real daemon socket with real Unix users and groups (useradd, prefix ``k``): the test process
is the console here (``console.user`` is its own user), acting for the users it made."""
from __future__ import annotations

import getpass
import hashlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root

from recorderd import client, control
from recorderd.config import load
from recorderd.control import ControlServer
from storage.audit import AuditLog
from storage.casework import Casework

ME = getpass.getuser()
IP = "192.0.2.44"


@dataclass
class Env:
    site: Site
    sock: str
    tag: str
    rid: str
    base: Path

    def user(self, who: str) -> str:
        return f"{self.tag}{who}"

    def call(  # type: ignore[no-untyped-def]
        self, who: str, action: str, args: dict | None = None, sinks: dict | None = None
    ):
        return client.call(self.sock, action, args or {}, sinks or {}, acting_for={"user": self.user(who), "ip": IP})

    def rows(self, action: str) -> list:
        log = AuditLog(str(self.site.store / "audit.sqlite"))
        try:
            return [r[1] for r in log.rows() if r[1].action == action]
        finally:
            log.close()

    def copies(self) -> list[dict]:
        cw = Casework(str(self.site.store / "casework.sqlite"))
        try:
            return cw.copies()
        finally:
            cw.close()


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def env() -> Iterator[Env]:
    needs_root("export requests are decided by real Unix users in real groups", *USER_TOOLS, "gpasswd")
    tag = f"k{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="kreq-", dir="/tmp"))
    groups = {r: f"{tag}-{r[:3]}" for r in ("manager", "staff", "technician", "auditor")}
    made_users: list[str] = []
    made_groups: list[str] = []
    server = None
    try:
        for g in groups.values():
            _sh("groupadd", g)
            made_groups.append(g)
        for who, group in (("m1", "manager"), ("m2", "manager"), ("s", "staff"), ("t", "technician"), ("n", None)):
            extra = ["-G", groups[group]] if group else []
            _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, f"{tag}{who}")
            made_users.append(f"{tag}{who}")
        roles = ", ".join(f"{r}_group: {g}" for r, g in groups.items())
        site = Site(base, None, f"roles: {{{roles}}}\nconsole: {{user: {ME}}}\n")
        site.init()
        assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
        store = site.open_store()
        try:
            [row] = store.reading.recordings()
        finally:
            store.close()
        config = load(str(site.config))
        server = ControlServer(config)
        assert server.start()
        yield Env(site, control.socket_path(config), tag, row.id, base)
    finally:
        if server is not None:
            server.stop()
        for user in made_users:
            subprocess.run(["userdel", user], capture_output=True)
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _download(env: Env, who: str, n: int):  # type: ignore[no-untyped-def]
    """``export --request n`` by ``who`` into sinks that take the bytes and keep nothing."""
    sinks = {name: client.CallbackSink(name, lambda b: None)
             for name in ("d.wav", "d.wav.manifest.json", "d.wav.manifest.sig")}
    return env.call(who, "export", {"request": n, "out": "d.wav"}, sinks)


def test_a_staff_request_approved_by_a_manager_is_downloaded_once_byte_identical(env: Env) -> None:
    asked = env.call("s", "export-request",
                     {"id": env.rid, "purpose": "police inquiry", "reason": "警察からの照会 K-2026-0012"})
    assert asked.rc == 0, asked.error
    n = asked.data["id"]
    assert asked.data["state"] == "pending" and asked.data["requested_by"] == env.user("s")

    # not yet: pending
    early = _download(env, "s", n)
    assert early.rc == 3 and "waiting for a manager" in early.error

    # the staff member sees their request; a manager sees it with the right to decide
    assert [r["id"] for r in env.call("s", "export-requests").data["requests"]] == [n]
    [seen] = env.call("m1", "export-requests").data["requests"]
    assert seen["can_decide"] is True and seen["mine"] is False

    decided = env.call("m1", "export-decide", {"request": n, "approve": True, "reason": "照会書を確認"})
    assert decided.rc == 0, decided.error
    assert decided.data["state"] == "approved" and decided.data["decided_by"] == env.user("m1")

    # another user may not download it
    other = _download(env, "m2", n)
    assert other.rc == 3 and "only the one who asked" in other.error

    wav = bytearray()
    sinks = {name: client.CallbackSink(name, (wav.extend if name == "dl.wav" else (lambda b: None)))
             for name in ("dl.wav", "dl.wav.manifest.json", "dl.wav.manifest.sig")}
    got = env.call("s", "export", {"request": n, "out": "dl.wav"}, sinks)
    assert got.rc == 0, got.error
    # byte-identical to the stored recording (what recorderctl export writes as WAV)
    assert bytes(wav) == env.site.wav_bytes({"id": env.rid})
    assert got.data["sha256"] == hashlib.sha256(wav).hexdigest() and got.data["request"] == n

    [copy] = [c for c in env.copies() if c["out"] == "dl.wav"]
    assert (copy["user"], copy["purpose"], copy["approved_by"], copy["approval_ref"]) == (
        env.user("s"), "police inquiry", env.user("m1"), f"export request {n}")
    assert copy["expires_at"] > copy["made_at"]

    again = env.call("s", "export", {"request": n, "out": "dl2.wav"},
                     {k: client.CallbackSink(k, lambda b: None) for k in ("dl2.wav",)})
    assert again.rc == 3 and "used already" in again.error

    for action in ("export-request", "export-decide"):
        [row] = env.rows(action)
        assert row.result == "allowed" and row.recording_id == env.rid and row.detail["request"] == n
        assert row.detail["via"] == "console" and row.detail["client_ip"] == IP
        assert "照会" not in str(row.detail)  # the reason's text stays in casework
    exports = [r for r in env.rows("export") if r.detail.get("via") == "console"]
    assert [r.result.split(":")[0] for r in exports] == ["denied", "denied", "allowed", "denied"]
    assert exports[2].detail["approved_by"] == env.user("m1") and exports[2].user == env.user("s")


def test_a_manager_may_not_decide_their_own_request(env: Env) -> None:
    n = env.call("m1", "export-request", {"id": env.rid, "purpose": "training", "reason": "研修"}).data["id"]
    own = env.call("m1", "export-decide", {"request": n, "approve": True, "reason": "ok"})
    assert own.rc == 3 and "four eyes" in own.error
    [row] = env.rows("export-decide")
    assert row.result.startswith("denied: export request") and row.user == env.user("m1")
    assert env.call("m2", "export-decide", {"request": n, "refuse": True, "reason": "不要"}).rc == 0
    refused = _download(env, "m1", n)
    assert refused.rc == 3 and "was refused" in refused.error
    assert env.call("m2", "export-decide", {"request": n, "approve": True, "reason": "again"}).rc == 1  # decided


def test_staff_may_not_decide_and_see_only_their_own(env: Env) -> None:
    n = env.call("m1", "export-request", {"id": env.rid, "purpose": "training", "reason": "研修"}).data["id"]
    assert env.call("s", "export-decide", {"request": n, "approve": True, "reason": "x"}).rc == 3
    assert env.call("s", "export-requests").data["requests"] == []
    assert env.call("t", "export-request", {"id": env.rid, "purpose": "training", "reason": "x"}).rc == 3


def test_quality_needs_no_request_and_the_console_cannot_name_its_own_approver(env: Env) -> None:
    q = env.call("s", "export-request", {"id": env.rid, "purpose": "quality", "reason": "x"})
    assert q.rc == 2 and "needs no request" in q.error
    sinks = {"x.wav": client.CallbackSink("x.wav", lambda b: None)}
    direct = env.call("s", "export", {"id": env.rid, "out": "x.wav", "purpose": "police",
                                     "approved_by": env.user("m1"), "approval_ref": "R-1"}, sinks)
    assert direct.rc == 3 and "export request" in direct.error
    assert env.copies() == []


def test_a_download_the_browser_did_not_take_leaves_the_request_approved(env: Env) -> None:
    n = env.call("s", "export-request", {"id": env.rid, "purpose": "police", "reason": "x"}).data["id"]
    assert env.call("m1", "export-decide", {"request": n, "approve": True, "reason": "ok"}).rc == 0

    def gone(_sha: str) -> None:
        raise ConnectionError("the browser went away")

    sinks = {"d.wav": client.CallbackSink("d.wav", lambda b: None, gone)}
    failed = env.call("s", "export", {"request": n, "out": "d.wav"}, sinks)
    assert failed.rc == 1 and "did not confirm delivery" in failed.error
    assert env.copies() == []  # no copy registered
    [r] = env.call("s", "export-requests").data["requests"]
    assert r["state"] == "approved" and r["can_download"] is True


# -- sign-in accounting ----------------------------------------------------------------------------


def test_signin_ok_replies_with_the_roles_from_the_groups_now(env: Env) -> None:
    ok = env.call("m1", "console-signin", {"result": "ok"})
    assert ok.rc == 0 and ok.data == {"user": env.user("m1"), "roles": ["manager"]}
    _sh("gpasswd", "-a", env.user("m1"), f"{env.tag}-aud")
    assert env.call("m1", "console-signin", {"result": "ok"}).data["roles"] == ["manager", "auditor"]
    none = env.call("n", "console-signin", {"result": "ok"})
    assert none.rc == 3 and "in none of the recorderd role groups" in none.error
    rows = env.rows("console-signin")
    assert [r.result.split(":")[0] for r in rows] == ["allowed", "allowed", "denied"]
    assert all(r.detail["via"] == "console" and r.detail["client_ip"] == IP for r in rows)


def test_a_failed_signin_is_audited_without_the_password_and_for_unknown_users_too(env: Env) -> None:
    assert env.call("s", "console-signin", {"result": "failed", "password": "hunter2"}).rc == 0
    assert env.call("s", "console-signin", {"result": "locked"}).rc == 0
    unknown = client.call(env.sock, "console-signin", {"result": "failed"}, {},
                           acting_for={"user": "k-no-such-user", "ip": IP})
    assert unknown.rc == 0
    rows = env.rows("console-signin")
    assert [(r.user, r.result) for r in rows] == [
        (env.user("s"), "denied: sign-in failed"), (env.user("s"), "denied: sign-in locked"),
        ("(unknown user)", "denied: sign-in failed")]
    text = (env.site.store / "audit.sqlite").read_bytes()
    assert b"hunter2" not in text
    assert env.call("s", "console-signout", {}).rc == 0
    [out] = env.rows("console-signout")
    assert out.result == "allowed" and out.user == env.user("s")


def test_signin_accounting_is_refused_to_anyone_but_the_console(env: Env) -> None:
    for action in ("console-signin", "console-signout"):
        reply = client.call(env.sock, action, {"result": "ok"}, {})  # the console's uid, but not acting for anyone
        assert reply.rc == 3 and "the web console's" in reply.error
    accounting = env.rows("console-signin") + env.rows("console-signout")
    assert [r.result.startswith("denied") for r in accounting] == [True, True]


def test_signin_from_another_uid_is_refused(tmp_path: Path) -> None:
    site = Site(tmp_path, None, "console: {user: nobody}\n").init()
    config = load(str(site.config))
    server = ControlServer(config)
    assert server.start()
    try:
        reply = client.call(control.socket_path(config), "console-signin", {"result": "ok"}, {},
                             acting_for={"user": ME, "ip": IP})
        assert reply.rc == 3 and "only the console" in reply.error
    finally:
        server.stop()

