"""Our own RIFF/WAVE writer, so G.711 payload bytes stay exactly those on the wire.

Layout (58-byte header): RIFF, WAVE, ``fmt `` (18 bytes: format tag 7 mu-law, 6 A-law or 1 PCM,
2 channels, the rate, 8 or 16 bits, cbSize 0), ``fact`` (sample frames), ``data``. The header is
written first with zero sizes and completed at the end; :func:`repair_header` rebuilds it from the
data actually on disk (after a crash), keeping the format the header already names.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

FORMAT_TAGS = {"PCMU": 7, "PCMA": 6}
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
CODECS_BY_TAG = {tag: name for name, tag in FORMAT_TAGS.items()} | {1: "PCM"}
RATE = 8000
CHANNELS = 2
HEADER_SIZE = 58


def header(codec: str, frames: int, *, rate: int = RATE, width: int = 1, tag: int | None = None) -> bytes:
    """A complete header for ``frames`` stereo sample frames of ``width`` bytes per sample."""
    tag = FORMAT_TAGS[codec] if tag is None else tag
    align = CHANNELS * width
    data = frames * align
    return b"".join(
        (
            b"RIFF", struct.pack("<I", HEADER_SIZE - 8 + data + (data & 1)), b"WAVE",
            b"fmt ", struct.pack("<IHHIIHHH", 18, tag, CHANNELS, rate, rate * align, align, 8 * width, 0),
            b"fact", struct.pack("<II", 4, frames),
            b"data", struct.pack("<I", data),
        )
    )


@dataclass(frozen=True, slots=True)
class WavInfo:
    codec: str
    channels: int
    rate: int
    frames: int
    data_offset: int
    width: int = 1  # bytes per sample


def read_info(data: bytes) -> WavInfo:
    """Parse the header of one of our WAVs (or any RIFF/WAVE with fmt and data chunks)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    off = 12
    fmt = None
    while off + 8 <= len(data):
        cid, size = data[off : off + 4], struct.unpack_from("<I", data, off + 4)[0]
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, off + 8)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            tag, channels, rate, _, align, bits = fmt
            codec = CODECS_BY_TAG.get(tag, f"tag-{tag}")
            size = min(size, len(data) - off - 8)
            return WavInfo(codec, channels, rate, size // align, off + 8, max(1, bits // 8))
        off += 8 + size + (size & 1)
    raise ValueError("no data chunk")


def channel_bytes(data: bytes, channel: int) -> bytes:
    """The bytes of one channel (1-based) of a 2-channel WAV (for 16-bit PCM: its samples, LE)."""
    info = read_info(data)
    body = data[info.data_offset : info.data_offset + info.frames * info.channels * info.width]
    if info.width == 1:
        return body[channel - 1 :: info.channels]
    step = info.channels * info.width
    out = bytearray()
    for i in range((channel - 1) * info.width, len(body), step):
        out += body[i : i + info.width]
    return bytes(out)


def repair_header(path: str, codec: str | None = None, *, sync: bool = True) -> int:
    """Rewrite the header of a spool WAV from the data actually written; returns the frames kept.
    The format is the one the header was created with."""
    with open(path, "r+b") as f:
        head = f.read(HEADER_SIZE)
        tag, _channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", head, 20)
        size = os.fstat(f.fileno()).st_size
        frames: int = max(0, size - HEADER_SIZE) // align
        f.truncate(HEADER_SIZE + frames * align)
        f.seek(0)
        f.write(header(codec or CODECS_BY_TAG.get(tag, "PCM"), frames, rate=rate, width=bits // 8, tag=tag))
        f.flush()
        if sync:
            os.fsync(f.fileno())
    return frames
