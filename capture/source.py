"""Packet sources: one iterator of ``(timestamp, linktype, frame)`` batches.

Live capture (the AF_PACKET ring) and capture files look the same to everything after the
source: an iterable of sequences of ``(ts, linktype, frame)`` where ``ts`` is seconds since the
epoch (float, packet time), ``linktype`` a LINKTYPE_* number and ``frame`` the captured bytes. With
the C module a batch of a classic pcap file or of a ring block is a ``Frames`` (capture/_fastpath.c):
the packets described where they lie (the file's mmap, the ring block), each tuple made only when
Python asks for it; the kernel reads the frames in place (docs/hot-path.md). A batch is read-only;
the source releases a ring block's batch before the block goes back to the kernel (any later use
raises ValueError), and a capture file that closes gives the batches it handed out a copy of their
bytes first. Without the C module (and for pcapng) a batch is a list of tuples.

The file reader maps the file and walks it with ``struct.unpack_from``; it reads classic pcap
(both byte orders, micro- and nanosecond) and pcapng (SHB, IDB, EPB, SPB, obsolete PB). Damage is
reported as :class:`CaptureFileError` naming the file and the byte offset; every packet before
the damage has already been yielded, so the caller keeps what was complete.
"""
from __future__ import annotations

import mmap
import os
import struct
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from .fast import fastpath

Packet = tuple[float, int, bytes]
Batch = Sequence[Packet]  # a list, or the C module's Frames (the same tuples, read in place)

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_IDB = 0x00000001
PCAPNG_PB = 0x00000002
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_MIN_LENGTH = {PCAPNG_SHB: 28, PCAPNG_IDB: 20, PCAPNG_PB: 32, PCAPNG_SPB: 16, PCAPNG_EPB: 32}

BATCH_SIZE = 512
MAX_SNAPLEN = 262_144


def release(batch: Batch) -> None:
    """Drop a batch's hold on the memory it lies in (a Frames; a list holds copies): any later use
    of it raises ValueError (capture/live.py: before its ring block goes back to the kernel)."""
    if type(batch) is not list:
        batch.release()  # type: ignore[attr-defined]


class CaptureFileError(Exception):
    """A capture file that cannot be read further, with where it broke."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class PacketSource(Protocol):
    """What the pipeline reads from: batches of packets until the source ends."""

    def batches(self) -> Iterator[Batch]: ...

    def close(self) -> None: ...


class CaptureFile:
    """A pcap or pcapng file, read through ``mmap``."""

    def __init__(self, path: str | os.PathLike[str], batch_size: int = BATCH_SIZE) -> None:
        self.path = os.fspath(path)
        self.batch_size = batch_size
        self.packets_read = 0
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise CaptureFileError(self.path, 0, f"cannot open: {exc.strerror}") from None
        size = os.fstat(self._fd).st_size
        if size < 4:
            os.close(self._fd)
            raise CaptureFileError(self.path, 0, f"file too short ({size} bytes) for a capture header")
        self._map: mmap.mmap | None = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        self._lent: weakref.WeakSet[Any] = weakref.WeakSet()  # batches (Frames) lying in the map

    def close(self) -> None:
        if self._map is not None:
            try:
                for batch in list(self._lent):  # a batch still held keeps a copy of its bytes: the map can close
                    batch.detach()
                self._lent.clear()
            finally:  # the descriptor is closed whatever happened (a batch that could not copy keeps the map)
                try:
                    self._map.close()
                except BufferError:
                    pass
                os.close(self._fd)
                self._map = None

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(self) -> Iterator[Batch]:
        buf = self._map
        if buf is None:
            raise ValueError(f"{self.path}: capture file closed")
        magic = struct.unpack_from("<I", buf, 0)[0]
        if magic == PCAPNG_SHB:
            yield from self._pcapng(buf)
        elif magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or struct.unpack_from(">I", buf, 0)[0] in (
            PCAP_MAGIC_US,
            PCAP_MAGIC_NS,
        ):
            yield from self._pcap(buf)
        else:
            raise CaptureFileError(self.path, 0, f"not a pcap or pcapng file (magic 0x{magic:08x})")

    # -- classic pcap -------------------------------------------------------------------------

    def _pcap(self, buf: mmap.mmap) -> Iterator[Batch]:
        end = len(buf)
        if end < 24:
            raise CaptureFileError(self.path, 0, "truncated pcap file header")
        bo = "<" if struct.unpack_from("<I", buf, 0)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
        magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = struct.unpack_from(bo + "IHHiIII", buf, 0)
        scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
        linktype &= 0x0FFFFFFF  # upper bits may carry FCS information
        off = 24
        if fastpath is not None:  # the same walk in C (capture/_fastpath.c)
            read = fastpath.read_pcap
            big = bo == ">"
            while off < end:
                chunk, off, failed = read(buf, off, big, scale, linktype, self.batch_size)
                if chunk:
                    self.packets_read += len(chunk)
                    self._lent.add(chunk)
                    yield chunk
                if failed is not None:
                    raise CaptureFileError(self.path, *failed)
            return
        rec = struct.Struct(bo + "IIII")
        unpack = rec.unpack_from
        error: CaptureFileError | None = None
        batch: list[Packet] = []
        append = batch.append
        while off < end:
            if off + 16 > end:
                error = CaptureFileError(self.path, off, "truncated packet record header")
                break
            sec, frac, incl, _orig = unpack(buf, off)
            if incl > MAX_SNAPLEN:
                error = CaptureFileError(self.path, off, f"packet length {incl} exceeds {MAX_SNAPLEN}")
                break
            data = off + 16
            if data + incl > end:
                error = CaptureFileError(self.path, off, f"truncated packet: {incl} bytes declared, {end - data} left")
                break
            append((sec + frac * scale, linktype, buf[data : data + incl]))
            off = data + incl
            if len(batch) >= self.batch_size:
                self.packets_read += len(batch)
                yield batch
                batch = []
                append = batch.append
        if batch:  # what came before any damage is delivered first
            self.packets_read += len(batch)
            yield batch
        if error is not None:
            raise error

    # -- pcapng -------------------------------------------------------------------------------

    def _pcapng(self, buf: mmap.mmap) -> Iterator[Batch]:
        end = len(buf)
        off = 0
        bo = "<"
        interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
        error: CaptureFileError | None = None
        last_ts = 0.0
        batch: list[Packet] = []
        while off < end:
            if off + 12 > end:
                error = CaptureFileError(self.path, off, "truncated pcapng block header")
                break
            btype = struct.unpack_from(bo + "I", buf, off)[0]
            if btype == PCAPNG_SHB:
                if off + 16 > end:
                    error = CaptureFileError(self.path, off, "truncated section header block")
                    break
                bom = struct.unpack_from("<I", buf, off + 8)[0]
                if bom == PCAPNG_BOM:
                    bo = "<"
                elif bom == 0x4D3C2B1A:
                    bo = ">"
                else:
                    error = CaptureFileError(self.path, off, f"bad pcapng byte-order magic 0x{bom:08x}")
                    break
                interfaces = []  # a new section starts its own interface list
            blen = struct.unpack_from(bo + "I", buf, off + 4)[0]
            if blen < PCAPNG_MIN_LENGTH.get(btype, 12) or blen % 4:
                error = CaptureFileError(self.path, off, f"bad pcapng block length {blen}")
                break
            if off + blen > end:
                error = CaptureFileError(self.path, off,
                                         f"truncated pcapng block: {blen} bytes declared, {end - off} left")
                break
            if struct.unpack_from(bo + "I", buf, off + blen - 4)[0] != blen:
                error = CaptureFileError(self.path, off, "pcapng block trailer length does not match its header")
                break
            if btype == PCAPNG_IDB:
                interfaces.append(self._idb(buf, off, blen, bo))
            elif btype == PCAPNG_EPB or btype == PCAPNG_PB:
                if btype == PCAPNG_EPB:
                    ifid, ts_hi, ts_lo, incl = struct.unpack_from(bo + "IIII", buf, off + 8)
                else:
                    ifid, _drops, ts_hi, ts_lo, incl = struct.unpack_from(bo + "HHIII", buf, off + 8)
                if ifid >= len(interfaces):
                    error = CaptureFileError(self.path, off,
                                             f"packet names interface {ifid}, which was never described")
                    break
                data = off + 28
                if data + incl > off + blen - 4:
                    error = CaptureFileError(self.path, off, f"packet length {incl} overruns its block")
                    break
                linktype, unit = interfaces[ifid]
                last_ts = ((ts_hi << 32) | ts_lo) * unit
                batch.append((last_ts, linktype, buf[data : data + incl]))
            elif btype == PCAPNG_SPB:
                if not interfaces:
                    error = CaptureFileError(self.path, off, "simple packet block before any interface")
                    break
                orig = struct.unpack_from(bo + "I", buf, off + 8)[0]
                incl = min(orig, blen - 16)
                batch.append((last_ts, interfaces[0][0], buf[off + 12 : off + 12 + incl]))  # no time of its own
            off += blen
            if len(batch) >= self.batch_size:
                self.packets_read += len(batch)
                yield batch
                batch = []
        if batch:  # what came before any damage is delivered first
            self.packets_read += len(batch)
            yield batch
        if error is not None:
            raise error

    def _idb(self, buf: mmap.mmap, off: int, blen: int, bo: str) -> tuple[int, float]:
        linktype = struct.unpack_from(bo + "H", buf, off + 8)[0]
        unit = 1e-6
        opt = off + 16
        stop = off + blen - 4
        while opt + 4 <= stop:
            code, olen = struct.unpack_from(bo + "HH", buf, opt)
            if code == 0:
                break
            if code == 9 and olen >= 1:  # if_tsresol
                res = buf[opt + 4]
                unit = 2.0 ** -(res & 0x7F) if res & 0x80 else 10.0 ** -res
            opt += 4 + ((olen + 3) & ~3)
        return linktype, unit
