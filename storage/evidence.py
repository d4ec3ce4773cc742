"""The evidence pcap of a recorded call: every frame of it that crossed the SPAN port (its SIP
messages that arrived as single frames, and all its RTP, DTMF and comfort noise), as captured.

Written to the spool as the call goes, sealed under the recording's data key (``storage/sealed.py``:
the pcap's global header and then each flush of the buffer, ~0.75 s of G.711 packets, is one DATA
record of a sealed PCAP file, sealed up to where the file ends on a page, the rest of the buffer
kept for the next: a record may end inside a packet, and crash recovery cuts the pcap at its last
whole one, :func:`whole_packets`), renamed into the store with the recording and erased with it. The
file is only ever appended to, so its plaintext's SHA-256 (the index's ``pcap_sha256``) is taken as
each record is sealed: keeping it reads nothing back. One link type per file (the first frame's); a frame of another
link type is counted and left out. SIP messages that were IP-fragmented or split over TCP segments
are not in it (their frames are not kept once reassembled): the WAV and the index have the call.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import sealed

FLUSH_BYTES = 18 * 1024  # per call: ~0.85 s of G.711 packets, within the WAV's bound on a crash (~1 s);
# each write seals the buffer up to where the file ends on a page (storage/sealed.py, past_page) and
# keeps the rest (under a page) for the next: records of ~16 KiB, the last page written to disk once
_record = struct.Struct("<IIII")


MAX_FRAME = 262144  # the snap length the file's header says: a record claiming more is damage


def whole_packets(pieces: Iterable[bytes]) -> int:
    """The length of a pcap byte stream (``pieces``, in order) up to the end of its last whole
    packet record: where crash recovery cuts an evidence pcap, whose writes end on a page and so
    may end inside a packet. Reads it piece by piece (an hour of a call's packets is ~80 MB)."""
    base, left, whole, started = 0, b"", 0, False
    for piece in pieces:
        data = left + piece
        i = 0
        if not started:
            if len(data) < 24:
                left = data
                continue
            started, i, whole = True, 24, 24
        while i + 16 <= len(data):
            incl = struct.unpack_from("<I", data, i + 8)[0]
            if incl > MAX_FRAME:
                return whole  # not a record: what follows is not kept
            if i + 16 + incl > len(data):
                break
            i += 16 + incl
            whole = base + i
        base, left = base + i, data[i:]
    return whole


class EvidencePcap:
    def __init__(self, path: str, aes: AESGCM, on_error: Callable[[OSError], None] | None = None,
                 on_flush: Callable[[], None] | None = None, create: Callable[[str, int], int] | None = None,
                 flush_bytes: int = FLUSH_BYTES, writeback: int = 0) -> None:
        self.path = path
        self.flush_bytes = flush_bytes  # ``buf`` this long is written out (storage/spool.py RecordSizes)
        self.writeback = writeback  # its writer's (storage/sealed.py SealedWriter)
        self.create = create  # how its file is made (None: os.open; storage/spool_files.py)
        self.aes = aes
        self.linktype: int | None = None
        self.buf = bytearray()
        self.file: sealed.SealedWriter | None = None
        self.skipped = 0  # frames of another link type, or with a time a pcap record cannot carry
        self.error: OSError | None = None  # the write that failed (a full store): frames after it are lost
        self.on_error = on_error
        self.on_flush = on_flush  # after each write of the buffer (the recording's figures are saved at this pace)
        self.records: Any = None  # capture's buffer of records once taken (use_records): ``buf`` is its
        self._sha: Any = hashlib.sha256()  # of the plaintext sealed so far, in file order (appended to only); None: not all of it
        self.digest: tuple[str, int] | None = None  # (SHA-256 hex, size) once closed whole (FINAL written)

    def use_records(self, records: Any) -> None:
        """From here on ``buf`` is capture's (``records.buf``: its per-packet kernel appends to it too,
        once ``records.linktype`` says the file's link type; capture.sink.EvidenceRecords)."""
        records.buf[:] = self.buf
        records.limit = self.flush_bytes
        records.linktype = -1 if self.linktype is None else self.linktype
        self.buf = records.buf
        self.records = records

    @property
    def fd(self) -> int:
        return self.file.fd if self.file is not None else -1

    def add(self, ts: float, linktype: int, frame: bytes) -> None:
        if not 0.0 <= ts < 4294967296.0:  # a time a pcap record cannot carry (a damaged capture)
            self.skipped += 1
            return
        if self.linktype is None:
            self.linktype = linktype
            if self.records is not None:
                self.records.linktype = linktype
            try:
                self.file = sealed.SealedWriter(self.path, sealed.PCAP, self.aes, create=self.create,
                                                writeback=self.writeback)
            except OSError as exc:
                self._failed(exc)
            self.buf += struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype)  # in the first record
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

    def flush(self, *, whole: bool = False) -> None:
        """Seal the buffer: up to where the file then ends on a page (a packet may be cut there: the
        file is a stream of bytes, and crash recovery cuts it at its last whole packet), the rest
        kept for the next write; all of it when ``whole`` (the call's end) or when that would leave
        more than half of it."""
        buf, n = self.buf, len(self.buf)
        written = False
        try:
            if buf and self.file is not None and self.error is None:
                if not whole:
                    past = self.file.past_page(n)
                    n = n - past if past <= n // 2 else n
                unhashed = False
                try:
                    with memoryview(buf) as view, view[:n] as part:
                        self.file.append(part)  # a record the disk cannot take is cut back
                        written = unhashed = True
                        if self._sha is not None:
                            self._sha.update(part)  # what the file now holds, in order (outside the lock)
                        unhashed = False
                except OSError as exc:
                    self._failed(exc)
                finally:
                    if unhashed:  # written, then interrupted (Ctrl-C of a replay) before it was hashed
                        self._sha = None  # no digest: the store reads the file
                if self.on_flush is not None:
                    self.on_flush()
        finally:
            if written:  # what was written is never written again (an interruption after the write too);
                del buf[:n]  # the bytes past the page wait for the next write
            else:
                buf.clear()  # a failed write: a full disk must not grow the buffer

    def _failed(self, exc: OSError) -> None:
        """What was written stays; what comes after is lost, and the recording says so."""
        if self.error is None:
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)

    def close(self) -> str | None:
        """Flush and seal (FINAL: the store renames it, and syncs it, next); the file's path, or None
        when the call had no frame."""
        if self.file is None:
            return None
        self.flush(whole=True)
        try:
            self.file.final(self.file.length)
        except OSError as exc:  # the store finishes it (storage.sealed.finish) when it keeps it
            self._failed(exc)
        if self.error is None and self._sha is not None:  # every record written and hashed: the file's digest
            self.digest = (self._sha.hexdigest(), self.file.length)  # (else the store reads the file)
        self.file.close()
        return self.path
