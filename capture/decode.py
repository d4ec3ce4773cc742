"""Link, IP and UDP decoding of one captured frame.

``decode_udp(linktype, frame)`` returns ``(src_ip, src_port, dst_ip, dst_port, payload)`` for a
UDP datagram, or a short reason string (a counter name) for anything else: the caller counts it and
moves on. Addresses are the raw 4- or 16-byte network-order forms, which is what the media map keys
on, so no text formatting happens per packet.

Handled: Ethernet II, 802.1Q and 802.1ad (QinQ) tags, Linux cooked SLL and SLL2, raw IP;
IPv4 (options), IPv6 (hop-by-hop, routing, destination-options extension headers).
IP fragments are counted (``ip_fragment``) and not reassembled here. A datagram the capture cut
short (a snap length, a truncating mirror: its captured length below what its IP and UDP headers
say) is ``CUT`` when its headers were captured whole: the pipeline takes what was captured through
:func:`decode_cut`; cut inside its headers it is ``TRUNCATED``.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .source import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
)

UdpDatagram = tuple[bytes, int, bytes, int, bytes]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
IPPROTO_UDP = 17
IPPROTO_TCP = 6
IPV6_EXT_SKIPPABLE = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
MAX_IP_PACKET = 1500  # an Ethernet MTU: the longest packet a cut one is taken to have been

# Reasons (counter names) for frames that are not a UDP datagram we can use.
NOT_IP = "not_ip"
NOT_UDP = "not_udp"
TCP = "tcp"
FRAGMENT = "ip_fragment"
TRUNCATED = "truncated"  # cut short by the capture inside its link, IP or UDP header (or malformed so)
CUT = "cut"  # a UDP datagram captured only in part: its headers whole, its payload cut (decode_cut)
BAD_LINKTYPE = "unknown_linktype"

_u16 = struct.Struct("!H").unpack_from
_udp = struct.Struct("!HHH").unpack_from


def _network_offset(linktype: int, frame: bytes) -> tuple[int, int] | str:
    """(ethertype, offset of the network header) for a frame of this link type."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return TRUNCATED
        etype = _u16(frame, 12)[0]
        off = 14
        while etype in ETH_VLAN:
            if len(frame) < off + 4:
                return TRUNCATED
            etype = _u16(frame, off + 2)[0]
            off += 4
        return etype, off
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return TRUNCATED
        return _u16(frame, 14)[0], 16
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return TRUNCATED
        return _u16(frame, 0)[0], 20
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
        if not frame:
            return TRUNCATED
        version = frame[0] >> 4
        return (ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0), 0
    return BAD_LINKTYPE


def decode_udp(linktype: int, frame: bytes) -> UdpDatagram | str:
    """The UDP datagram in ``frame``, or the reason there is none. (The pipeline's fast path takes
    plain Ethernet/IPv4/UDP RTP before this; here come SIP, IPv6, tags, odd headers.) A datagram
    whose UDP header was captured but not all of its payload is ``CUT``: see :func:`decode_cut`."""
    ip = _ip(linktype, frame)
    if type(ip) is str:
        return ip
    if TYPE_CHECKING:  # a reason is a plain str: type() narrows as isinstance would, and costs less per packet
        assert not isinstance(ip, str)
    _version, src, dst, proto, _net, start, end, fragment = ip
    n = len(frame)
    if fragment is not None or proto != IPPROTO_UDP:
        if end > n:
            return TRUNCATED
        return FRAGMENT if fragment is not None else TCP if proto == IPPROTO_TCP else NOT_UDP
    if start + 8 > n or start + 8 > end:
        return TRUNCATED
    sport, dport, ulen = _udp(frame, start)
    if ulen < 8 or start + ulen > end:
        return TRUNCATED if start + ulen > end else NOT_UDP
    if start + ulen > n:
        return CUT
    return src, sport, dst, dport, frame[start + 8 : start + ulen]


CutDatagram = tuple[bytes, int, bytes, int, bytes, int]


def decode_cut(linktype: int, frame: bytes) -> CutDatagram | str:
    """A UDP datagram the capture cut short (``decode_udp`` said ``CUT``): ``(src_ip, src_port,
    dst_ip, dst_port, captured payload, payload length on the wire)``. The length is the UDP
    header's, capped to what a 1500-byte IP packet with these headers holds (a forged length
    cannot make a packet longer than a real one)."""
    ip = _ip(linktype, frame)
    if type(ip) is str:
        return ip
    if TYPE_CHECKING:  # a reason is a plain str: type() narrows as isinstance would, and costs less per packet
        assert not isinstance(ip, str)
    _version, src, dst, proto, net, start, end, fragment = ip
    if fragment is not None or proto != IPPROTO_UDP or start + 8 > min(end, len(frame)):
        return TRUNCATED
    sport, dport, ulen = _udp(frame, start)
    if ulen < 8 or start + ulen > end:
        return TRUNCATED
    wire = min(ulen - 8, MAX_IP_PACKET - (start - net) - 8)
    return src, sport, dst, dport, frame[start + 8 : start + ulen], wire


IpPacket = tuple[int, bytes, bytes, int, bytes, tuple[int, int, bool] | None]


def decode_ip(linktype: int, frame: bytes) -> IpPacket | str:
    """The rare paths (fragments, TCP): ``(version, src, dst, proto, payload, fragment)`` where
    ``fragment`` is ``(identification, offset in bytes, more fragments)`` or None. A packet the
    capture cut short is ``TRUNCATED``."""
    ip = _ip(linktype, frame)
    if type(ip) is str:
        return ip
    if TYPE_CHECKING:  # a reason is a plain str: type() narrows as isinstance would, and costs less per packet
        assert not isinstance(ip, str)
    version, src, dst, proto, _net, start, end, fragment = ip
    if end > len(frame):
        return TRUNCATED
    return version, src, dst, proto, frame[start:end], fragment


_IpHeader = tuple[int, bytes, bytes, int, int, int, int, tuple[int, int, bool] | None]


def _ip(linktype: int, frame: bytes) -> _IpHeader | str:
    """``(version, src, dst, proto, network header offset, payload start, payload end, fragment)``:
    the IP payload is ``frame[start:end]`` on the wire; ``end`` lies beyond ``len(frame)`` when the
    capture cut the packet short (its IP headers themselves must have been captured whole)."""
    net = _network_offset(linktype, frame)
    if type(net) is str:
        return net
    if TYPE_CHECKING:
        assert not isinstance(net, str)
    etype, off = net
    n = len(frame)
    if etype == ETH_IPV4:
        if n < off + 20 or frame[off] >> 4 != 4:
            return TRUNCATED if n < off + 20 else NOT_IP
        ihl = (frame[off] & 0x0F) * 4
        total = _u16(frame, off + 2)[0]
        if ihl < 20 or total < ihl:
            return NOT_IP
        if off + ihl > n:
            return TRUNCATED
        ident, flags_frag = struct.unpack_from("!HH", frame, off + 4)
        frag = (ident, (flags_frag & 0x1FFF) * 8, bool(flags_frag & 0x2000)) if flags_frag & 0x3FFF else None
        return (4, frame[off + 12 : off + 16], frame[off + 16 : off + 20], frame[off + 9], off, off + ihl,
                off + total, frag)
    if etype != ETH_IPV6:
        return NOT_IP
    if n < off + 40 or frame[off] >> 4 != 6:
        return TRUNCATED if n < off + 40 else NOT_IP
    net_off = off
    plen = _u16(frame, off + 4)[0]
    end = off + 40 + plen if plen else n
    captured = min(end, n)
    proto = frame[off + 6]
    src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
    off += 40
    frag = None
    while proto in IPV6_EXT_SKIPPABLE or proto == IPV6_FRAGMENT:
        if captured < off + 8:
            return TRUNCATED
        if proto == IPV6_FRAGMENT:
            offset_flags, ident = struct.unpack_from("!HI", frame, off + 2)
            frag = (ident, offset_flags & 0xFFF8, bool(offset_flags & 1))
            proto = frame[off]
            off += 8
            break
        proto = frame[off]
        off += (frame[off + 1] + 1) * 8
    if off > end or (off > n and end > n):
        return TRUNCATED
    return 6, src, dst, proto, net_off, off, end, frag


def split_udp(datagram: bytes) -> tuple[int, int, bytes] | str:
    """``(src port, dst port, payload)`` of a whole UDP datagram (e.g. after reassembly)."""
    if len(datagram) < 8:
        return TRUNCATED
    sport, dport, ulen = _udp(datagram, 0)
    if ulen < 8 or ulen > len(datagram):
        return TRUNCATED if ulen > len(datagram) else NOT_UDP
    return sport, dport, datagram[8:ulen]
