"""IP fragment reassembly on fragments built in code: a real ~3 kB SIP INVITE in a UDP datagram, cut
the way a router cuts it, delivered in every order, duplicated, overlapped, truncated and crafted."""
from __future__ import annotations

import socket
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sip import INVITE as SIP_INVITE

from capture.decode import decode_udp
from capture.fragments import MAX_PAYLOAD, PIECE_OVERHEAD, FragmentReassembler
from capture.source import LINKTYPE_RAW

SRC4, DST4 = socket.inet_aton("203.0.113.5"), socket.inet_aton("192.0.2.10")
SRC6 = socket.inet_pton(socket.AF_INET6, "2001:db8::5")
DST6 = socket.inet_pton(socket.AF_INET6, "2001:db8::10")
IDENT, UDP = 0x1234, 17

SDP = (
    b"v=0\r\no=- 20518 0 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
) + b"".join(b"a=x-pad:%04d 0123456789abcdef0123456789abcdef\r\n" % i for i in range(60))
INVITE = SIP_INVITE.split(b"Content-Length:")[0] + b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP
DATAGRAM = struct.pack("!HHHH", 5060, 5060, 8 + len(INVITE), 0) + INVITE

Fragment = tuple[int, bool, bytes]  # (byte offset, more fragments, data)


def split(data: bytes, size: int = 1480) -> list[Fragment]:
    """``data`` cut into ``size``-byte fragments (the last one shorter), as a 1500-byte MTU cuts it."""
    return [(off, off + size < len(data), data[off : off + size]) for off in range(0, len(data), size)]


def push(r: FragmentReassembler, frag: Fragment, ts: float = 0.0, ident: int = IDENT, version: int = 4,
         proto: int = UDP) -> bytes | None:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    off, more, data = frag
    return r.push(ts, version, src, dst, ident, proto, off, more, data)


def push_all(r: FragmentReassembler, frags: list[Fragment], **kw: int) -> list[bytes]:
    """The datagrams completed by pushing ``frags`` in this order."""
    return [out for f in frags if (out := push(r, f, **kw)) is not None]


def fragment_counts(counters: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if v}


def test_datagram_is_a_three_fragment_sip_invite() -> None:
    assert 2960 < len(DATAGRAM) <= 3 * 1480
    assert len(split(DATAGRAM)) == 3


def test_in_order() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    assert push(r, first) is None and push(r, second) is None
    assert r.pending == 1 and r.buffered == len(first[2]) + len(second[2]) + 2 * PIECE_OVERHEAD
    assert push(r, last) == DATAGRAM
    assert fragment_counts(counters) == {"fragments_reassembled": 1}
    assert r.pending == 0 and r.buffered == 0


def test_reverse_order_last_fragment_first() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    assert push_all(r, split(DATAGRAM, 512)[::-1]) == [DATAGRAM]
    assert fragment_counts(counters) == {"fragments_reassembled": 1}
    assert r.pending == 0 and r.buffered == 0


@settings(deadline=None)
@given(st.data(), st.integers(1, 400).map(lambda n: n * 8))
def test_any_order_any_fragment_size(data: st.DataObject, size: int) -> None:
    frags = split(DATAGRAM, size)
    order = data.draw(st.permutations(frags))
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    if len(frags) == 1:  # the whole datagram in one fragment is an atomic fragment
        assert push_all(r, order) == [DATAGRAM] and counters["fragments_atomic"] == 1
        return
    assert push_all(r, order) == [DATAGRAM]
    assert fragment_counts(counters) == {"fragments_reassembled": 1}
    assert r.pending == 0 and r.buffered == 0


def test_reassembled_datagram_decodes_as_the_invite() -> None:
    """Real IPv4 fragments, their header fields read back as the decoder will, then reassembled."""
    packets = []
    for off, more, data in split(DATAGRAM):
        flags_frag = (0x2000 if more else 0) | off // 8
        packets.append(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), IDENT, flags_frag, 64, UDP, 0,
                                   SRC4, DST4) + data)
    assert all(decode_udp(LINKTYPE_RAW, p) == "ip_fragment" for p in packets)
    r = FragmentReassembler(Counter())
    out = None
    for p in reversed(packets):
        ident, flags_frag = struct.unpack_from("!HH", p, 4)
        out = r.push(1.0, 4, p[12:16], p[16:20], ident, p[9], (flags_frag & 0x1FFF) * 8,
                     bool(flags_frag & 0x2000), p[20:])
    assert out is not None
    whole = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(out), IDENT, 0, 64, UDP, 0, SRC4, DST4) + out
    assert decode_udp(LINKTYPE_RAW, whole) == (SRC4, 5060, DST4, 5060, INVITE)


def test_atomic_fragment_is_returned_alone() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first = split(DATAGRAM)[0]
    push(r, first, version=6)
    assert push(r, (0, False, DATAGRAM), version=6) == DATAGRAM  # RFC 6946: apart from pending ones
    assert r.pending == 1 and counters["fragments_atomic"] == 1


def test_exact_duplicates_are_ignored() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    assert push_all(r, [first, first, last, last, second]) == [DATAGRAM]
    assert fragment_counts(counters) == {"fragments_duplicate": 2, "fragments_reassembled": 1}
    assert push(r, second) is None and r.pending == 1  # a copy after completion waits, then times out


def test_agreeing_overlaps_are_merged() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    n = len(DATAGRAM)
    frags = [
        (1480, True, DATAGRAM[1480:2000]),
        (0, True, DATAGRAM[0:1600]),  # overlaps the start of the first piece
        (2960, False, DATAGRAM[2960:]),
        (1496, True, DATAGRAM[1496:1600]),  # wholly inside what is held: adds nothing
        (1992, True, DATAGRAM[1992:2968]),  # overlaps both neighbours, fills the gap between them
    ]
    assert n > 2968 and push_all(r, frags) == [DATAGRAM]
    assert fragment_counts(counters) == {"fragments_duplicate": 1, "fragments_reassembled": 1}
    assert r.pending == 0 and r.buffered == 0


def test_final_fragment_adding_no_bytes_completes() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    push(r, (0, True, DATAGRAM[:1480]))
    assert push(r, (1472, False, DATAGRAM[1472:1480])) == DATAGRAM[:1480]  # it only fixes the length
    assert fragment_counts(counters) == {"fragments_reassembled": 1}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_conflicting_overlap_drops_the_datagram(index: int) -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    frags = split(DATAGRAM)
    off, more, data = frags[index]
    forged = (off, more, data[:-1] + b"!")
    assert push_all(r, [frags[index], forged]) == []
    assert fragment_counts(counters) == {"fragments_overlap": 1}
    assert r.pending == 0 and r.buffered == 0


def test_conflicting_partial_overlap_drops_the_datagram() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    push_all(r, [first, last])
    assert push(r, (1472, True, b"INVITE!!" + second[2][:-8])) is None  # rewrites the end of `first`
    assert fragment_counts(counters) == {"fragments_overlap": 1} and r.pending == 0


def test_conflicting_exact_overlap_then_rest_never_completes() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    forged = (second[0], True, second[2][:-1] + b"!")
    assert push_all(r, [first, second, forged, last]) == []
    assert counters["fragments_overlap"] == 1 and r.pending == 1  # `last` waits alone, then times out
    r.expire(100.0)
    assert counters["fragments_timeout"] == 1 and r.pending == 0 and r.buffered == 0


def test_expire_drops_old_datagrams_by_packet_time() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, timeout=30.0)
    first, second, last = split(DATAGRAM)
    push(r, first, ts=1000.0, ident=1)
    push(r, first, ts=1020.0, ident=2)
    r.expire(1030.0)
    assert r.pending == 2
    r.expire(1030.5)
    assert r.pending == 1 and counters["fragments_timeout"] == 1
    assert push_all(r, [second, last], ident=1) == []  # ident 1 starts again and waits
    assert push_all(r, [second, last], ident=2) == [DATAGRAM]
    r.expire(2000.0)
    assert r.pending == 0 and r.buffered == 0 and counters["fragments_timeout"] == 2


def test_late_fragment_of_a_stale_datagram_starts_afresh() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, timeout=30.0)
    first, second, last = split(DATAGRAM)
    push(r, first, ts=0.0)
    push(r, second, ts=10.0)
    assert push(r, last, ts=31.0) is None  # expire() was not called: the push itself notices
    assert counters["fragments_timeout"] == 1 and r.pending == 1
    assert push_all(r, [first, second], ts=32) == [DATAGRAM]


def test_eviction_under_max_datagrams() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, max_datagrams=2)
    first, second, last = split(DATAGRAM)
    for ident in (1, 2, 3):
        push(r, first, ident=ident)
        assert r.pending <= 2
    assert counters["fragments_evicted"] == 1
    assert push_all(r, [second, last], ident=2) == [DATAGRAM]
    assert push_all(r, [second, last], ident=3) == [DATAGRAM]
    assert push_all(r, [second, last], ident=1) == []  # the oldest was the one evicted


def test_eviction_under_max_bytes() -> None:
    counters: Counter[str] = Counter()
    first, second, last = split(DATAGRAM)
    assert len(last[2]) < 1480
    r = FragmentReassembler(counters, max_bytes=3 * (1480 + PIECE_OVERHEAD) - 1)
    push(r, first, ident=1)
    push(r, first, ident=2)
    assert counters["fragments_evicted"] == 0
    push(r, second, ident=2)  # three pieces do not fit: the oldest datagram goes
    assert counters["fragments_evicted"] == 1 and r.pending == 1
    assert r.buffered <= r.max_bytes
    assert push(r, last, ident=2) == DATAGRAM


def test_datagram_larger_than_max_bytes_evicts_itself() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, max_bytes=2000)
    assert push_all(r, split(DATAGRAM)) == []
    assert counters["fragments_evicted"] >= 1 and r.buffered <= 2000


def test_tiny_fragments_are_charged_their_overhead() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, max_bytes=100 * (8 + PIECE_OVERHEAD))
    frags = split(DATAGRAM, 8)
    assert push_all(r, frags[:-1:2]) == []  # every other 8-byte fragment: nothing merges
    assert r.buffered <= r.max_bytes and counters["fragments_evicted"] >= 1


def test_oversize_drops_the_datagram() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first = split(DATAGRAM)[0]
    push(r, first)
    assert push(r, (65528, False, b"x" * 8)) is None
    assert fragment_counts(counters) == {"fragments_oversize": 1}
    assert r.pending == 0 and r.buffered == 0
    assert push(r, (65520, True, b"x" * 16)) is None  # ends at 65536
    assert counters["fragments_oversize"] == 2 and r.pending == 0
    assert push(r, (65528, False, b"x" * 7)) is None  # ends at 65535 exactly: allowed, waits
    assert r.pending == 1


def test_second_final_fragment_with_another_end_is_inconsistent() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    push_all(r, [first, last])
    assert push(r, (last[0], False, last[2] + b"tail")) is None
    assert fragment_counts(counters) == {"fragments_inconsistent": 1}
    assert r.pending == 0 and push(r, second) is None  # the rest starts a new datagram


def test_fragment_beyond_the_final_length_is_inconsistent() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    push(r, last)
    assert push(r, (last[0] + 8 * 100, True, b"y" * 8)) is None
    assert fragment_counts(counters) == {"fragments_inconsistent": 1} and r.pending == 0


def test_final_fragment_short_of_held_data_is_inconsistent() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    push_all(r, [first, second])
    assert push(r, (1480, False, DATAGRAM[1480:2000])) is None
    assert fragment_counts(counters) == {"fragments_inconsistent": 1} and r.pending == 0


@pytest.mark.parametrize("frag", [
    (0, True, DATAGRAM[:1001]),  # non-final, not a multiple of 8
    (8, True, b""),  # non-final and empty
    (12, True, DATAGRAM[12:20]),  # offset not a multiple of 8
    (-8, False, b"x"),
])
def test_malformed_fragment_is_dropped_alone(frag: Fragment) -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    first, second, last = split(DATAGRAM)
    push(r, first)
    assert push(r, frag) is None
    assert fragment_counts(counters) == {"fragments_malformed": 1} and r.pending == 1
    assert push_all(r, [second, last]) == [DATAGRAM]


def test_keys_separate_version_ident_and_protocol() -> None:
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    other = DATAGRAM.replace(b"INVITE", b"INFOXX")
    a, b = split(DATAGRAM), split(other)
    out = []
    for i in range(3):
        for version, frags in ((4, a), (6, b)):
            off, more, data = frags[i]  # the same address bytes under both versions
            got = r.push(0.0, version, SRC4, DST4, IDENT, UDP, off, more, data)
            out += [got] if got else []
    assert out == [DATAGRAM, other]
    assert push_all(r, a[:2], version=6) == [] and push_all(r, b[2:], version=4) == []
    assert push_all(r, a[:2], ident=IDENT + 1) == [] and push_all(r, a[2:], proto=6) == []
    assert r.pending == 4 and counters["fragments_reassembled"] == 2


def test_ipv6_fragments_reassemble() -> None:
    r = FragmentReassembler(Counter())
    assert push_all(r, split(DATAGRAM, 1232)[::-1], version=6) == [DATAGRAM]


@pytest.mark.parametrize("kwargs,message", [
    ({"max_datagrams": 0}, "max_datagrams must be at least 1, not 0"),
    ({"max_bytes": -1}, "max_bytes must be at least 1, not -1"),
    ({"timeout": 0.0}, "timeout must be a positive number of seconds, not 0.0"),
    ({"timeout": float("nan")}, "timeout must be a positive number of seconds, not nan"),
])
def test_bad_limits_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as info:
        FragmentReassembler(Counter(), **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def held(r: FragmentReassembler) -> int:
    """What ``buffered`` should say, recounted from the pieces (white-box)."""
    total = 0
    for dgram in r._pending.values():
        ends = [s + len(p) for s, p in zip(dgram.starts, dgram.pieces, strict=False)]
        assert dgram.starts == sorted(dgram.starts)
        assert all(e <= s for e, s in zip(ends, dgram.starts[1:], strict=False))  # disjoint
        assert all(dgram.pieces) and dgram.held == sum(map(len, dgram.pieces))
        total += dgram.held + PIECE_OVERHEAD * len(dgram.pieces)
    return total


Step = tuple[float, int, int, int, bool, bytes, bool]  # ts, version, ident, offset, more, data, expire


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[Step], bool]:
    """Several datagrams cut at random sizes, some pieces lost, repeated or corrupted, crafted junk
    mixed in, all shuffled, with packet time moving on and ``expire`` now and then; and whether the
    traffic is clean (no junk, no corruption), so that anything completed must be the original."""
    frags: list[tuple[int, int, int, bool, bytes]] = []
    corrupt = draw(st.booleans())
    for ident in range(draw(st.integers(1, 4))):
        version = draw(st.sampled_from([4, 6]))
        for off, more, data in split(DATAGRAM, draw(st.integers(8, 400)) * 8):
            if draw(st.integers(0, 9)):  # one in ten is lost
                frags.append((version, ident, off, more, data))
            if corrupt and not draw(st.integers(0, 9)):
                frags.append((version, ident, off, more, data[:-1] + b"?"))
    frags += draw(st.lists(st.sampled_from(frags), max_size=6)) if frags else []
    junk = draw(st.lists(st.tuples(
        st.sampled_from([4, 6]),
        st.integers(0, 4),
        st.integers(0, 8191).map(lambda n: n * 8) | st.integers(-16, 70000),
        st.booleans(),
        st.binary(max_size=40) | st.integers(1, 300).map(lambda n: bytes(n * 8)),
    ), max_size=10))
    steps, ts = [], 0.0
    for version, ident, off, more, data in draw(st.permutations(frags + junk)):
        ts += draw(st.sampled_from([0.0, 0.001, 0.5, 12.0]))
        steps.append((ts, version, ident, off, more, data, not draw(st.integers(0, 7))))
    return steps, not corrupt and not junk


@settings(deadline=None)
@given(traffic(), st.integers(1, 4), st.integers(1, 20_000) | st.just(4 * 1024 * 1024))
def test_arbitrary_fragments_never_raise_or_exceed_limits(
    scenario: tuple[list[Step], bool], max_datagrams: int, max_bytes: int
) -> None:
    steps, clean = scenario
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters, max_datagrams=max_datagrams, max_bytes=max_bytes, timeout=30.0)
    for ts, version, ident, off, more, data, expire in steps:
        out = r.push(ts, version, SRC4, DST4, ident, UDP, off, more, data)
        assert out is None or (type(out) is bytes and len(out) <= MAX_PAYLOAD)
        assert out is None or not clean or out == DATAGRAM
        if expire:
            r.expire(ts)
        assert r.pending <= max_datagrams and r.buffered <= max_bytes
        assert r.buffered == held(r)
    assert set(counters) <= {
        "fragments_reassembled", "fragments_duplicate", "fragments_overlap", "fragments_inconsistent",
        "fragments_malformed", "fragments_oversize", "fragments_evicted", "fragments_timeout",
        "fragments_atomic",
    }


@settings(deadline=None)
@given(st.data())
def test_shuffled_with_duplicates_and_agreeing_overlaps(data: st.DataObject) -> None:
    """Random cut points (multiples of 8), some fragments sent twice or widened: always the original."""
    n = len(DATAGRAM)
    cuts = sorted(data.draw(st.sets(st.integers(1, (n - 1) // 8).map(lambda c: c * 8), min_size=1, max_size=12)))
    bounds = [0, *cuts, n]
    frags: list[Fragment] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if data.draw(st.booleans()) and hi + 8 <= n:  # widen into the next piece: agrees
            frags.append((lo, True, DATAGRAM[lo : hi + 8]))
        frags.append((lo, hi < n, DATAGRAM[lo:hi]))
    frags += data.draw(st.lists(st.sampled_from(frags), max_size=4))
    order = data.draw(st.permutations(frags))
    counters: Counter[str] = Counter()
    r = FragmentReassembler(counters)
    results = [out for f in order if (out := push(r, f)) is not None]
    assert results and all(out == DATAGRAM for out in results)  # copies left over may complete it again
    assert counters["fragments_overlap"] == counters["fragments_inconsistent"] == 0
