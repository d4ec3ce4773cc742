"""The evidence pcap keeps every SIP frame (issue 14): a SIP message reassembled from IP fragments
or from TCP segments is kept in its call's evidence pcap as the original frames, every fragment and
every segment that carried part of it (a segment with parts of two messages once, with the first),
byte for byte as tshark reads them in the source capture. Before, such messages reached the call
without their frames: the fragmented INVITE's fragments and every frame of a call signalled over
TCP were missing from its evidence."""
from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool, public_capture

from capture.fragments import MAX_FRAMES as FRAGMENT_FRAMES
from capture.fragments import FragmentReassembler
from capture.source import CaptureFile
from capture.tcp import MAX_FRAMES as TCP_FRAMES
from capture.tcp import TcpStreams
from storage.index import RecordingRow

PUBLIC_USERS = ["service", "08019200028"]  # the called users of the two public captures' calls


def frames_of(path: Path) -> list[tuple[float, int, bytes]]:
    with CaptureFile(path) as source:
        return [p for batch in source.batches() for p in batch]


def sip_frames_by_tshark(path: Path) -> list[tuple[str, int, set[int]]]:
    """(Call-ID, frame number, the frame numbers it was made of) of each frame of SIP, as tshark
    reassembles them: the frame itself, its IP fragments and the TCP segments it was reassembled
    from (1-based numbers)."""
    tshark = needs_tool("tshark")
    out = subprocess.run([tshark, "-r", str(path), "-Y", "sip", "-T", "fields", "-E", "separator=|",
                          "-e", "frame.number", "-e", "sip.Call-ID", "-e", "ip.fragment", "-e", "ipv6.fragment",
                          "-e", "tcp.segment"], capture_output=True, text=True, check=True).stdout
    messages = []
    for line in out.splitlines():
        number, call_ids, *parts = line.split("|")
        numbers = {int(number)} | {int(n) for part in parts for n in part.split(",") if n}
        for call_id in set(call_ids.split(",")):  # one frame may carry several messages (coalesced TCP)
            messages.append((call_id, int(number), numbers))
    return messages


def evidence(site: Site) -> dict[str, tuple[RecordingRow, list[tuple[float, int, bytes]]]]:
    """Call-ID -> its recording and the packets of its evidence pcap, as the store decrypts it."""
    store = site.open_store()
    try:
        out = {}
        for row in store.reading.recordings():
            with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
                f.write(b"".join(store.reading.plaintext(row, pcap=True)))
                f.flush()
                out[row.call_id] = (row, frames_of(Path(f.name)))
        return out
    finally:
        store.close()


CASES = [
    ("fragmented-invite.pcap", "fixture"),  # IPv4 fragments, last first
    ("tcp-split.pcap", "fixture"),  # every message in 200-byte segments, sequence numbers wrapping
    ("tcp-coalesced.pcap", "fixture"),  # 100, 180 and 200 in one segment
    ("sip-tcp-segmented-invite.pcap", "public"),  # a ~5 kB INVITE over three TCP segments
    ("ipv6-frag-sip-sll.pcap", "public"),  # IPv6 fragments, Linux cooked capture
]


@pytest.mark.parametrize("name,kind", CASES)
def test_the_evidence_pcap_has_every_frame_of_the_calls_sip(name: str, kind: str, tmp_path: Path) -> None:
    if kind == "fixture":
        path, site = FIXTURES / name, Site(tmp_path)
    else:
        path = public_capture(name)
        site = Site(tmp_path, [{"number": u, "label": f"test-{u}", "kind": "user"} for u in PUBLIC_USERS])
    site.init()
    messages = sip_frames_by_tshark(path)
    source = frames_of(path)
    assert site.replay(path) == 0
    kept = evidence(site)
    assert kept and set(kept) <= {call_id for call_id, _, _ in messages}
    for call_id, (row, packets) in kept.items():
        # Every SIP message of the call while it lasted (a call ended incomplete, as the public
        # captures' calls without RTP are, is finalised at its BYE: what follows is not its evidence;
        # a complete one lingers for the 200 to its BYE).
        numbers = sorted({n for cid, number, made_of in messages if cid == call_id
                          and (row.state == "complete" or source[number - 1][0] <= row.ended_at)
                          for n in made_of})
        assert len(numbers) > 1
        have = Counter((linktype, frame) for _, linktype, frame in packets)
        missing = [n for n in numbers if have[source[n - 1][1:]] == 0]
        assert not missing, f"{name}: frames {missing} of {call_id}'s SIP are not in its evidence pcap"
        for n in numbers:  # each once (a segment with two messages goes with the first), at its own time
            ts, linktype, frame = source[n - 1]
            assert have[(linktype, frame)] == 1
            assert any(abs(t - ts) < 1e-6 for t, lt, f in packets if (lt, f) == (linktype, frame))


def test_fragment_frames_are_kept_up_to_the_cap_and_counted_beyond() -> None:
    """A datagram made of more fragments than MAX_FRAMES keeps the first MAX_FRAMES frames for the
    evidence and counts the rest; the datagram itself is still reassembled whole."""
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    pieces = FRAGMENT_FRAMES + 6
    data = bytes(range(256)) * (pieces * 8 // 256 + 1)
    data = data[: pieces * 8]
    whole = None
    for i in range(pieces):
        frame = b"frame-%d" % i
        whole = r.push(i / 1000, 4, b"\x01" * 4, b"\x02" * 4, 7, 17, i * 8, i < pieces - 1, data[i * 8 : i * 8 + 8],
                       (float(i), 1, frame))
    assert whole == data
    assert [f for _, _, f in r.completed] == [b"frame-%d" % i for i in range(FRAGMENT_FRAMES)]
    assert counters["evidence_frames_over_cap"] == 6
    assert r.buffered == 0  # the frames' charge went with the datagram


def test_a_duplicate_fragment_is_not_kept_twice() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, last = b"A" * 16, b"B" * 8
    r.push(0.0, 4, b"s", b"d", 1, 17, 0, True, first, (0.0, 1, b"f1"))
    r.push(0.1, 4, b"s", b"d", 1, 17, 0, True, first, (0.1, 1, b"f1-again"))
    assert r.push(0.2, 4, b"s", b"d", 1, 17, 16, False, last, (0.2, 1, b"f2")) == first + last
    assert [f for _, _, f in r.completed] == [b"f1", b"f2"]


def test_tcp_segments_go_with_the_first_message_they_carry() -> None:
    """Segments: [first half of A] [rest of A + all of B + start of C] [rest of C]: A gets the first
    two, B none of its own (its bytes came in A's second segment), C the third; a retransmission
    adds nothing and is not kept."""
    counters: Counter[str] = Counter()
    streams = TcpStreams(counters)
    msg = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: %s\r\nContent-Length: 0\r\n\r\n"
    a, b, c = msg % b"a", msg % b"b", msg % b"c"
    data = a + b + c
    cuts = [0, 20, len(a) + len(b) + 10, len(data)]
    got = []
    for i in range(3):
        seq = 1000 + cuts[i]
        got += list(zip(streams.push(float(i), b"s", 1, b"d", 2, seq, 0x18, data[cuts[i] : cuts[i + 1]],
                                     (float(i), 1, b"seg%d" % i)),
                        streams.completed, strict=False))
        if i == 1:
            assert streams.push(1.5, b"s", 1, b"d", 2, 1000, 0x18, data[:20], (1.5, 1, b"retransmitted")) == []
    assert [(m, [f for _, _, f in fr]) for m, fr in got] == [(a, [b"seg0", b"seg1"]), (b, []), (c, [b"seg2"])]


def test_tcp_frames_are_capped_per_stream_and_counted() -> None:
    counters: Counter[str] = Counter()
    streams = TcpStreams(counters)
    message = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    out = []
    for i, byte in enumerate(message):  # one byte a segment
        out += zip(streams.push(float(i), b"s", 1, b"d", 2, 5000 + i, 0x18, bytes([byte]), (float(i), 1, b"%d" % i)),
                   streams.completed, strict=False)
    [(whole, frames)] = out
    assert whole == message
    assert len(frames) == min(TCP_FRAMES, len(message))
    assert counters["evidence_frames_over_cap"] == max(0, len(message) - TCP_FRAMES)
