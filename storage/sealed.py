"""RDS1: the sealed, append-only record format of a recording's files, in the spool and in the store.

A recording's WAV, its evidence pcap and its call sidecar are each written as RDS1 from their first
byte, encrypted with the recording's own data key (made when the call starts, wrapped by the master
key into the sidecar's clear first line). Keeping the recording renames the very same WAV and pcap
files from the spool into the store: nothing is encrypted twice, copied or overwritten, and no
plaintext audio, SIP, caller number or Call-ID is ever written to any file, spool included. The
sidecar (``storage/sidecar.py``) is one clear JSON line (recording id, wrapped key) followed by a
CALL file whose plaintext is its JSON lines (the call, figures, DTMF, linked legs), one record each.

File layout::

    file header   "RDS1" | version u8 (1) | file kind u8 (1 WAV, 2 PCAP, 3 CALL) | 0 u16
                  | file id (16 random bytes)                                          24 bytes
    record        kind u8 | seq u32 | plaintext offset u64 | length u32 (big endian)  17 bytes, clear
                  | nonce (12 random bytes)
                  | AES-256-GCM(data key, nonce, plaintext, aad = file header | record header)
                    (``length`` bytes and the 16-byte tag)

Record kinds:

- DATA (1): ``length`` bytes of the logical plaintext at ``offset``. A later record for the same
  bytes wins: a late payload (a burst after a stall) is placed as a new version of those bytes,
  never by rewriting what is on disk. The WAV's header is a DATA record at 0 when it is opened
  (sizes 0) and again at the end (final sizes).
- FINAL (2): the plaintext's length (u64) and the number of records before it (u32), ``offset`` the
  same length and ``length`` 12. A file without a valid FINAL is incomplete (in progress, or left by
  a crash): it is refused by every reader until crash recovery has finished it.

``seq`` counts the records from 0 without a gap and is in the associated data, so a record removed,
reordered or moved from another file (the file id) fails, as an altered byte or a cut file does:
each with a clear :class:`SealedError`. Nonces are random, not counters: a crash-recovered file
appended to later can never reuse one (a recording has at most a few 10^4 records, far below the
2^32 a random 96-bit nonce allows under one key).

Writing (the capture thread): one DATA record per flush of the audio lanes (~1 s, never per
packet), the evidence pcap's buffer one DATA record per flush (16 KiB). Late payloads (rare) are
held until the next flush; each run of frames they fall in is then one DATA record: those frames as
sealed so far (the few records over them found by bisection and decrypted), the payloads in place.
A write the disk cannot take is cut back to the last whole record. Reading builds an extent map from
the clear record headers once per open, then decrypts only the records a byte range needs (playing
from the 59th minute decrypts ~1 s).

Crash recovery (:func:`finish`) keeps the records up to the last whole one whose tag holds (at most
~1 s of audio is lost), then writes the final header and FINAL. The index keeps the plaintext
SHA-256 of the WAV and the pcap, which ``list``, exports, manifests and ``verify`` use: keep computes
it once, on the store's thread, by reading the renamed files back through the page cache they were
just written through (no disk read in practice; every record's tag is checked on the way), since
the final bytes (the header first, late payloads) are only known at the end.
"""
from __future__ import annotations

import bisect
import errno
import os
import struct
import threading
from array import array
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import wav
from .vault import VaultError

MAGIC = b"RDS1"
VERSION = 1
WAV, PCAP, CALL = 1, 2, 3
KINDS = {WAV: "WAV", PCAP: "PCAP", CALL: "CALL"}
DATA, FINAL = 1, 2
HEADER = 24
_file = struct.Struct(">4sBBH16s")
_record = struct.Struct(">BIQI")
RECORD = _record.size  # 17
NONCE, TAG = 12, 16
_final = struct.Struct(">QI")
MAX_RECORD = 16 * 1024 * 1024  # plaintext bytes a record may hold (the writers stay far below)
READ_CHUNK = 64 * 1024  # logical bytes per chunk given out by :meth:`SealedFile.chunks`


class SealedError(VaultError):
    """A sealed file that does not hold: what is wrong with it, and where (a :class:`VaultError`,
    so every reader of the store handles both formats' failures alike)."""


def file_header(kind: int) -> bytes:
    return _file.pack(MAGIC, VERSION, kind, 0, os.urandom(16))


def seal(aes: AESGCM, header: bytes, kind: int, seq: int, offset: int, plain: bytes | bytearray | memoryview) -> bytes:
    """One record, whole: clear header, nonce, ciphertext and tag."""
    head = _record.pack(kind, seq, offset, len(plain))
    nonce = os.urandom(NONCE)
    return head + nonce + aes.encrypt(nonce, plain, header + head)  # a bytearray as it is: no copy


class SealedWriter:
    """Appends records to one sealed file, created whole or not at all (``O_EXCL``; a failed first
    write unlinks it). ``prefix`` is clear text before the file header (the sidecar's first line)."""

    def __init__(self, path: str, kind: int, aes: AESGCM, *, prefix: bytes = b"", first: bytes | None = None,
                 readable: bool = False) -> None:  # fmt: skip
        self.path = path
        self.readable = readable  # keeps where each DATA record is, for :meth:`read` (the WAV: late payloads)
        self._index = _Extents()
        self.aes = aes
        self.header = file_header(kind)
        self.base = len(prefix)
        self.seq = 0
        self.length = 0  # logical plaintext bytes so far (the end of the furthest DATA record)
        self.error: OSError | None = None
        mode = os.O_RDWR if readable else os.O_WRONLY
        self.fd = os.open(path, mode | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.end = 0
        head = prefix + self.header
        try:
            if first is None:
                _write_all(self.fd, head)
                self.end = len(head)
            else:  # the header and the first record in one write
                self._put(head + seal(aes, self.header, DATA, 0, 0, first), data_end=len(first))
                if readable:
                    self._index.add(0, len(first), len(head))
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            _unlink(path)
            raise

    @classmethod
    def resume(cls, path: str, aes: AESGCM, scan: Scan) -> SealedWriter:
        """Append to a file left by a crash after its last whole valid record (what follows is cut)."""
        self = cls.__new__(cls)
        self.readable, self._index = False, _Extents()
        self.path, self.aes, self.header, self.base = path, aes, scan.header, scan.base
        self.seq, self.length, self.error = scan.count, scan.covered, None
        self.fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.end = scan.end
        os.ftruncate(self.fd, scan.end)
        return self

    def data(self, offset: int, plain: bytes | bytearray | memoryview) -> None:
        """Seal ``plain`` as the bytes at ``offset``; ``OSError`` (the record cut back) if the disk
        cannot take it."""
        if not plain:
            return
        record = seal(self.aes, self.header, DATA, self.seq, offset, plain)
        at = self.end
        self._put(record, data_end=offset + len(plain))
        if self.readable:
            self._index.add(offset, len(plain), at)

    def read(self, offset: int, length: int) -> bytearray:
        """The bytes at ``offset`` as written so far, the latest record winning (a readable writer;
        rare: a late payload's frames, to seal their new version whole). Finds the records by
        bisection (a flood of late packets costs a few decryptions each, not a walk of the file)."""
        out = bytearray(length)
        end = offset + length
        for start, n, pos in self._index.overlapping(offset, end):
            blob = os.pread(self.fd, RECORD + NONCE + n + TAG, pos)
            plain = self.aes.decrypt(blob[RECORD : RECORD + NONCE], blob[RECORD + NONCE :], self.header + blob[:RECORD])
            a, b = max(start, offset), min(start + n, end)
            out[a - offset : b - offset] = plain[a - start : b - start]
        return out

    def append(self, plain: bytes | bytearray | memoryview) -> None:
        self.data(self.length, plain)

    def final(self, length: int) -> None:
        """The FINAL record: the file is complete with ``length`` plaintext bytes."""
        self._put(seal(self.aes, self.header, FINAL, self.seq, length, _final.pack(length, self.seq)), data_end=0)

    def _put(self, record: bytes, *, data_end: int) -> None:
        if self.error is not None:
            raise self.error
        try:
            written = os.pwrite(self.fd, record, self.end)  # at the end of the last whole record, always
            if written != len(record):  # a short write: the disk filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            self.error = exc
            try:
                os.ftruncate(self.fd, self.end)  # no half record left behind
            except OSError:
                pass
            raise
        self.end += len(record)
        self.seq += 1
        self.length = max(self.length, data_end)

    def sync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Extents:
    """Where a writer's DATA records are: by record (offset, length, file position) and sorted by
    offset, in compact arrays (~36 bytes a record: 130 KB for an hour of a call's WAV)."""

    def __init__(self) -> None:
        self.off, self.len, self.pos = array("Q"), array("Q"), array("Q")
        self.starts, self.order = array("Q"), array("Q")  # record offsets sorted, and their record numbers
        self.longest = 0

    def add(self, offset: int, length: int, pos: int) -> None:
        k = len(self.off)
        self.off.append(offset)
        self.len.append(length)
        self.pos.append(pos)
        i = bisect.bisect_right(self.starts, offset)
        self.starts.insert(i, offset)
        self.order.insert(i, k)
        self.longest = max(self.longest, length)

    def overlapping(self, offset: int, end: int) -> list[tuple[int, int, int]]:
        """(offset, length, position) of the records over ``[offset, end)``, in the order written."""
        lo = bisect.bisect_left(self.starts, max(0, offset - self.longest))
        hi = bisect.bisect_left(self.starts, end)
        hits = sorted(k for k in self.order[lo:hi] if self.off[k] + self.len[k] > offset)
        return [(self.off[k], self.len[k], self.pos[k]) for k in hits]


# -- reading -------------------------------------------------------------------------------------


class Scan:
    """What the clear headers of a sealed file say: its records (in ``seq`` order) and its end."""

    def __init__(self, header: bytes, base: int) -> None:
        self.header = header
        self.base = base  # where the file header begins (after the sidecar's clear line)
        self.kind = header[5]
        self.records: list[tuple[int, int, int, int]] = []  # (offset, length, file position, kind)
        self.final: int | None = None  # the plaintext length FINAL says
        self.end = base + HEADER  # the end of the last whole record
        self.covered = 0  # the end of the furthest DATA record
        self.problem = ""  # why the walk stopped before the end of the file

    @property
    def count(self) -> int:
        return len(self.records)


def scan(fd: int, name: str, *, base: int = 0, kinds: tuple[int, ...] = (WAV, PCAP, CALL)) -> Scan:
    """Walk the record headers of a sealed file (no decryption). Stops at the first record that is
    cut, out of sequence or not understood (``Scan.problem`` says which)."""
    header = os.pread(fd, HEADER, base)
    if len(header) != HEADER or header[:4] != MAGIC:
        raise SealedError(f"{name}: not a sealed file (bad header)")
    magic, version, kind, _, _ = _file.unpack(header)
    if version != VERSION:
        raise SealedError(f"{name}: sealed format version {version}, this recorder reads {VERSION}")
    if kind not in kinds:
        wanted = "/".join(KINDS[k] for k in kinds)
        raise SealedError(f"{name}: a sealed {KINDS.get(kind, kind)} file where a {wanted} was expected")
    size = os.fstat(fd).st_size
    found = Scan(header, base)
    pos = base + HEADER
    while pos < size:
        head = os.pread(fd, RECORD, pos)
        if len(head) < RECORD:
            found.problem = f"record {found.count} cut in its header"
            break
        rkind, seq, offset, length = _record.unpack(head)
        if found.final is not None:
            found.problem = f"record {found.count} after the final record"
            break
        if seq != found.count:
            found.problem = f"record {found.count} out of sequence (seq {seq}): a record removed or reordered"
            break
        if rkind not in (DATA, FINAL) or length > MAX_RECORD or (rkind == FINAL and length != _final.size):
            found.problem = f"record {seq} not understood (kind {rkind}, {length} bytes)"
            break
        end = pos + RECORD + NONCE + length + TAG
        if end > size:
            found.problem = f"record {seq} cut"
            break
        found.records.append((offset, length, pos, rkind))
        if rkind == FINAL:
            found.final = offset
        else:
            found.covered = max(found.covered, offset + length)
        found.end = pos = end
    return found


def open_record(fd: int, aes: AESGCM, found: Scan, seq: int, name: str) -> bytes:
    """The plaintext of record ``seq``, authenticated."""
    offset, length, pos, kind = found.records[seq]
    blob = os.pread(fd, RECORD + NONCE + length + TAG, pos)
    if len(blob) != RECORD + NONCE + length + TAG:
        raise SealedError(f"{name}: record {seq} cut")
    try:
        return aes.decrypt(blob[RECORD : RECORD + NONCE], blob[RECORD + NONCE :], found.header + blob[:RECORD])
    except InvalidTag:
        raise SealedError(f"{name}: record {seq} fails authentication (altered, or moved from elsewhere)") from None


class SealedFile:
    """A complete sealed file, opened for reading (``O_NOFOLLOW``, then only ``pread``): random access
    to its logical plaintext through the extent map of its records."""

    def __init__(self, path: str, data_key: bytes, name: str, *, fd: int | None = None) -> None:
        self.name = name
        self.fd = fd if fd is not None else os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self.aes = AESGCM(data_key)
            self.scan = found = scan(self.fd, name, kinds=(WAV, PCAP))
            if found.problem:  # a record removed, reordered, cut or not understood
                raise SealedError(f"{name}: {found.problem}")
            if found.final is None:
                raise SealedError(f"{name}: incomplete, it has no final record: in progress, or left by a crash")
            if found.end != os.fstat(self.fd).st_size:
                raise SealedError(f"{name}: {found.problem or 'bytes after the final record'}")
            length, count = _final.unpack(open_record(self.fd, self.aes, found, found.count - 1, name))
            if (length, count) != (found.final, found.count - 1) or length > found.covered:
                raise SealedError(f"{name}: the final record does not match the file ({count} records, {length} bytes)")
            self.size = length
            data = sorted((off, seq) for seq, (off, n, _, kind) in enumerate(found.records) if kind == DATA and n)
            self._starts = [off for off, _ in data]
            self._seqs = [seq for _, seq in data]
            self._longest = max((found.records[s][1] for s in self._seqs), default=0)
        except BaseException:
            if fd is None:
                os.close(self.fd)
            raise
        self._lock = threading.Lock()
        self._cache: dict[int, bytes] = {}
        self._checked: set[int] = {self.scan.count - 1}  # records whose tag held (FINAL: at open)
        self.chunk_size = READ_CHUNK
        self.chunks = max(1, -(-self.size // READ_CHUNK))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plain(self, seq: int) -> bytes:
        with self._lock:
            plain = self._cache.get(seq)
        if plain is None:
            plain = open_record(self.fd, self.aes, self.scan, seq, self.name)
            with self._lock:
                self._checked.add(seq)
                if len(self._cache) >= 16:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[seq] = plain
        return plain

    def read(self, offset: int, length: int) -> bytes:
        """Plaintext bytes ``[offset, offset + length)`` (shorter at the end of the file), each from
        the latest record that holds them."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        out = bytearray(end - offset)  # bytes no record holds (none, as written here) read as zeros
        lo = bisect.bisect_left(self._starts, offset - self._longest)
        hi = bisect.bisect_left(self._starts, end)
        hits = []
        records = self.scan.records
        for i in range(lo, hi):
            start, seq = self._starts[i], self._seqs[i]
            if start + records[seq][1] > offset:
                hits.append(seq)
        for seq in sorted(hits):  # later records win
            start, n = records[seq][0], records[seq][1]
            plain = self._plain(seq)
            a, b = max(start, offset), min(start + n, end)
            out[a - offset : b - offset] = plain[a - start : b - start]
        return bytes(out)

    def chunk(self, index: int) -> bytes:
        if not 0 <= index < self.chunks:
            raise SealedError(f"{self.name}: no chunk {index} (it has {self.chunks})")
        return self.read(index * READ_CHUNK, READ_CHUNK)

    def plaintext(self) -> Iterator[bytes]:
        for i in range(self.chunks):
            yield self.chunk(i)

    def verify(self) -> None:
        """Every record's tag (a record all of whose bytes a later one replaced is checked too; those
        already read are not decrypted again)."""
        for seq in range(self.scan.count):
            if seq not in self._checked:
                open_record(self.fd, self.aes, self.scan, seq, self.name)
                self._checked.add(seq)


# -- recovery ------------------------------------------------------------------------------------


def valid_prefix(fd: int, aes: AESGCM, name: str, *, base: int = 0, kinds: tuple[int, ...] = (WAV, PCAP, CALL),
                 plain: bool = False) -> tuple[Scan, list[bytes]]:  # fmt: skip
    """The records of a file left by a crash up to the last whole one whose tag holds (a FINAL
    included when there is one); with ``plain``, their plaintexts too."""
    found = scan(fd, name, base=base, kinds=kinds)
    plains: list[bytes] = []
    for seq in range(found.count):
        try:
            p = open_record(fd, aes, found, seq, name)
        except SealedError as exc:
            found.problem = str(exc)
            _cut_at(found, seq)
            break
        if plain:
            plains.append(p)
    return found, plains


def _cut_at(found: Scan, seq: int) -> None:
    found.end = found.records[seq][2]
    del found.records[seq:]
    found.final = None
    found.covered = max((off + n for off, n, _, kind in found.records if kind == DATA), default=0)
    if found.records and found.records[-1][3] == FINAL:
        found.final = found.records[-1][0]


def finish(path: str, data_key: bytes, name: str, *, wav_header: object = None) -> int:
    """Make a sealed spool file complete after a crash (or a failed end): cut after its last whole
    valid record, seal ``wav_header(plaintext length, the header written at open) -> (header bytes,
    length kept)`` at 0 for a WAV, then FINAL. Returns the plaintext length kept. A file already
    complete is left as it is."""
    aes = AESGCM(data_key)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        found, _ = valid_prefix(fd, aes, name, kinds=(WAV, PCAP))
        if found.final is not None and found.end == os.fstat(fd).st_size:
            return found.final
        first = b""
        heads = [seq for seq, r in enumerate(found.records) if r[0] == 0 and r[3] == DATA]
        if heads:
            first = open_record(fd, aes, found, heads[-1], name)
    finally:
        os.close(fd)
    if found.final is not None:  # bytes after a valid FINAL: cut them
        found.records.pop()
        found.end = found.records[-1][2] + RECORD + NONCE + found.records[-1][1] + TAG if found.records else HEADER
        found.final = None
    writer = SealedWriter.resume(path, aes, found)
    try:
        length = found.covered
        if wav_header is not None and found.kind == WAV:
            header, length = wav_header(length, first)  # type: ignore[operator]
            writer.data(0, header)
        writer.final(length)
    finally:
        writer.close()
    return length


def wav_header(length: int, provisional: bytes) -> tuple[bytes, int]:
    """The final header of a sealed WAV cut at ``length`` plaintext bytes (its whole frames), in the
    format of the header written at open."""
    tag, _channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", provisional, 20)
    frames = max(0, length - wav.HEADER_SIZE) // (align or 2)
    head = wav.header(wav.CODECS_BY_TAG.get(tag, "PCM"), frames, rate=rate, width=max(1, bits // 8), tag=tag)
    return head, wav.HEADER_SIZE + frames * (align or 2)


def _write_all(fd: int, data: bytes) -> None:
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
