"""Packets cut short by the capture (issue 14): a snap length or a truncating mirror delivers frames
with fewer bytes than crossed the wire. RTP of a recorded call keeps its captured payload bytes in
place and the rest of the packet is the codec's silence, counted per direction and in
``rtp_truncated``; a packet cut inside its RTP header is counted and dropped; a cut SIP message is
counted and not parsed; the live service warns at start when its snap length cuts full frames."""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import fx_truncated  # noqa: E402  (pcap_fixtures is on the path: conftest)
import pytest
from conftest import FIXTURES, ROOT, Site, needs_root
from frames import CutFrame, rtp_packet, udp_frames  # noqa: E402

from storage.wav import channel_bytes

PAYLOAD = bytes(range(160))
RTP = rtp_packet(0, 1000, 160_000, 0x1234, PAYLOAD)
FRAMES = {  # one RTP packet in each framing the SPAN port may deliver
    "ipv4": udp_frames("203.0.113.20", 40000, "192.0.2.20", 20000, RTP)[0],
    "ipv4-vlan": udp_frames("203.0.113.20", 40000, "192.0.2.20", 20000, RTP, tags=(0x8100,))[0],
    "ipv6-qinq": udp_frames("2001:db8::20", 40000, "2001:db8::21", 20000, RTP, tags=(0x88A8, 0x8100))[0],
}


def _cutaway(frame: bytes) -> int:
    """Bytes of the frame before the RTP header."""
    return len(frame) - len(RTP)


@pytest.mark.parametrize("kind", sorted(FRAMES))
def test_a_cut_datagram_keeps_what_was_captured_and_says_its_wire_length(kind: str) -> None:
    from capture.decode import CUT, TRUNCATED, decode_cut, decode_udp

    frame = FRAMES[kind]
    head = _cutaway(frame)
    for keep in range(len(frame)):  # every prefix: a reason or the cut datagram, never an exception
        got = decode_udp(1, frame[:keep])
        if keep < head:
            assert got == TRUNCATED, keep  # cut inside its link, IP or UDP header
            assert decode_cut(1, frame[:keep]) == TRUNCATED
            continue
        assert got == CUT, keep
        src, sport, dst, dport, captured, wire = decode_cut(1, frame[:keep])  # type: ignore[misc]
        assert (sport, dport, captured, wire) == (40000, 20000, RTP[: keep - head], len(RTP))
    assert decode_udp(1, frame)[4] == RTP  # type: ignore[index]  # the whole frame as before


def test_a_forged_udp_length_cannot_make_a_cut_packet_longer_than_a_real_one() -> None:
    from capture.decode import decode_cut

    ip = bytearray(FRAMES["ipv4"][14:])
    ip[2:4] = (65535).to_bytes(2, "big")  # IPv4 total length
    ip[24:26] = (65535 - 20).to_bytes(2, "big")  # UDP length
    frame = FRAMES["ipv4"][:14] + bytes(ip)
    *_, captured, wire = decode_cut(1, frame)  # type: ignore[misc]
    assert captured == RTP and wire == 1500 - 20 - 8


def test_the_rest_of_a_cut_payload_is_the_codecs_silence() -> None:
    from capture.cut import completed, split_cut_rtp

    pt, seq, ts, ssrc, payload, missing = split_cut_rtp(RTP[:58], len(RTP))  # type: ignore[misc]
    assert (pt, seq, ts, ssrc, payload, missing) == (0, 1000, 160_000, 0x1234, PAYLOAD[:46], 114)
    assert completed("PCMU", payload, missing) == PAYLOAD[:46] + b"\xff" * 114
    assert completed("PCMA", payload, missing) == PAYLOAD[:46] + b"\xd5" * 114
    assert completed("L16", payload, missing) == PAYLOAD[:46] + b"\x00" * 114
    assert completed("G722", payload, missing) == PAYLOAD[:46]  # decoded as captured; the rest a silent gap
    assert completed("OPUS", payload, missing) == b""  # a cut Opus frame is not decoded: nothing made up
    assert completed("G729", payload, missing) == PAYLOAD[:46]  # kept as its RTP in the evidence pcap
    for keep in range(12):
        assert split_cut_rtp(RTP[:keep], len(RTP)) is None  # cut inside the RTP header
    csrc = bytes([0x82]) + RTP[1:12] + b"\0" * 8 + PAYLOAD  # two CSRCs: the header is 20 bytes
    assert split_cut_rtp(csrc[:19], len(csrc)) is None
    assert split_cut_rtp(csrc[:20], len(csrc))[4:] == (b"", 160)  # type: ignore[index]
    padded = bytes([0xA0]) + RTP[1:]  # padding: where it began is not known, nothing is filled
    assert split_cut_rtp(padded[:58], len(padded))[4:] == (PAYLOAD[:46], 0)  # type: ignore[index]


def _show(site: Site, rid: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert site.ctl("show", rid, "--json") == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("call", [fx_truncated.MULAW, fx_truncated.ALAW_V6], ids=["mulaw-ipv4", "alaw-ipv6-vlan"])
def test_a_cut_packet_keeps_its_captured_bytes_and_the_rest_is_silence(call: fx_truncated.CutCall, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from generator import write_pcap

    site = Site(tmp_path).init()
    pcap = tmp_path / "cut.pcap"
    write_pcap(str(pcap), call.packets())
    assert site.replay(pcap) == 0
    [rec] = site.list(capsys)
    data = site.wav_bytes(rec)
    fill = {"PCMU": 0xFF, "PCMA": 0xD5}[call.codec]
    keep = call.snap - call.rtp_header_end
    cuts = call.cuts()
    checked = 0
    for d, channel in zip(call.media(), (1, 2), strict=False):
        audio = channel_bytes(data, channel)
        first = d.packets[0]
        anchor = round((first[0] - call.answer_at) * 8000)
        for _t, seq, ts, payload, _pt, ssrc, _a in d.packets:
            pos = anchor + ((ts - first[2]) & 0xFFFFFFFF)
            how = cuts.get((ssrc, seq & 0xFFFF))
            if how == "payload":  # the captured bytes where they belong, then the codec's silence
                assert audio[pos : pos + 160] == payload[:keep] + bytes([fill]) * (160 - keep)
                checked += 1
            elif how == "header":  # no header, no place: the packet is lost, its place silence
                assert audio[pos : pos + 160] == bytes([fill]) * 160
            else:
                assert audio[pos : pos + 160] == payload
    assert checked == call.truncated() == 30
    shown = _show(site, rec["id"], capsys)
    assert [q["truncated"] for q in shown["quality"]] == [15, 15]
    assert [q["lost"] for q in shown["quality"]] == [2 if call.header_cut else 0, 1 if call.header_cut else 0]
    capsys.readouterr()
    assert site.ctl("show", rec["id"]) == 0
    assert "cut short by the capture 15 (rest silence)" in capsys.readouterr().out


def test_a_cut_g722_packet_decodes_what_was_captured_and_the_rest_is_silence(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """G.722 is decoded: the captured bytes go through the decoder as they are, the samples of the
    bytes not captured are the WAV's silence (zero), never a made-up decoding of filler bytes."""
    import dataclasses

    from generator import write_pcap

    pytest.importorskip("G722", reason="the g722 package (ITU-T reference decoder) is not installed")
    call = dataclasses.replace(fx_truncated.MULAW, codec="G722", header_cut=(), sip_cut="")
    site = Site(tmp_path).init()
    pcap = tmp_path / "cut.pcap"
    write_pcap(str(pcap), call.packets())
    assert site.replay(pcap) == 0
    [rec] = site.list(capsys)
    assert rec["audio"] == "transcoded"
    data = site.wav_bytes(rec)
    keep = call.snap - call.rtp_header_end  # bytes captured of a cut packet: 2 samples (4 bytes of PCM) each
    cuts = call.cuts()
    for d, channel in zip(call.media(), (1, 2), strict=False):
        audio = channel_bytes(data, channel)
        first = d.packets[0]
        anchor = round((first[0] - call.answer_at) * 8000)
        for _t, seq, ts, payload, _pt, ssrc, _a in d.packets[:-1]:  # (the last: nothing after it, the WAV ends)
            if cuts.get((ssrc, seq & 0xFFFF)) == "payload":
                at = (anchor + ((ts - first[2]) & 0xFFFFFFFF)) * 4  # 16 kHz, 2 bytes a sample
                assert audio[at + keep * 4 : at + len(payload) * 4] == bytes((len(payload) - keep) * 4)
                assert audio[at : at + keep * 4] != bytes(keep * 4)  # the captured part is audio
    shown = _show(site, rec["id"], capsys)
    assert [q["truncated"] for q in shown["quality"]] == [15, 15]


def test_the_c_fast_path_hands_a_cut_frame_to_python() -> None:
    """C refuses a frame whose IP length is beyond what was captured (its ``end <= len(frame)``
    test) and stops there; the Python path places it (and counts it)."""
    import tempfile
    from zoneinfo import ZoneInfo

    from capture.fast import fastpath
    from capture.pipeline import CapturePipeline
    from recorderd.config import load_dids
    from storage.spool import SpoolSink
    from storage.store import Store

    if fastpath is None:
        pytest.skip("the C module is not built (RECORDERD_PURE_PYTHON or no compiler)")
    call = fx_truncated.MULAW
    packets = sorted(call.packets(), key=lambda p: p[0])
    cut_at = next(i for i, (_t, f) in enumerate(packets) if isinstance(f, CutFrame) and f[42] & 0xC0 == 0x80
                  and len(f) == call.snap and i > 60)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "s"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=os.path.join(tmp, "k"))
        store.init()
        store.open()
        pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store))
        pipeline.feed([(t, 1, bytes(f)) for t, f in packets[: cut_at - 1]])
        table = pipeline.media.table
        before = table.handled
        ts = packets[cut_at][0]
        batch = [(packets[cut_at - 1][0], 1, bytes(packets[cut_at - 1][1])), (ts, 1, bytes(packets[cut_at][1]))]
        stopped, _now, _full = table.run(batch, 0, pipeline.now, ts + 10.0)
        assert stopped == 1 and table.handled == before + 1  # the whole frame in C, the cut one left to Python
        truncated = pipeline.counters["rtp_truncated"]
        pipeline.feed(batch[1:])
        assert pipeline.counters["rtp_truncated"] == truncated + 1
        pipeline.finish("capture-end")
        store.close()


def test_a_cut_sip_message_is_counted_and_not_parsed() -> None:
    from capture.pipeline import CapturePipeline
    from recorderd.config import load_dids

    class NoCalls:
        def call_started(self, call):  # type: ignore[no-untyped-def]
            raise AssertionError("a cut INVITE must not start a call")

    call = fx_truncated.MULAW
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), NoCalls())
    batch = []
    for t, frame in sorted(call.packets(), key=lambda p: p[0]):
        if b"INVITE sip:" in frame[42:60]:
            frame = CutFrame(frame, 200)  # the Request-URI and a few headers: not a whole message
        batch.append((t, 1, bytes(frame)))
    pipeline.feed(batch)
    pipeline.finish("capture-end")
    counters = pipeline.counters
    assert counters["sip_truncated"] == 2  # the INVITE and the 100 Trying (cut in the fixture)
    assert counters["calls_designated"] == 0 and counters["calls_recorded"] == 0
    assert counters["sip_malformed"] == 0


def test_the_truncated_fixtures_are_cut_as_tshark_reads_them() -> None:
    """The committed pcaps carry captured lengths below the original lengths (the truncating remote
    mirror's: inner IP lengths beyond the inner frame), and tshark reads them, its RTP of the cut
    frames being the packets the fixture says it cut with their header whole."""
    cut_frames = {}
    for name, fixture in fx_truncated.FIXTURES.items():
        data = (FIXTURES / f"{name}.pcap").read_bytes()
        off, cut = 24, 0
        while off < len(data):
            incl, orig = struct.unpack_from("<II", data, off + 8)
            cut += incl < orig
            off += 16 + incl
        counters = fixture.counters
        cut_frames[name] = counters["rtp_truncated"] + counters.get("rtp_truncated_header", 0) + counters.get("sip_truncated", 0)
        assert cut == (0 if fixture.transform else cut_frames[name]), name
    tshark = __import__("shutil").which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (Debian package; `make deps` installs it as root)")
    for name, fixture in fx_truncated.FIXTURES.items():
        result = subprocess.run([tshark, "-r", str(FIXTURES / f"{name}.pcap"), "-T", "fields", "-e", "frame.cap_len",
                                 "-e", "frame.len", "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "_ws.expert.message"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        rows = [line.split("\t") for line in result.stdout.splitlines()]
        cut = [r for r in rows if int(r[0]) < int(r[1]) or "total length exceeds packet length" in r[4]
               or "payload length exceeds" in r[4]]
        assert len(cut) == cut_frames[name], name
        [(call, _number)] = fixture.entries
        decoded = {(int(r[2], 16), int(r[3])) for r in cut if r[3]}  # tshark: their RTP header is whole
        assert decoded == {k for k, how in call.cuts().items() if how == "payload"}, name  # type: ignore[attr-defined]


# -- the live service's snap length ------------------------------------------------------------


def test_a_snap_length_below_a_full_frame_is_said() -> None:
    from capture.live import snaplen_warning

    assert snaplen_warning(0x40000) is None and snaplen_warning(1518) is None
    assert snaplen_warning(1514) is not None  # a frame with a VLAN tag is cut at 1514
    assert snaplen_warning(100).startswith("snap length 100 is below a full frame: long packets will be cut")


VETH = ("tsnap0", "tsnap1")  # helper T's names (parallel helpers use their own)


def test_the_live_capture_warns_and_records_what_its_snap_length_keeps(caplog: pytest.LogCaptureFixture) -> None:
    """A real TPACKET_V3 ring on a veth link with a 100-byte snap length: the start says so
    (EVENT=capture-snaplen), a long RTP frame arrives cut to 100 bytes, and the pipeline takes it
    as cut (not as a malformed packet)."""
    needs_root("a packet socket on a veth link", "ip")
    from capture.decode import CUT, decode_udp
    from capture.live import RingSource

    subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True)
    subprocess.run(["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]], check=True)
    try:
        for name in VETH:
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        with caplog.at_level(logging.WARNING, logger="capture.live"):
            source = RingSource([VETH[1]], ring_bytes=4 << 20, poll_ms=20, snaplen=100)
        try:
            [warning] = [r for r in caplog.records if getattr(r, "EVENT", "") == "capture-snaplen"]
            assert warning.getMessage().startswith("snap length 100 is below a full frame: long packets will be cut")
            frame = FRAMES["ipv4"]
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as tx:
                tx.bind((VETH[0], 0))
                deadline = time.monotonic() + 5
                got: list[bytes] = []
                while not got and time.monotonic() < deadline:
                    tx.send(frame)
                    for batch in source.batches():
                        got += [f for _t, _lt, f in batch if f[12:14] == b"\x08\x00" and f[23] == 17]
                        if got or not batch:
                            break
        finally:
            source.close()
        assert got and got[0] == frame[:100]
        assert decode_udp(1, got[0]) == CUT
    finally:
        subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True)
