"""L16 (RFC 3551): 16-bit big-endian linear PCM at its clock rate; kept as little-endian PCM.
Two-channel L16 is mixed down to one (a recording has one channel per party)."""
from __future__ import annotations

import array
import sys

from .base import AudioFormat, Decoder


def available() -> bool:
    return True


def audio_format(codec: str, clock_rate: int, channels: int) -> AudioFormat:
    return AudioFormat(codec, False, clock_rate, 1, 2, 1, 0)


def decoder(fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder:
    def decode(payload: bytes) -> bytes:
        samples = array.array("h", payload[: len(payload) // 2 * 2])
        if sys.byteorder == "little":
            samples.byteswap()
        if channels == 2:
            samples = array.array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples) - 1, 2)))
        return samples.tobytes()

    return decode
