"""End to end on stores filled by replaying the fixtures: the disclosure workflow (Art. 10),
incidents (Art. 7, one opened by a failed verify), complaints (Art. 8), the period report
(Art. 6(3)) in text and JSON, and the public notice from the live config (Art. 4(1))."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool

from storage.audit import AuditLog


def run_json(site: Site, capsys: pytest.CaptureFixture[str], *args: str) -> object:
    capsys.readouterr()
    assert site.ctl(*args, "--json") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def err_of(site: Site, capsys: pytest.CaptureFixture[str], rc: int, *args: str) -> str:
    capsys.readouterr()
    assert site.ctl(*args) == rc
    return capsys.readouterr().err


def audit_rows(site: Site) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows()]
    finally:
        audit.close()


def test_disclosure_request_from_opening_to_release(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "demo-day.pcap")
    every = site.list(capsys)
    window = [r for r in every if r["caller"] == "09011112222" and "23:17:00" <= r["started_at"][11:19] < "23:19:00"]
    assert window
    opened = run_json(site, capsys, "disclosure", "open", "--requester-type", "appointed-agent", "--ref", "D-2026-1")
    request = str(opened["request"])  # type: ignore[index]
    found = run_json(site, capsys, "disclosure", "search", request, "--caller", "090-1111-2222",
                     "--from", "2026-09-21T23:17:00", "--to", "2026-09-21T23:19:00")
    assert sorted(c["id"] for c in found["candidates"]) == sorted(r["id"] for r in window)  # type: ignore[index]
    held = {r["id"]: r["holds"] for r in site.list(capsys)}
    assert all(held[r["id"]] and held[r["id"]][0]["reason"] == f"disclosure request {request}" for r in window)
    # Nothing is disclosed before the identity checks (Art. 10), nor to an agent before their authority is.
    assert "no identity check recorded" in err_of(site, capsys, 3, "disclosure", "decide", request, "--decision", "disclose", "--reason", "ok")
    assert site.ctl("disclosure", "check", request, "--document", "driving-licence", "--checked-by", "clerk-a",
                    "--date", "2026-09-25", "--matched-with", "address and birth date on the request form") == 0
    assert "authority" in err_of(site, capsys, 3, "disclosure", "decide", request, "--decision", "disclose", "--reason", "ok")
    assert err_of(site, capsys, 2, "disclosure", "check", request, "--document", "photo.jpg", "--checked-by", "x", "--date", "2026-09-25")
    assert site.ctl("disclosure", "check", request, "--document", "power-of-attorney", "--checked-by", "clerk-b",
                    "--date", "2026-09-26") == 0
    assert site.ctl("disclosure", "decide", request, "--decision", "disclose", "--reason", "identity and mandate verified") == 0
    # Held candidates outlive the retention run (the fixture's calls are long past their deadline).
    assert site.ctl("retention", "run") == 0
    assert sorted(r["id"] for r in site.list(capsys)) == sorted(r["id"] for r in window)
    assert site.ctl("disclosure", "release", request, "--reason", "copies handed over") == 0
    assert all(not r["holds"] for r in site.list(capsys))
    assert site.ctl("retention", "run") == 0
    assert site.list(capsys) == []
    shown = run_json(site, capsys, "disclosure", "show", request)
    assert shown["state"] == "closed" and shown["decision"] == "disclose"  # type: ignore[index]
    assert [(c["document"], c["checked_by"]) for c in shown["identity_checks"]] == [  # type: ignore[index]
        ("driving-licence", "clerk-a"), ("power-of-attorney", "clerk-b")]
    rows = audit_rows(site)
    holds = [e for e in rows if e.action == "hold" and e.detail.get("request") == int(request)]
    releases = [e for e in rows if e.action == "release" and e.detail.get("request") == int(request)]
    assert sorted(e.recording_id for e in holds) == sorted(e.recording_id for e in releases) == sorted(r["id"] for r in window)
    refused = [e for e in rows if e.action == "disclosure-decide" and e.result.startswith("denied")]
    assert len(refused) == 2
    raw = b"".join(p.read_bytes() for p in site.store.glob("*.sqlite*") if "index" not in p.name)
    assert b"09011112222" not in raw and b"090-1111-2222" not in raw  # neither audit nor casework keeps the number


def test_incidents_by_hand_and_from_a_failed_verify(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "overlapping.pcap")
    first, second = site.list(capsys)
    assert site.ctl("incident", "new", "--kind", "loss", "--summary", "a USB stick with two exported copies is missing",
                    "--recordings", f"{first['id']},{second['id']}", "--occurred", "2026-09-22T10:00",
                    "--action", "searched the office") == 0
    assert site.ctl("incident", "action", "1", "--text", "reported to the director and the bureau chief") == 0
    capsys.readouterr()
    assert site.ctl("incident", "report", "1") == 0
    report = capsys.readouterr().out
    for text in ("Incident report 1", "director and the bureau chief", "Kind:        loss", "2026-09-22T10:00:00+09:00",
                 first["id"], second["id"], "searched the office", "reported to the director"):
        assert text in report, text
    # A damaged recording: verify fails, and the incident is opened by itself, once.
    path = site.stored_path(first)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert site.ctl("verify") == 1
    assert "incident 2 opened" in capsys.readouterr().out
    assert site.ctl("verify") == 1
    assert "incident 2 already open" in capsys.readouterr().out
    incidents = run_json(site, capsys, "incident", "list")
    assert [(i["id"], i["kind"], i["automatic"], i["recordings"]) for i in incidents] == [  # type: ignore[union-attr]
        (1, "loss", False, [first["id"], second["id"]]), (2, "other", True, [first["id"]])]
    with pytest.raises(SystemExit) as refused:  # not a kind the guideline names: a usage error
        site.ctl("incident", "new", "--kind", "fire", "--summary", "x")
    assert refused.value.code == 2


def test_complaints(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    assert site.ctl("complaint", "new", "--summary", "operator was curt", "--recordings", rec["id"],
                    "--received", "2026-09-22T09:30", "--channel", "letter") == 0
    assert "no recording 'nope'" in err_of(site, capsys, 1, "complaint", "new", "--summary", "x", "--recordings", "nope")
    [c] = run_json(site, capsys, "complaint", "list", "--open")  # type: ignore[misc]
    assert (c["state"], c["channel"], c["recordings"], c["received_at"]) == ("open", "letter", [rec["id"]], "2026-09-22T09:30:00+09:00")
    assert site.ctl("complaint", "close", "1", "--outcome", "apologised; coaching given") == 0
    assert run_json(site, capsys, "complaint", "list", "--open") == []
    assert "already closed" in err_of(site, capsys, 1, "complaint", "close", "1", "--outcome", "again")
    [closed] = run_json(site, capsys, "complaint", "list")  # type: ignore[misc]
    assert closed["outcome"] == "apologised; coaching given"


def test_period_report(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Actions at fixed moments (faketime, JST = UTC+9), then the report for September-October."""
    faketime = needs_tool("faketime")
    site.replay(FIXTURES / "demo-day.pcap")
    recs = site.list(capsys)
    target = recs[0]["id"]

    def at(utc: str, *args: str) -> str:
        cmd = [faketime, utc, sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
        return f"{done.returncode}\n{done.stdout}{done.stderr}"

    day = "2026-09-25 01:00:00"  # 10:00 JST
    assert at(day, "export", target, "--out", str(tmp_path / "a.wav"), "--purpose", "quality").startswith("0")
    assert at(day, "export", target, "--out", str(tmp_path / "b.wav"), "--purpose", "suspicious_call").startswith("0")
    assert at(day, "export", target, "--out", str(tmp_path / "c.wav"), "--purpose", "training").startswith("3")
    assert at(day, "provide", target, "--to", "police", "--basis", "law", "--out", str(tmp_path / "p.wav")).startswith("0")
    assert at(day, "hold", target, "--until", "2026-10-07", "--reason", "complaint", "--ref", "K-9").startswith("0")
    assert at(day, "incident", "new", "--kind", "other", "--summary", "test").startswith("0")
    assert at(day, "complaint", "new", "--summary", "test").startswith("0")
    assert at("2026-10-05 15:00:30", "retention", "run").startswith("0")  # 30 s past the deadline: on time
    assert at("2026-10-07 17:00:00", "retention", "run").startswith("0")  # 2 h after the hold ended: late
    report = run_json(site, capsys, "report", "--from", "2026-09-01", "--to", "2026-10-31")
    assert report["recorded_per_did"] == dict(sorted(Counter(r["did_label"] for r in recs).items()))  # type: ignore[index]
    by_purpose = report["accesses"]["by_purpose"]  # type: ignore[index]
    assert by_purpose["export: quality"] == {"allowed": 1} and by_purpose["export: suspicious_call"] == {"allowed": 1}
    assert by_purpose["export: training"] == {"denied": 1} and by_purpose["provide: law"] == {"allowed": 1}
    assert report["exports"]["total"] == 2 and report["provisions"] == {"total": 1, "by_basis": {"law": 1}}  # type: ignore[index]
    assert report["holds"]["placed"] == 1  # type: ignore[index]
    erasures = report["erasures"]  # type: ignore[index]
    assert (erasures["on_time"], erasures["late"]) == (len(recs) - 1, 1)
    assert erasures["late_recordings"][0]["id"] == target and 7200 <= erasures["late_recordings"][0]["late_s"] < 7260
    assert report["incidents"]["opened"] == 1 and report["complaints"]["received"] == 1  # type: ignore[index]
    assert report["not_recorded"] is None  # no service ran: no counters kept
    capsys.readouterr()
    assert site.ctl("report", "--from", "2026-09-01", "--to", "2026-10-31") == 0
    text = capsys.readouterr().out
    for line in (f"  total: {len(recs)}", f"Erasures: {len(recs) - 1} on time, 1 late", "Provisions: 1 (law 1)",
                 "export: training: denied 1", "Calls not recorded: not available"):
        assert line in text, line
    assert run_json(site, capsys, "report", "--from", "2026-11-01", "--to", "2026-11-02")["recorded_per_did"] == {}  # type: ignore[index]
    assert site.ctl("report", "--from", "2026-10-31", "--to", "2026-09-01") == 2


def test_notice_follows_the_live_config(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert site.ctl("notice") == 0
    text = capsys.readouterr().out
    numbers = [line.split("number: ")[1].split('"')[1] for line in (site.root / "dids.yaml").read_text(encoding="utf-8").splitlines()
               if "number:" in line]
    assert len(numbers) == 11 and all(n in text for n in numbers)
    assert "サンキューコールかわさき" in text and "14日後まで保管" in text and "第69条第2項" in text
    (site.root / "dids.yaml").write_text('dids:\n  - {number: "044-200-2111", label: 本庁舎代表}\n', encoding="utf-8")
    site.config.write_text(site.config.read_text() + "retention: {days: 30}\n")
    notice = run_json(site, capsys, "notice", "--lang", "en")
    assert notice["numbers"] == [{"label": "本庁舎代表", "number": "044-200-2111"}] and notice["retention_days"] == 30  # type: ignore[index]
    assert "until 30 days counted from the day after the call" in notice["text"]  # type: ignore[index]


def test_notice_through_the_service_uses_the_dids_it_records(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    from capture.dids import Did, DidDirectory
    from recorderd.config import load
    from recorderd.control import ControlServer
    from recorderd.service import build_pipeline

    config = load(str(site.config))
    store = site.open_store()
    pipeline = build_pipeline(config, store)
    pipeline.tracker.dids = DidDirectory([Did("044-965-5100", "麻生区役所", "+81449655100")])  # as a reload does
    server = ControlServer(config, pipeline=pipeline)
    assert server.start()
    try:
        notice = run_json(site, capsys, "notice")
        status = run_json(site, capsys, "status")
    finally:
        server.stop()
        store.close()
    assert notice["numbers"] == [{"label": "麻生区役所", "number": "044-965-5100"}]  # type: ignore[index]
    assert status["service"]["running"] and status["service"]["active_calls"] == 0  # type: ignore[index]


# The one caller number, written the ways people write it (issue 16, item 7).
NUMBER_FORMS = ("090-8765-4321", "090 8765 4321", "090.8765.4321", "(090)8765-4321", "090\u20108765\u20104321",
                "090ー8765ー4321", "+81 90 8765 4321", "+81-90-8765-4321", "０９０－８７６５－４３２１",
                "０９０ー８７６５ー４３２１", "09087654321", "090\u200b8765\u200b4321", "090/8765/4321")


def test_a_caller_number_in_any_written_form_is_kept_in_no_file(site: Site, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every command that keeps text gets the number in every form; then the raw bytes of the audit
    log, the casework file and the index (WAL files included) hold none of them."""
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    opened = run_json(site, capsys, "disclosure", "open", "--requester-type", "self", "--ref", "D-2026-7",
                      "--note", "本人 090-8765-4321 から電話")
    request = str(opened["request"])  # type: ignore[index]
    for i, form in enumerate(NUMBER_FORMS):
        site.ctl("search", "--did", form)
        site.ctl("search", "--did", form, "--caller", form)
        site.ctl("export", form, "--out", str(tmp_path / f"{i}.wav"), "--purpose", "quality")  # a number for an id
        site.ctl("export", rec["id"], "--out", str(tmp_path / f"{i}.wav"), "--purpose", f"call from {form}")
        site.ctl("hold", rec["id"], "--until", "2099-01-01", "--reason", f"発信者{form}の苦情", "--ref", f"K-2026-0012, {form}")
        site.ctl("complaint", "new", "--summary", f"発信者{form}から苦情", "--recordings", form)
        site.ctl("complaint", "close", str(i + 1), "--outcome", f"called back on {form}")
        site.ctl("incident", "new", "--kind", "other", "--summary", f"caller ({form}) heard", "--recordings",
                 f"{rec['id']},{form}", "--action", f"rang {form}")
        site.ctl("incident", "action", str(i + 1), "--text", f"number was {form}")
        site.ctl("disclosure", "check", request, "--document", "passport", "--checked-by", "clerk-a", "--date",
                 "2026-09-25", "--matched-with", f"phone {form}")
        site.ctl("provide", rec["id"], "--to", f"police, tel {form}", "--basis", "law", "--note", f"re {form}",
                 "--out", str(tmp_path / f"p{i}.wav"))
        site.ctl("copies", "destroyed", str(2 * i + 1), "--note", f"shredded, told {form}")
    site.ctl("disclosure", "decide", request, "--decision", "refuse", "--reason", "not the caller of 090 8765 4321")
    site.ctl("disclosure", "check", "09087654321", "--document", "passport", "--checked-by", "x", "--date", "2026-09-25")
    site.ctl("complaint", "close", "09087654321", "--outcome", "typed the number for the complaint's")
    site.ctl("search", "--did", "044-200-3939")  # a designated number: audited by its label
    capsys.readouterr()
    rows = audit_rows(site)
    assert len(rows) > 12 * len(NUMBER_FORMS)
    assert any(e.action == "search" and e.detail["filters"]["did"] == "[number removed]" for e in rows)
    assert rows[-1].detail["filters"]["did"] == "サンキューコールかわさき"
    assert rows[-3].detail["request"] == "[number removed]" and rows[-2].detail["complaint"] == "[number removed]"
    # Recording ids and dates survive the scrubbing.
    assert any(e.action == "hold" and e.recording_id == rec["id"] and e.detail["until_local"].startswith("2099-01-02T")
               and e.detail["reason"] == "発信者[number removed]の苦情"
               and e.detail["ref"] == "K-2026-0012, [number removed]" for e in rows)
    raw = b"".join(p.read_bytes() for p in site.store.glob("*.sqlite*"))
    import unicodedata

    for form in NUMBER_FORMS:
        for text in {form, unicodedata.normalize("NFKC", form)}:
            tail = text[-9:]  # "8765-4321" with its separators: 9 characters, rare by chance
            for encoded in (tail.encode(), json.dumps(tail)[1:-1].encode()):
                assert encoded not in raw, (form, encoded)
    assert b"9087654321" not in raw and b"87654321" not in raw
