"""Codecs: how a call's RTP payloads become WAV samples, one small module per codec, looked up by
the payload name the SDP gives.

- G.711 (PCMU, PCMA) is *exact*: the payload bytes go into the WAV unchanged (format tag 7/6).
- G.722, Opus and L16 are *transcoded*: decoded to 16-bit PCM at the codec's rate (``transcoded``).
- Anything else (G.729, AMR, ...) is *not decoded*: no WAV; the call's original RTP is kept in its
  evidence pcap and the recording says so.

Every codec reports its output ``rate`` and the ``ratio`` of output samples per RTP clock tick (2
for G.722, whose RTP clock is 8 kHz for 16 kHz audio, RFC 3551).
"""
from __future__ import annotations

from . import g711, g722, l16, opus
from .base import AudioFormat, Codec, Decoder

__all__ = ["AudioFormat", "Codec", "Decoder", "audio_format", "new_decoder"]

_MODULES: dict[str, Codec] = {"PCMU": g711, "PCMA": g711, "G722": g722, "OPUS": opus, "L16": l16}


def audio_format(codec: str, clock_rate: int, channels: int) -> AudioFormat | None:
    """How this codec is kept in a WAV, or None when it cannot be decoded here."""
    module = _MODULES.get(codec.upper())
    if module is None or not module.available():
        return None
    return module.audio_format(codec.upper(), clock_rate, channels)


def new_decoder(fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder:
    """A decoder for one direction (decoders keep state between packets)."""
    return _MODULES[fmt.codec].decoder(fmt, clock_rate, channels)
