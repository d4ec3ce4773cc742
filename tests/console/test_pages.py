"""The console's everyday pages (search, recording, playback, audit, status, notice) through
Starlette's TestClient against ``create_app`` and the REAL daemon: a ControlServer on a real store
made by replaying fixtures, reached over its real socket, acting for real Unix users (prefix
``w1``) in each role. The password check is a function of the test's (PAM is tested with a real
browser in test_browser*.py); everything after the sign-in is the console's and the daemon's own.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pwd
import re
import sqlite3
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root
from starlette.testclient import TestClient

from console.app import create_app
from recorderd.config import load
from recorderd.control import ControlServer

PASSWORD = "w1-correct horse"
ROLES = ("manager", "staff", "technician", "auditor")
USERS = {role: f"w1{role[:4]}" for role in ROLES}  # w1mana, w1staf, w1tech, w1audi
GROUP = "w1-{}".format
CALLS = ("inbound-alaw.pcap", "inbound-e164.pcap", "dtmf.pcap")
ALAW_CALLER, E164_CALLER = "0311112222", "+819033334444"
CALLERS = (ALAW_CALLER, "09011112222", E164_CALLER, "819033334444", "9033334444")


def _remove_users() -> None:
    for user in USERS.values():
        subprocess.run(["userdel", "-f", user], capture_output=True)
    for role in ROLES:
        subprocess.run(["groupdel", GROUP(role)], capture_output=True)


@pytest.fixture(scope="module")
def people() -> Iterator[dict[str, str]]:
    needs_root("the console pages act for real Unix users in each role (useradd)", *USER_TOOLS)
    _remove_users()
    try:
        for role, user in USERS.items():
            subprocess.run(["groupadd", GROUP(role)], check=True, capture_output=True)
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", GROUP(role), user],
                           check=True, capture_output=True)
        yield USERS
    finally:
        _remove_users()


@pytest.fixture(scope="module")
def daemon(people: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, ControlServer]]:
    runner = pwd.getpwuid(os.getuid()).pw_name  # the daemon trusts acting_for from this uid: the console's
    roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
    site = Site(tmp_path_factory.mktemp("w1site"), settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}}}\n")
    site.init()
    for pcap in CALLS:
        assert site.replay(FIXTURES / pcap) == 0
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield site, server
    finally:
        server.stop()


def _check(user: str, password: str) -> bool:
    return user in USERS.values() and password == PASSWORD


@pytest.fixture(scope="module")
def app(daemon: tuple[Site, ControlServer]):  # type: ignore[no-untyped-def]
    site, _ = daemon
    return create_app(load(str(site.config), dids_optional=True), authenticate=_check)


def signed_in(app, role: str, lang: str = "ja") -> TestClient:  # type: ignore[no-untyped-def]
    client = TestClient(app, base_url="https://testserver", client=("192.0.2.10", 50000), follow_redirects=False)
    client.cookies.set("lang", lang)
    reply = client.post("/signin", data={"user": USERS[role], "password": PASSWORD})
    assert reply.status_code == 303, reply.text[:500]
    return client


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page) or re.search(r'data-csrf="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr class="recording" data-id="([^"]+)"', page)


def recordings(site: Site) -> dict[str, object]:
    store = site.open_store()
    try:
        return {r.caller: r for r in store.reading.recordings()}
    finally:
        store.close()


def audit_rows(site: Site) -> list:
    from storage.audit import AuditLog

    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows()]
    finally:
        log.close()


# -- search -------------------------------------------------------------------------------------------


def test_search_by_the_callers_last_digits_finds_the_call(  # type: ignore[no-untyped-def]
    app, daemon, caplog: pytest.LogCaptureFixture
) -> None:
    site, _ = daemon
    rows = recordings(site)
    staff = signed_in(app, "staff")
    caplog.set_level("DEBUG")
    page = staff.get("/search", params={"caller": "4444", "match": "ends"})
    assert page.status_code == 200, page.text[:500]
    assert rows_of(page.text) == [rows[E164_CALLER].id]
    assert E164_CALLER in page.text and 'class="open" href="/recordings/' in page.text
    whole = staff.get("/search", params={"caller": "03-1111-2222", "match": "exact"})
    assert rows_of(whole.text) == [rows[ALAW_CALLER].id]
    wide = staff.get("/search", params={"caller": "３３３−４４４４", "match": "ends"})  # typed in full width
    assert rows_of(wide.text) == [rows[E164_CALLER].id]
    everything = staff.get("/search")
    found = rows_of(everything.text)
    assert sorted(found) == sorted(r.id for r in rows.values())
    started = {r.id: r.started_at for r in rows.values()}
    assert found == sorted(found, key=lambda i: -started[i])  # newest first
    assert len(everything.content) < 200_000
    found = [r for r in audit_rows(site)
             if r.action == "find" and r.detail.get("filters", {}).get("caller") == "last digits"]
    assert len(found) == 2
    for row in found:
        assert "4444" not in json.dumps(row.detail, ensure_ascii=False)  # the kind of filter, never the digits
    console_lines = [r.getMessage() for r in caplog.records if r.name.startswith("console")]
    assert any("GET /search" in line for line in console_lines)
    assert not [line for line in console_lines if "4444" in line or "1111" in line]  # no query string in a log


def test_search_times_are_tokyo_times(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rows = recordings(site)  # the fixtures' calls start at 2026-09-21 23:13:20 in Tokyo (14:13:20 UTC)
    manager = signed_in(app, "manager")
    page = manager.get("/search", params={"from": "2026-09-21T23:13", "to": "2026-09-21T23:14"})
    assert sorted(rows_of(page.text)) == sorted(r.id for r in rows.values())
    assert "2026-09-21 23:13:20" in page.text
    assert rows_of(manager.get("/search", params={"from": "2026-09-21T23:14"}).text) == []
    assert rows_of(manager.get("/search", params={"to": "2026-09-21T14:14"}).text) == []  # 14:14 UTC is not meant
    assert manager.get("/search", params={"from": "yesterday"}).status_code == 400


def test_search_filters_by_did_label_and_duration(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rows = recordings(site)
    manager = signed_in(app, "manager")
    label = rows[ALAW_CALLER].did_label
    page = manager.get("/search", params={"did": label})
    assert rows_of(page.text) == [rows[ALAW_CALLER].id]
    assert f"<option selected>{label}</option>" in page.text  # the designated labels are offered
    longest = max(r.ended_at - r.started_at for r in rows.values())
    assert rows_of(manager.get("/search", params={"min_duration": str(int(longest) + 1)}).text) == []


def test_a_technician_sees_masked_numbers_and_no_caller_filter(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    tech = signed_in(app, "technician")
    page = tech.get("/search")
    assert page.status_code == 200
    assert len(rows_of(page.text)) == len(CALLS)
    assert 'name="caller"' not in page.text
    for number in CALLERS:
        assert number not in page.text
    assert "********22" in page.text  # 0311112222 masked: the last two digits only
    assert 'class="open"' not in page.text  # the recording page is not theirs
    assert '<a href="/search">検索</a>' in page.text  # their menu has the (masked) search
    typed = tech.get("/search", params={"caller": "2222", "match": "ends"})  # typed into the URL
    assert typed.status_code == 403 and "2222" not in typed.text
    assert tech.get(f"/recordings/{recordings(site)[ALAW_CALLER].id}").status_code == 403


# -- the recording page and playback ------------------------------------------------------------------


def _play(client: TestClient, rid: str, purpose: str = "quality") -> dict:
    page = client.get(f"/recordings/{rid}")
    assert page.status_code == 200, page.text[:500]
    reply = client.post(f"/recordings/{rid}/play", data={"purpose": purpose}, headers={"x-csrf-token": csrf(page.text)})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_the_recording_page_shows_the_play_in_its_access_history(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rid = recordings(site)[ALAW_CALLER].id
    staff = signed_in(app, "staff")
    before = staff.get(f"/recordings/{rid}").text
    for needed in ('id="purpose"', 'id="play"', '<audio id="player"', '<canvas id="waveform"', 'id="integrity"',
                   'id="history"', 'id="export-form"', 'id="request-form"', recordings(site)[ALAW_CALLER].sha256):
        assert needed in before, needed
    assert 'id="hold-form"' not in before and 'id="provide-form"' not in before  # a manager's
    assert '<a href="/complaints">苦情</a>' in before and 'href="/casework"' not in before  # staff's menu
    assert len(before.encode()) < 200_000
    _play(staff, rid, "suspicious_call")
    history = re.search(r'<table id="history">(.*?)</table>', staff.get(f"/recordings/{rid}").text, re.S).group(1)
    [play] = [row for row in re.findall(r"<tr>(.*?)</tr>", history, re.S) if "<td>再生</td>" in row]
    assert f"<td>{USERS['staff']}</td>" in play and "<td>不審な電話への対応</td>" in play and "<td>画面</td>" in play
    assert "<td>許可</td>" in play  # the result in words too (was: "allowed")
    page_en = signed_in(app, "staff", "en").get(f"/recordings/{rid}").text
    history_en = re.search(r'<table id="history">(.*?)</table>', page_en, re.S).group(1)
    assert ("<td>played</td>" in history_en and "<td>allowed</td>" in history_en
            and "<td>Suspicious call</td>" in history_en)
    [row] = [r for r in audit_rows(site) if r.action == "play"]
    assert row.user == USERS["staff"] and row.detail["purpose"] == "suspicious_call" and row.detail["via"] == "console"
    as_manager = signed_in(app, "manager").get(f"/recordings/{rid}").text
    assert 'id="hold-form"' in as_manager and 'id="provide-form"' in as_manager


def test_no_audio_without_a_purpose(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rid = recordings(site)[ALAW_CALLER].id
    staff = signed_in(app, "staff")
    token = csrf(staff.get(f"/recordings/{rid}").text)
    plays = len([r for r in audit_rows(site) if r.action == "play"])
    for purpose in ("", "curiosity"):
        reply = staff.post(f"/recordings/{rid}/play", data={"purpose": purpose}, headers={"x-csrf-token": token})
        assert reply.status_code == 400 and "ticket" not in reply.text and "/audio/" not in reply.text
    assert len([r for r in audit_rows(site) if r.action == "play"]) == plays


def _alaw(byte: int) -> int:
    """ITU-T G.711 A-law expansion (the reference: written here, not the daemon's table)."""
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = t + 8 if seg == 0 else (t + 0x108) << (seg - 1) if seg > 1 else t + 0x108
    return t if a & 0x80 else -t


def _data_chunk(wav: bytes) -> tuple[dict, bytes]:
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    pos, fmt = 12, {}
    while pos + 8 <= len(wav):
        cid, size = wav[pos : pos + 4], struct.unpack("<I", wav[pos + 4 : pos + 8])[0]
        body = wav[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = {"tag": tag, "channels": channels, "rate": rate, "bits": bits}
        if cid == b"data":
            return fmt, body
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def test_range_requests_return_the_bytes_of_the_pcm_rendition(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    row = recordings(site)[ALAW_CALLER]
    rid = row.id
    wav = site.wav_bytes({"id": rid})  # what an export for quality writes (the stored WAV, its SHA-256 the index's)
    assert hashlib.sha256(wav).hexdigest() == row.sha256
    fmt, alaw = _data_chunk(wav)
    assert fmt["tag"] == 6 and fmt["channels"] == 2  # A-law, stereo: as on the wire
    samples = b"".join(struct.pack("<h", _alaw(b)) for b in alaw)

    staff = signed_in(app, "staff")
    played = _play(staff, rid)
    size = played["size"]
    assert size == 44 + len(samples)
    head = staff.get(played["audio"], headers={"range": "bytes=0-43"})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 0-43/{size}"
    assert _data_chunk(head.content + samples) == ({"tag": 1, "channels": 2, "rate": 8000, "bits": 16}, samples)
    rendition = head.content + samples
    for asked, first, last in (("bytes=0-", 0, min(size, 1 << 20) - 1), ("bytes=1000-1999", 1000, 1999),
                               ("bytes=-100", size - 100, size - 1),
                               (f"bytes={size - 10}-{size + 500}", size - 10, size - 1),
                               ("bytes=44-44", 44, 44)):
        reply = staff.get(played["audio"], headers={"range": asked})
        assert reply.status_code == 206, (asked, reply.status_code)
        assert reply.headers["content-range"] == f"bytes {first}-{last}/{size}", asked
        assert reply.content == rendition[first : last + 1], asked
        assert reply.headers["content-type"] == "audio/wav" and reply.headers["cache-control"] == "no-store"
        assert reply.headers["accept-ranges"] == "bytes"
    whole = staff.get(played["audio"])  # no Range: the whole rendition
    assert whole.status_code == 200 and whole.content == rendition
    assert staff.get(played["audio"], headers={"range": f"bytes={size}-"}).status_code == 416
    wave = staff.get(played["waveform"])
    assert wave.status_code == 200 and wave.json()
    check = staff.get(played["check"]).json()
    assert check["state"] in ("checking", "checked")


def test_a_ticket_from_another_session_is_refused(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rid = recordings(site)[ALAW_CALLER].id
    first = signed_in(app, "staff")
    played = _play(first, rid)
    assert first.get(played["audio"], headers={"range": "bytes=0-99"}).status_code == 206
    for other in (signed_in(app, "staff"), signed_in(app, "manager")):  # the same person elsewhere; someone else
        for url in (played["audio"], played["waveform"], played["check"]):
            reply = other.get(url, headers={"range": "bytes=0-99"})
            assert reply.status_code == 403 and b"RIFF" not in reply.content, url
    assert signed_in(app, "staff").get("/audio/" + "A" * 22, headers={"range": "bytes=0-9"}).status_code == 403


# -- audit ----------------------------------------------------------------------------------------------


def test_audit_verify_shows_that_the_chain_holds(app, daemon) -> None:  # type: ignore[no-untyped-def]
    auditor = signed_in(app, "auditor")
    page = auditor.get("/audit")
    assert page.status_code == 200 and '<table id="audit"' in page.text
    reply = auditor.post("/audit/verify", data={"csrf": csrf(page.text)})
    assert reply.status_code == 200
    result = re.search(r'<div id="verify-result" class="ok"[^>]*><p>(.*?)</p>', reply.text, re.S)
    assert result and "監査ログは改ざんされていません" in result.group(1)
    assert auditor.post("/audit/verify", data={}).status_code == 403  # no CSRF token
    assert signed_in(app, "staff").get("/audit").status_code == 403


def test_audit_filters_and_export(app, daemon) -> None:  # type: ignore[no-untyped-def]
    site, _ = daemon
    rid = recordings(site)[E164_CALLER].id
    _play(signed_in(app, "staff"), rid)
    manager = signed_in(app, "manager")
    page = manager.get("/audit", params={"action": "play", "user": USERS["staff"], "recording": rid})
    assert page.status_code == 200
    body = re.search(r'<table id="audit"[^>]*>.*?<tbody>(.*?)</tbody>', page.text, re.S).group(1)
    shown = re.findall(r'<tr><td>(\d+)</td><td>[^<]*</td><td>([^<]*)</td>.*?'
                       r'<td class="action" data-action="(play|show|find)">[^<]*</td>\s*<td>([^<]*)</td>', body, re.S)
    assert shown and all((user, action, r) == (USERS["staff"], "play", rid) for _, user, action, r in shown)
    assert [int(seq) for seq, *_ in shown] == sorted((int(seq) for seq, *_ in shown), reverse=True)  # newest first
    assert "該当する記録はありません" in manager.get("/audit", params={"action": "play", "user": USERS["auditor"]}).text
    exported = manager.get("/audit/export", params={"format": "json"})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    lines = [json.loads(x) for x in exported.text.splitlines()]
    assert lines[0]["recorderd_audit_export"] == 1 and all("hash" in x for x in lines[1:])
    as_csv = manager.get("/audit/export", params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.text.lstrip("\ufeff").startswith("seq,at,user,uid,action")
    table = list(csv.DictReader(io.StringIO(as_csv.text.lstrip("\ufeff"))))
    assert [int(row["seq"]) for row in table][: len(lines) - 1] == [x["seq"] for x in lines[1:]]  # a line a row
    assert all(row["hash"] == x["hash"] for row, x in zip(table, lines[1:], strict=False))
    for number in CALLERS:
        assert number not in as_csv.text
    assert not list(Path(site.root).rglob("audit-export*"))  # nothing kept on disk


def test_the_audit_page_says_actions_results_and_details_in_words(app, daemon) -> None:  # type: ignore[no-untyped-def]
    """The action, the result and the detail in words (was: "play", "allowed" and the detail's raw
    JSON); the JSON is still there, behind a <details> element."""
    site, _ = daemon
    rid = recordings(site)[ALAW_CALLER].id
    _play(signed_in(app, "staff"), rid)
    auditor = signed_in(app, "auditor")
    page = auditor.get("/audit", params={"action": "play", "user": USERS["staff"], "recording": rid}).text
    cells = re.findall(r'<td class="action" data-action="play">(.*?)</tr>', page, re.S)
    assert cells
    for row in cells:
        assert row.startswith("再生</td>") and "<td>許可</td>" in row, row
        shown, full = re.search(r'<td class="detail">(.*?)<details><summary>すべての詳細（JSON）</summary>'
                                r'<pre>(.*?)</pre>', row, re.S).groups()
        assert shown.startswith("目的：") and "接続元：192.0.2.10" in shown and "{" not in shown, shown
        assert '"purpose": "' in full, full  # the JSON's quotes as they are (text, not an attribute)
    assert "目的：応対品質の向上" in page
    english = signed_in(app, "auditor", "en").get("/audit", params={"action": "play", "user": USERS["staff"]}).text
    assert ('data-action="play">played</td>' in english and "<td>allowed</td>" in english
            and "purpose: Quality of response" in english)
    signins = auditor.get("/audit", params={"action": "console-signin"}).text
    assert 'data-action="console-signin">画面へのサインイン</td>' in signins and ">console-signin<" not in signins


def test_what_a_person_typed_into_an_audited_filter_shows_on_the_audit_page_as_text(app, daemon) -> None:  # type: ignore[no-untyped-def]
    """A search's DID filter is audited as it was typed (before it is found to match no DID), and
    the audit page shows each row's whole detail as JSON in a <pre>: markup typed there is shown,
    never run, and cannot close the <pre> or the table (the JSON is escaped for text: &, < and >;
    its quotes left as they are, which in an element's text end nothing)."""
    hostile = '</pre></td></tr></table><script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    staff = signed_in(app, "staff")
    staff.get("/search", params={"did": hostile})
    page = signed_in(app, "auditor").get("/audit", params={"action": "find", "user": USERS["staff"]}).text
    fulls = re.findall(r"<pre>(.*?)</pre>", page, re.S)
    escaped = json.dumps(hostile)[1:-1].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert any(escaped in f for f in fulls), fulls[:2]
    assert "<script>" not in page and "<img" not in page and "onerror=alert(1)>" not in page.replace(escaped, "")
    assert page.count("<table") == page.count("</table>") and page.count("<pre>") == page.count("</pre>")


def test_the_full_detail_is_the_rows_json_with_plain_lists_on_one_line() -> None:
    from console.labels import full

    detail = {"count": 2, "recordings": ["20260801-1", "20260801-2"], "filters": {"did": 'a "b" <c>'},
              "nested": [{"x": [1, 2]}], "empty": {}, "none": None, "role": "staff", "via": "console"}
    text = full(detail)
    assert json.loads(text) == {k: v for k, v in detail.items() if k not in ("role", "via")}
    assert '"recordings": ["20260801-1", "20260801-2"]' in text and '"x": [1, 2]' in text


# -- status and notice ----------------------------------------------------------------------------------


def test_the_status_page_for_a_technician_shows_no_caller_number(app, daemon) -> None:  # type: ignore[no-untyped-def]
    tech = signed_in(app, "technician")
    page = tech.get("/status")
    assert page.status_code == 200
    table = re.search(r'<table class="kv" id="status">(.*?)</table>', page.text, re.S).group(1)
    for label in ("録音（キャプチャ）", "保存領域の空き", "前回の消去", "次回の消去予定", "保存に失敗した通話"):
        assert f"<th>{label}</th>" in table, label
    for raw in ("free_bytes", "kernel_drops", "next_due", "copies_past_expiry", "last_erased_id"):
        assert raw not in page.text
    for number in CALLERS:
        assert number not in page.text
    english = signed_in(app, "technician", lang="en").get("/status").text
    assert "<th>Store free space</th>" in english


def test_the_notice_in_english_keeps_the_japanese_beside(app, daemon) -> None:  # type: ignore[no-untyped-def]
    ja = signed_in(app, "staff").get("/notice")
    assert (ja.status_code == 200 and "通話録音についてのお知らせ" in ja.text
            and "Notice: calls are recorded" not in ja.text)
    en = signed_in(app, "staff", lang="en").get("/notice")
    assert "通話録音についてのお知らせ" in en.text and "Notice: calls are recorded" in en.text


def test_the_status_of_a_running_capture_in_readable_words(  # type: ignore[no-untyped-def]
    people, tmp_path: Path
) -> None:
    """A real capture pipeline (the service's) fed a call half way, its control socket serving the
    console: capture running, packets per second between two looks, calls in progress; no number."""
    from capture.source import CaptureFile
    from recorderd.service import build_pipeline, open_store

    runner = pwd.getpwuid(os.getuid()).pw_name
    roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
    site = Site(tmp_path, settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}}}\n").init()
    config = load(str(site.config))
    store = open_store(config).open()
    pipeline = build_pipeline(config, store)
    with CaptureFile(str(FIXTURES / "hold.pcap")) as source:
        packets = [p for batch in source.batches() for p in batch]
    with CaptureFile(str(FIXTURES / "rtp-foreign-source.pcap")) as source:
        foreign = [p for batch in source.batches() for p in batch]  # a call with spoofed media: a warning
    pipeline.feed(packets[: len(packets) // 3])
    server = ControlServer(config, pipeline=pipeline)
    assert server.start()
    try:
        tech = signed_in(create_app(config, authenticate=_check), "technician")
        first = tech.get("/status")
        assert first.status_code == 200
        pipeline.feed(foreign)  # the call ends (BYE) and is kept, saying its warning
        pipeline.feed(packets[len(packets) // 3 : 2 * len(packets) // 3])
        fed = 2 * len(packets) // 3 + len(foreign)  # in all
        time.sleep(1.1)  # the daemon's packets/s is taken over at least a second
        page = tech.get("/status").text
    finally:
        server.stop()
        pipeline.finish("test-end")
        store.close()
    cells = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page))
    assert cells["録音（キャプチャ）"].startswith("稼働中")
    assert cells["通話中の件数"] == "1"
    rate = float(cells["受信パケット数／秒"].replace(",", ""))
    assert 0 < rate <= fed / 1.1  # a rate, not the count
    assert cells["取りこぼしパケット数（カーネル）"] == "0"
    warnings = re.search(r'<ul class="warnings" id="warnings">(.*?)</ul>', page, re.S).group(1)
    assert "想定外の送信元からの音声：1 件" in warnings and "rtp-other-source" not in warnings
    for number in ("09011112222", "9011112222"):  # the held call's caller
        assert number not in page


def test_search_pages_newest_first(  # type: ignore[no-untyped-def]
    app, daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.pages import search

    site, _ = daemon
    manager = signed_in(app, "manager")
    everything = rows_of(manager.get("/search").text)
    monkeypatch.setattr(search, "PAGE_SIZE", 2)
    one = manager.get("/search", params={"state": "complete"})
    assert rows_of(one.text) == everything[:2] and "3 件中 1–2 件目" in one.text
    older = re.search(r'<a href="([^"]+)" rel="next">', one.text).group(1).replace("&amp;", "&")
    assert "state=complete" in older and "page=2" in older  # the filters go with the page
    two = manager.get(older)
    assert rows_of(two.text) == everything[2:3] and 'rel="next"' not in two.text and 'rel="prev"' in two.text
    assert manager.get("/search", params={"page": "0x1"}).status_code == 400


def test_each_answer_is_capped_and_the_whole_comes_in_parts(  # type: ignore[no-untyped-def]
    app, daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.pages import recording

    site, _ = daemon
    monkeypatch.setattr(recording, "MAX_ANSWER", 4096)
    staff = signed_in(app, "staff")
    played = _play(staff, recordings(site)[ALAW_CALLER].id)
    size = played["size"]
    whole = staff.get(played["audio"])  # no Range: 200, the whole, fetched 4 KiB at a time
    assert whole.status_code == 200 and len(whole.content) == size and int(whole.headers["content-length"]) == size
    opened = staff.get(played["audio"], headers={"range": "bytes=0-"})
    assert opened.status_code == 206 and opened.headers["content-range"] == f"bytes 0-4095/{size}"
    assert opened.content == whole.content[:4096]
    later = staff.get(played["audio"], headers={"range": "bytes=50000-"})
    assert later.headers["content-range"] == f"bytes 50000-54095/{size}" and later.content == whole.content[50000:54096]


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_every_page_shows_words_not_message_keys(app, daemon, lang: str) -> None:  # type: ignore[no-untyped-def]
    from console import i18n

    site, _ = daemon
    rid = recordings(site)[ALAW_CALLER].id
    manager = signed_in(app, "manager", lang=lang)
    _play(manager, rid)
    keys = [k for k in i18n.MESSAGES if k.split(".")[0] in ("rec", "search", "audit", "status", "notice", "purpose",
                                                           "basis", "action", "via", "state", "alert",
                                                           "nav")]
    for path in ("/search", f"/recordings/{rid}", "/audit", "/status", "/notice"):
        page = manager.get(path)
        assert page.status_code == 200, path
        assert f'<html lang="{lang}">' in page.text
        leaked = [k for k in keys if re.search(rf"[>\"]{re.escape(k)}[<\"]", page.text)]
        assert not leaked, (path, leaked)
        assert len(page.content) < 200_000, path


def test_audit_verify_shows_an_altered_row(people, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A row changed in the audit database behind the service's back: verify says so on the page,
    naming the problem, and the daemon opens its incident."""
    runner = pwd.getpwuid(os.getuid()).pw_name
    roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
    site = Site(tmp_path, settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}}}\n").init()
    assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
    config = load(str(site.config))
    server = ControlServer(config)
    assert server.start()
    try:
        auditor = signed_in(create_app(config, authenticate=_check), "auditor")
        page = auditor.get("/audit")
        db = sqlite3.connect(str(site.store / "audit.sqlite"))
        with db:  # an attacker with the file: the append-only triggers dropped, a row changed
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                db.execute(f'DROP TRIGGER "{name}"')
            db.execute("UPDATE audit SET user = 'someone-else' WHERE seq = 2")
        db.close()
        reply = auditor.post("/audit/verify", data={"csrf": csrf(page.text)})
    finally:
        server.stop()
    assert reply.status_code == 200
    result = re.search(r'<div id="verify-result" class="error"[^>]*><p>(.*?)</p>\s*<ul>(.*?)</ul>', reply.text, re.S)
    assert result, reply.text[-2000:]
    assert "監査ログに" in result.group(1) and "インシデント" in result.group(1)
    assert "row 2:" in result.group(2) and "altered" in result.group(2)  # the problem names the row


# -- conversations in parts (a transfer, a codec change mid-call) ------------------------------------


@pytest.fixture(scope="module")
def conv_daemon(
    people: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Site, ControlServer, dict]]:
    """A store with one conversation in two parts (the second after a transfer; the first with two
    linked legs) and a call of its own, made through storage's sink as capture makes them."""
    from test_conversations import LEG_IDS, START, record, token

    runner = pwd.getpwuid(os.getuid()).pw_name
    roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
    site = Site(tmp_path_factory.mktemp("s-conv"), settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}}}\n")
    site.init()
    store = site.open_store()
    try:
        t = token("call-conv-1")
        ids = {"t": t, "p1": record(store, "call-conv-1", started=START, conversation=t,
                                    legs=((LEG_IDS[0], "address"), (LEG_IDS[1], "rtp-relay"))),
               "other": record(store, "call-alone", started=START + 1, byte=0x33),
               "p2": record(store, "call-conv-1-b", started=START + 3, part=2, reason="transfer", conversation=t,
                            byte=0x55)}
    finally:
        store.close()
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield site, server, ids
    finally:
        server.stop()


@pytest.fixture(scope="module")
def conv_app(conv_daemon):  # type: ignore[no-untyped-def]
    site, _, _ = conv_daemon
    return create_app(load(str(site.config), dids_optional=True), authenticate=_check)


def test_search_shows_the_parts_of_a_conversation_together(  # type: ignore[no-untyped-def]
    conv_app, conv_daemon
) -> None:
    site, _, ids = conv_daemon
    page = signed_in(conv_app, "staff").get("/search").text
    marks = re.findall(r'<tr class="recording" data-id="([^"]+)" data-conversation="([0-9a-f]+)"'
                       r'(?: data-part="([^"]+)")?', page)
    assert [(rid, part) for rid, _, part in marks] == [(ids["other"], ""), (ids["p1"], "1/2"), (ids["p2"], "2/2")]
    assert marks[1][1] == marks[2][1] == ids["t"] != marks[0][1]
    assert "<th>通話の一部</th>" in page and 'title="一つの会話の第2部分（全2部分）">2/2</span>' in page
    assert "<th>Part</th>" in signed_in(conv_app, "staff", "en").get("/search").text


def test_the_recording_page_lists_the_other_parts_and_the_linked_legs(  # type: ignore[no-untyped-def]
    conv_app, conv_daemon
) -> None:
    from test_conversations import LEG_IDS

    site, _, ids = conv_daemon
    page = signed_in(conv_app, "staff").get(f"/recordings/{ids['p1']}").text
    parts = re.search(r'<table id="parts">(.*?)</table>', page, re.S).group(1)
    assert f'<a href="/recordings/{ids["p2"]}">開く</a>' in parts and "この録音" in parts and "転送の後" in parts
    assert "この会話は2つの部分に分けて録音されています。" in page
    legs = re.search(r'<h2>連携した別区間</h2>.*?<table id="legs">(.*?)</table>', page, re.S).group(1)
    assert "<td>アドレスで照合</td>" in legs and "<td>RTPの中継で照合</td>" in legs and LEG_IDS[0] in legs
    assert f'name="parts" value="{ids["p1"]},{ids["p2"]}"' in page and 'name="conversation" value="1"' in page
    alone = signed_in(conv_app, "staff").get(f"/recordings/{ids['other']}").text
    assert 'id="parts"' not in alone and 'id="legs"' not in alone and 'name="conversation"' not in alone
    english = signed_in(conv_app, "staff", "en").get(f"/recordings/{ids['p2']}").text
    assert "Parts of this conversation" in english and "after a transfer" in english and 'id="legs"' not in english


def test_the_download_of_a_conversation_holds_every_part(  # type: ignore[no-untyped-def]
    conv_app, conv_daemon, caplog: pytest.LogCaptureFixture
) -> None:
    import zipfile

    from test_conversations import CALLER

    site, _, ids = conv_daemon
    staff = signed_in(conv_app, "staff")
    token = csrf(staff.get(f"/recordings/{ids['p2']}").text)
    answer = staff.post(f"/recordings/{ids['p2']}/export", data={
        "csrf": token, "purpose": "quality", "format": "wav", "conversation": "1",
        "parts": f"{ids['p1']},{ids['p2']}"})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-disposition"] == f'attachment; filename="{ids["p2"]}.conversation.zip"'
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    members = {i.filename: archive.read(i) for i in archive.infolist()}
    assert sorted(members) == sorted(f"{p}.wav{s}" for p in (ids["p1"], ids["p2"])
                                     for s in ("", ".manifest.json", ".manifest.sig"))
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    for n, rid in ((1, ids["p1"]), (2, ids["p2"])):
        assert members[f"{rid}.wav"] == site.wav_bytes({"id": rid})  # byte for byte the recording
        manifest = json.loads(members[f"{rid}.wav.manifest.json"])
        assert manifest["recording_id"] == rid and manifest["conversation"]["token"] == ids["t"]
        assert (manifest["conversation"]["part"], manifest["conversation"]["parts"]) == (n, 2)
        load_pem_public_key(manifest["recorder"]["public_key"].encode()).verify(
            members[f"{rid}.wav.manifest.sig"], members[f"{rid}.wav.manifest.json"])
    exports = [e for e in audit_rows(site) if e.action == "export"]
    assert sorted(e.recording_id for e in exports) == sorted([ids["p1"], ids["p2"]])
    assert all(e.user == USERS["staff"] and e.detail["via"] == "console" and e.result == "allowed" for e in exports)
    assert CALLER not in caplog.text and CALLER[-8:] not in caplog.text


def test_a_conversation_download_naming_a_part_of_another_is_refused(  # type: ignore[no-untyped-def]
    conv_app, conv_daemon
) -> None:
    site, _, ids = conv_daemon
    before = len([e for e in audit_rows(site) if e.action == "export" and e.result == "allowed"])
    staff = signed_in(conv_app, "staff")
    token = csrf(staff.get(f"/recordings/{ids['p1']}").text)
    answer = staff.post(f"/recordings/{ids['p1']}/export", data={
        "csrf": token, "purpose": "quality", "format": "wav", "conversation": "1",
        "parts": f"{ids['p1']},{ids['other']}"})
    assert answer.status_code != 200 and answer.headers["content-type"].startswith("text/html")
    assert len([e for e in audit_rows(site) if e.action == "export" and e.result == "allowed"]) == before


def test_the_status_page_says_traffic_not_understood_and_what_a_remote_mirror_sent(  # type: ignore[no-untyped-def]
    people, tmp_path: Path
) -> None:
    """The service's pipeline fed a remote mirror's call (ERSPAN II) and then a minute of MPLS it
    cannot open: the page says the traffic is not understood (the standing alert, as the daemon
    raises it, and the day's warning by its label, never the raw kind) and what the mirror sent."""
    from capture.source import CaptureFile
    from recorderd.daemon import Daemon
    from recorderd.service import build_pipeline, open_store

    runner = pwd.getpwuid(os.getuid()).pw_name
    roles = ", ".join(f"{role}_group: {GROUP(role)}" for role in ROLES)
    site = Site(tmp_path, settings=f"roles: {{{roles}}}\nconsole: {{user: {runner}}}\n").init()
    config = load(str(site.config))
    store = open_store(config).open()
    pipeline = build_pipeline(config, store)
    service = Daemon(str(site.config))
    server = ControlServer(config, pipeline=pipeline, alerts=service.alerts)
    assert server.start()
    try:
        for name in ("encap-erspan2.pcap", "unrecognised-mpls.pcap"):
            with CaptureFile(str(FIXTURES / name)) as source:
                pipeline.feed([p for batch in source.batches() for p in batch])
        service._unrecognised(pipeline)  # what the daemon's loop does between two blocks
        assert "capture_unrecognised" in service.alerts
        ja = signed_in(create_app(config, authenticate=_check), "technician").get("/status").text
        en = signed_in(create_app(config, authenticate=_check), "technician", lang="en").get("/status").text
    finally:
        server.stop()
        pipeline.finish("test-end")
        store.close()
    warnings = re.search(r'<ul class="warnings" id="warnings">(.*?)</ul>', ja, re.S).group(1)
    assert "受信している通信を解釈できません（録音できない形式です）。" in warnings
    assert "解釈できない通信：1 件" in warnings
    assert "capture_unrecognised" not in ja and "capture-unrecognised" not in ja and "その他" not in warnings
    cells = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", ja))
    assert cells["リモートミラーの受信（開封したパケット）"] == "ERSPAN II 307"
    assert "Traffic not understood: recorderctl status has the counts." in en and "Traffic not understood：" not in en
    assert "<tr><th>Remote mirror packets opened</th><td>ERSPAN II 307</td></tr>" in en


def test_a_manager_provides_the_whole_conversation_in_one_download(  # type: ignore[no-untyped-def]
    conv_app, conv_daemon
) -> None:
    """The provide form of a part offers every part of its conversation: one ZIP with each part's
    WAV, manifest (naming its provision, legal basis and the conversation) and signature; each part
    its own provision record and audit row."""
    import zipfile

    from storage.casework import Casework

    site, _, ids = conv_daemon
    manager = signed_in(conv_app, "manager")
    page = manager.get(f"/recordings/{ids['p1']}").text
    form = re.search(r'<form method="post" action="/recordings/[^"]+/provide" id="provide-form">(.*?)</form>', page,
                     re.S).group(1)
    assert 'name="conversation" value="1"' in form and f'name="parts" value="{ids["p1"]},{ids["p2"]}"' in form
    answer = manager.post(f"/recordings/{ids['p1']}/provide", data={
        "csrf": csrf(page), "basis": "law", "to": "川崎警察署", "note": "照会 第12号", "format": "wav",
        "conversation": "1", "parts": f"{ids['p1']},{ids['p2']}"})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-disposition"] == f'attachment; filename="{ids["p1"]}.conversation.zip"'
    members = {i.filename: zipfile.ZipFile(io.BytesIO(answer.content)).read(i)
               for i in zipfile.ZipFile(io.BytesIO(answer.content)).infolist()}
    assert sorted(members) == sorted(f"{p}.wav{s}" for p in (ids["p1"], ids["p2"])
                                     for s in ("", ".manifest.json", ".manifest.sig"))
    provisions = {p["recording_id"]: p for p in Casework(str(site.store / "casework.sqlite")).provisions()}
    for n, rid in ((1, ids["p1"]), (2, ids["p2"])):
        assert members[f"{rid}.wav"] == site.wav_bytes({"id": rid})
        manifest = json.loads(members[f"{rid}.wav.manifest.json"])
        assert manifest["copy_kind"] == "provision" and manifest["legal_basis"]["basis"] == "law"
        assert (manifest["legal_basis"]["provision"] == provisions[rid]["id"]
                and provisions[rid]["recipient"] == "川崎警察署")
        assert (manifest["conversation"]["token"], manifest["conversation"]["part"]) == (ids["t"], n)
    rows = [e for e in audit_rows(site) if e.action == "provide"]
    assert sorted(e.recording_id for e in rows) == sorted([ids["p1"], ids["p2"]])
    assert all(e.user == USERS["manager"] and e.detail["via"] == "console" and e.result == "allowed" for e in rows)
    other = manager.post(f"/recordings/{ids['p1']}/provide", data={
        "csrf": csrf(page), "basis": "law", "to": "川崎警察署", "format": "wav", "conversation": "1",
        "parts": f"{ids['p1']},{ids['other']}"})
    provided = [e for e in audit_rows(site) if e.action == "provide" and e.result == "allowed"]
    assert other.status_code != 200 and len(provided) == 2
