"""G.711 mu-law (PCMU) and A-law (PCMA): kept exact, byte for byte, as WAVE format 7 / 6.
(Expansion to linear PCM for ``export --format pcm`` is ``storage.g711``.)"""
from __future__ import annotations

from typing import Any

TAGS = {"PCMU": 7, "PCMA": 6}
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


def available() -> bool:
    return True


def audio_format(codec: str, clock_rate: int, channels: int) -> Any:
    from . import AudioFormat

    return AudioFormat(codec, True, 8000, 1, 1, TAGS[codec], SILENCE[codec])


def decoder(fmt: Any, clock_rate: int, channels: int) -> Any:
    return bytes  # exact: the payload is the sample data
