"""Copies (guideline Art. 5(5), 5(6)): export byte-identical to the finalised WAV and audited with its
purpose; 16-bit PCM that matches the G.711 reference decoder; out-of-purpose copies only with a
manager's approval; provision only with an APPI Art. 69 basis; every copy registered with an expiry,
and ``retention run`` erasing the expired copies it can reach and reporting the others."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool

from storage.audit import AuditLog
from storage.codecs import g711
from storage.wav import read_info

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 decoder (Python <= 3.12), used only here


def events(site: Site, action: str) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows() if e.action == action]
    finally:
        audit.close()


@pytest.mark.parametrize("codec,reference", [("PCMU", audioop.ulaw2lin), ("PCMA", audioop.alaw2lin)])
def test_g711_tables_match_the_reference_decoder(codec: str, reference) -> None:  # type: ignore[no-untyped-def]
    every = bytes(range(256))
    assert g711.decode(codec, every) == reference(every, 2)


def test_export_is_byte_identical_registered_and_audited(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "demo-day.pcap")
    for rec in site.list(capsys):
        out = tmp_path / f"{rec['id']}.wav"
        capsys.readouterr()
        if rec["audio"] == "not-decoded":  # no WAV: said, and the original RTP exported instead
            assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "suspicious_call") == 1
            assert "has no WAV: its codec G729 is not decoded here" in capsys.readouterr().err
            assert not out.exists()
            fmt = ["--format", "pcap"]
        else:
            fmt = []
        assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "suspicious_call", "--json", *fmt) == 0
        reply = json.loads(capsys.readouterr().out)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"] == reply["sha256"]
        if not fmt:
            assert out.read_bytes() == site.wav_bytes(rec)
    exports = [e for e in events(site, "export") if e.result == "allowed"]
    assert len(exports) == len(site.list(capsys))
    assert {(e.detail["purpose"], e.detail["role"], e.detail["via"]) for e in exports} == {("suspicious_call", "manager", "direct")}
    assert all(e.detail["sha256"] == e.detail["recording_sha256"] for e in exports)
    capsys.readouterr()
    assert site.ctl("copies", "list", "--json") == 0
    copies = json.loads(capsys.readouterr().out)
    assert len(copies) == len(exports) and {c["state"] for c in copies} == {"kept"}


@pytest.mark.parametrize("fixture", ["inbound-mulaw.pcap", "inbound-alaw.pcap"])
def test_pcm_export_decodes_every_sample(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], fixture: str) -> None:
    site.replay(FIXTURES / fixture)
    [rec] = site.list(capsys)
    out = tmp_path / "pcm.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality", "--format", "pcm") == 0
    original, pcm = site.wav_bytes(rec), out.read_bytes()
    g = read_info(original)
    p = read_info(pcm)
    assert (p.channels, p.rate, p.frames) == (2, 8000, g.frames)
    assert struct.unpack_from("<HHIIHH", pcm, 20) == (1, 2, 8000, 32000, 4, 16)  # PCM, 16-bit stereo
    data = original[g.data_offset : g.data_offset + g.frames * 2]
    reference = audioop.ulaw2lin(data, 2) if rec["codec"] == "PCMU" else audioop.alaw2lin(data, 2)
    assert pcm[p.data_offset :] == reference
    [event] = events(site, "export")
    assert event.detail["format"] == "pcm" and event.detail["recording_sha256"] == rec["sha256"]
    assert event.detail["sha256"] == hashlib.sha256(pcm).hexdigest()


def test_out_of_purpose_export_needs_a_managers_approval(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    out = str(tmp_path / "t.wav")
    assert site.ctl("export", rec["id"], "--out", out, "--purpose", "training") == 3
    assert "needs a manager's approval (guideline Art. 5(5))" in capsys.readouterr().err
    assert site.ctl("export", rec["id"], "--out", out, "--purpose", "training", "--approved-by", "nobody",
                    "--approval-ref", "A-1") == 3
    assert "--approved-by nobody: not a manager" in capsys.readouterr().err
    assert not Path(out).exists() and not list(tmp_path.glob("t.wav.part*"))
    me = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    assert site.ctl("export", rec["id"], "--out", out, "--purpose", "training", "--approved-by", me,
                    "--approval-ref", "A-2") == 0
    denied, denied2, allowed = events(site, "export")
    assert denied.result.startswith("denied: purpose 'training'") and denied.detail["purpose"] == "training"
    assert denied2.result.startswith("denied: --approved-by nobody")
    assert (allowed.result, allowed.detail["approved_by"], allowed.detail["approval_ref"]) == ("allowed", me, "A-2")


def test_provide_needs_a_legal_basis_and_records_it(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-alaw.pcap")
    [rec] = site.list(capsys)
    out = tmp_path / "police.wav"
    assert site.ctl("provide", rec["id"], "--to", "Kawasaki Police Station", "--out", str(out)) == 3
    assert "no --basis given" in capsys.readouterr().err
    assert site.ctl("provide", rec["id"], "--to", "a journalist", "--basis", "curiosity", "--out", str(out)) == 3
    assert "'curiosity' is not a legal basis" in capsys.readouterr().err
    assert not out.exists()
    assert site.ctl("provide", rec["id"], "--to", "Kawasaki Police Station", "--basis", "law", "--out", str(out),
                    "--note", "written inquiry 2026-123") == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]
    no_basis, bad_basis, done = events(site, "provide")
    assert no_basis.result.startswith("denied") and bad_basis.detail["basis"] == "curiosity"
    assert (done.detail["basis"], done.detail["recipient"], done.detail["recording_sha256"]) == ("law", "Kawasaki Police Station", rec["sha256"])
    assert done.detail["basis_article"].startswith("APPI Art. 69(1)")


def test_expired_copies_are_erased_where_reachable_and_reported_otherwise(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faketime = needs_tool("faketime")
    site.replay(FIXTURES / "overlapping.pcap")
    recs = site.list(capsys)
    kept, replaced, gone = (tmp_path / f"{n}.wav" for n in ("kept", "replaced", "gone"))
    for out in (kept, replaced, gone):
        assert site.ctl("export", recs[0]["id"], "--out", str(out), "--purpose", "quality") == 0
    replaced.write_bytes(b"someone else's file now")
    os.rename(gone, tmp_path / "moved.wav")
    assert site.ctl("copies", "destroyed", "3", "--note", "shredded the USB stick") == 0
    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config)]
    env = {**os.environ, "TZ": "UTC"}
    early = subprocess.run([faketime, "+6 days", *ctl, "retention", "run"], capture_output=True, text=True, env=env)
    assert "copy" not in early.stdout.lower() and kept.exists()
    late = subprocess.run([faketime, "+8 days", *ctl, "retention", "run", "--json"], capture_output=True, text=True, env=env)
    assert late.returncode == 0, late.stderr
    assert not kept.exists() and replaced.read_bytes() == b"someone else's file now"
    result = json.loads(late.stdout)
    assert result["copies_erased"] == [1] and result["copies_unreachable"] == 1  # copy 3 was confirmed destroyed
    text = subprocess.run([faketime, "+8 days", *ctl, "retention", "run"], capture_output=True, text=True, env=env).stdout
    assert "EXPIRED COPY 2" in text and "a different file is there now (left alone)" in text
    assert "recorderctl copies destroyed 2" in text
    capsys.readouterr()
    assert site.ctl("copies", "list", "--json") == 0
    states = {c["copy"]: (c["state"], c["disposed"]) for c in json.loads(capsys.readouterr().out)}
    assert states[1] == ("destroyed", "erased by retention run")
    assert states[3][0] == "destroyed" and "shredded the USB stick" in states[3][1]


def test_a_pcap_export_says_what_it_is_and_prints_its_own_hash(site: Site, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`export --format pcap` of a G.711 call wrote the evidence pcap but said "16-bit PCM" and printed the
    WAV's SHA-256 as if it checked the file (hardening item 14)."""
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    for command in (["export", rec["id"], "--purpose", "quality"], ["provide", rec["id"], "--to", "police", "--basis", "law"]):
        out = tmp_path / f"{command[0]}.pcap"
        capsys.readouterr()
        assert site.ctl(*command, "--out", str(out), "--format", "pcap") == 0
        said = capsys.readouterr().out
        copy_hash = hashlib.sha256(out.read_bytes()).hexdigest()
        assert out.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\x0a\x0d\x0d\x0a")
        assert f"evidence pcap, SHA-256 {copy_hash}" in said, said
        assert "16-bit PCM" not in said and rec["sha256"] not in said, said
