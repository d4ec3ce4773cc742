"""TCP reassembly of SIP: real segments built in code, every loss/reorder/framing case, properties."""
from __future__ import annotations

import struct
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.sip import SipMessage, looks_like_sip
from capture.tcp import ACK, FIN, RST, SYN, TcpStreams, parse_tcp

ALICE = bytes([203, 0, 113, 5])
BOB = bytes([192, 0, 2, 10])
SPORT, DPORT = 40000, 5060
ISN = 1_000_000
DEEP = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tcp_segment(seq: int, payload: bytes = b"", flags: int = ACK, sport: int = SPORT, dport: int = DPORT) -> bytes:
    """A 20-byte TCP header (no options) and its payload."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def sip(n: int, body: bytes = b"", *, method: str = "OPTIONS", compact: bool = False) -> bytes:
    """A minimal well-formed SIP request (or response with method 'SIP/2.0') with Content-Length."""
    start = "SIP/2.0 200 OK\r\n" if method == "SIP/2.0" else f"{method} sip:0442003939@192.0.2.10 SIP/2.0\r\n"
    name = "l" if compact else "Content-Length"
    return (
        start
        + f"Via: SIP/2.0/TCP 203.0.113.5:{SPORT};branch=z9hG4bK-{n}\r\n"
        + f"From: <sip:09011112222@203.0.113.5>;tag=a{n}\r\n"
        + "To: <sip:0442003939@192.0.2.10>\r\n"
        + f"Call-ID: call-{n}@203.0.113.5\r\n"
        + f"CSeq: {n} {'INVITE' if method == 'SIP/2.0' else method}\r\n"
        + f"{name}: {len(body)}\r\n\r\n"
    ).encode() + body


def big_invite() -> bytes:
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    ) + b"".join(b"a=x-filler:%04d %s\r\n" % (i, b"z" * 40) for i in range(80))
    return sip(1, sdp, method="INVITE")


class Link:
    """One TCP direction from ALICE to BOB: builds segments, parses them back, pushes them."""

    def __init__(
        self, streams: TcpStreams | None = None, isn: int = ISN, sport: int = SPORT, **options: float
    ) -> None:
        self.streams = streams if streams is not None else TcpStreams(Counter(), **options)  # type: ignore[arg-type]
        self.counters = self.streams.counters
        self.isn = isn
        self.sport = sport

    def seq(self, offset: int) -> int:
        """Sequence number of stream byte ``offset`` (after the SYN)."""
        return (self.isn + 1 + offset) & 0xFFFFFFFF

    def send(self, raw_seq: int, payload: bytes = b"", flags: int = ACK, ts: float = 0.0) -> list[bytes]:
        sport, dport, seq, fl, data = parse_tcp(tcp_segment(raw_seq, payload, flags, sport=self.sport))
        return self.streams.push(ts, ALICE, sport, BOB, dport, seq, fl, data)

    def syn(self, ts: float = 0.0) -> list[bytes]:
        return self.send(self.isn, flags=SYN, ts=ts)

    def at(self, offset: int, payload: bytes, flags: int = ACK, ts: float = 0.0) -> list[bytes]:
        return self.send(self.seq(offset), payload, flags, ts)


def check_parses(messages: list[bytes]) -> None:
    for message in messages:
        assert SipMessage.parse(message).size == len(message)


# -- parse_tcp --------------------------------------------------------------------------------------


def test_parse_tcp_fields_and_options() -> None:
    seg = struct.pack("!HHIIBBHHH", 5060, 40000, 0xFFFFFFFE, 7, 8 << 4, SYN | ACK, 1, 0, 0) + bytes(12) + b"hello"
    assert parse_tcp(seg) == (5060, 40000, 0xFFFFFFFE, SYN | ACK, b"hello")
    assert parse_tcp(tcp_segment(1)) == (SPORT, DPORT, 1, ACK, b"")


def test_parse_tcp_says_what_is_wrong() -> None:
    seg = tcp_segment(1, b"x")
    for cut in range(20):
        with pytest.raises(ValueError, match=f"TCP segment of {cut} bytes is shorter than the 20-byte header"):
            parse_tcp(seg[:cut])
    with pytest.raises(ValueError, match="data offset of 16 bytes is less than 20"):
        parse_tcp(seg[:12] + bytes([4 << 4]) + seg[13:])
    with pytest.raises(ValueError, match="data offset of 24 bytes is beyond the 21-byte segment"):
        parse_tcp(seg[:12] + bytes([6 << 4]) + seg[13:])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_streams must be at least 1, not 0"):
        TcpStreams(Counter(), max_streams=0)
    with pytest.raises(ValueError, match="max_buffer must be at least 1"):
        TcpStreams(Counter(), max_buffer=0)
    with pytest.raises(ValueError, match="idle_timeout must be positive"):
        TcpStreams(Counter(), idle_timeout=0)


# -- reassembly ---------------------------------------------------------------------------------------


def test_one_message_in_one_segment_mid_connection() -> None:
    link = Link()
    msg = sip(1)
    assert link.send(123456, msg) == [msg]
    check_parses([msg])
    assert link.counters == Counter(tcp_messages=1)
    assert link.streams.buffered == 0


def test_large_invite_split_over_four_segments() -> None:
    link = Link()
    invite = big_invite()
    assert 4800 < len(invite) < 5600
    link.syn()
    cuts = [0, 1300, 2600, 3900, len(invite)]
    outputs = [link.at(a, invite[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert outputs == [[], [], [], [invite]]
    parsed = SipMessage.parse(invite)
    assert parsed.method == "INVITE" and parsed.body.startswith(b"v=0\r\n") and len(parsed.body) > 4500


def test_two_coalesced_messages_and_the_start_of_a_third() -> None:
    link = Link()
    a, b, c = sip(1), sip(2, b"v=0\r\n", method="SIP/2.0"), sip(3, b"body", compact=True)
    link.syn()
    assert link.at(0, a + b + c[:30]) == [a, b]
    assert link.at(len(a + b) + 30, c[30:]) == [c]
    check_parses([a, b, c])
    assert link.counters["tcp_messages"] == 3


def test_retransmissions_are_ignored() -> None:
    link = Link()
    a, b = sip(1), sip(2)
    link.syn()
    assert link.at(0, a) == [a]
    assert link.at(0, a) == []  # the whole message again
    assert link.at(0, a[:10]) == []
    assert link.syn() == []  # a retransmitted SYN does not restart the stream
    assert link.at(len(a), b) == [b]
    assert link.counters["tcp_retransmission"] == 2


def test_out_of_order_segments_wait_for_the_gap() -> None:
    link = Link()
    a, b, c = sip(1), sip(2, b"x" * 100), sip(3)
    data = a + b + c
    link.syn()
    assert link.at(200, data[200:400]) == []
    assert link.at(400, data[400:]) == []
    assert link.at(400, data[400:]) == []  # a duplicate of a held segment
    assert link.streams.buffered == len(data) - 200
    assert link.at(0, data[:200]) == [a, b, c]
    assert link.streams.buffered == 0
    assert link.counters["tcp_retransmission"] == 1


def test_partial_overlaps_are_trimmed() -> None:
    link = Link()
    a, b = sip(1, b"one"), sip(2, b"two")
    data = a + b
    link.syn()
    assert link.at(0, data[:100]) == []
    assert link.at(50, data[50:len(a) + 20]) == [a]  # resent from 50, with new data after it
    assert link.at(len(a) + 40, data[len(a) + 40 :]) == []  # ahead: held
    assert link.at(len(a) + 10, data[len(a) + 10 : len(a) + 60]) == [b]  # overlaps both sides
    assert link.counters["tcp_retransmission"] == 0


@pytest.mark.parametrize("isn", [0xFFFFFFFF - 150, 0xFFFFFFFF, 0xFFFFFFFE])
def test_sequence_numbers_wrap_around(isn: int) -> None:
    link = Link(isn=isn)
    a, b = sip(1), sip(2)
    data = a + b
    link.syn()
    assert link.at(len(a) - 20, data[len(a) - 20 :]) == []  # after the wrap, early
    assert link.at(0, data[: len(a) - 20]) == [a, b]
    assert link.at(0, data[:40]) == []  # from before the wrap, again
    assert link.counters["tcp_retransmission"] == 1


def test_wrap_around_mid_connection() -> None:
    link = Link()
    a, b = sip(1), sip(2)
    assert link.send(0xFFFFFFF0, a) == [a]
    assert link.send((0xFFFFFFF0 + len(a)) & 0xFFFFFFFF, b) == [b]


def test_crlf_keepalives_are_skipped() -> None:
    link = Link()
    a, b = sip(1), sip(2)
    stream = b"\r\n\r\n" + a + b"\r\n\r\n" + b"\r\n" + b
    link.syn()
    assert link.at(0, stream[:4]) == []
    assert link.at(4, stream[4:]) == [a, b]
    assert link.at(len(stream), b"\r\n\r\n") == []
    assert link.counters == Counter(tcp_messages=2)
    assert link.streams.buffered == 0


def test_header_block_without_content_length() -> None:
    link = Link()
    bad = sip(1, b"v=0\r\n").replace(b"Content-Length: 5\r\n", b"")
    badlen = sip(2).replace(b"Content-Length: 0", b"Content-Length: zero")
    good = sip(3)
    link.syn()
    assert link.at(0, bad + badlen + good) == [good]
    assert link.counters["tcp_sip_unframed"] == 2
    assert link.counters["tcp_bytes_skipped"] == len(bad + badlen)


def test_folded_line_is_not_a_content_length() -> None:
    link = Link()
    folded = sip(1).replace(b"Content-Length: 0\r\n", b"Subject: x\r\n l: 0\r\n")
    link.syn()
    assert link.at(0, folded + sip(2)) == [sip(2)]
    assert link.counters["tcp_sip_unframed"] == 1


def test_oversize_messages_are_dropped() -> None:
    link = Link(max_buffer=1000)
    huge = sip(1, b"b" * 2000)
    good = sip(2)
    link.syn()
    assert link.at(0, huge[:700]) == []  # Content-Length says it can never fit
    assert link.counters["tcp_message_too_large"] == 1
    assert link.at(700, huge[700:]) == []
    assert link.at(len(huge), good) == [good]
    endless = b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: y\r\n" * 120  # no end of headers
    assert link.at(len(huge + good), endless) == []
    assert link.counters["tcp_message_too_large"] == 2
    assert link.at(len(huge + good + endless), b"\r\n" + good) == [good]
    assert link.streams.buffered == 0


def test_capture_starting_mid_message_resyncs_at_the_next_start_line() -> None:
    link = Link()
    first, second = big_invite(), sip(2)
    tail = first[3000:]
    assert link.send(777, tail) == []
    assert link.send(777 + len(tail), second) == [second]
    assert link.counters["tcp_bytes_skipped"] == len(tail)
    other = Link(sport=SPORT + 1)
    body_end = b"\r\n\r\nabc"  # the end of a body without a final line feed, then a message
    assert other.send(90_000, body_end) == []
    assert other.send(90_000 + len(body_end), second) == [second]


def test_start_line_split_across_segments() -> None:
    link = Link()
    msg = sip(1)
    link.syn()
    assert link.at(0, msg[:3]) == []
    assert link.at(3, msg[3:]) == [msg]
    assert link.counters["tcp_bytes_skipped"] == 0


def test_unfilled_gap_is_skipped_at_the_next_start_line() -> None:
    link = Link(max_buffer=600)
    a, b, c, d = sip(1, b"a" * 100), sip(2, b"b" * 100), sip(3), sip(4)
    data = a + b + c + d
    link.syn()
    assert link.at(0, a[:150]) == []
    lost = len(a) + 100  # the segment carrying the end of a and the start of b never arrives
    assert link.at(lost, data[lost : len(a + b)]) == []
    assert link.at(len(a + b), c) == []
    out = link.at(len(a + b + c), d)
    assert out == [c, d]
    assert link.counters["tcp_gap_skipped"] == 1
    assert link.streams.buffered == 0
    assert link.at(0, a) == []  # the gap filling late is stale now
    e = sip(5)
    assert link.at(len(data), e) == [e]


def test_fin_ends_the_stream_after_the_data_before_it() -> None:
    link = Link()
    a, b = sip(1), sip(2)
    link.syn()
    assert link.at(len(a), b, FIN | ACK) == []  # FIN arrives before the data it follows
    assert len(link.streams) == 1
    assert link.at(0, a) == [a, b]
    assert len(link.streams) == 0
    assert link.at(len(a + b), b"", FIN | ACK) == []  # a late FIN opens nothing
    assert len(link.streams) == 0


def test_rst_ends_the_stream_at_once_and_a_new_syn_starts_afresh() -> None:
    link = Link()
    a = sip(1)
    link.syn()
    assert link.at(0, a[:50]) == []
    assert link.at(50, b"", RST) == []
    assert len(link.streams) == 0
    link.syn()
    assert link.at(0, a[:50]) == []
    link.isn = 5  # the port is reused by a new connection
    link.syn()
    assert link.at(0, a) == [a]


def test_least_recently_used_stream_is_evicted() -> None:
    counters: Counter[str] = Counter()
    streams = TcpStreams(counters, max_streams=2)
    links = [Link(streams, sport=40000 + i) for i in range(3)]
    msg = sip(1)
    for i, link in enumerate(links[:2]):
        link.syn(ts=i)
        assert link.at(0, msg[:20], ts=i) == []
    assert links[0].at(20, msg[20:40], ts=2) == []  # 0 is now used more recently than 1
    links[2].syn(ts=3)
    assert counters["tcp_stream_evicted"] == 1 and len(streams) == 2
    assert links[0].at(40, msg[40:], ts=4) == [msg]
    assert links[1].at(20, msg[20:], ts=4) == []  # its start was evicted: only a fragment now
    assert counters["tcp_stream_evicted"] == 2


def test_idle_streams_expire() -> None:
    counters: Counter[str] = Counter()
    streams = TcpStreams(counters, idle_timeout=300)
    early, late = Link(streams, sport=1), Link(streams, sport=2)
    early.syn(ts=0)
    early.at(0, b"INVITE sip:", ts=10)
    late.syn(ts=200)
    streams.expire(310)
    assert len(streams) == 2
    streams.expire(310.5)
    assert len(streams) == 1 and counters["tcp_stream_expired"] == 1
    streams.expire(600)
    assert len(streams) == 0 and counters["tcp_stream_expired"] == 2


# -- properties ---------------------------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    count = draw(st.integers(1, 8))
    return [
        sip(
            n,
            draw(st.binary(max_size=300)),
            method=draw(st.sampled_from(["INVITE", "ACK", "BYE", "SIP/2.0", "OPTIONS"])),
            compact=draw(st.booleans()),
        )
        for n in range(count)
    ]


@DEEP
@given(st.data(), messages(), st.sampled_from([ISN, 0, 0xFFFFFFFF, 0xFFFFFFFF - 700]))
def test_random_segmentation_order_and_retransmissions(data: st.DataObject, msgs: list[bytes], isn: int) -> None:
    ping = st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])  # keep-alives between messages
    pings = data.draw(st.lists(ping, min_size=len(msgs), max_size=len(msgs)))
    stream = b"".join(p + m for p, m in zip(pings, msgs, strict=False))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=20))))
    bounds = list(zip([0, *cuts], [*cuts, len(stream)], strict=False))
    sends = data.draw(st.permutations(bounds))
    duplicates = st.sampled_from(bounds)  # a segment sent again as it was
    resegmented = st.tuples(st.integers(0, len(stream) - 1), st.integers(1, 400)).map(
        lambda r: (r[0], min(len(stream), r[0] + r[1]))
    )  # a retransmission cut differently, overlapping other segments
    for extra in data.draw(st.lists(st.one_of(duplicates, resegmented), max_size=10)):
        sends.insert(data.draw(st.integers(0, len(sends))), extra)
    link = Link(isn=isn)
    link.syn()
    out: list[bytes] = []
    for a, b in sends:
        out += link.at(a, stream[a:b])
    assert out == msgs
    check_parses(out)
    assert link.counters["tcp_messages"] == len(msgs)
    assert link.counters["tcp_bytes_skipped"] == 0
    assert link.streams.buffered == 0
    assert link.at(len(stream), b"", FIN | ACK) == [] and len(link.streams) == 0


fragments = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([sip(1), sip(2, b"v=0\r\n", compact=True), b"\r\n\r\n", b"INVITE ", b"l: 9\r\n\r\n"]),
)


@DEEP
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 0xFFFFFFFF), st.integers(0, 255), fragments), max_size=40))
def test_arbitrary_segments_never_raise_and_stay_bounded(segments: list[tuple[int, int, int, bytes]]) -> None:
    counters: Counter[str] = Counter()
    streams = TcpStreams(counters, max_streams=3, max_buffer=256)
    for ts, (port, seq, flags, payload) in enumerate(segments):
        for message in streams.push(float(ts), ALICE, port, BOB, DPORT, seq, flags, payload):
            assert len(message) <= 256
        assert len(streams) <= 3
        assert streams.buffered <= 3 * 2 * 256
    streams.expire(1e9)
    assert len(streams) == 0


@DEEP
@given(st.lists(st.binary(max_size=80), max_size=30))
def test_arbitrary_bytes_only_raise_value_error_from_parse_tcp(raw: list[bytes]) -> None:
    streams = TcpStreams(Counter(), max_buffer=512)
    for ts, segment in enumerate(raw):
        try:
            sport, dport, seq, flags, payload = parse_tcp(segment)
        except ValueError:
            continue
        streams.push(float(ts), ALICE, sport, BOB, dport, seq, flags, payload)


@DEEP
@given(st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=1, max_size=120)), max_size=60))
def test_sequence_soup_on_one_stream_stays_bounded(segments: list[tuple[int, bytes]]) -> None:
    """Pieces of a real stream and junk at random offsets: whatever comes out is one framed message."""
    link = Link(max_buffer=300)
    link.syn()
    base = sip(1, b"x" * 50) * 40
    for offset, junk in segments:
        payload = base[offset : offset + len(junk)] if junk[0] & 1 else junk
        for message in link.at(offset, payload or junk):
            assert looks_like_sip(message) and len(message) <= 300
        assert link.streams.buffered <= 2 * 300
