"""Roles and the control socket without extra users: root is no role by itself, refusals are clear
and audited, caller numbers are masked and kept out of the audit log, and the control server (run
in-process on a real socket, peer credentials from the kernel) serves the same operations as direct
mode, including on a socket path too long for sockaddr_un, and refuses what it should."""
from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from recorderd import wire
from recorderd.config import load
from recorderd.control import ControlServer
from recorderd.roles import mask_number, resolve, scrub
from storage.audit import AuditLog


def rows(site: Site) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows()]
    finally:
        audit.close()


@pytest.mark.parametrize("number,masked", [
    ("09011112222", "*********22"),
    ("+819033334444", "+**********44"),
    ("044-200-3939", "***-***-**39"),
    ("anonymous", "anonymous"),
])
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@pytest.mark.parametrize("text,clean", [
    ("caller 090-1111-2222 was rude", "caller [number removed] was rude"),
    ("+819033334444", "[number removed]"),
    ("hold until 2026-10-01, ref K-2026-0012", "hold until 2026-10-01, ref K-2026-0012"),
    ("extension 2301 and 110", "extension 2301 and 110"),
])
def test_scrub_removes_phone_numbers_only(text: str, clean: str) -> None:
    assert scrub(text) == clean


def test_root_is_not_a_role_and_a_user_with_none_is_refused_on_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    groups = "roles: {manager_group: rd-no-mgr, staff_group: rd-no-stf, technician_group: rd-no-tec, auditor_group: rd-no-aud}\n"
    site = Site(tmp_path, settings=groups).init()  # init needs no role: only the right to create the store
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    capsys.readouterr()
    for args in (["list"], ["export", "x", "--out", str(tmp_path / "x.wav"), "--purpose", "quality"], ["audit", "show"],
                 ["status"], ["notice"]):
        assert site.ctl(*args) == 3
        err = capsys.readouterr().err
        user = resolve(os.getuid(), load(str(site.config)), via="direct").user
        assert f"{user} is in none of the recorderd role groups (rd-no-mgr, rd-no-stf, rd-no-tec, rd-no-aud)" in err
    denied = [e for e in rows(site) if e.result.startswith("denied")]
    assert [e.action for e in denied] == ["list", "export", "audit-show", "status", "notice"]
    assert all(e.detail["roles"] == [] and e.detail["role"] == "none" and e.uid == os.getuid() for e in denied)
    assert denied[1].recording_id == "x" and denied[1].detail["purpose"] == "quality"
    assert not (tmp_path / "x.wav").exists()


def test_the_runner_gets_the_roles_of_its_groups(site: Site) -> None:
    caller = resolve(os.getuid(), load(str(site.config)), via="direct")
    assert caller.roles == ("manager", "staff", "technician", "auditor")  # conftest: its group has every role
    assert caller.role_for(["auditor", "technician"]) == "technician"


def test_technician_sees_no_caller_and_cannot_search_by_caller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import grp

    me = grp.getgrgid(os.getgid()).gr_name
    site = Site(tmp_path, settings=f"roles: {{technician_group: {me}, manager_group: rd-none}}\n").init()
    site.replay(FIXTURES / "demo-day.pcap")
    capsys.readouterr()
    assert site.ctl("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    callers = {r["caller"] for r in listed}
    assert listed and all(c.strip("*+-")[:-2] == "" for c in callers)
    assert site.ctl("search", "--caller-ends", "2222") == 3
    assert "technicians may not search by caller number" in capsys.readouterr().err
    assert site.ctl("export", listed[0]["id"], "--out", str(tmp_path / "x.wav"), "--purpose", "quality") == 3


def test_search_filters_and_no_caller_number_in_the_audit_log(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "demo-day.pcap")
    every = site.list(capsys)
    target = next(r for r in every if r["caller"] == "0311112222")
    for args, expect in (
        (["--caller", "03-1111-2222"], [r for r in every if r["caller"] == "0311112222"]),
        (["--caller", "+819033334444"], [r for r in every if r["caller"] == "+819033334444"]),
        (["--caller-ends", "4444"], [r for r in every if r["caller"].endswith("4444")]),
        (["--did", "044-201-3113"], [r for r in every if r["did"] == "+81442013113"]),
        (["--did", target["did_label"]], [r for r in every if r["did_label"] == target["did_label"]]),
        (["--from", "2026-09-21T23:17:00", "--to", "2026-09-21T23:18:00"],
         [r for r in every if "23:17:00" <= r["started_at"][11:19] < "23:18:00"]),
    ):
        assert site.ctl("search", *args, "--json") == 0
        assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [r["id"] for r in expect], args
        assert expect
    assert site.ctl("search", "--caller-ends", "22") == 2  # too few digits to mean anything
    assert site.ctl("complaint", "new", "--summary", "the caller on 090-1111-2222 asked twice") == 0
    out = tmp_path / "09011112222.wav"
    assert site.ctl("export", target["id"], "--out", str(out), "--purpose", "quality") == 0
    raw = b"".join(p.read_bytes() for p in site.store.glob("audit.sqlite*"))
    for caller in {r["caller"] for r in every}:
        assert caller.encode() not in raw, caller
    assert b"09011112222" not in raw and b"090-1111-2222" not in raw
    searches = [e for e in rows(site) if e.action == "search"]
    assert {e.detail["filters"].get("caller") for e in searches} >= {"exact", "last digits"}


# -- the control server, in-process, on a real socket ---------------------------------------------------


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    deep = tmp_path / ("long-folder-name-" * 4) / ("deeper-" * 6)
    deep.mkdir(parents=True)
    site = Site(deep).init()
    site.replay(FIXTURES / "inbound-alaw.pcap")
    server = ControlServer(load(str(site.config)))
    assert len(str(deep / "control.sock")) > 108  # beyond sockaddr_un: served through /proc/self/fd
    assert server.start()
    yield site, server
    server.stop()


def test_requests_through_the_socket_are_the_same_operations(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site, server = served
    sock = site.root / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o666
    [rec] = site.list(capsys)
    out = tmp_path / "copy.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "suspicious_call") == 0
    assert out.read_bytes() == site.wav_bytes(rec) and stat.S_IMODE(out.stat().st_mode) == 0o600
    capsys.readouterr()
    assert site.ctl("status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["service"] == {"running": False} and status["store"]["recordings"] == 1  # no capture in this server
    events = rows(site)
    assert {e.detail["via"] for e in events if e.action != "init"} == {"socket"}
    [export] = [e for e in events if e.action == "export"]
    assert export.uid == os.getuid() and export.detail["purpose"] == "suspicious_call" and export.result == "allowed"
    server.stop()
    assert not sock.exists()
    assert site.ctl("status") == 0  # the service is gone: directly
    assert rows(site)[-1].detail["via"] == "direct"


def _raw(site: Site, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, wire.unix_address(str(site.root / "control.sock")) as addr:
        s.connect(addr)
        wire.send_json(s, request)
        while True:
            reply = wire.recv_json(s)
            if reply.get("t") == "reply":
                return reply


def test_the_server_trusts_nothing_the_client_sends(served) -> None:  # type: ignore[no-untyped-def]
    site, _ = served
    assert _raw(site, {"t": "request", "v": 99, "action": "list"})["rc"] == 2
    reply = _raw(site, {"t": "request", "v": 1, "action": "drop-tables", "args": {}})
    assert reply["rc"] == 2 and "unknown command" in reply["error"]
    assert rows(site)[-1].result == "denied: unknown command"
    reply = _raw(site, {"t": "request", "v": 1, "action": "hold", "args": {"id": ["x"], "until": 5}})
    assert reply["rc"] == 2 and "expected text" in reply["error"]
    reply = _raw(site, {"t": "request", "v": 1, "action": "export", "args": {"id": "nope", "out": "/etc/passwd",
                                                                           "purpose": "quality"}})
    assert reply["rc"] == 1 and "no recording 'nope'" in reply["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, wire.unix_address(str(site.root / "control.sock")) as addr:
        s.connect(addr)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not our protocol: dropped, the server carries on
    assert _raw(site, {"t": "request", "v": 1, "action": "notice", "args": {}})["rc"] == 0


def test_a_stale_socket_is_replaced_and_a_live_one_is_left_alone(served) -> None:  # type: ignore[no-untyped-def]
    site, server = served
    second = ControlServer(load(str(site.config)))
    assert not second.start()  # another server answers there
    server.stop()
    path = str(site.root / "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, wire.unix_address(path) as addr:
        s.bind(addr)  # a socket file nobody listens on, as a crash leaves it
    third = ControlServer(load(str(site.config)))
    assert third.start()
    third.stop()
