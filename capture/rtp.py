"""RTP header parsing (RFC 3550), kept to what the hot path needs.

``parse_rtp(data)`` returns ``(payload_type, marker, seq, timestamp, ssrc, payload)`` or raises
``ValueError``. It is a plain function over ``struct.unpack_from`` because it runs once per media
packet of a recorded call.
"""
from __future__ import annotations

import struct

RTP_VERSION = 2
HEADER = 12
PT_CN = 13
RTCP_PT_FIRST = 72  # 200-204 with the marker bit folded in: RTCP, not RTP (RFC 5761)
RTCP_PT_LAST = 76

_header = struct.Struct("!BBHII").unpack_from
_u16 = struct.Struct("!H").unpack_from

RtpPacket = tuple[int, int, int, int, int, bytes]


def parse_rtp(data: bytes) -> RtpPacket:
    """Split one RTP packet into its header fields and payload."""
    n = len(data)
    if n < HEADER:
        raise ValueError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = _header(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {b0 >> 6}, expected 2")
    pt = b1 & 0x7F
    if RTCP_PT_FIRST <= pt <= RTCP_PT_LAST:
        raise ValueError("RTCP packet, not RTP")
    off = HEADER + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if n < off + 4:
            raise ValueError("RTP header extension truncated")
        off += 4 + 4 * _u16(data, off + 2)[0]
    end = n
    if b0 & 0x20:  # padding
        pad = data[-1]
        if pad == 0 or off + pad > n:
            raise ValueError(f"RTP padding length {pad} is invalid")
        end -= pad
    if off > end:
        raise ValueError("RTP header longer than the packet")
    return pt, b1 >> 7, seq, ts, ssrc, data[off:end]
