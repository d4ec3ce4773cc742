"""The evidence pcap of a recorded call: every frame of it that crossed the SPAN port (its SIP
messages that arrived as single frames, and all its RTP, DTMF and comfort noise), as captured.

Written to the spool as the call goes, sealed under the recording's data key (``storage/sealed.py``:
the pcap's global header and then each flush of the buffer, ~0.75 s of G.711 packets, is one DATA
record of a sealed PCAP file), renamed into the store with the recording and erased with it. The
file is only ever appended to, so its plaintext's SHA-256 (the index's ``pcap_sha256``) is taken as
each record is sealed: keeping it reads nothing back. One link type per file (the first frame's); a frame of another
link type is counted and left out. SIP messages that were IP-fragmented or split over TCP segments
are not in it (their frames are not kept once reassembled): the WAV and the index have the call.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import sealed

FLUSH_BYTES = 16 * 1024  # per call: ~0.75 s of G.711 packets, the same bound on a crash as the WAV
_record = struct.Struct("<IIII")


class EvidencePcap:
    flush_bytes = FLUSH_BYTES  # ``buf`` this long is written out

    def __init__(self, path: str, aes: AESGCM, on_error: Callable[[OSError], None] | None = None,
                 on_flush: Callable[[], None] | None = None, create: Callable[[str, int], int] | None = None) -> None:
        self.path = path
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
                self.file = sealed.SealedWriter(self.path, sealed.PCAP, self.aes, create=self.create)
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

    def flush(self) -> None:
        try:
            if self.buf and self.file is not None and self.error is None:
                unhashed = False
                try:
                    self.file.append(self.buf)  # whole pcap records: a record the disk cannot take is cut back
                    unhashed = True
                    if self._sha is not None:
                        self._sha.update(self.buf)  # what the file now holds, in order (outside the lock)
                    unhashed = False
                except OSError as exc:
                    self._failed(exc)
                finally:
                    if unhashed:  # written, then interrupted (Ctrl-C of a replay) before it was hashed
                        self._sha = None  # no digest: the store reads the file
                if self.on_flush is not None:
                    self.on_flush()
        finally:
            self.buf.clear()  # after a failure too (a full disk must not grow the buffer), and after an
            # interruption: what was written is never written again

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
        self.flush()
        try:
            self.file.final(self.file.length)
        except OSError as exc:  # the store finishes it (storage.sealed.finish) when it keeps it
            self._failed(exc)
        if self.error is None and self._sha is not None:  # every record written and hashed: the file's digest
            self.digest = (self._sha.hexdigest(), self.file.length)  # (else the store reads the file)
        self.file.close()
        return self.path
