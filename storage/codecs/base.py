"""What every codec module gives (storage/codecs/<name>.py): ``available()``, ``audio_format()``
and ``decoder()``, in the types below. The package looks a codec up by its payload name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Decoder = Callable[[bytes], bytes]  # one RTP payload in, its samples for the WAV out (keeps state)


@dataclass(frozen=True)
class AudioFormat:
    codec: str
    exact: bool  # payload bytes kept as they are (G.711)
    rate: int  # WAV samples per second
    ratio: int  # WAV samples per RTP clock tick
    width: int  # bytes per sample in the WAV
    format_tag: int  # WAVE format tag: 7 mu-law, 6 A-law, 1 PCM
    silence: int  # the fill byte of a silent sample


class Codec(Protocol):
    """A codec module."""

    def available(self) -> bool: ...
    def audio_format(self, codec: str, clock_rate: int, channels: int) -> AudioFormat: ...
    def decoder(self, fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder: ...
