"""Audio placement through the real pipeline and the real spool writer: reordering, duplicates,
sequence and timestamp wrap-around, SSRC change, a sender paused on hold, one-way audio."""
from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ROOT, small_tmpfs
from generator import SipCall, rtp_packet, udp_frame

from capture.pipeline import CapturePipeline
from recorderd.config import load_dids
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
        self.pipeline = CapturePipeline(DIDS, self.store.sink())
        self.call = SipCall("placement-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", T0, talk=0)
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
        [row] = self.store.recordings()
        data = b"".join(self.store.plaintext(row))
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
    """A real full filesystem (a 64 KiB tmpfs): the write that fails is reported once, the frames
    before it stay a valid capture, and the buffer does not grow with the frames that follow."""
    from capture.source import CaptureFile
    from storage.evidence import EvidencePcap

    with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
        errors: list[OSError] = []
        pcap = EvidencePcap(str(tiny / "call.pcap"), errors.append)
        frame = udp_frame("203.0.113.20", 40000, "192.0.2.20", 20000, rtp_packet(0, 1, 0, 1, bytes(160)))
        for i in range(2000):  # ~420 KB of frames for 64 KiB of disk
            pcap.add(T0 + i * 0.02, 1, frame)
            assert len(pcap.buf) <= pcap.flush_bytes + len(frame) + 16
        assert pcap.close() == str(tiny / "call.pcap")
        assert len(errors) == 1 and errors[0].errno == 28  # ENOSPC, once
        with CaptureFile(tiny / "call.pcap") as capture:
            kept = [f for b in capture.batches() for _, _, f in b]
        assert 0 < len(kept) < 2000 and all(f == frame for f in kept)


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
