"""Issue 14's loose ends: the snap length as a config key (capture.snaplen, passed to the live
capture), mirror copies in the periodic stats line and in ``show``, the metrics' word for
calls_recorded, and ``provide --conversation`` (every part of a conversation handed over under one
legal basis, each part its own provision, copy, manifest and audit row)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import FIXTURES, ROOT, Site
from test_conversations import audit_rows, conv, ctl_json, out, record, site_wav_sha  # noqa: F401  (conv: a fixture)

from capture.pipeline import CapturePipeline
from capture.sink import CallEnd, CallInfo, StreamStats
from recorderd.config import ConfigError, load, load_dids
from recorderd.service import replay
from storage.spool import SpoolSink
from storage.store import Store

sys.path.insert(0, str(ROOT / "pcap_fixtures"))

from generator import rtp_packet, udp_frame  # noqa: E402

# -- 1. capture.snaplen ------------------------------------------------------------------------------


def test_the_snap_length_is_a_config_key_with_a_range(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "d").mkdir()
    assert load(str(Site(tmp_path / "default").config))["capture.snaplen"] == 262144  # whole frames
    assert load(str(Site(tmp_path / "d", settings="capture: {snaplen: 200}\n").config))["capture.snaplen"] == 200
    for n, bad in enumerate(("63", "262145", "full", "true", "1500.5")):
        (tmp_path / str(n)).mkdir()
        site = Site(tmp_path / str(n), settings=f"capture: {{snaplen: {bad}}}\n")
        with pytest.raises(ConfigError) as raised:
            load(str(site.config))
        assert "capture.snaplen" in str(raised.value), bad


def test_the_shipped_config_names_the_snap_length() -> None:
    assert load(str(ROOT / "config" / "recorderd.yaml"))["capture.snaplen"] == 262144


VETH = ("g14snap0", "g14snap1")  # helper G's names


def test_the_service_captures_with_the_configured_snap_length(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's capture (recorderd/daemon.py capture_source) on a real veth link, configured with
    capture.snaplen 200: the start says the length is below a full frame, and a 1000-byte frame
    arrives cut to its first 200 bytes."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a veth link and a packet socket")
    from recorderd.daemon import capture_source

    site = Site(tmp_path,
                settings=f"capture: {{interfaces: [{VETH[1]}], ring_mb: 4, block_timeout_ms: 20, snaplen: 200}}\n")
    config = load(str(site.config))
    subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True)
    subprocess.run(["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]], check=True)
    try:
        for name in VETH:
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        with caplog.at_level(logging.WARNING, logger="capture.live"):
            source = capture_source(config)
        try:
            [warning] = [r for r in caplog.records if getattr(r, "EVENT", "") == "capture-snaplen"]
            assert warning.getMessage().startswith("snap length 200 is below a full frame")
            frame = udp_frame("192.0.2.10", 40000, "192.0.2.20", 40002,
                              rtp_packet(0, 1, 160, 0x1234, bytes(range(256)) * 3))
            assert len(frame) > 800
            got: list[bytes] = []
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as tx:
                tx.bind((VETH[0], 0))
                deadline = time.monotonic() + 5
                while not got and time.monotonic() < deadline:
                    tx.send(frame)
                    for batch in source.batches():
                        got += [f for _t, _lt, f in batch if f[12:14] == b"\x08\x00" and f[23] == 17]
                        if got or not batch:
                            break
        finally:
            source.close()
        assert got and got[0] == frame[:200]
    finally:
        subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True)


# -- 5. mirror copies in the stats line and in show ----------------------------------------------------


def test_the_stats_line_counts_the_mirror_copies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from recorderd.daemon import Daemon

    store = Store(str(tmp_path / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp_path / "key"))
    store.init()
    store.open()
    try:
        pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store))
        replay(pipeline, [str(FIXTURES / "mirror-duplicates.pcap")])
        copies = pipeline.counters["mirror_duplicates"]
        assert copies > 0
        with caplog.at_level(logging.INFO, logger="recorderd.daemon"):
            Daemon(str(tmp_path / "unused.yaml"))._stats_line(pipeline)
    finally:
        store.close()
    [line] = [r.getMessage() for r in caplog.records if getattr(r, "EVENT", "") == "stats"]
    assert f" mirror_duplicates={copies} " in f"{line} "


def test_show_gives_each_directions_mirror_copies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        info = CallInfo(call_id="call-mirrored", did="+81442003939", did_label="サンキューコールかわさき",
                        caller="09012345678", started_at=1790000000.0, codec="PCMU")
        rec = SpoolSink(store).call_started(info)
        for i in range(50):
            rec.audio(1, i * 160, b"\x11" * 160)
            rec.audio(2, i * 160, b"\x22" * 160)
        stats = (StreamStats(1, (1,), 50, 50, 0, 0, 0, ((1, 0, 0),), 0.0, mirror_duplicates=37),
                 StreamStats(2, (2,), 50, 50, 0, 0, 0, ((2, 0, 0),), 0.0))
        rec.end(CallEnd(ended_at=1790000001.0, complete=True, reason="bye", streams=stats))
        rid = rec.id
    finally:
        store.close()
    shown = ctl_json(site, capsys, "show", rid)
    assert [q["mirror_duplicates"] for q in shown["quality"]] == [37, 0]
    capsys.readouterr()
    assert site.ctl("show", rid) == 0
    lines = [line for line in out(capsys).splitlines() if line.startswith("  channel ")]
    assert lines[0].endswith(", mirror copies dropped 37") and "mirror" not in lines[1]


# -- 6. the metrics' word for calls_recorded -------------------------------------------------------------


def test_the_metrics_say_calls_recorded_counts_each_part() -> None:
    from recorderd.metrics import COUNTERS

    assert COUNTERS["calls_recorded"] == "Recordings kept (a conversation kept in parts counts each part)"


# -- 3. provide --conversation ---------------------------------------------------------------------------


POLICE = "Kawasaki Police Station"


def test_provide_of_the_conversation_gives_every_part_its_own_provision(
    conv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site, t, p1, p2, other = conv
    folder = tmp_path / "police"
    folder.mkdir()
    before = len(audit_rows(site))
    capsys.readouterr()
    assert site.ctl("provide", p2, "--conversation", "--to", POLICE, "--basis", "law", "--out", str(folder)) == 0, \
        capsys.readouterr().err
    text = out(capsys)
    assert f"conversation {t} of {p2}: 2 part(s) provided to {POLICE} under APPI Art. 69(1)" in text
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{p}.wav{s}" for p in (p1, p2) for s in ("", ".manifest.json", ".manifest.sig"))
    provisions = set()
    for rid, part in ((p1, 1), (p2, 2)):
        wav = folder / f"{rid}.wav"
        assert hashlib.sha256(wav.read_bytes()).hexdigest() == site_wav_sha(site, rid)
        manifest = json.loads((folder / f"{rid}.wav.manifest.json").read_text())
        assert manifest["recording_id"] == rid and manifest["copy_kind"] == "provision"
        assert manifest["legal_basis"]["basis"] == "law"
        provisions.add(manifest["legal_basis"]["provision"])
        assert manifest["conversation"] == {"token": t, "part": part, "parts": 2,
                                            "part_reason": "" if part == 1 else "transfer",
                                            "other_parts": [p2 if part == 1 else p1]}
        capsys.readouterr()
        assert site.ctl("verify-export", str(wav)) == 0, capsys.readouterr()
    assert len(provisions) == 2  # each part its own provision record
    rows = [e for e in audit_rows(site)[before:] if e.action == "provide"]
    assert sorted(e.recording_id for e in rows) == sorted([p1, p2])  # one row per recording handed over
    assert all(e.result == "allowed" and e.detail["basis"] == "law" for e in rows)
    assert sorted(e.detail["provision"] for e in rows) == sorted(provisions)
    copies = ctl_json(site, capsys, "copies", "list")
    assert sorted((c["recording_id"], c["kind"]) for c in copies) == sorted([(p1, "provision"), (p2, "provision")])
    recorded = [(p["recording_id"], p["recipient"], p["basis"], p["copy_id"]) for p in _casework(site).provisions()]
    assert sorted(recorded) == sorted((c["recording_id"], POLICE, "law", c["copy"]) for c in copies)


def _casework(site: Site):  # type: ignore[no-untyped-def]
    from storage.casework import Casework

    return Casework(str(site.store / "casework.sqlite"))


def test_provide_of_one_part_says_the_conversation_has_others(conv, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    site, t, p1, p2, other = conv
    capsys.readouterr()
    assert site.ctl("provide", p1, "--to", POLICE, "--basis", "law", "--out", str(tmp_path / "one.wav")) == 0
    text = out(capsys)
    assert f"this is part 1 of 2 of its conversation: the other part(s) {p2} are not in this copy" in text
    assert f"provide {p1} --conversation" in text
    capsys.readouterr()
    assert site.ctl("provide", other, "--to", POLICE, "--basis", "law", "--out", str(tmp_path / "alone.wav")) == 0
    assert "conversation" not in out(capsys)


def test_provide_of_the_conversation_refuses_parts_it_was_not_asked_for(  # type: ignore[no-untyped-def]
    conv, tmp_path: Path
) -> None:
    from recorderd import ctl

    site, t, p1, p2, other = conv
    folder = tmp_path / "police"
    folder.mkdir()
    reply = ctl.perform(load(str(site.config)), "provide", {"id": p1, "conversation": True, "parts": [p1],
                                                            "out": str(folder), "to": POLICE, "basis": "law",
                                                            "format": "wav"})
    assert reply.rc == 1 and "now has the part(s)" in reply.error and list(folder.iterdir()) == []
    [row] = [e for e in audit_rows(site) if e.action == "provide"]
    assert row.result.startswith("failed") and row.recording_id == p1
    assert _casework(site).provisions() == []


def test_provide_of_the_conversation_needs_a_folder_and_a_basis(
    conv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site, t, p1, p2, other = conv
    capsys.readouterr()
    assert site.ctl("provide", p1, "--conversation", "--to", POLICE, "--basis", "law",
                    "--out", str(tmp_path / "x.wav")) == 2
    assert "must be an existing folder" in capsys.readouterr().err
    folder = tmp_path / "police"
    folder.mkdir()
    assert site.ctl("provide", p1, "--conversation", "--to", POLICE, "--out", str(folder)) == 3
    assert list(folder.iterdir()) == []


# -- 4. an empty RTP payload in the C core -------------------------------------------------------------


def _udp(frame: bytes) -> tuple[str, int, str, int, bytes]:
    import ipaddress

    return (str(ipaddress.IPv4Address(frame[26:30])), int.from_bytes(frame[34:36], "big"),
            str(ipaddress.IPv4Address(frame[30:34])), int.from_bytes(frame[36:38], "big"), frame[42:])


def _as_opus(frame: bytes, media_ports: set[int]) -> bytes:
    """The generator's PCMU frame as Opus would carry it: the SDP's rtpmap opus/48000/2 (its
    Content-Length grown to match), RTP payload type 111, a 48 kHz RTP clock, and each payload a
    CELT 20 ms frame (TOC 0xF8 and 40 bytes of the call's own)."""
    import re

    src, sport, dst, dport, data = _udp(frame)
    if b"SIP/2.0" in data[:200]:
        body_at = data.find(b"\r\n\r\n") + 4
        body = data[body_at:].replace(b"RTP/AVP 0 ", b"RTP/AVP 111 ").replace(b"a=rtpmap:0 PCMU/8000",
                                                                              b"a=rtpmap:111 opus/48000/2")
        head = re.sub(rb"Content-Length: *\d+", b"Content-Length: %d" % len(body), data[:body_at])
        return udp_frame(src, sport, dst, dport, head + body)
    if dport in media_ports and data[1] & 0x7F == 0:
        ts = (int.from_bytes(data[4:8], "big") * 6) & 0xFFFFFFFF
        return udp_frame(src, sport, dst, dport, bytes([data[0], (data[1] & 0x80) | 111]) + data[2:4]
                         + ts.to_bytes(4, "big") + data[8:12] + b"\xf8" + data[12:52])
    return frame


def emptied_calls() -> list[tuple[float, bytes]]:
    """A PCMU call (C places its bytes), a G.722 call and an Opus call (C hands their payloads to
    the recording's audio()): every 9th RTP packet of each direction, and each direction's last 5,
    with an empty payload (a sender's keep-alive; Opus DTX): the RTP header whole, nothing to place."""
    from generator import SipCall

    packets: list[tuple[float, bytes]] = []
    media_ports: set[int] = set()
    for i, codec in enumerate(("PCMU", "G722", "OPUS")):
        media = (("203.0.113.20", 40000 + 2 * i), ("192.0.2.20", 20000 + 2 * i))
        media_ports |= {media[0][1], media[1][1]}
        call = SipCall(f"emptied-{codec}", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                       1_790_000_000.0 + i * 0.5, codec="PCMU" if codec == "OPUS" else codec, talk=4.0, seed=40 + i,
                       caller_media=media[0], pbx_media=media[1])
        made = call.packets()
        if codec == "OPUS":
            made = [(ts, _as_opus(f, {media[0][1], media[1][1]})) for ts, f in made]
        packets.extend(made)
    packets.sort(key=lambda p: p[0])
    by_stream: dict[bytes, list[int]] = {}
    for n, (_, f) in enumerate(packets):
        if f[12:14] == b"\x08\x00" and f[23] == 17 and int.from_bytes(f[36:38], "big") in media_ports:
            by_stream.setdefault(f[26:38], []).append(n)
    emptied = {n for ns in by_stream.values() for n in ns[8::9] + ns[-5:]}
    assert len(by_stream) == 6 and len(emptied) > 90
    out = []
    for n, (ts, frame) in enumerate(packets):
        if n in emptied:
            src, sport, dst, dport, data = _udp(frame)
            frame = udp_frame(src, sport, dst, dport, data[:12])  # the RTP header alone
        out.append((ts, frame))
    return out


def test_an_empty_rtp_payload_is_kept_the_same_by_c_and_python(tmp_path: Path) -> None:
    """Python's assembler places nothing for an empty payload (no audio() call: an Opus decoder
    would conceal up to 120 ms for it); the C core did call audio() with it, and padded a G.711
    lane to its place, so a call ending in empty packets was longer in C. Both alike now, every row,
    WAV and evidence hash and counter, C handling most of the RTP."""
    from frames import write_pcap
    from test_fastpath import compare

    pcap = tmp_path / "emptied.pcap"
    write_pcap(str(pcap), emptied_calls())
    store = Store(str(tmp_path / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp_path / "key"))
    store.init()
    store.open()
    try:
        replay(CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store)), [str(pcap)])
        kept = sorted((row.codec, row.audio) for row in store.reading.recordings())
    finally:
        store.close()
    assert kept == [("G722", "transcoded"), ("OPUS", "transcoded"), ("PCMU", "exact")]
    assert compare([pcap], tmp_path) > 0.8
