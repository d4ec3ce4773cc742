"""One conversation in parts (a transfer, a codec change mid-call) and the legs of it that were not
recorded (an SBC's other face), in the store: the index keeps the conversation, the part and why it
began, and the linked legs (how matched in clear, their Call-IDs sealed under the recording's key);
``list`` shows the parts together ("1/2"), ``show`` names the other parts and the legs, ``find``
filters by conversation, ``export --conversation`` copies every part (each with its signed manifest,
which names the conversation and the part), ``export`` of one part says there are others, every
copy is audited under its recording's id, and crypto-erase at the deadline takes the legs' sealed
Call-IDs with the audio. The recordings are made through storage's own sink with CallInfo values,
as capture makes them (no capture needed)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import Site

from capture.sink import CallEnd, CallInfo, StreamStats
from storage.audit import AuditLog
from storage.index import own_conversation
from storage.retention import RetentionWorker
from storage.spool import SpoolSink

DID, LABEL = "+81442003939", "サンキューコールかわさき"
START = 1790000000.0  # 2026-09-22 JST
CALLER = "09012345678"
LEG_IDS = ("sbc-outside-leg-7f3a@203.0.113.9", "relay-leg-0442003939@198.51.100.4")


def token(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()[:16]  # a token as capture makes one (here: any 16 hex)


def record(store, call_id: str, *, started: float, part: int = 1, reason: str = "", conversation: str = "",
           legs: tuple[tuple[str, str], ...] = (), seconds: int = 2, byte: int = 0x11, did: str = DID,
           label: str = LABEL) -> str:  # type: ignore[no-untyped-def]
    """One recording through the store's sink, as capture drives it; its id."""
    info = CallInfo(call_id=call_id, did=did, did_label=label, caller=CALLER, started_at=started, codec="PCMU",
                    conversation=conversation, part=part, part_reason=reason)
    rec = SpoolSink(store).call_started(info)
    packets = seconds * 50
    for i in range(packets):
        rec.audio(1, i * 160, bytes([byte]) * 160)
        rec.audio(2, i * 160, bytes([byte + 1]) * 160)
    for leg, how in legs:
        rec.link_leg(leg, how)
    stats = tuple(StreamStats(ch, (ch,), packets, packets, 0, 0, 0, ((ch, 0, 0),), 0.0) for ch in (1, 2))
    rec.end(CallEnd(ended_at=started + seconds, complete=True, reason="bye", streams=stats))
    return rec.id


@pytest.fixture
def conv(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A conversation in two parts (the second after a transfer), part 1 with two linked legs, and a
    call of its own between them in time (a later start than part 1, an earlier one than part 2)."""
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        t = token("call-conv-1")
        p1 = record(store, "call-conv-1", started=START, conversation=t, legs=(
            (LEG_IDS[0], "address"), (LEG_IDS[1], "rtp-relay")))
        other = record(store, "call-alone", started=START + 1, byte=0x33)
        p2 = record(store, "call-conv-1-b", started=START + 3, part=2, reason="transfer", conversation=t, byte=0x55)
    finally:
        store.close()
    return site, t, p1, p2, other


def out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def ctl_json(site: Site, capsys: pytest.CaptureFixture[str], *args: str):  # type: ignore[no-untyped-def]
    capsys.readouterr()
    rc = site.ctl(*args, "--json")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def audit_rows(site: Site) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows()]
    finally:
        audit.close()


def test_the_index_keeps_the_conversation_part_and_the_sealed_legs(conv) -> None:  # type: ignore[no-untyped-def]
    site, t, p1, p2, other = conv
    with sqlite3.connect(site.store / "index.sqlite") as db:
        rows = {r[0]: r[1:] for r in db.execute(
            "SELECT id, conversation, part, part_reason, conversation_start FROM recordings")}
        legs = db.execute("SELECT recording_id, n, how, sealed FROM linked_legs ORDER BY n").fetchall()
    assert rows[p1] == (t, 1, "", START) and rows[p2] == (t, 2, "transfer", START)
    assert rows[other] == (own_conversation(other), 1, "", START + 1)
    assert [(r, n, how) for r, n, how, _ in legs] == [(p1, 1, "address"), (p1, 2, "rtp-relay")]
    raw = b"".join(p.read_bytes() for p in site.store.glob("index.sqlite*"))
    for leg in LEG_IDS:  # sealed: not in the file, not even in part
        assert leg.encode() not in raw and leg.split("@")[0].encode() not in raw


def test_list_shows_the_parts_of_a_conversation_together(conv, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site, t, p1, p2, other = conv
    listed = ctl_json(site, capsys, "list")
    assert [(r["id"], r["part"], r["parts"]) for r in listed] == [(p1, 1, 2), (p2, 2, 2), (other, 1, 1)]
    assert listed[0]["linked_legs"] == 2 and listed[1]["part_reason"] == "transfer"
    assert listed[0]["conversation"] == listed[1]["conversation"] == t != listed[2]["conversation"]
    capsys.readouterr()
    assert site.ctl("list") == 0
    lines = out(capsys).splitlines()
    assert lines[0].split()[:8] == ["id", "DID", "label", "start", "duration", "codec", "state", "part"]
    assert [ln.split()[0] for ln in lines[1:4]] == [p1, p2, other]
    assert " 1/2 " in lines[1] and " 2/2 transfer " in lines[2] and "/" not in lines[3]
    page = ctl_json(site, capsys, "find")  # newest first: the conversation (from part 1's start) after the later call
    assert [r["id"] for r in page["rows"]] == [other, p1, p2]
    found = ctl_json(site, capsys, "find", "--conversation", t)
    assert found["total"] == 2 and [r["id"] for r in found["rows"]] == [p1, p2]
    [row] = [e for e in audit_rows(site) if e.action == "find" and "conversation" in (e.detail.get("filters") or {})]
    assert row.detail["filters"]["conversation"] == t and row.result == "allowed"


def test_show_lists_the_other_parts_and_the_linked_legs(conv, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site, t, p1, p2, other = conv
    shown = ctl_json(site, capsys, "show", p1)
    assert shown["conversation"]["token"] == t and shown["conversation"]["part"] == 1
    assert [(p["id"], p["part"], p["part_reason"]) for p in shown["conversation"]["parts"]] == [
        (p1, 1, ""), (p2, 2, "transfer")]
    assert shown["linked_legs"] == [{"how": "address", "call_id": LEG_IDS[0]}, {"how": "rtp-relay", "call_id": LEG_IDS[1]}]
    capsys.readouterr()
    assert site.ctl("show", p2) == 0
    text = out(capsys)
    assert f"part      2 of 2 of conversation {t} (began: transfer); other parts: {p1} (part 1, 2.0 s)" in text
    assert "legs" not in text  # part 2 has none
    capsys.readouterr()
    assert site.ctl("show", p1) == 0
    assert f"legs      2 other leg(s) of the conversation, not recorded: address: {LEG_IDS[0]}; rtp-relay: {LEG_IDS[1]}" \
        in out(capsys)
    alone = ctl_json(site, capsys, "show", other)
    assert [p["id"] for p in alone["conversation"]["parts"]] == [other] and alone["linked_legs"] == []


def test_export_of_the_conversation_copies_every_part_with_its_manifest(conv, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    site, t, p1, p2, other = conv
    folder = tmp_path / "copies"
    folder.mkdir()
    before = len(audit_rows(site))
    capsys.readouterr()
    assert site.ctl("export", p2, "--conversation", "--out", str(folder), "--purpose", "quality") == 0, capsys.readouterr().err
    text = out(capsys)
    assert f"conversation {t} of {p2}: 2 part(s) exported to {folder}" in text
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{p}.wav{s}" for p in (p1, p2) for s in ("", ".manifest.json", ".manifest.sig"))
    listed = {r["id"]: r for r in ctl_json(site, capsys, "list")}
    for rid, part in ((p1, 1), (p2, 2)):
        wav = folder / f"{rid}.wav"
        assert hashlib.sha256(wav.read_bytes()).hexdigest() == listed[rid]["sha256"] == site_wav_sha(site, rid)
        manifest = json.loads((folder / f"{rid}.wav.manifest.json").read_text())
        assert manifest["recording_id"] == rid
        assert manifest["conversation"] == {"token": t, "part": part, "parts": 2, "part_reason": "" if part == 1 else "transfer",
                                            "other_parts": [p2 if part == 1 else p1]}
        capsys.readouterr()
        assert site.ctl("verify-export", str(wav)) == 0, capsys.readouterr()
    rows = audit_rows(site)[before:]
    exports = [e for e in rows if e.action == "export"]
    assert sorted(e.recording_id for e in exports) == sorted([p1, p2])  # one row per recording copied
    assert all(e.result == "allowed" and e.detail["purpose"] == "quality" for e in exports)
    assert len({e.detail["copy"] for e in exports}) == 2  # each its own registered copy
    copies = ctl_json(site, capsys, "copies", "list")
    assert sorted(c["recording_id"] for c in copies) == sorted([p1, p2])


def site_wav_sha(site: Site, rid: str) -> str:
    return hashlib.sha256(site.wav_bytes({"id": rid})).hexdigest()


def test_export_of_one_part_says_the_conversation_has_others(conv, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    site, t, p1, p2, other = conv
    capsys.readouterr()
    assert site.ctl("export", p1, "--out", str(tmp_path / "one.wav"), "--purpose", "quality") == 0
    text = out(capsys)
    assert f"this is part 1 of 2 of its conversation: the other part(s) {p2} are not in this copy" in text
    assert "--conversation" in text
    manifest = json.loads((tmp_path / "one.wav.manifest.json").read_text())
    assert manifest["conversation"]["other_parts"] == [p2] and manifest["conversation"]["parts"] == 2
    capsys.readouterr()
    assert site.ctl("export", other, "--out", str(tmp_path / "alone.wav"), "--purpose", "quality") == 0
    assert "conversation" not in out(capsys)
    assert json.loads((tmp_path / "alone.wav.manifest.json").read_text())["conversation"]["parts"] == 1


def test_export_of_the_conversation_refuses_parts_it_was_not_asked_for(conv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A part kept between the client's look and its request is not copied unasked: nothing is."""
    from recorderd import ctl

    site, t, p1, p2, other = conv
    folder = tmp_path / "copies"
    folder.mkdir()
    config = __import__("recorderd.config", fromlist=["load"]).load(str(site.config))
    reply = ctl.perform(config, "export", {"id": p1, "conversation": True, "parts": [p1], "out": str(folder),
                                            "purpose": "quality", "format": "wav"})
    assert reply.rc == 1 and "now has the part(s)" in reply.error and list(folder.iterdir()) == []
    [row] = [e for e in audit_rows(site) if e.action == "export"]
    assert row.result.startswith("failed") and row.recording_id == p1


def test_crypto_erase_takes_the_linked_legs_with_the_audio(conv, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    site, t, p1, p2, other = conv
    store = site.open_store()
    try:
        store.clock = lambda: START + 40 * 86400  # past every deadline
        report = RetentionWorker(store).run()
        assert sorted(e.id for e in report.erased) == sorted([p1, p2, other])
    finally:
        store.close()
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM linked_legs").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM recordings").fetchone() == (0,)
    assert site.stored_files() == []
    raw = b"".join(p.read_bytes() for p in site.store.glob("index.sqlite*"))
    assert all(leg.encode() not in raw for leg in LEG_IDS)


def test_erasure_begun_leaves_no_leg_to_open(conv, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """Between the key's destruction and the files' erasure (a crash there): no leg left to show."""
    site, t, p1, p2, other = conv
    store = site.open_store()
    try:
        store.db().begin_erasure(p1, START)
        assert store.db().legs(p1) == []
    finally:
        store.close()
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM linked_legs WHERE recording_id = ?", (p1,)).fetchone() == (0,)


def test_a_part_kept_before_an_earlier_one_still_lists_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The store's thread keeps parts as they end; should a later part be kept first, the earlier
    one still brings the conversation to its own start: the parts stay together, in part order."""
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        t = token("call-late")
        p2 = record(store, "call-late-b", started=START + 10, part=2, reason="codec-change", conversation=t)
        between = record(store, "call-between", started=START + 5)
        p1 = record(store, "call-late", started=START, conversation=t)
    finally:
        store.close()
    assert [r["id"] for r in ctl_json(site, capsys, "list")] == [p1, p2, between]
    assert [r["id"] for r in ctl_json(site, capsys, "find")["rows"]] == [between, p1, p2]
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT DISTINCT conversation_start, conversation_first FROM recordings WHERE conversation = ?",
                          (t,)).fetchall() == [(START, p1)]


def test_a_leg_with_an_unknown_how_or_a_huge_call_id_is_kept_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What capture passes is input too: an unknown ``how`` is kept as "unsure", a Call-ID is kept
    to 512 characters, at most 16 legs a recording, and a conversation token that is not one of
    capture's (16 hex digits) gives the recording a conversation of its own."""
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        legs = tuple((f"leg-{i}-" + "x" * 5000, "magic\n") for i in range(40))
        rid = record(store, "call-odd", started=START, conversation="../../etc; DROP", legs=legs)
    finally:
        store.close()
    shown = ctl_json(site, capsys, "show", rid)
    assert len(shown["linked_legs"]) == 16 and {g["how"] for g in shown["linked_legs"]} == {"unsure"}
    assert all(len(g["call_id"]) == 512 for g in shown["linked_legs"])
    assert shown["conversation"]["token"] == own_conversation(rid)


def test_a_search_by_start_time_finds_a_later_part_alone(conv, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """The start-time filter is each part's own start (the search's look through the conversations'
    order is widened by how late a part may start: nothing is missed)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    site, t, p1, p2, other = conv

    def at(ts: float) -> str:
        return datetime.fromtimestamp(ts, ZoneInfo("Asia/Tokyo")).isoformat()

    window = ctl_json(site, capsys, "find", "--from", at(START + 2), "--to", at(START + 4))
    assert [r["id"] for r in window["rows"]] == [p2] and window["total"] == 1
    window = ctl_json(site, capsys, "find", "--from", at(START), "--to", at(START + 0.5))
    assert [r["id"] for r in window["rows"]] == [p1] and window["total"] == 1
    assert [r["id"] for r in ctl_json(site, capsys, "list", "--from", at(START + 0.5))] == [p2, other]


def test_a_part_recovered_after_a_crash_keeps_its_conversation_and_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The service dies in part 2 (nothing ended it): the recovery at the next start keeps it as part
    2 of the same conversation, from the call's line in the spool sidecar."""
    from storage.recovery import recover_spool

    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        t = token("call-crash")
        p1 = record(store, "call-crash", started=START, conversation=t)
        info = CallInfo(call_id="call-crash", did=DID, did_label=LABEL, caller=CALLER, started_at=START + 3,
                        codec="PCMA", conversation=t, part=2, part_reason="codec-change")
        rec = SpoolSink(store).call_started(info)
        for i in range(100):
            rec.audio(1, i * 160, b"\xd5" * 160)
        rec._flush(final=True)  # on disk, then the process dies: no end()
        rec.file.close()
        rec.sidecar.close()
        [recovered] = recover_spool(store)
    finally:
        store.close()
    listed = ctl_json(site, capsys, "list")
    assert [(r["id"], r["part"], r["parts"], r["part_reason"], r["conversation"]) for r in listed] == [
        (p1, 1, 2, "", t), (recovered, 2, 2, "codec-change", t)]


def test_the_linked_legs_of_a_recording_recovered_after_a_crash_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The legs seen during the call are lines of the spool sidecar: a recording recovered after the
    service died keeps them (sealed in the index like any), and the spool keeps nothing after."""
    from storage.recovery import recover_spool

    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        info = CallInfo(call_id="call-crash-legs", did=DID, did_label=LABEL, caller=CALLER, started_at=START, codec="PCMU",
                        conversation=token("call-crash-legs"))
        rec = SpoolSink(store).call_started(info)
        rec.link_leg(LEG_IDS[0], "address")
        for i in range(100):
            rec.audio(1, i * 160, b"\x11" * 160)
        rec.link_leg(LEG_IDS[1], "unsure")
        rec._flush(final=True)  # on disk, then the process dies: no end()
        rec.file.close()
        rec.sidecar.close()
        [recovered] = recover_spool(store)
    finally:
        store.close()
    shown = ctl_json(site, capsys, "show", recovered)
    assert shown["linked_legs"] == [{"how": "address", "call_id": LEG_IDS[0]}, {"how": "unsure", "call_id": LEG_IDS[1]}]
    assert site.spool_files() == []


def test_two_calls_that_reuse_a_call_id_are_two_conversations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two callers, one Call-ID (a device's counter restarted, or forged) 100 s apart: two conversations,
    and export --conversation of the first hands over the first caller's call alone."""
    from frames import write_pcap
    from generator import SipCall

    uri = "sip:0442003939@192.0.2.10"
    a = SipCall("1@192.0.2.77", uri, uri, "09011112222", START, seed=21)
    b = SipCall("1@192.0.2.77", uri, uri, "08033334444", START + 100, seed=22)
    pcap = tmp_path / "reuse.pcap"
    write_pcap(str(pcap), sorted(a.packets() + b.packets(), key=lambda p: p[0]))
    (tmp_path / "site").mkdir()
    site = Site(tmp_path / "site").init()
    assert site.replay(pcap) == 0
    recs = sorted(site.list(capsys), key=lambda r: r["started_at"])
    assert [(r["call_id"], r["part"], r["parts"]) for r in recs] == [("1@192.0.2.77", 1, 1)] * 2
    assert recs[0]["conversation"] != recs[1]["conversation"]
    folder = tmp_path / "copies"
    folder.mkdir()
    assert site.ctl("export", recs[0]["id"], "--conversation", "--out", str(folder), "--purpose", "quality") == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"{recs[0]['id']}.wav{s}" for s in ("", ".manifest.json", ".manifest.sig")]


@pytest.mark.parametrize("second", ["same-part", "other-number"])
def test_a_conversation_that_cannot_be_one_is_not_exported_or_provided(
    second: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows under one token that repeat a part number (calls reusing a Call-ID, kept before tokens
    named the INVITE's time, or forged) or whose parts are to different numbers: export and provide
    --conversation refuse, nothing written, no copy registered, the refusal audited."""
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        t = token("1@192.0.2.77")
        p1 = record(store, "1@192.0.2.77", started=START, conversation=t)
        if second == "same-part":
            p2 = record(store, "1@192.0.2.77", started=START + 100, conversation=t, byte=0x55)
        else:
            p2 = record(store, "1@192.0.2.77-b", started=START + 3, part=2, reason="transfer", conversation=t,
                        byte=0x55, did="+81442009999", label="別の窓口")
    finally:
        store.close()
    folder = tmp_path / "copies"
    folder.mkdir()
    for args in (("export", p1, "--conversation", "--out", str(folder), "--purpose", "quality"),
                 ("provide", p2, "--conversation", "--to", "Kawasaki Police Station", "--basis", "law",
                  "--out", str(folder))):
        capsys.readouterr()
        assert site.ctl(*args) == 1
        err = capsys.readouterr().err
        assert "cannot be one conversation" in err and "nothing was" in err, err
        assert CALLER not in err
    assert list(folder.iterdir()) == []
    assert ctl_json(site, capsys, "copies", "list") == []
    refused = [e for e in audit_rows(site) if e.action in ("export", "provide")]
    assert [(e.action, e.recording_id) for e in refused] == [("export", p1), ("provide", p2)]
    assert all(e.result.startswith("failed") for e in refused)
    capsys.readouterr()
    assert site.ctl("export", p1, "--out", str(tmp_path / "one.wav"), "--purpose", "quality") == 0  # alone: as ever


@pytest.mark.parametrize("version", ["2", "1"])
def test_a_schema_version_set_back_does_not_migrate_the_conversations_again(  # type: ignore[no-untyped-def]
        conv, capsys: pytest.CaptureFixture[str], version: str) -> None:
    """The index's schema_version set back by hand (to 2, or to the first edition's 1) on a store of
    schema 3. Was: the next open ran the 2 -> 3 migration again (audited, index-migrated), and every
    part became a conversation of its own (from 1: an SQLite error, naming no cause). The layout decides: it is
    schema 3's, so the store is refused, saying the version does not match it; nothing is changed."""
    site, t, p1, p2, _other = conv
    index = site.store / "index.sqlite"

    def conversations() -> list[tuple]:
        db = sqlite3.connect(index)
        try:
            return db.execute("SELECT id, conversation, part, part_reason, conversation_start, conversation_first "
                              "FROM recordings ORDER BY id").fetchall()
        finally:
            db.close()

    before = conversations()
    assert [(r[1], r[2]) for r in before if r[0] in (p1, p2)] == [(t, 1), (t, 2)]
    db = sqlite3.connect(index)
    with db:
        db.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (version,))
    db.close()
    for args in (("list",), ("verify",), ("init",)):
        capsys.readouterr()
        assert site.ctl(*args) != 0, args
        err = capsys.readouterr().err
        assert (f"the index {index} says schema_version {version}, but its layout is schema 3's: the version does "
                "not match the layout (altered)") in err and "set schema_version back to 3" in err, (args, err)
    assert conversations() == before
    assert not [e for _, e, _, _ in AuditLog(str(site.store / "audit.sqlite")).rows() if e.action == "index-migrated"]
