"""Opus: decoded to 16-bit mono PCM at 48 kHz through libopus (Debian ``libopus0``, via ctypes).
Its RTP clock is always 48 kHz (RFC 7587)."""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from .base import AudioFormat, Decoder

MAX_FRAME = 5760  # 120 ms at 48 kHz
_lib: Any = None


def _load() -> Any:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("opus") or "libopus.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            _lib = False
            return _lib
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                    ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def available() -> bool:
    return bool(_load())


def audio_format(codec: str, clock_rate: int, channels: int) -> AudioFormat:
    return AudioFormat(codec, False, 48000, 1, 2, 1, 0)


class _Decoder:
    def __init__(self) -> None:
        lib = _load()
        err = ctypes.c_int()
        self.lib = lib
        self.state = lib.opus_decoder_create(48000, 1, ctypes.byref(err))
        if err.value != 0 or not self.state:
            raise OSError(f"opus_decoder_create failed ({err.value})")
        self.pcm = (ctypes.c_int16 * MAX_FRAME)()

    def __call__(self, payload: bytes) -> bytes:
        n = self.lib.opus_decode(self.state, payload, len(payload), self.pcm, MAX_FRAME, 0)
        if n < 0:
            return b""  # a corrupt packet: its place stays silent
        return ctypes.string_at(self.pcm, n * 2)

    def __del__(self) -> None:
        if getattr(self, "state", None):
            self.lib.opus_decoder_destroy(self.state)


def decoder(fmt: AudioFormat, clock_rate: int, channels: int) -> Decoder:
    return _Decoder()
