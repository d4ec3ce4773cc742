"""Link/IP/UDP decoding on frames built in code: every link type and tag form, and what is refused."""
from __future__ import annotations

import socket
import struct

import pytest

from capture import decode
from capture.decode import decode_udp
from capture.source import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

SRC, DST = "198.51.100.1", "192.0.2.2"
SRC6, DST6 = "2001:db8::1", "2001:db8::2"
PAYLOAD = b"\x80\x00\x12\x34" + b"x" * 20


def udp(payload: bytes = PAYLOAD, sport: int = 4000, dport: int = 5000) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(body: bytes, proto: int = 17, flags_frag: int = 0x4000, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(body), 1, flags_frag, 64, proto, 0,
                       socket.inet_aton(SRC), socket.inet_aton(DST)) + options + body


def ipv6(body: bytes, nh: int = 17, ext: bytes = b"") -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(ext) + len(body), nh, 64,
                       socket.inet_pton(socket.AF_INET6, SRC6), socket.inet_pton(socket.AF_INET6, DST6)) + ext + body


def eth(net: bytes, etype: int = 0x0800, tags: tuple[int, ...] = ()) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    for tpid in tags:
        head += struct.pack("!HH", tpid, 100)
    return head + struct.pack("!H", etype) + net


V4 = (socket.inet_aton(SRC), 4000, socket.inet_aton(DST), 5000, PAYLOAD)


@pytest.mark.parametrize("frame,linktype", [
    (eth(ipv4(udp())), LINKTYPE_ETHERNET),
    (eth(ipv4(udp()), tags=(0x8100,)), LINKTYPE_ETHERNET),
    (eth(ipv4(udp()), tags=(0x88A8, 0x8100)), LINKTYPE_ETHERNET),  # QinQ
    (struct.pack("!HHHQH", 0, 1, 6, 0, 0x0800) + ipv4(udp()), LINKTYPE_LINUX_SLL),
    (struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8) + ipv4(udp()), LINKTYPE_LINUX_SLL2),
    (ipv4(udp()), LINKTYPE_RAW),
    (eth(ipv4(udp(), options=b"\x01\x01\x01\x00")), LINKTYPE_ETHERNET),
    (eth(ipv4(udp()) + b"\0" * 6), LINKTYPE_ETHERNET),  # Ethernet padding is not payload
])
def test_udp_over_ipv4(frame: bytes, linktype: int) -> None:
    assert decode_udp(linktype, frame) == V4


def test_udp_over_ipv6_with_extension_headers() -> None:
    src, dst = socket.inet_pton(socket.AF_INET6, SRC6), socket.inet_pton(socket.AF_INET6, DST6)
    assert decode_udp(1, eth(ipv6(udp()), etype=0x86DD)) == (src, 4000, dst, 5000, PAYLOAD)
    hop_by_hop = bytes([17, 0]) + b"\0" * 6  # next header UDP, length 0 (8 bytes)
    assert decode_udp(1, eth(ipv6(udp(), nh=0, ext=hop_by_hop), etype=0x86DD)) == (src, 4000, dst, 5000, PAYLOAD)


@pytest.mark.parametrize("frame,linktype,reason", [
    (eth(ipv4(udp(), flags_frag=0x2000)), 1, decode.FRAGMENT),  # more fragments
    (eth(ipv4(udp(), flags_frag=0x0010)), 1, decode.FRAGMENT),  # a later fragment
    (eth(ipv6(udp(), nh=44, ext=bytes([17, 0, 0, 1]) + b"\0" * 4), etype=0x86DD), 1, decode.FRAGMENT),
    (eth(ipv4(udp(), proto=6)), 1, decode.TCP),
    (eth(ipv4(udp(), proto=1)), 1, decode.NOT_UDP),
    (eth(b"\0" * 30, etype=0x0806), 1, decode.NOT_IP),
    (eth(ipv4(udp()))[:20], 1, decode.TRUNCATED),
    (b"\0" * 5, 1, decode.TRUNCATED),
    (ipv4(udp()), 147, decode.BAD_LINKTYPE),
])
def test_refused_frames_name_a_reason(frame: bytes, linktype: int, reason: str) -> None:
    assert decode_udp(linktype, frame) == reason


def test_every_truncation_of_a_frame_is_refused_as_truncated_or_cut() -> None:
    """Cut inside its headers: TRUNCATED; its UDP header whole but not its payload: CUT (what
    was captured is kept, capture/cut.py and tests/test_truncated.py)."""
    for frame in (eth(ipv4(udp()), tags=(0x8100,)), eth(ipv6(udp()), etype=0x86DD)):
        headers = len(frame) - len(PAYLOAD)
        for cut in range(len(frame)):
            assert decode_udp(1, frame[:cut]) == (decode.TRUNCATED if cut < headers else decode.CUT), cut
