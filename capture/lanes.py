"""Capture's buffers of a recording: where the per-packet kernel puts what it keeps.

Capture makes them when it opens a recording and hands them to it through one declared method
(``RecordingHandle.use_buffers``, capture/sink.py); the recording (storage) takes them or declines.
When it takes them, the kernel (capture/_fastpath.c) writes into them itself, touching nothing of
the recording's, and the recording writes them out:

- :class:`Lanes`: the audio placement buffers, one per channel (``bufs``: channel 1's and channel
  2's samples, one byte a sample, from sample ``frontier``). A payload goes at ``position -
  frontier``, the gap before it padded with ``silence``; a buffer ``limit`` bytes long is due to be
  written out. The recording sets ``silence`` and ``limit`` when it takes them and moves
  ``frontier`` as it writes (``interleaved()``: the next frames of both, as the WAV holds them;
  then deleting what it wrote from the front of both).
- :class:`Records`: the evidence pcap's records not yet written (``buf``: nanosecond pcap records,
  little-endian); ``limit`` bytes are due to be written out. ``linktype`` is the file's link type,
  -1 until the recording wrote its first frame (the kernel leaves frames to ``packet()`` till then).

When a packet fills one, the kernel's loop stops and hands the stream back
(capture/pipeline.py): capture calls the recording's ``flush_buffers()``. Everything the kernel
leaves to Python still goes to the recording's ``audio()`` and ``packet()``, which place into and
append to the same buffers. The classes here are the Python twins of the C types (the same names
and meaning) for ``RECORDERD_PURE_PYTHON=1`` or a box without a compiler.
"""
from __future__ import annotations

from .fast import fastpath


class PyLanes:
    """(Lanes in C) A recording's audio placement buffers, one byte a sample."""

    __slots__ = ("bufs", "frontier", "limit", "silence")

    def __init__(self) -> None:
        self.bufs = (bytearray(), bytearray())
        self.frontier = 0
        self.limit = 0
        self.silence = 0

    def interleaved(self, size: int, extra: int = 0) -> bytearray:
        """The first ``size`` samples of both buffers as stereo frames (channel 1's byte, then
        channel 2's), then channel 1's next ``extra`` (0 or 1) byte: the WAV's next frames."""
        a, b = self.bufs
        if size < 0 or extra not in (0, 1) or len(a) < size + extra or len(b) < size:
            raise ValueError(f"interleaved({size}, {extra}): the buffers hold {len(a)} and {len(b)} bytes")
        # channel 1's bytes, each followed by a zero byte (Latin-1 maps a byte to the same code point,
        # UTF-16-LE writes one below 256 as that byte and a zero), then channel 2's bytes in those
        frames = bytearray(a[: size + extra].decode("latin-1"), "utf-16-le")
        frames[1 : 2 * size : 2] = b[:size]
        if extra:  # the next frame's channel 1 byte, its zero dropped
            del frames[-1]
        return frames


class PyRecords:
    """(Records in C) A recording's evidence pcap records not yet written."""

    __slots__ = ("buf", "limit", "linktype")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.limit = 0
        self.linktype = -1


Lanes: type[PyLanes] = fastpath.Lanes if fastpath is not None else PyLanes
Records: type[PyRecords] = fastpath.Records if fastpath is not None else PyRecords
