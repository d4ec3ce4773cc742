"""Frames as a SPAN port shows them, built byte by byte: Ethernet (802.1Q / QinQ tags), IPv4 or
IPv6, UDP or TCP, IP fragments; and the pcap writer. Used by the generator and the tests."""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

ETH = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(ethertype: int, packet: bytes, tags: tuple[int, ...] = (), vlan: int | None = None) -> bytes:
    """Ethernet II with VLAN tags: each TPID in ``tags`` (0x88A8 then 0x8100 for QinQ) gets VID 100+i."""
    head = ETH
    if vlan is not None:
        tags = tags or (0x8100,)
    for i, tpid in enumerate(tags):
        head += struct.pack("!HH", tpid, (vlan if vlan is not None else 100) + i)
    return head + struct.pack("!H", ethertype) + packet


def _ipv4(src: str, dst: str, proto: int, body: bytes, ident: int, flags_frag: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident & 0xFFFF, flags_frag, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:] + body


def _ipv6(src: str, dst: str, next_header: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), next_header, 64,
                       socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)) + body


def ip_frames(src: str, dst: str, proto: int, segment: bytes, *, tags: tuple[int, ...] = (),
              fragment: int = 0, ident: int = 0, vlan: int | None = None) -> list[bytes]:
    """One transport segment as frames: whole, or IP-fragmented into pieces of ``fragment`` bytes
    (a multiple of 8) when it is longer; fragments are emitted last first, as some stacks do."""
    v6 = ":" in src
    if not fragment or len(segment) <= fragment:
        packet = _ipv6(src, dst, proto, segment) if v6 else _ipv4(src, dst, proto, segment, ident, 0x4000)
        return [ethernet(0x86DD if v6 else 0x0800, packet, tags, vlan)]
    frames = []
    for off in range(0, len(segment), fragment):
        piece = segment[off : off + fragment]
        more = off + fragment < len(segment)
        if v6:
            header = struct.pack("!BBHI", proto, 0, off | (1 if more else 0), ident)
            frames.append(ethernet(0x86DD, _ipv6(src, dst, 44, header + piece), tags, vlan))
        else:
            frames.append(ethernet(0x0800, _ipv4(src, dst, proto, piece, ident, (0x2000 if more else 0) | off // 8), tags, vlan))
    return frames[::-1]


def udp_frames(src: str, sport: int, dst: str, dport: int, payload: bytes, **kw: object) -> list[bytes]:
    """UDP (checksum 0: allowed on IPv4; filled in for IPv6 where it is mandatory)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ":" in src:
        pseudo = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        pseudo += struct.pack("!IxxxB", len(udp), 17)
        data = pseudo + udp + (b"\0" if len(udp) % 2 else b"")
        udp = udp[:6] + struct.pack("!H", ip_checksum(data) or 0xFFFF) + udp[8:]
    return ip_frames(src, dst, 17, udp, **kw)  # type: ignore[arg-type]


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, vlan: int | None = None, ident: int = 0) -> bytes:
    """One unfragmented UDP frame (the common case, and the benchmark's hot builder)."""
    return udp_frames(src, sport, dst, dport, payload, vlan=vlan, ident=ident)[0]


def tcp_frame(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int, payload: bytes,
              **kw: object) -> bytes:
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    return ip_frames(src, dst, 6, segment + payload, **kw)[0]  # type: ignore[arg-type]


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


class CutFrame(bytes):
    """A frame the capture cut short: its captured bytes, and ``wire_len``, its length on the wire
    (what write_pcap writes as the record's original length)."""

    wire_len: int

    def __new__(cls, frame: bytes, keep: int) -> CutFrame:
        cut = super().__new__(cls, frame[:keep])
        cut.wire_len = len(frame)
        return cut


def write_pcap(path: str, packets: Iterable[tuple[float, bytes]]) -> int:
    """Write (timestamp, frame) pairs, sorted by time (stable), as a microsecond pcap. Returns the count.
    A :class:`CutFrame` is written with its captured length below its original length."""
    ordered = sorted(packets, key=lambda p: p[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in ordered:
            usec_total = round(ts * 1_000_000)
            wire = getattr(frame, "wire_len", len(frame))
            f.write(struct.pack("<IIII", usec_total // 1_000_000, usec_total % 1_000_000, len(frame), wire))
            f.write(frame)
    return len(ordered)


# Remote SPAN encapsulations: what a remote mirror sends the recorder, a SPAN frame inside.
def gre(proto: int, body: bytes, *, checksum: bool = False, key: int | None = None, seq: int | None = None) -> bytes:
    """A GRE header (RFC 2784/2890) for ``proto`` with the optional checksum, key and sequence fields."""
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    head = struct.pack("!HH", flags, proto)
    opt = b""
    if key is not None:
        opt += struct.pack("!I", key)
    if seq is not None:
        opt += struct.pack("!I", seq & 0xFFFFFFFF)
    if checksum:
        data = head + b"\0\0\0\0" + opt + body
        data += b"\0" if len(data) % 2 else b""
        return head + struct.pack("!HH", ip_checksum(data), 0) + opt + body
    return head + opt + body


def erspan2(frame: bytes, *, session: int = 1, index: int = 0, vlan: int = 0) -> bytes:
    """ERSPAN type II header (version 1) and the mirrored frame (for GRE protocol 0x88BE)."""
    return struct.pack("!HHI", 0x1000 | vlan, session & 0x3FF, index & 0xFFFFF) + frame


def erspan3(frame: bytes, *, session: int = 1, timestamp: int = 0, subheader: bytes | None = None,
            frame_type: int = 0) -> bytes:
    """ERSPAN type III header (version 2), the optional 8-byte platform sub-header (O bit), the frame
    (for GRE protocol 0x22EB)."""
    last = (frame_type & 0x1F) << 10 | (1 if subheader is not None else 0)
    head = struct.pack("!HHIHH", 0x2000, session & 0x3FF, timestamp & 0xFFFFFFFF, 0, last)
    return head + (subheader or b"") + frame


def vxlan(frame: bytes, vni: int = 100) -> bytes:
    """A VXLAN header (I flag, ``vni``) and the frame (the payload of UDP to port 4789)."""
    return struct.pack("!II", 0x08000000, (vni & 0xFFFFFF) << 8) + frame


def tzsp(frame: bytes, tags: bytes = b"") -> bytes:
    """A TZSP header (version 1, received, Ethernet), tagged fields ``tags`` then END, the frame
    (the payload of UDP to port 37008)."""
    return struct.pack("!BBH", 1, 0, 1) + tags + b"\x01" + frame
