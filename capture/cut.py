"""RTP packets cut short by the capture (a snap length, a truncating mirror): what is kept of them.

The RTP header must have been captured whole (12 bytes, its CSRCs, a header extension), else the
packet is counted (``rtp_truncated_header``) and dropped: without it there is no place to put the
payload. With it, the payload bytes that were captured go where their timestamp puts them, as any
packet's, and the rest of the packet's payload, as long as its UDP length says (capped by
``decode.decode_cut`` to what a 1500-byte packet holds), is the codec's silence:

- PCMU ``0xFF``, PCMA ``0xD5``: the G.711 bytes of silence, as the WAV keeps them;
- L16 ``0x00``: linear zero;
- G.722: the captured bytes only, decoded as they are; the samples of the missing bytes are the
  WAV's silence, as in any gap (a byte repeated into the ADPCM decoder would not decode to
  silence, it would make up sound);
- Opus: nothing is placed: a cut Opus frame cannot be decoded (its length is the packet's), and
  decoding it would make up sound; its place is silence;
- a codec not decoded here (G.729, AMR, ...): the captured bytes (the evidence pcap keeps the frame
  as it was captured).

A packet with padding (RTP P bit) keeps its captured bytes and gets no fill: where its padding
began is in the byte that was not captured.
"""
from __future__ import annotations

import struct

from .rtp import HEADER, RTP_VERSION

FILL = {"PCMU": b"\xff", "PCMA": b"\xd5", "L16": b"\x00"}  # the rest of a cut payload, by codec
NOT_PLACED = frozenset(("OPUS",))  # cut payloads of these are not decoded: their place stays silent

_header = struct.Struct("!BBHII").unpack_from
_u16 = struct.Struct("!H").unpack_from

CutRtp = tuple[int, int, int, int, bytes, int]


def split_cut_rtp(captured: bytes, wire: int) -> CutRtp | None:
    """``(payload type, seq, timestamp, ssrc, captured payload, missing payload bytes)`` of an RTP
    packet of which ``captured`` was captured of ``wire`` bytes; None when its header was not
    captured whole (or it is not RTP version 2)."""
    n = len(captured)
    if n < HEADER:
        return None
    b0, b1, seq, ts, ssrc = _header(captured, 0)
    if b0 >> 6 != RTP_VERSION:
        return None
    off = HEADER + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if n < off + 4:
            return None
        off += 4 + 4 * _u16(captured, off + 2)[0]
    if n < off:
        return None
    missing = 0 if b0 & 0x20 else max(0, wire - n)
    return b1 & 0x7F, seq, ts, ssrc, captured[off:], missing


def completed(codec: str, payload: bytes, missing: int) -> bytes:
    """The payload as it is placed: the captured bytes and the codec's silence for ``missing``."""
    if codec in NOT_PLACED:
        return b""
    fill = FILL.get(codec)
    return payload + fill * missing if fill is not None and missing > 0 else payload
