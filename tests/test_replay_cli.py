"""The stable interfaces end to end: replay of damaged captures, export, the store's locks, the
uninitialised store, and no personal data in what recorderd prints or logs."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from storage.audit import NO_DELETE, PROTECTION, AuditLog


def _audit_problems(site: Site) -> list[str]:
    """The audit chain checked as the service checks it: with its seal key (derived from the master key)."""
    store = site.open_store()
    try:
        return store.audit_log().verify()
    finally:
        store.close()

BIN = Path(sys.executable).parent


def test_damaged_capture_keeps_what_came_before(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (FIXTURES / "demo-day.pcap").read_bytes()
    cut = int(len(data) * 0.55)  # mid-record, after the first calls
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(data[:cut])
    assert site.replay(damaged) == 1
    err = capsys.readouterr().err
    assert str(damaged) in err and "byte offset" in err
    recs = site.list(capsys)
    expected = json.loads((FIXTURES / "demo-day.json").read_text(encoding="utf-8"))["recordings"]
    assert 0 < len(recs) < len(expected)
    # every call that ended before the damage is complete and identical to the undamaged replay
    (tmp_path / "full").mkdir()
    full = Site(tmp_path / "full")
    full.init()
    full.replay(FIXTURES / "demo-day.pcap")
    complete = {r["call_id"]: r for r in full.list(capsys)}
    for rec in recs:
        if rec["state"] == "complete":
            assert rec["sha256"] == complete[rec["call_id"]]["sha256"]
        else:
            assert rec["end_reason"] == "capture-end"


def test_not_a_capture_is_a_clear_error(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.pcap"
    bogus.write_text("hello")
    assert site.replay(bogus) == 1
    assert f"{bogus}: at byte offset 0: not a pcap or pcapng file" in capsys.readouterr().err


def test_uninitialised_store_is_refused_naming_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path)
    assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 2
    assert "recorderctl --config PATH init" in capsys.readouterr().err
    assert not (tmp_path / "store" / "recordings").exists()


def test_store_is_locked_to_its_owner(site: Site) -> None:
    site.replay(FIXTURES / "overlapping.pcap")
    for path in [site.store, *site.store.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE((site.root / "master.key").stat().st_mode) == 0o400


def test_no_plaintext_audio_at_rest(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    wav = site.wav_bytes(rec)
    stored = site.stored_path(rec).read_bytes()
    assert stored[:4] == b"RDS1" and wav[:4] == b"RIFF"  # the sealed record format (docs/store.md)
    for off in range(100, len(wav) - 32, 997):  # no 32-byte run of the audio appears in the store
        needle = wav[off : off + 32]
        for path in site.store.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), path
    assert site.spool_files() == []


def test_export_is_byte_identical_and_audited(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-alaw.pcap")
    [rec] = site.list(capsys)
    out = tmp_path / "copy.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality") == 0
    assert out.read_bytes() == site.wav_bytes(rec)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]
    audit = AuditLog(str(site.store / "audit.sqlite"))
    [event] = [e for _, e, _, _ in audit.rows() if e.action == "export"]  # init and list are audited too
    assert (event.action, event.recording_id, event.detail["purpose"], event.result) == ("export", rec["id"], "quality", "allowed")
    assert _audit_problems(site) == []


def test_export_refuses_a_tampered_recording(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "inbound-mulaw.pcap")
    [rec] = site.list(capsys)
    wav = site.stored_path(rec)
    data = bytearray(wav.read_bytes())
    data[1000] ^= 0x01
    wav.write_bytes(bytes(data))
    out = tmp_path / "copy.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "suspicious_call") == 1
    assert "fails its integrity check" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("copy.wav.part*"))
    [event] = [e for _, e, _, _ in AuditLog(str(site.store / "audit.sqlite")).rows() if e.action == "export"]
    assert event.result.startswith("failed: ")


def test_audit_chain_detects_an_edited_row(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.replay(FIXTURES / "overlapping.pcap")
    for rec in site.list(capsys):
        site.ctl("export", rec["id"], "--out", str(tmp_path / f"{rec['id']}.wav"), "--purpose", "quality")
    with sqlite3.connect(site.store / "audit.sqlite") as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")  # the log refuses edits; a tamperer removes that first
        [(seq,)] = db.execute("SELECT min(seq) FROM audit WHERE action = 'export'").fetchall()
        db.execute("UPDATE audit SET detail = replace(detail, 'quality', 'other') WHERE seq = ?", (seq,))
        for statement in (*PROTECTION, NO_DELETE):  # and puts it back (a sealed log without it fails verify for that alone)
            db.execute(statement)
    assert _audit_problems(site) == [f"row {seq}: content does not match its hash (altered)"]


def test_entry_points_as_installed(tmp_path: Path) -> None:
    """The console scripts a technician types, as separate processes."""
    site = Site(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    run = lambda *a: subprocess.run([str(BIN / a[0]), *a[1:]], capture_output=True, text=True, env=env)  # noqa: E731
    assert run("recorderctl", "--config", str(site.config), "init").returncode == 0
    assert run("recorderctl", "--config", str(site.config), "init").stdout.startswith("store already initialised")
    demo = json.loads((FIXTURES / "demo-day.json").read_text(encoding="utf-8"))
    n = len(demo["recordings"])
    replay = run("recorderd", "replay", str(FIXTURES / "demo-day.pcap"), "--config", str(site.config))
    assert replay.returncode == 0
    assert replay.stdout.startswith(f"replayed {demo['packets']} packets from 1 file(s): {n} recorded, ")
    listed = json.loads(run("recorderctl", "--config", str(site.config), "list", "--json").stdout)
    assert len(listed) == n
    keys = {"id", "call_id", "did", "did_label", "caller", "started_at", "ended_at", "duration_s", "codec",
            "channels", "sha256", "retain_until", "state", "holds"}
    assert all(keys <= set(r) for r in listed)
    assert listed[0]["started_at"].endswith("+09:00")
    table = run("recorderctl", "--config", str(site.config), "list").stdout
    assert "サンキューコールかわさき" in table and f"({n} recordings)" in table
    # Privacy: nothing the service printed or logged carries a caller's number or a SIP URI.
    output = replay.stdout + replay.stderr
    callers = {r["caller"] for r in listed}
    for secret in callers | {"sip:", "tel:", "09011112222", "09055556666"}:
        assert secret not in output, secret
    assert "call-recorded" in replay.stderr and listed[0]["id"] in replay.stderr
