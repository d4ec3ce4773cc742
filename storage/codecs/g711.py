"""G.711 mu-law (PCMU) and A-law (PCMA): kept exact, byte for byte, as WAVE format 7 / 6.

Also the expansion to 16-bit linear PCM for ``export --format pcm`` (players that lack G.711): the
kept recording is never touched, a copy of its bytes becomes a new file. Decoding follows ITU-T
G.711 (the values of Python's old ``audioop``); each 8-bit code maps to one signed 16-bit sample
through two 256-byte tables (low and high byte), so a whole buffer is decoded with two
``bytes.translate`` calls and no per-sample Python loop.
"""
from __future__ import annotations

import struct

from ..wav import CHANNELS, RATE
from .base import AudioFormat, Decoder

TAGS = {"PCMU": 7, "PCMA": 6}
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


def available() -> bool:
    return True


def audio_format(codec: str, clock_rate: int, channels: int) -> AudioFormat:
    return AudioFormat(codec, True, 8000, 1, 1, TAGS[codec], SILENCE[codec])


def decoder(fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder:
    return bytes  # exact: the payload is the sample data


# -- expansion to linear PCM (export --format pcm) ----------------------------------------------

PCM_HEADER_SIZE = 44


def ulaw_sample(code: int) -> int:
    """The linear value of one mu-law code (G.711, 14-bit magnitude scaled to 16 bits)."""
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def alaw_sample(code: int) -> int:
    """The linear value of one A-law code (G.711, 13-bit magnitude scaled to 16 bits)."""
    a = code ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


def _tables(decode: object) -> tuple[bytes, bytes]:
    values = [decode(c) & 0xFFFF for c in range(256)]  # type: ignore[operator]
    return bytes(v & 0xFF for v in values), bytes(v >> 8 for v in values)


TABLES = {"PCMU": _tables(ulaw_sample), "PCMA": _tables(alaw_sample)}


def decode(codec: str, data: bytes) -> bytes:
    """G.711 bytes -> little-endian signed 16-bit samples (twice as many bytes)."""
    try:
        low, high = TABLES[codec]
    except KeyError:
        raise ValueError(f"cannot decode {codec} to PCM (only G.711 PCMU and PCMA)") from None
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def pcm_header(frames: int, channels: int = CHANNELS, rate: int = RATE) -> bytes:
    """A canonical 44-byte RIFF/WAVE header for 16-bit PCM."""
    data = frames * channels * 2
    return b"".join((
        b"RIFF", struct.pack("<I", 36 + data), b"WAVE",
        b"fmt ", struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16),
        b"data", struct.pack("<I", data),
    ))
