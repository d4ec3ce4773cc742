"""G.722 (wideband): decoded to 16-bit PCM at 16 kHz with the ``g722`` package (ITU-T reference C).
Its RTP clock is 8 kHz although it carries 16 kHz audio (RFC 3551 4.5.2): 2 samples per tick."""
from __future__ import annotations

from .base import AudioFormat, Decoder


def available() -> bool:
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def audio_format(codec: str, clock_rate: int, channels: int) -> AudioFormat:
    return AudioFormat(codec, False, 16000, 2, 2, 1, 0)


def decoder(fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder:
    import G722

    state = G722.G722(16000, 64000)
    return lambda payload: state.decode(payload).tobytes()
