"""The evidence pcap of a recorded call: every frame of it that crossed the SPAN port (its SIP
messages that arrived as single frames, and all its RTP, DTMF and comfort noise), as captured.

Written to the spool as the call goes (buffered, like the WAV), then encrypted into the store with
the recording and erased with it. One link type per file (the first frame's); a frame of another
link type is counted and left out. SIP messages that were IP-fragmented or split over TCP segments
are not in it (their frames are not kept once reassembled): the WAV and the index have the call.
"""
from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

FLUSH_BYTES = 16 * 1024  # per call: ~0.75 s of G.711 packets, the same bound on a crash as the WAV
_record = struct.Struct("<IIII")


class EvidencePcap:
    flush_bytes = FLUSH_BYTES  # capture's C fast path appends to ``buf`` and calls flush() past this

    def __init__(self, path: str, on_error: Callable[[OSError], None] | None = None,
                 on_flush: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.path = path
        self.linktype: int | None = None
        self.buf = bytearray()
        self.fd = -1
        self.skipped = 0  # frames of another link type, or with a time a pcap record cannot carry
        self.error: OSError | None = None  # the write that failed (a full store): frames after it are lost
        self.on_error = on_error
        self.on_flush = on_flush  # after each write of the buffer (the recording's figures are saved at this pace)

    def add(self, ts: float, linktype: int, frame: bytes) -> None:
        if not 0.0 <= ts < 4294967296.0:  # a time a pcap record cannot carry (a damaged capture)
            self.skipped += 1
            return
        if self.linktype is None:
            self.linktype = linktype
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.write(self.fd, struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
            except OSError as exc:
                self._failed(exc)
        elif linktype != self.linktype:
            self.skipped += 1
            return
        sec = int(ts)
        n = len(frame)
        buf = self.buf
        buf += _record.pack(sec, int((ts - sec) * 1e9), n, n)
        buf += frame
        if len(buf) >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        if self.buf and self.fd >= 0 and self.error is None:
            try:
                written = os.write(self.fd, self.buf)
                if written != len(self.buf):  # a short write: the disk filled up
                    self._cut(written)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                self._failed(exc)
            if self.on_flush is not None:
                self.on_flush()
        self.buf.clear()  # after a failure too: a full disk must not grow the buffer

    def _cut(self, written: int) -> None:
        """Truncate a short write back to its last whole record (the file stays a valid pcap)."""
        whole = 0
        while whole + 16 <= written:
            n = _record.unpack_from(self.buf, whole)[2]
            if whole + 16 + n > written:
                break
            whole += 16 + n
        end = os.lseek(self.fd, 0, os.SEEK_CUR)
        os.ftruncate(self.fd, end - written + whole)

    def _failed(self, exc: OSError) -> None:
        """What was written stays; what comes after is lost, and the recording says so."""
        if self.error is None:
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)

    def close(self) -> str | None:
        """Flush and close (it is encrypted into the store, and synced there, next); the file's
        path, or None when the call had no frame."""
        if self.fd < 0:
            return None
        self.flush()
        os.close(self.fd)
        self.fd = -1
        return self.path
