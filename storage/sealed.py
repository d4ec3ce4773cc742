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
                  | nonce (12 bytes: the writer's 8 random bytes, then seq u32)
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
each with a clear :class:`SealedError`. A nonce is its writer's own 8 random bytes (made when it
opens or resumes a file) and the record's ``seq``: one writer never repeats one (``seq`` grows by
one per record written; a writer whose write the disk refused seals nothing more), and a
crash-recovered file, whose writer seals again the seqs past the cut, gets a new prefix. One key
seals a recording's three files and their resumes, a handful of writers: two prefixes alike has a
chance below 10^-17. Files of earlier releases have 12 random bytes there; readers never look
inside a nonce, so both read alike.

Writing (the capture thread): one DATA record per flush of the audio lanes (~1 s, never per
packet), the evidence pcap's buffer one DATA record per flush (~16 KiB). Each is fitted to end the
file on a page (``past_page``): the daemon syncs its file system every second, and a last page
written back half full was written again once the next record filled it (1.23 bytes written per
byte stored at 300 k packets/s, 1.03 fitted). Nothing sealed waits in memory: the pcap seals its
buffer up to the boundary and keeps the rest (the plaintext is a stream of bytes: a record may end
inside a packet, and crash recovery's FINAL cuts the pcap at its last whole packet); the WAV writes
its frames up to the nearest boundary (a record now and then takes the next frame's first byte,
sealed anew by the next record: every record's overhead is odd). Late payloads (rare) are
held until the next flush; each run of frames they fall in is then one DATA record: those frames as
sealed so far (the few records over them found by bisection and decrypted), the payloads in place.
A write the disk cannot take, or one interrupted (even after its bytes reached the file), is cut back
to the last whole record, and its writer seals nothing more (crash recovery finishes the file).
A record is sealed into its writing thread's one scratch buffer (the capture thread and the store's
each have theirs; the write is synchronous, so the buffer is free again when it returns) and
written, clear header, nonce, ciphertext and tag, by one pwritev: no bytes concatenated and no
ciphertext buffer allocated per record. Reading builds an extent map from the clear record headers
once per open, then decrypts only the records a byte range needs (playing from the 59th minute
decrypts ~1 s).

Crash recovery (:func:`finish`) keeps the records up to the last whole one whose tag holds (at most
~1 s of audio is lost), then writes the final header and FINAL. The index keeps the plaintext
SHA-256 of the WAV and the pcap, which ``list``, exports, manifests and ``verify`` use.

The evidence pcap's is taken as it is written: the file is only ever appended to, its plaintext is
the records' in the order sealed, so its writer (``storage/evidence.py``) hashes each record's
plaintext as it seals it and hands the digest to the keep with the file's length; the keep takes it
for a file that length (its FINAL says it) and reads the file otherwise (a writer the disk refused,
whose file the store finished; one interrupted between a record's write and its hash; a file
recovered after a crash). A spool pcap altered between its writing and its keep (in the page cache
it was just written through, by someone who can write the spool) is therefore kept with the digest
of what was captured and found by ``verify`` (its altered record fails authentication, the digest
differs), no longer refused by the keep itself. Crash recovery that cannot keep a recording (a file
renamed by a keep that died before its index row, damaged since) leaves it in the spool for a
technician, says so, and goes on with the others.

The WAV's is computed once at the keep, on the store's thread (:meth:`SealedFile.digest`), by
reading the file back through the page cache it was just written through (no disk read in
practice), each record decrypted once and its tag checked. It cannot be taken as the file is
written: the WAV's header is its first 44 bytes and its sizes are known only at the end (late
payloads too may change bytes already sealed), and SHA-256 is sequential (every block's state
depends on the first block's); holding the plaintext until the end would cost ~115 MB an hour of
call, and a digest of another shape (the data first, a tree hash) would no longer be what
``sha256sum`` gives of the exported WAV, which the signed manifest states.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import hashlib
import os
import struct
import threading
from array import array
from collections.abc import Callable, Iterator

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
_counter = struct.Struct(">I")  # a nonce's last 4 bytes: the record's seq
MAX_RECORD = 16 * 1024 * 1024  # plaintext bytes a record may hold (the writers stay far below)
READ_CHUNK = 64 * 1024  # logical bytes per chunk given out by :meth:`SealedFile.chunks`


class SealedError(VaultError):
    """A sealed file that does not hold: what is wrong with it, and where (a :class:`VaultError`,
    so every reader of the store handles both formats' failures alike)."""


def file_header(kind: int) -> bytes:
    return _file.pack(MAGIC, VERSION, kind, 0, os.urandom(16))


def seal(aes: AESGCM, header: bytes, kind: int, seq: int, offset: int, plain: bytes | bytearray | memoryview,
         prefix: bytes | None = None) -> bytes:
    """One record, whole: clear header, nonce, ciphertext and tag (the nonce ``prefix`` and ``seq``
    when a writer gives its prefix, else random)."""
    head = _record.pack(kind, seq, offset, len(plain))
    nonce = os.urandom(NONCE) if prefix is None else prefix + _counter.pack(seq)
    return head + nonce + aes.encrypt(nonce, plain, header + head)  # a bytearray as it is: no copy


def nonce_prefix() -> bytes:
    """A writer's own 8 random bytes, the first part of each of its records' nonces (the last 4: the
    record's ``seq``)."""
    return os.urandom(NONCE - _counter.size)


_scratch = threading.local()  # each thread's buffer for the ciphertext and tag of the record it writes
_SCRATCH_KEPT = 1024 * 1024  # the most a thread's scratch buffer grows to (the writers' records: ~16 KiB)


def _cipher_buffer(size: int) -> memoryview:
    """This thread's scratch buffer, ``size`` bytes of it, for a record's ciphertext and tag: the
    record is written from it by a synchronous pwritev, so it is free again when the write returns
    (no 16 KB allocated and freed per record). One per thread: the capture thread and the store's
    thread both write records."""
    buf: memoryview | None = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        if size > _SCRATCH_KEPT:  # a long run of late frames (rare): its own buffer, not kept
            return memoryview(bytearray(size))
        buf = _scratch.buf = memoryview(bytearray(max(size, 64 * 1024)))
    return buf[:size]


PAGE = 4096  # the page cache's page (and ext4's block): the spool's records end on one when they can
OVERHEAD = RECORD + NONCE + TAG  # a DATA record's bytes besides its plaintext (45)

WRITEBACK = 256 * 1024  # SealedWriter.writeback when it is on: bytes written, then the disk asked to start on them
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range(2) (Linux; Python's os has no binding), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


_start_writeback = _sync_file_range()


def new_file(path: str, flags: int) -> int:
    """A new file at ``path`` (``O_EXCL``: refused if a name is there, a symbolic link included),
    0600, open with ``flags``: every sealed file a writer makes (``storage/spool_files.py`` makes the
    spool's ahead the same way)."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


class SealedWriter:
    """Appends records to one sealed file, created whole or not at all (``O_EXCL``; a failed first
    write unlinks it). ``prefix`` is clear text before the file header (the sidecar's first line).

    ``writeback`` (off: 0): every so many bytes written, the disk is asked to start writing them
    (sync_file_range SYNC_FILE_RANGE_WRITE: no waiting, no journal commit), so the fsync when the
    call is kept has little left. ``recorderd replay`` turns it on (storage/spool.py ``IMPORT``:
    its calls end together and are kept at the end); the service leaves it off: its spool-sync
    thread syncs the file system every second already."""

    writeback = 0

    def __init__(self, path: str, kind: int, aes: AESGCM, *, prefix: bytes = b"", first: bytes | None = None,
                 readable: bool = False, create: Callable[[str, int], int] | None = None,
                 writeback: int = 0) -> None:
        self.path = path
        self.writeback = writeback
        self.readable = readable  # keeps where each DATA record is, for :meth:`read` (the WAV: late payloads)
        self._index = _Extents()
        self.aes = aes
        self.header = file_header(kind)
        self.base = len(prefix)
        self.seq = 0
        self.nonce = nonce_prefix()  # this writer's, with the seq: no two of its records share a nonce
        self._sealing_views()
        self.length = 0  # logical plaintext bytes so far (the end of the furthest DATA record)
        self.error: OSError | None = None
        mode = os.O_RDWR if readable else os.O_WRONLY
        self.fd = (create or new_file)(path, mode)  # O_EXCL, 0600; or a file made ahead given its name
        self.end = self.flushed = 0  # flushed: the end of what the disk was asked to write (WRITEBACK)
        head = prefix + self.header
        try:
            if first is None:
                _write_all(self.fd, head)
                self.end = len(head)
            else:  # the header and the first record in one write
                self._put(head + seal(aes, self.header, DATA, 0, 0, first, self.nonce), data_end=len(first))
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
        self.nonce = nonce_prefix()  # a new prefix: the seqs from here on may have been sealed before the cut
        self._sealing_views()
        self.fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.end = self.flushed = scan.end
        os.ftruncate(self.fd, scan.end)
        return self

    def _sealing_views(self) -> None:
        """The writer's own bytes for the record it seals, packed in place per record (nothing
        concatenated): the associated data (the file header, then the record's clear header, the
        last 17 bytes written before the ciphertext) and the nonce (its prefix, then the seq)."""
        self._aad = bytearray(self.header + bytes(RECORD))
        self._head = memoryview(self._aad)[HEADER:]
        self._nonce = bytearray(self.nonce + bytes(_counter.size))

    def data(self, offset: int, plain: bytes | bytearray | memoryview) -> None:
        """Seal ``plain`` as the bytes at ``offset``; ``OSError`` (the record cut back) if the disk
        cannot take it."""
        n = len(plain)
        if not n:
            return
        if self.error is not None:  # nothing sealed again under a nonce already used for a record not written
            raise self.error
        seq, at = self.seq, self.end
        _record.pack_into(self._aad, HEADER, DATA, seq, offset, n)
        _counter.pack_into(self._nonce, NONCE - _counter.size, seq)
        sealed = _cipher_buffer(n + TAG)
        self.aes.encrypt_into(self._nonce, plain, self._aad, sealed)
        size = RECORD + NONCE + n + TAG
        try:  # header, nonce, ciphertext and tag: one pwritev at the end of the last whole record
            self.seq = seq + 1
            if os.pwritev(self.fd, (self._head, self._nonce, sealed), at) != size:  # a short write: the disk filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.end = at + size
        except BaseException as exc:  # refused, or interrupted (Ctrl-C of a replay) even after it reached the file
            self._cut_back(exc)
            raise
        if offset + n > self.length:
            self.length = offset + n
        if self.writeback and self.end - self.flushed >= self.writeback:
            self._ask_writeback()
        if self.readable:
            self._index.add(offset, n, at)

    def past_page(self, n: int, records: int = 1) -> int:
        """How far past a page boundary the file would end after ``records`` DATA records holding
        ``n`` plaintext bytes in all (0: on one). The spool's writers seal a little less, or a
        little more, so that the write ends on a page: the daemon syncs its file system every
        second, and a last page written back half full is written again once the next record has
        filled it (~20 % more bytes on the disk at 300 k packets/s)."""
        return (self.end + records * OVERHEAD + n) % PAGE

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
        if self.error is not None:
            raise self.error
        self._put(seal(self.aes, self.header, FINAL, self.seq, length, _final.pack(length, self.seq), self.nonce),
                  data_end=0)

    def _put(self, record: bytes, *, data_end: int) -> None:
        if self.error is not None:
            raise self.error
        size = len(record)
        try:  # at the end of the last whole record, always
            self.seq += 1  # (the record is sealed with the seq before)
            if os.pwrite(self.fd, record, self.end) != size:  # a short write: the disk filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.end += size
        except BaseException as exc:
            self._cut_back(exc)
            raise
        self._written(data_end)

    def _cut_back(self, exc: BaseException) -> None:
        """A write the disk refused, or one interrupted (a KeyboardInterrupt, even after the bytes
        reached the file): cut back to the last whole record counted, and nothing sealed again by
        this writer (its next seq may have reached the disk: sealing it again would reuse the
        nonce). An interrupted spool file is then finished by crash recovery, as after a crash."""
        self.error = exc if isinstance(exc, OSError) else OSError(errno.EINTR, f"write interrupted ({type(exc).__name__})")
        try:
            os.ftruncate(self.fd, self.end)
        except OSError:
            pass

    def _written(self, data_end: int) -> None:
        self.length = max(self.length, data_end)
        if self.writeback and self.end - self.flushed >= self.writeback:
            self._ask_writeback()

    def _ask_writeback(self) -> None:
        if _start_writeback is not None:  # advisory: an error shows at the keep's fsync
            _start_writeback(self.fd, self.flushed, self.end - self.flushed, _SYNC_FILE_RANGE_WRITE)
            self.flushed = self.end

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
        starts = self.starts
        if not starts or offset >= starts[-1]:  # after every record so far: the common case
            starts.append(offset)
            self.order.append(k)
        else:
            i = bisect.bisect_right(starts, offset)
            starts.insert(i, offset)
            self.order.insert(i, k)
        if length > self.longest:
            self.longest = length

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
    blob = memoryview(os.pread(fd, RECORD + NONCE + length + TAG, pos))  # sliced without copies
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

    def digest(self) -> str:
        """The SHA-256 of the whole plaintext (hex), every record's tag checked on the way: each
        record read and decrypted once, in one pass, its bytes that no later record replaced handed
        to the hash as they are (no copy), the superseded ones decrypted only for their tag."""
        pieces = self._pieces()
        uses: dict[int, int] = {}
        for _, _, seq in pieces:
            uses[seq] = uses.get(seq, 0) + 1
        digest = hashlib.sha256()
        held: dict[int, memoryview] = {}  # records decrypted whose pieces are not all hashed yet
        at = 0
        for start, end, seq in pieces:
            if start > at:  # bytes no record holds (none, as written here) read as zeros, as in read()
                digest.update(bytes(start - at))
            plain = held.get(seq)
            if plain is None:
                plain = held[seq] = memoryview(self._open(seq))
            offset = self.scan.records[seq][0]
            digest.update(plain[start - offset : end - offset])
            uses[seq] -= 1
            if not uses[seq]:
                del held[seq]
            at = end
        if at < self.size:
            digest.update(bytes(self.size - at))
        for seq in range(self.scan.count):  # the records all of whose bytes a later one replaced: their tags
            if seq not in self._checked:
                self._open(seq)
        return digest.hexdigest()

    def _open(self, seq: int) -> bytes:
        plain = open_record(self.fd, self.aes, self.scan, seq, self.name)
        self._checked.add(seq)
        return plain

    def _pieces(self) -> list[tuple[int, int, int]]:
        """``(start, end, seq)``: which record holds each stretch of the plaintext (the latest one
        written over it), in the plaintext's order, up to its size; stretches no record holds left out."""
        starts: list[int] = []  # of the pieces, sorted, not overlapping
        pieces: list[tuple[int, int, int]] = []
        for seq, (offset, n, _, kind) in enumerate(self.scan.records):
            if kind != DATA or not n or offset >= self.size:
                continue
            a, b = offset, min(offset + n, self.size)
            if not pieces or a >= pieces[-1][1]:  # after everything so far: the common case
                starts.append(a)
                pieces.append((a, b, seq))
                continue
            lo = bisect.bisect_right(starts, a) - 1  # the piece a falls in (or -1: before every piece)
            if lo < 0 or pieces[lo][1] <= a:
                lo += 1
            hi = bisect.bisect_left(starts, b)  # pieces from lo to hi overlap [a, b)
            keep: list[tuple[int, int, int]] = []
            if lo < hi and pieces[lo][0] < a:
                keep.append((pieces[lo][0], a, pieces[lo][2]))
            keep.append((a, b, seq))
            last = pieces[hi - 1] if lo < hi else None
            if last is not None and last[1] > b:
                keep.append((b, last[1], last[2]))
            pieces[lo:hi] = keep
            starts[lo:hi] = [p[0] for p in keep]
        return pieces

    def verify(self) -> None:
        """Every record's tag (a record all of whose bytes a later one replaced is checked too; those
        already read are not decrypted again)."""
        for seq in range(self.scan.count):
            if seq not in self._checked:
                open_record(self.fd, self.aes, self.scan, seq, self.name)
                self._checked.add(seq)


# -- recovery ------------------------------------------------------------------------------------


def valid_prefix(fd: int, aes: AESGCM, name: str, *, base: int = 0, kinds: tuple[int, ...] = (WAV, PCAP, CALL),
                 plain: bool = False) -> tuple[Scan, list[bytes]]:
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


def finish(path: str, data_key: bytes, name: str, *, wav_header: object = None,
           pcap_whole: Callable[[Iterator[bytes]], int] | None = None) -> int:
    """Make a sealed spool file complete after a crash (or a failed end): cut after its last whole
    valid record, seal ``wav_header(plaintext length, the header written at open) -> (header bytes,
    length kept)`` at 0 for a WAV, then FINAL; a PCAP's FINAL says the length ``pcap_whole(the
    records' plaintexts, in order)`` gives (storage/evidence.py: up to its last whole packet, as its
    writes may end inside one). Returns the plaintext length kept. A file already complete is left
    as it is."""
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
        whole = None
        if pcap_whole is not None and found.kind == PCAP:  # its records read again one at a time (an hour: ~80 MB)
            whole = pcap_whole(open_record(fd, aes, found, seq, name)
                               for seq, (_, n, _, kind) in enumerate(found.records) if kind == DATA and n)
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
        elif whole is not None:
            length = min(length, whole)  # (its records written in order, appended to only)
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
