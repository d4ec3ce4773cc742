"""The same packet twice (issue 14): two mirror sessions onto the SPAN port deliver every frame two
or three times, microseconds apart. Each call is recorded once, with the clean capture's audio and
evidence, byte for byte; the copies are counted as ``mirror_duplicates`` (globally and per
direction), never as the sender's ``duplicates`` (a quality figure); a real retransmission (SIP's T1,
500 ms; an RTP packet sent again 20 ms later) is still what it was."""
from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "pcap_fixtures"))

import fx_duplicates  # noqa: E402
from frames import write_pcap  # noqa: E402
from generator import SipCall, rtp_packet, udp_frame  # noqa: E402

from capture.pipeline import MAX_RECENT_SIP, CapturePipeline  # noqa: E402
from recorderd.config import load_dids  # noqa: E402
from recorderd.metrics import COUNTERS  # noqa: E402
from recorderd.service import replay  # noqa: E402
from storage.spool import SpoolSink  # noqa: E402
from storage.store import Store  # noqa: E402

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))
DUPLICATED = FIXTURES / "mirror-duplicates.pcap"


class Replayed:
    """A capture replayed through the real pipeline into a real store."""

    def __init__(self, tmp: Path, pcap: Path) -> None:
        tmp.mkdir()
        self.store = Store(str(tmp / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp / "key"))
        self.store.init()
        self.store.open()
        self.pipeline = CapturePipeline(DIDS, SpoolSink(self.store))
        replay(self.pipeline, [str(pcap)])
        self.rows = {row.call_id: row for row in self.store.reading.recordings()}

    def wav(self, call_id: str) -> bytes:
        return b"".join(self.store.reading.plaintext(self.rows[call_id]))

    def evidence(self, call_id: str) -> bytes:
        return b"".join(self.store.reading.plaintext(self.rows[call_id], pcap=True))


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Replayed, Replayed]:
    tmp = tmp_path_factory.mktemp("mirror")
    clean = tmp / "clean.pcap"
    write_pcap(str(clean), [p for call, _ in fx_duplicates.ENTRIES for p in call.packets()])
    return Replayed(tmp / "clean", clean), Replayed(tmp / "duplicated", DUPLICATED)


def rtp_copies_per_direction() -> dict[tuple[str, int], int]:
    """What the fixture's transform duplicated of each call's RTP, per (call, channel): from the
    clean packets in the order the transform saw them."""
    packets = sorted((p for call, _ in fx_duplicates.ENTRIES for p in call.packets()), key=lambda p: p[0])
    sender = {}
    for call, _ in fx_duplicates.ENTRIES:
        sender[call.call_id] = (call.caller_media, call.pbx_media)
    want: dict[tuple[str, int], int] = {}
    for i, (t, frame) in enumerate(packets):
        if frame[42] & 0xC0 != 0x80:
            continue  # SIP
        src = (".".join(map(str, frame[26:30])), int.from_bytes(frame[34:36], "big"))
        [(call_id, channel)] = [
            (cid, ch) for cid, media in sender.items() for ch, m in ((1, media[0]), (2, media[1]))
            if m == src and call_start(cid) <= t <= call_end(cid)
        ]
        want[(call_id, channel)] = want.get((call_id, channel), 0) + 1 + (i % 7 == 6)
    return want


def _call(call_id: str) -> SipCall:
    return next(c for c, _ in fx_duplicates.ENTRIES if c.call_id == call_id)


def call_start(call_id: str) -> float:
    return min(t for t, _ in _call(call_id).packets())


def call_end(call_id: str) -> float:
    return max(t for t, _ in _call(call_id).packets())


def test_each_call_is_recorded_once_with_the_clean_calls_audio(both: tuple[Replayed, Replayed]) -> None:
    clean, duplicated = both
    assert sorted(duplicated.rows) == sorted(clean.rows) and len(clean.rows) == 3
    for call_id, row in clean.rows.items():
        assert duplicated.wav(call_id) == clean.wav(call_id), call_id
        assert duplicated.rows[call_id].sha256 == row.sha256
    assert duplicated.pipeline.counters["calls_recorded"] == 3


def test_the_evidence_pcap_keeps_one_copy_of_each_frame(both: tuple[Replayed, Replayed]) -> None:
    clean, duplicated = both
    for call_id in clean.rows:
        evidence = duplicated.evidence(call_id)
        assert len(evidence) > 10_000 and evidence == clean.evidence(call_id), call_id
        assert b"\x81\x00\x00\xc8" not in evidence  # no frame of the second session (VLAN 200)


def test_copies_are_counted_as_mirror_duplicates_not_as_the_senders(both: tuple[Replayed, Replayed]) -> None:
    clean, duplicated = both
    want = rtp_copies_per_direction()
    for call_id, row in duplicated.rows.items():
        for stream, clean_stream in zip(row.streams, clean.rows[call_id].streams, strict=False):
            assert stream["duplicates"] == 0, (call_id, stream["channel"])  # a quality figure: nothing lost or doubled
            assert stream["mirror_duplicates"] == want[(call_id, stream["channel"])], (call_id, stream["channel"])
            assert clean_stream["mirror_duplicates"] == 0
            assert {**stream, "mirror_duplicates": 0} == clean_stream  # every other figure as in the clean capture
    counters = duplicated.pipeline.counters
    assert counters["mirror_duplicates"] == fx_duplicates.COPIES
    assert counters["sip_messages"] == clean.pipeline.counters["sip_messages"]  # each SIP message parsed once
    assert clean.pipeline.counters["mirror_duplicates"] == 0


def test_the_c_and_the_python_paths_drop_the_same_copies(tmp_path: Path) -> None:
    from test_fastpath import compare

    assert compare([DUPLICATED], tmp_path) > 0.3  # C does its share of the work (the tagged copies are Python's)


def test_the_counter_is_published() -> None:
    assert "mirror_duplicates" in COUNTERS


# -- the rule, packet by packet ----------------------------------------------------------------

SPP = 160


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(str(tmp / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp / "key"))
        self.store.init()
        self.store.open()
        self.pipeline = CapturePipeline(DIDS, SpoolSink(self.store))
        self.call = SipCall("mirror-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                            1_790_000_000.0, talk=0)
        signalling = self.call.signalling()
        self.bye = signalling[-2:]
        self.feed(signalling[:-2])

    def feed(self, packets: list[tuple[float, bytes]]) -> None:
        self.pipeline.feed([(t, 1, f) for t, f in packets])

    def up(self, t: float, seq: int, payload: bytes, vlan: int | None = None) -> tuple[float, bytes]:
        c = self.call
        return t, udp_frame(*c.caller_media, *c.pbx_media, rtp_packet(0, seq, seq * SPP, 0xAAAA, payload), vlan=vlan)

    def finish(self) -> dict:
        self.feed([(max(t, self.pipeline.now + 0.1), f) for t, f in self.bye])
        self.pipeline.finish("capture-end")
        [row] = self.store.reading.recordings()
        return {s["channel"]: s for s in row.streams}


def chunk(i: int) -> bytes:
    return bytes([(i * 7 + k) % 250 for k in range(SPP)])


def test_a_copy_is_identical_and_close_a_later_one_is_the_senders_duplicate(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    t = h.call.answer_at + 0.05
    packets = []
    for i in range(20):
        at = t + i * 0.02
        packets.append(h.up(at, i, chunk(i)))
        if i % 2:
            packets.append(h.up(at + 3e-6, i, chunk(i), vlan=200))  # a second session's copy (Python's path)
        if i % 3 == 0:
            packets.append(h.up(at + 6e-6, i, chunk(i)))  # a third, as the first came (C's path)
    packets.append(h.up(t + 5 * 0.02 + 0.009, 5, chunk(5), vlan=200))  # 9 ms after its first: still a copy
    packets.append(h.up(t + 7 * 0.02 + 0.030, 7, chunk(7)))  # 30 ms after: the sender's duplicate
    packets.append(h.up(t + 7 * 0.02 + 0.030 + 2e-6, 7, chunk(7), vlan=200))  # ... and its mirror copy
    packets.append(h.up(t + 9 * 0.02 + 1e-5, 9, chunk(99)))  # same sequence number, other audio: no copy
    h.feed(sorted(packets, key=lambda p: p[0]))
    stream = h.finish()[1]
    assert stream["mirror_duplicates"] == 10 + 7 + 1 + 1
    assert stream["duplicates"] == 2  # the one 30 ms later, and the one with other audio
    assert stream["packets"] == 20 and stream["lost"] == 0
    assert h.pipeline.counters["mirror_duplicates"] == 19


def test_a_sip_copy_is_dropped_before_the_parser_a_retransmission_is_not() -> None:
    from test_fixtures import NullSink

    call = SipCall("mirror-sip-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                   1_790_000_000.0, talk=0)
    invite = call.signalling()[0]
    pipeline = CapturePipeline(DIDS, NullSink())
    t, frame = invite
    pipeline.feed([(t, 1, frame), (t + 2e-6, 1, frame), (t + 0.008, 1, frame)])  # a copy, a third copy
    assert (pipeline.counters["sip_messages"], pipeline.counters["mirror_duplicates"]) == (1, 2)
    pipeline.feed([(t + 0.5, 1, frame)])  # T1 later: the caller's retransmission, as before
    assert (pipeline.counters["sip_messages"], pipeline.counters["mirror_duplicates"]) == (2, 2)
    pipeline.feed([(t + 0.5 + 1e-6, 1, frame)])  # and its own copy
    assert (pipeline.counters["sip_messages"], pipeline.counters["mirror_duplicates"]) == (2, 3)


def test_the_table_of_recent_sip_messages_stays_small() -> None:
    """A flood of distinct SIP messages in one window keeps at most MAX_RECENT_SIP of them."""
    from test_fixtures import NullSink

    pipeline = CapturePipeline(DIDS, NullSink())
    src, dst = bytes([203, 0, 113, 9]), bytes([192, 0, 2, 10])
    for i in range(5 * MAX_RECENT_SIP):
        pipeline.on_sip_payload(1000.0 + i * 1e-6, src, dst, b"OPTIONS sip:x SIP/2.0\r\nCall-ID: %d\r\n\r\n" % i)
        assert len(pipeline._recent_sip) <= MAX_RECENT_SIP
    pipeline.on_sip_payload(1001.0, src, dst, b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n")
    assert len(pipeline._recent_sip) == 1  # the window passed: the old ones are let go


# -- a truncating mirror's cut copy first (the review of issue 14, finding 7) ---------------------


def _cut_and_whole(tmp: Path, order: str) -> tuple[Path, Path, SipCall]:
    """A call whose every RTP frame a second, truncating mirror session (cutting frames to 100
    bytes) delivers too: ``order`` "cut-first" (the cut copy 5 us before the whole one), "whole-first",
    or "cut-twice" (cut to 100, then to 150 bytes, then whole)."""
    from frames import CutFrame

    call = SipCall("cutcopy-1@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                   1_790_000_000.0, talk=2.0, seed=31)
    plain = call.packets()
    mixed = []
    for t, f in plain:
        if f[42] & 0xC0 != 0x80:
            mixed.append((t, f))  # SIP: once
        elif order == "cut-first":
            mixed += [(t, CutFrame(f, 100)), (t + 5e-6, f)]
        elif order == "whole-first":
            mixed += [(t, f), (t + 5e-6, CutFrame(f, 100))]
        else:
            mixed += [(t, CutFrame(f, 100)), (t + 3e-6, CutFrame(f, 150)), (t + 6e-6, f)]
    clean, copies = tmp / "clean.pcap", tmp / f"{order}.pcap"
    write_pcap(str(clean), plain)
    write_pcap(str(copies), mixed)
    return clean, copies, call


@pytest.mark.parametrize("order", ["cut-first", "whole-first", "cut-twice"])
def test_a_cut_copy_first_does_not_win_over_the_whole_one(tmp_path: Path, order: str) -> None:
    """A truncating mirror's cut copy before the whole copy: the recording has the whole packet's
    audio, not the silence the cut one was completed with; the packet is not counted as truncated,
    and its copies are the mirror's, not the sender's duplicates. In C and in Python alike."""
    from test_fastpath import compare

    clean_pcap, pcap, call = _cut_and_whole(tmp_path, order)
    clean, copied = Replayed(tmp_path / "clean", clean_pcap), Replayed(tmp_path / "copied", pcap)
    [call_id] = clean.rows
    assert copied.wav(call_id) == clean.wav(call_id)  # the real audio, byte for byte
    rtp = sum(1 for _, f in call.packets() if f[42] & 0xC0 == 0x80)
    copies = rtp * (2 if order == "cut-twice" else 1)
    for stream, clean_stream in zip(copied.rows[call_id].streams, clean.rows[call_id].streams, strict=False):
        assert (stream["truncated"], stream["duplicates"]) == (0, 0), stream
        assert {**stream, "mirror_duplicates": 0} == clean_stream
    assert sum(s["mirror_duplicates"] for s in copied.rows[call_id].streams) == copies
    assert copied.pipeline.counters["mirror_duplicates"] == copies
    evidence = copied.evidence(call_id)
    assert all(f in evidence for _, f in call.packets() if f[42] & 0xC0 == 0x80)  # the whole frames are kept
    (tmp_path / "compare").mkdir()
    compare([pcap], tmp_path / "compare")
