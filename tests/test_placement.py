"""Audio placement through the real pipeline and the real spool writer: reordering, duplicates,
sequence and timestamp wrap-around, SSRC change, a sender paused on hold, one-way audio."""
from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ROOT, small_tmpfs
from generator import SipCall, rtp_packet, udp_frame

from capture.pipeline import CapturePipeline
from recorderd.config import load_dids
from storage.spool import SpoolSink
from storage.store import Store
from storage.wav import channel_bytes

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))
T0 = 1_790_000_000.0
SPP = 160


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(str(tmp / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp / "key"))
        self.store.init()
        self.store.open()
        self.pipeline = CapturePipeline(DIDS, SpoolSink(self.store))
        self.call = SipCall("placement-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", T0,
                            talk=0)
        signalling = self.call.signalling()
        self.bye = signalling[-2:]
        self.feed(signalling[:-2])  # up to the ACK; media follows

    def feed(self, packets: list[tuple[float, bytes]]) -> None:
        self.pipeline.feed([(t, 1, f) for t, f in packets])

    def up(self, t: float, seq: int, ts: int, payload: bytes, ssrc: int = 0xAAAA, pt: int = 0) -> tuple[float, bytes]:
        c = self.call
        return t, udp_frame(*c.caller_media, *c.pbx_media, rtp_packet(pt, seq, ts, ssrc, payload))

    def down(self, t: float, seq: int, ts: int, payload: bytes, ssrc: int = 0xBBBB) -> tuple[float, bytes]:
        c = self.call
        return t, udp_frame(*c.pbx_media, *c.caller_media, rtp_packet(0, seq, ts, ssrc, payload))

    def finish(self) -> tuple[bytes, bytes, dict]:
        t_end = max(t for t, _ in self.bye)
        self.feed([(max(t_end, self.pipeline.now + 0.1), f) for _, f in self.bye])
        self.pipeline.finish("capture-end")  # the BYE's linger for media in flight ends with the capture
        [row] = self.store.reading.recordings()
        data = b"".join(self.store.reading.plaintext(row))
        return channel_bytes(data, 1), channel_bytes(data, 2), {s["channel"]: s for s in row.streams}


def chunk(i: int) -> bytes:
    return bytes([(i * 7 + k) % 250 for k in range(SPP)])


def start_pos(h: Harness, t: float) -> int:
    return round((t - h.call.answer_at) * 8000)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_reordered_and_duplicated_packets_land_in_place(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    order = [0, 1, 3, 2, 4, 4, 6, 5, 7, 1]  # swaps, a duplicate, a very late duplicate
    h.feed([h.up(t + k * 0.02, 1000 + i, 5000 + i * SPP, chunk(i)) for k, i in enumerate(order)])
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + 8 * SPP] == b"".join(chunk(i) for i in range(8))
    assert set(ch1[:p]) == {0xFF}
    assert streams[1]["duplicates"] == 2 and streams[1]["lost"] == 0 and streams[1]["packets"] == 8


def test_sequence_and_timestamp_wrap_around(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    h.feed([h.up(t + i * 0.02, (65533 + i) & 0xFFFF, (0xFFFFFE00 + i * SPP) & 0xFFFFFFFF, chunk(i)) for i in range(8)])
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + 8 * SPP] == b"".join(chunk(i) for i in range(8))
    assert streams[1]["expected"] == 8 and streams[1]["lost"] == 0


def test_loss_is_silence_and_counted(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    h.feed([h.up(t + i * 0.02, 10 + i, i * SPP, chunk(i)) for i in range(10) if i not in (3, 4)])
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p + 3 * SPP : p + 5 * SPP] == b"\xff" * 2 * SPP
    assert ch1[p + 5 * SPP : p + 6 * SPP] == chunk(5)
    assert streams[1]["lost"] == 2


def test_ssrc_change_reanchors_at_arrival(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    first = [h.up(t + i * 0.02, 100 + i, 777 + i * SPP, chunk(i)) for i in range(5)]
    t2 = t + 1.0
    second = [h.up(t2 + i * 0.02, 9 + i, 123456 + i * SPP, chunk(50 + i), ssrc=0xCCCC) for i in range(5)]
    h.feed(first + second)
    ch1, _, streams = h.finish()
    p2 = start_pos(h, t2)
    assert ch1[p2 : p2 + 5 * SPP] == b"".join(chunk(50 + i) for i in range(5))
    assert streams[1]["ssrcs"] == [0xAAAA, 0xCCCC]
    assert len(streams[1]["anchors"]) == 2


def test_sender_paused_on_hold_keeps_the_hold_as_silence(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    before = [h.up(t + i * 0.02, i, i * SPP, chunk(i)) for i in range(5)]
    t_resume = t + 30.0  # 30 s of hold with no packets; the timestamp resumes as if nothing happened
    after = [h.up(t_resume + i * 0.02, 5 + i, (5 + i) * SPP, chunk(5 + i)) for i in range(5)]
    h.feed(before + after)
    ch1, _, _ = h.finish()
    p, q = start_pos(h, t), start_pos(h, t_resume)
    assert ch1[p : p + 5 * SPP] == b"".join(chunk(i) for i in range(5))
    assert set(ch1[p + 5 * SPP : q]) == {0xFF}
    assert ch1[q : q + 5 * SPP] == b"".join(chunk(5 + i) for i in range(5))


def test_one_way_audio_long_call_is_written_progressively(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    n = 1500  # 30 s from the caller only
    h.feed([h.up(t + i * 0.02, i, i * SPP, chunk(i)) for i in range(n)])
    rec = next(iter(h.pipeline.tracker.calls.values())).handle
    assert len(rec.bufs[0]) <= 20_000 and len(rec.bufs[1]) <= 20_000  # bounded buffers
    ch1, ch2, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + n * SPP] == b"".join(chunk(i) for i in range(n))
    assert set(ch2) == {0xFF}
    assert streams[2]["packets"] == 0


def test_dtmf_and_comfort_noise_are_not_mixed_in(h: Harness) -> None:
    t = h.call.answer_at + 0.05
    pkts = [h.up(t + i * 0.02, i, i * SPP, chunk(i)) for i in range(3)]
    pkts.append(h.up(t + 0.06, 3, 3 * SPP, b"\x01\x0a\x00\xa0", pt=101))  # telephone-event
    pkts.append(h.up(t + 0.08, 4, 4 * SPP, b"\x40", pt=13))  # comfort noise
    pkts += [h.up(t + i * 0.02, i, i * SPP, chunk(i)) for i in range(5, 7)]
    h.feed(pkts)
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p + 3 * SPP : p + 5 * SPP] == b"\xff" * 2 * SPP
    assert ch1[p + 5 * SPP : p + 7 * SPP] == chunk(5) + chunk(6)
    assert streams[1]["other_payload"] == 2 and streams[1]["lost"] == 0


def test_evidence_pcap_on_a_full_disk_keeps_what_was_written_and_says_so(tmp_path: Path) -> None:
    """A real full filesystem (a 64 KiB tmpfs): the write that fails is reported once, the sealed
    records before it stay whole and valid, what the store then finishes of them is a valid capture
    (the records end on a page, so the last may end inside a packet: the FINAL cuts at the last
    whole one), and the buffer does not grow with the frames that follow."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from capture.source import CaptureFile
    from storage import sealed
    from storage.evidence import EvidencePcap, whole_packets

    key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(key)
    with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
        filler = tiny / "filler"
        filler.write_bytes(bytes(8192))  # freed before the store finishes the file (its FINAL needs room)
        errors: list[OSError] = []
        pcap = EvidencePcap(str(tiny / "call.pcap"), aes, errors.append)
        frame = udp_frame("203.0.113.20", 40000, "192.0.2.20", 20000, rtp_packet(0, 1, 0, 1, bytes(160)))
        for i in range(2000):  # ~420 KB of frames for 64 KiB of disk
            pcap.add(T0 + i * 0.02, 1, frame)
            assert len(pcap.buf) <= pcap.flush_bytes + len(frame) + 16
        assert pcap.close() == str(tiny / "call.pcap")
        assert len(errors) == 1 and errors[0].errno == 28  # ENOSPC, once
        fd = os.open(tiny / "call.pcap", os.O_RDONLY)
        try:
            found, plains = sealed.valid_prefix(fd, aes, "call.pcap", plain=True)
            assert found.end == os.fstat(fd).st_size  # no half record left: every record whole and valid
        finally:
            os.close(fd)
        filler.unlink()
        length = sealed.finish(str(tiny / "call.pcap"), key, "call.pcap", pcap_whole=whole_packets)
        assert length == whole_packets(plains) <= len(b"".join(plains))
        with sealed.SealedFile(str(tiny / "call.pcap"), key, "call.pcap") as f:
            (tmp_path / "kept.pcap").write_bytes(b"".join(f.plaintext()))
        with CaptureFile(tmp_path / "kept.pcap") as capture:
            kept = [f for b in capture.batches() for _, _, f in b]
        assert 0 < len(kept) < 2000 and all(f == frame for f in kept)
        assert len(kept) * (16 + len(frame)) + 24 == length  # every whole packet kept, no part of one


def test_a_timestamp_leaping_hours_ahead_opens_no_hours_of_silence(h: Harness) -> None:
    """One packet whose RTP timestamp leaps 2^31 - 1 ticks ahead (74 h at 8 kHz: a sender that reset
    its clock, or a forged packet) is re-anchored where it arrives; trusted, it would have padded
    gigabytes of silence into memory and the spool (found by review)."""
    t = h.call.answer_at + 0.05
    before = [h.up(t + i * 0.02, i, i * SPP, chunk(i)) for i in range(5)]
    leap = [h.up(t + 0.1 + i * 0.02, 5 + i, 0x7FFFFFFF + i * SPP, chunk(5 + i)) for i in range(5)]
    h.feed(before + leap)
    rec = next(iter(h.pipeline.tracker.calls.values())).handle
    assert len(rec.bufs[0]) <= 20_000
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + 10 * SPP] == b"".join(chunk(i) for i in range(10))  # continuous, as it arrived
    assert len(ch1) < 10 * 8000  # seconds, not hours
    assert len(streams[1]["anchors"]) == 2


# -- media from another source than the call's sender (issue 16, item 3) -----------------------------

FLOODER = ("198.51.100.66", 40000)


@pytest.fixture(params=["c", "python"])
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """The harness with the C fast path, and with the Python loops alone (the specification)."""
    if request.param == "python":
        import capture.media

        original = capture.media.fastpath
        capture.media.fastpath = None  # this pipeline's MediaMap gets no C table
        try:
            return Harness(tmp_path)
        finally:
            capture.media.fastpath = original
    harness = Harness(tmp_path)
    if harness.pipeline.media.table is None:
        pytest.skip("capture/_fastpath.c is not built")
    return harness


def from_address(h: Harness, src: tuple[str, int], t: float, seq: int, ts: int, payload: bytes,
                 ssrc: int = 0xAAAA) -> tuple[float, bytes]:
    return t, udp_frame(*src, *h.call.pbx_media, rtp_packet(0, seq, ts, ssrc, payload))


def test_rtp_from_another_source_is_dropped_and_counted(both: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A flood into the caller's direction from another address, half of it with the caller's SSRC
    and sequence numbers running ahead, half with SSRCs of its own: the WAV is the caller's audio
    alone, no longer than the call; each dropped packet is counted in the recording and the
    pipeline, and one warning names the recording (found by review: 100,000 such packets made a
    5-second call a 33-minute WAV and a 1.1 MB index row)."""
    h = both
    t = h.call.answer_at + 0.05
    genuine = [h.up(t + i * 0.02, 100 + i, 5000 + i * SPP, chunk(i)) for i in range(50)]
    flood = [from_address(h, FLOODER, t + 0.005 + k * 0.0004, 150 + k, 5000 + (50 + k) * SPP, b"\x42" * SPP,
                          ssrc=0xAAAA if k % 2 else 0x5000 + k) for k in range(2000)]
    h.feed(sorted(genuine + flood, key=lambda p: p[0]))
    with caplog.at_level("WARNING"):
        ch1, ch2, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[: p + 50 * SPP] == b"\xff" * p + b"".join(chunk(i) for i in range(50))
    assert len(ch1) == len(ch2) == p + 50 * SPP  # not one sample longer than the caller spoke
    assert h.pipeline.counters["rtp_other_source"] == 2000
    assert streams[1]["other_source"] == 2000 and streams[2]["other_source"] == 0
    assert streams[1]["ssrcs"] == [0xAAAA] and streams[1]["packets"] == 50 and streams[1]["lost"] == 0
    [row] = h.store.reading.recordings()
    [warning] = [r for r in caplog.records if getattr(r, "EVENT", "") == "rtp-other-source"]
    assert warning.RECORDING_ID == row.id and row.id in warning.getMessage()  # type: ignore[attr-defined]
    assert "2000" in warning.getMessage() and h.call.caller not in warning.getMessage()


def test_ssrcs_kept_for_the_record_are_capped(both: Harness) -> None:
    """A sender (or a spoofer on its address) changing SSRC at every packet: its audio is placed as
    it always was, but the index row keeps at most 32 of them, not one per packet."""
    h = both
    t = h.call.answer_at + 0.05
    h.feed([h.up(t + i * 0.02, i, i * SPP, chunk(i), ssrc=0x7000 + i) for i in range(200)])
    _, _, streams = h.finish()
    assert streams[1]["ssrcs"] == [0x7000 + i for i in range(32)]
    assert streams[1]["packets"] == 200


def reinvite(h: Harness, t: float, caller_media: tuple[str, int]) -> list[tuple[float, bytes]]:
    """The caller's re-INVITE moving its media to ``caller_media`` (a transfer to another media
    server), the PBX's 200 with its unchanged SDP, the ACK."""
    c = h.call
    invite = c._message(f"INVITE {c.called} SIP/2.0", "2 INVITE", to_tag=True, body=c._sdp(caller_media, 3))
    ok = c._response("200 OK", "2 INVITE", to_tag=True, body=c._sdp(c.pbx_media, 4))
    ack = c._message(f"ACK {c.called} SIP/2.0", "2 ACK", to_tag=True)
    there = (c.sip_src[0], int(c.sip_src[1]), c.sip_dst[0], int(c.sip_dst[1]))
    back = (c.sip_dst[0], int(c.sip_dst[1]), c.sip_src[0], int(c.sip_src[1]))
    return [(t, udp_frame(*there, invite)), (t + 0.01, udp_frame(*back, ok)), (t + 0.02, udp_frame(*there, ack))]


def test_a_reinvite_to_a_new_media_address_moves_the_source(both: Harness) -> None:
    """The caller re-INVITEs with a new media address and sends from there: its audio is recorded
    from the new address on (a packet of the old one still in flight too), and a flood from an
    address not in the call stays out before and after the move."""
    h = both
    t = h.call.answer_at + 0.05
    old = [h.up(t + i * 0.02, 100 + i, 5000 + i * SPP, chunk(i)) for i in range(10)]
    moved = reinvite(h, t + 0.19, ("203.0.113.99", 41000))
    in_flight = [h.up(t + 0.23, 110, 5000 + 10 * SPP, chunk(10))]
    new = [from_address(h, ("203.0.113.99", 41000), t + 0.22 + i * 0.02, 111 + i, 5000 + (11 + i) * SPP, chunk(11 + i))
           for i in range(10)]
    flood = [from_address(h, FLOODER, t + 0.001 + k * 0.004, 100 + k, 5000 + k * SPP, b"\x42" * SPP, ssrc=0x5000 + k)
             for k in range(100)]
    h.feed(sorted(old + moved + in_flight + new + flood, key=lambda p: p[0]))
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + 21 * SPP] == b"".join(chunk(i) for i in range(21))
    assert len(ch1) == p + 21 * SPP
    assert streams[1]["other_source"] == 100 and streams[1]["packets"] == 21


def test_a_caller_behind_nat_that_moves_keeps_its_audio(both: Harness) -> None:
    """A caller behind NAT re-INVITEs with a new private address and its packets come from a new
    public one, with its SSRC: the source moves there; before the re-INVITE such packets are another
    source's."""
    h = both
    t = h.call.answer_at + 0.05
    moved_to = ("198.51.100.200", 52000)  # the NAT's new public address: in no SDP
    old = [h.up(t + i * 0.02, 100 + i, 5000 + i * SPP, chunk(i)) for i in range(10)]
    early = [from_address(h, moved_to, t + 0.101, 900, 5000 + 5 * SPP, b"\x42" * SPP)]  # before the re-INVITE
    moved = reinvite(h, t + 0.19, ("10.0.0.77", 41000))
    new = [from_address(h, moved_to, t + 0.2 + i * 0.02, 110 + i, 5000 + (10 + i) * SPP, chunk(10 + i))
           for i in range(10)]
    h.feed(sorted(old + early + moved + new, key=lambda p: p[0]))
    ch1, _, streams = h.finish()
    p = start_pos(h, t)
    assert ch1[p : p + 20 * SPP] == b"".join(chunk(i) for i in range(20))
    assert streams[1]["other_source"] == 1 and streams[1]["packets"] == 20


def test_a_flood_that_starts_before_the_caller_loses_to_the_callers_own_address(both: Harness) -> None:
    """A flood that reaches the caller's direction before the caller's first packet is learned as
    its source (3 packets get in); the caller's packets, from the address its SDP announced (where
    the call sends it media), take the source back, and the flood is dropped from then on."""
    h = both
    t = h.call.answer_at + 0.05
    flood = [from_address(h, FLOODER, t - 0.01 + k * 0.004, 7000 + k, 90000 + k * SPP, b"\x42" * SPP, ssrc=0x5555)
             for k in range(200)]
    genuine = [h.up(t + i * 0.02, 100 + i, 5000 + i * SPP, chunk(i)) for i in range(30)]
    h.feed(sorted(genuine + flood, key=lambda p: p[0]))
    ch1, _, streams = h.finish()
    assert streams[1]["ssrcs"] == [0x5555, 0xAAAA]
    at = streams[1]["anchors"][-1][2]  # the caller's audio, anchored after the 3 flood packets' place
    assert 0 <= at - start_pos(h, t) <= 3 * SPP
    assert ch1[at : at + 30 * SPP] == b"".join(chunk(i) for i in range(30)) and len(ch1) == at + 30 * SPP
    assert streams[1]["other_source"] == 197 and streams[1]["packets"] == 33


def test_the_other_source_count_reaches_the_metrics(h: Harness) -> None:
    """What the technician watches: the pipeline's count of media dropped as another source."""
    import urllib.request
    from types import SimpleNamespace

    from recorderd.metrics import MetricsServer

    t = h.call.answer_at + 0.05
    h.feed([h.up(t, 1, 0, chunk(0))] + [from_address(h, FLOODER, t + 0.01 + k * 0.001, 2 + k, (1 + k) * SPP,
                                                      chunk(k)) for k in range(7)])
    server = MetricsServer("127.0.0.1:0")
    server.start()
    try:
        server.publish(h.pipeline.counters, 1, SimpleNamespace(free_bytes=1))
        port = server.httpd.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.stop()
    assert "recorderd_rtp_other_source_total 7" in body
