"""The index's personal fields sealed under each recording's key, caller search through keyed
digests, search in SQL one page at a time (``find``), the schema version (issue 13).

Stores made by replaying the fixtures through the real CLI, or filled through the real ``Index.add``
(bench/console_search.py's ``fill``); ``find`` asked through the real control socket."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site
from hypothesis import given
from hypothesis import strategies as st

from capture.dids import to_e164
from recorderd.client import call
from recorderd.config import load
from recorderd.control import ControlServer
from storage.audit import AuditLog
from storage.search import caller_key

sys.path.insert(0, str(ROOT / "bench"))
from console_search import fill  # noqa: E402


def raw_index(site: Site) -> bytes:
    index = site.store / "index.sqlite"
    return b"".join(p.read_bytes() for p in (index, Path(f"{index}-wal")) if p.exists())


def ask(site: Site, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = site.ctl(*args)
    out, err = capsys.readouterr()
    return rc, out, err


def found(site: Site, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    rc, out, err = ask(site, capsys, "search", "--json", *args)
    assert rc == 0, err
    return [r["caller"] for r in json.loads(out)]


def audit_rows(site: Site) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows()]
    finally:
        audit.close()


def test_the_index_holds_no_caller_number_call_id_or_dtmf_in_the_clear(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap", FIXTURES / "inbound-e164.pcap", FIXTURES / "dtmf.pcap")
    recs = site.list(capsys)
    assert sorted(r["caller"] for r in recs) == ["+819033334444", "09011112222", "09011112222"]
    assert {r["call_id"] for r in recs} == {"call-mulaw-1@203.0.113.5", "call-e164-1@203.0.113.5",
                                            "call-dtmf-1@203.0.113.5"}
    [dtmf] = [r for r in recs if r["call_id"].startswith("call-dtmf")]
    assert [e[1] for s in dtmf["streams"] for e in s["dtmf"]] == ["1", "#"]  # shown to those who may hear the call
    raw = raw_index(site)
    for rec in recs:
        for text in (rec["caller"], rec["caller"][-8:], rec["call_id"], "call-dtmf"):
            assert text.encode() not in raw, text
    assert b'"dtmf"' not in raw
    with sqlite3.connect(site.store / "index.sqlite") as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(recordings)")}
    assert not columns & {"caller", "call_id"}


def test_crypto_erase_takes_the_sealed_fields_and_digests_with_the_key(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    store = site.open_store()
    try:
        with sqlite3.connect(store.index_path) as db:
            assert db.execute("SELECT count(*) FROM caller_digests").fetchone()[0] == 6  # exact + last 4..8
        store.db().begin_erasure(rec["id"], store.clock())
        row = store.reading.get(rec["id"])
        assert (row.caller, row.call_id) == ("", "")
        with sqlite3.connect(store.index_path) as db:
            assert db.execute("SELECT count(*) FROM caller_digests").fetchone()[0] == 0
            assert db.execute("SELECT sealed FROM recordings").fetchone()[0] == b""
    finally:
        store.close()
    assert found(site, capsys, "--caller", "09011112222") == []


def test_caller_search_by_exact_number_in_any_form_and_by_last_digits(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap", FIXTURES / "inbound-e164.pcap", FIXTURES / "inbound-alaw.pcap",
                FIXTURES / "dtmf.pcap")
    assert found(site, capsys, "--caller", "090-1111-2222") == ["09011112222"] * 2
    assert found(site, capsys, "--caller", "+81 90 1111 2222") == ["09011112222"] * 2
    assert found(site, capsys, "--caller", "090-3333-4444") == ["+819033334444"]  # national form of an E.164 From
    assert found(site, capsys, "--caller", "090-1111-222") == []  # one digit short: another number
    assert found(site, capsys, "--caller-ends", "2222") == ["09011112222", "0311112222", "09011112222"]
    assert found(site, capsys, "--caller-ends", "11112222") == ["09011112222", "0311112222", "09011112222"]
    assert found(site, capsys, "--caller-ends", "311112222") == ["0311112222"]  # longer than the digests: confirmed
    assert found(site, capsys, "--caller-ends", "9033334444") == ["+819033334444"]
    assert found(site, capsys, "--caller-ends", "5555") == []
    rc, _, err = ask(site, capsys, "search", "--caller-ends", "222")
    assert rc != 0 and "at least 4 digits" in err
    for event in audit_rows(site):
        if event.action == "search":
            assert event.detail["filters"]["caller"] in ("exact", "last digits")
    raw = (site.store / "audit.sqlite").read_bytes()
    assert b"1111" not in raw and b"3333" not in raw


@given(st.text(alphabet="0123456789+-(). 　x", max_size=20))
def test_storage_reads_a_number_as_capture_does(text: str) -> None:
    assert caller_key(text) == (to_e164(text) or re.sub(r"\D", "", text))


def serve(site: Site):  # type: ignore[no-untyped-def]
    server = ControlServer(load(str(site.config)))
    assert server.start()
    return server


def find(site: Site, **args: object):  # type: ignore[no-untyped-def]
    return call(str(site.root / "control.sock"), "find", args, {})


def test_find_pages_newest_first_with_the_total(site: Site) -> None:
    store = site.open_store()
    try:
        made = fill(store, 130)
    finally:
        store.close()
    newest_first = sorted(made, key=lambda r: (r.started_at, r.id), reverse=True)
    server = serve(site)
    try:
        first = find(site, page_size=50)
        assert first.rc == 0, first.error
        assert (first.data["total"], first.data["page"], first.data["page_size"]) == (130, 1, 50)
        assert [r["id"] for r in first.data["rows"]] == [r.id for r in newest_first[:50]]
        assert first.data["rows"][0]["caller"] == newest_first[0].caller  # opened for the page shown
        third = find(site, page=3, page_size=50)
        assert [r["id"] for r in third.data["rows"]] == [r.id for r in newest_first[100:]]
        assert find(site, page=4, page_size=50).data["rows"] == []

        someone = newest_first[7]
        digits = re.sub(r"\D", "", someone.caller)
        want = [r.id for r in newest_first if r.caller == someone.caller]
        by_number = find(site, caller=someone.caller)
        assert by_number.data["total"] == len(want) and [r["id"] for r in by_number.data["rows"]] == want
        ends = [r.id for r in newest_first if re.sub(r"\D", "", r.caller).endswith(digits[-6:])]
        assert [r["id"] for r in find(site, caller_ends=digits[-6:], page_size=200).data["rows"]] == ends

        long_ones = [r.id for r in newest_first if r.ended_at - r.started_at >= 300]
        assert [r["id"] for r in find(site, min_duration=300, page_size=200).data["rows"]] == long_ones
        short = [r.id for r in newest_first if r.ended_at - r.started_at <= 30]
        assert [r["id"] for r in find(site, max_duration="30", page_size=200).data["rows"]] == short
        label = newest_first[0].did_label
        assert [r["id"] for r in find(site, did=label, page_size=200).data["rows"]] == \
            [r.id for r in newest_first if r.did_label == label]
        incomplete = [r.id for r in newest_first if r.state == "incomplete"]
        assert [r["id"] for r in find(site, state="incomplete", page_size=200).data["rows"]] == incomplete
        day = find(site, **{"from": "2026-09-20", "to": "2026-09-20"}, page_size=200).data["rows"]
        assert [r["id"] for r in day] == [r.id for r in newest_first if r.id.startswith("20260920-")]

        assert find(site, page_size=201).rc != 0 and "page_size" in find(site, page_size=201).error
        assert find(site, page=0).rc != 0
        assert find(site, state="deleted").rc != 0
        assert find(site, min_duration="-1").rc != 0
        assert find(site, caller_ends="12").rc != 0
    finally:
        server.stop()
    [event] = [e for e in audit_rows(site)
               if e.action == "find" and e.detail.get("filters", {}).get("caller") == "exact"]
    assert event.detail["count"] == len(want) and someone.caller not in json.dumps(event.detail)


def test_find_on_hold(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap", FIXTURES / "inbound-alaw.pcap")
    recs = site.list(capsys)
    assert site.ctl("hold", recs[0]["id"], "--until", "2099-01-01", "--reason", "complaint", "--ref", "C-1") == 0
    server = serve(site)
    try:
        assert [r["id"] for r in find(site, on_hold=True).data["rows"]] == [recs[0]["id"]]
        assert [r["id"] for r in find(site, on_hold="no").data["rows"]] == [recs[1]["id"]]
    finally:
        server.stop()


def test_technicians_find_masked_and_without_a_caller_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import grp

    me = grp.getgrgid(os.getgid()).gr_name
    site = Site(tmp_path, settings=f"control: {{socket: control.sock}}\nroles: {{technician_group: {me}, "
                                   "manager_group: nogroup, staff_group: nogroup, "
                                   "auditor_group: nogroup}\n").init()
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    server = serve(site)
    try:
        reply = find(site)
        assert reply.rc == 0 and reply.data["total"] == 1
        [row] = reply.data["rows"]
        assert row["caller"] != "09011112222" and row["caller"].endswith("22") and row["call_id"] == "(hidden)"
        refused = find(site, caller="09011112222")
        assert refused.rc != 0 and "technicians may not search by caller number" in refused.error
    finally:
        server.stop()


def test_disclosure_search_finds_the_caller_through_the_digests(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-e164.pcap", FIXTURES / "inbound-mulaw.pcap")
    rc, out, err = ask(site, capsys, "disclosure", "open", "--requester-type", "self", "--ref", "D-1", "--json")
    assert rc == 0, err
    request = str(json.loads(out)["request"])
    rc, out, err = ask(site, capsys, "disclosure", "search", request, "--caller", "090-3333-4444",
                       "--from", "2026-09-01", "--to", "2026-09-30", "--json")
    assert rc == 0, err
    [candidate] = json.loads(out)["candidates"]
    assert candidate["id"] in {r["id"] for r in site.list(capsys) if r["caller"] == "+819033334444"}


def test_a_store_newer_than_the_code_is_refused_naming_both_versions(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    with sqlite3.connect(site.store / "index.sqlite") as db:
        db.execute("UPDATE store_meta SET value = '4' WHERE key = 'schema_version'")
    before = (site.store / "index.sqlite").read_bytes()
    for args in (("list",), ("init",)):
        rc, out, err = ask(site, capsys, *args)
        assert rc != 0 and "schema version 4" in err and "up to 3" in err, (args, out, err)
    assert (site.store / "index.sqlite").read_bytes() == before


def test_erasure_leaves_no_caller_number_in_any_file(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """After retention the caller's number, its Call-ID, its digests and its key are in no file of
    the store (index, WAL, audit log, casework, spool)."""
    from test_retention import Clock, jst

    from storage.retention import RetentionWorker

    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    assert found(site, capsys, "--caller", "09011112222") == ["09011112222"]
    with sqlite3.connect(site.store / "index.sqlite") as db:
        [(wrapped, sealed)] = db.execute("SELECT wrapped_key, sealed FROM recordings").fetchall()
        digests = [d for (d,) in db.execute("SELECT digest FROM caller_digests")]
    store = site.open_store()
    store.clock = Clock(jst("2026-10-06 00:00:01"))
    assert [e.id for e in RetentionWorker(store).run().erased] == [rec["id"]]
    store.close()
    files = [p for p in site.store.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.sqlite", "audit.sqlite"}
    for path in files:
        data = path.read_bytes()
        for secret in (b"09011112222", b"11112222", rec["call_id"].encode(), wrapped, sealed, *digests):
            assert secret not in data, (path.name, secret[:12])
    assert site.spool_files() == [] and site.stored_files() == []


def test_an_altered_sealed_row_is_shown_unreadable_and_the_others_still_listed(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap", FIXTURES / "inbound-alaw.pcap")
    first, second = site.list(capsys)
    with sqlite3.connect(site.store / "index.sqlite") as db:
        [(sealed,)] = db.execute("SELECT sealed FROM recordings WHERE id = ?", (first["id"],)).fetchall()
        db.execute("UPDATE recordings SET sealed = ? WHERE id = ?",
                   (sealed[:-1] + bytes([sealed[-1] ^ 1]), first["id"]))
    listed = site.list(capsys)
    assert [(r["id"], r["caller"], r["call_id"]) for r in listed] == \
        [(first["id"], "(unreadable)", "(unreadable)"), (second["id"], second["caller"], second["call_id"])]
