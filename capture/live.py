"""Live capture from the SPAN port: an AF_PACKET TPACKET_V3 ring read through ``mmap``.

The same packet-source interface as :class:`capture.source.CaptureFile`: ``batches()`` yields
sequences of ``(timestamp, linktype, frame)``, one per ring block the kernel retires (at the
latest every ``block_timeout_ms``), and an empty list when nothing arrived within ``poll_ms`` so
the caller can do its housekeeping. Nothing after the source differs between live and replay.
With the C module a block's batch lies in the ring itself (``Frames``: no copy, no Python object
per packet); it is released when the caller asks for the next batch, before the block goes back to
the kernel: a batch kept past that raises ValueError, it never reads the kernel's memory again.

DESIGN.md has the measurements behind the choice (a ring read with ``mmap`` + ``struct`` keeps up
with ~950 k pkt/s; plain ``recv_into`` saturates near 300 k; libpcap bindings block forever when
traffic stops). Needs CAP_NET_RAW, and CAP_NET_ADMIN for promiscuous mode. A classic BPF filter in
the kernel passes only IPv4/IPv6 (tagged or not), so ARP, STP, LLDP... never reach Python. Its accept
length is the snap length (``snaplen``: whole frames unless told otherwise); one below a full frame
is said once at start (``EVENT=capture-snaplen``): long packets then arrive cut (capture/cut.py).
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .fast import fastpath
from .source import LINKTYPE_ETHERNET, Batch, Packet, release

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
SO_ATTACH_FILTER = 26
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
BLOCK_SIZE = 1 << 20
FRAME_SIZE = 2048  # only a hint for TPACKET_V3, which packs variable-length frames into blocks
SNAPLEN = 0x40000  # bytes of each frame captured (the BPF filter's accept length): whole frames
FULL_FRAME = 1518  # a full Ethernet frame with a VLAN tag (1514 untagged): a shorter snap length cuts packets

# version, offset_to_priv, block_status, num_pkts, offset_to_first_pkt, blk_len, seq
_block_hdr = struct.Struct("=IIIIIIQ")
_pkt_hdr = struct.Struct("=IIIIIIHH")  # next_offset, sec, nsec, snaplen, len, status, mac, net
_status = struct.Struct("=I")

# Classic BPF: accept IPv4 / IPv6, also behind one or two VLAN tags (the kernel usually strips the
# outer tag into metadata, but a SPAN port may deliver QinQ or untagged-in-software frames).
_BPF = [
    (0x28, 0, 0, 12),  # 0: ldh [12]            ethertype
    (0x15, 7, 0, 0x0800),  # 1: IPv4 -> accept
    (0x15, 6, 0, 0x86DD),  # 2: IPv6 -> accept
    (0x15, 1, 0, 0x8100),  # 3: 802.1Q -> 5
    (0x15, 0, 5, 0x88A8),  # 4: 802.1ad -> 5, else drop
    (0x28, 0, 0, 16),  # 5: ldh [16]            the tagged ethertype
    (0x15, 2, 0, 0x0800),  # 6: IPv4 -> accept
    (0x15, 1, 0, 0x86DD),  # 7: IPv6 -> accept
    (0x15, 0, 1, 0x8100),  # 8: a second tag (QinQ) -> accept, else drop
    (0x06, 0, 0, 0x00040000),  # 9: accept (whole frame, up to 256 KiB)
    (0x06, 0, 0, 0),  # 10: drop
]


@dataclass(frozen=True, slots=True)
class RingStats:
    interface: str
    packets: int  # received by the socket since the last read
    drops: int  # dropped by the kernel (ring full) since the last read
    malformed: int = 0  # blocks whose walk led off the ring since the last read: their whole packets kept


class RingSource:
    """One TPACKET_V3 ring per interface, polled together."""

    def __init__(self, interfaces: list[str], *, ring_bytes: int = 64 << 20, block_timeout_ms: int = 64,
                 poll_ms: int = 100, promiscuous: bool = True, snaplen: int = SNAPLEN) -> None:
        if not interfaces:
            raise ValueError("no capture interface configured")
        if not 0 < snaplen <= SNAPLEN:
            raise ValueError(f"snap length {snaplen} is not between 1 and {SNAPLEN}")
        self.poll_ms = poll_ms
        self.snaplen = snaplen
        warning = snaplen_warning(snaplen)
        if warning is not None:
            log.warning(warning, extra={"EVENT": "capture-snaplen"})
        self.rings = [_Ring(name, ring_bytes, block_timeout_ms, promiscuous, snaplen) for name in interfaces]
        self._poll = select.poll()
        self._by_fd = {}
        for ring in self.rings:
            self._poll.register(ring.sock.fileno(), select.POLLIN | select.POLLERR)
            self._by_fd[ring.sock.fileno()] = ring
        self.closed = False

    def batches(self) -> Iterator[Batch]:
        while not self.closed:
            got = False
            for ring in self.rings:
                for batch in ring.drain():
                    got = True
                    yield batch
            if not got:
                self._poll.poll(self.poll_ms)
                yield []

    def stats(self) -> list[RingStats]:
        return [ring.stats() for ring in self.rings]

    def close(self) -> None:
        self.closed = True
        for ring in self.rings:
            ring.close()


def _walk_block(ring: mmap.mmap | bytes, off: int, num: int, end: int = -1) -> tuple[Batch, int]:
    """The ``num`` packets of a retired block, its first at ``off`` (tpacket3_hdr walk), that lie whole
    before ``end`` (the block's end: a walk never reads a neighbouring block, which may be the
    kernel's; default the ring's end), and 1 where the block is malformed (more packets claimed than
    it can hold, or a header or a frame off it: the walk stops there, the packets before it kept),
    else 0. The C walk (``ring_block``) does the same; neither raises."""
    batch: list[Packet] = []
    append = batch.append
    unpack = _pkt_hdr.unpack_from
    size = len(ring) if end < 0 or end > len(ring) else end
    malformed = 0
    if num > size // 32:
        num, malformed = size // 32, 1
    for _ in range(num):
        if off < 0 or off > size - 32:
            return batch, 1
        nxt, sec, nsec, snap, _plen, _st, mac, _net = unpack(ring, off)
        start = off + mac
        if start + snap > size:
            return batch, 1
        append((sec + nsec * 1e-9, LINKTYPE_ETHERNET, ring[start : start + snap]))
        off += nxt
    return batch, malformed


walk_block = fastpath.ring_block if fastpath is not None else _walk_block  # the same walk in C


class _Ring:
    def __init__(self, name: str, ring_bytes: int, block_timeout_ms: int, promiscuous: bool,
                 snaplen: int = SNAPLEN) -> None:
        self.name = name
        self.block_nr = max(2, ring_bytes // BLOCK_SIZE)
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise PermissionError(f"capture on {name} needs CAP_NET_RAW (run as the service, or as root)") from None
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            _attach_filter(self.sock, snaplen)
            req = struct.pack("=IIIIIII", BLOCK_SIZE, self.block_nr, FRAME_SIZE,
                              BLOCK_SIZE // FRAME_SIZE * self.block_nr, block_timeout_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.map = mmap.mmap(self.sock.fileno(), BLOCK_SIZE * self.block_nr, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((name, ETH_P_ALL))
            if promiscuous:
                ifindex = socket.if_nametoindex(name)
                mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"cannot open capture on {name}: {exc.strerror}") from None
        self.block = 0
        self._held: set[int] = set()  # blocks whose batch a drain has handed out and not yet been given back
        self.malformed = 0  # blocks whose walk led off the ring (counted, never raised)

    def drain(self) -> Iterator[Batch]:
        """Every retired block, oldest first, each handed back to the kernel once its batch was
        used (the caller asks for the next, or stops): the batch is released first."""
        ring = self.map
        while True:
            block = self.block
            if block in self._held:  # a lap round to a block whose batch is still in use (another drain's)
                return
            base = block * BLOCK_SIZE
            _v, _p, status, num, first, _len, _seq = _block_hdr.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                return
            batch, malformed = walk_block(ring, base + first, num, base + BLOCK_SIZE)
            self.malformed += malformed
            # the position moves on now, not when the batch is done with: a second drain (a drain
            # left open while its batch is held) reads the next block, never this one again
            self.block = (block + 1) % self.block_nr
            self._held.add(block)
            try:
                yield batch
            finally:  # (also when the caller stops: the block is never left held)
                release(batch)
                _status.pack_into(ring, base + 8, TP_STATUS_KERNEL)
                self._held.discard(block)

    def stats(self) -> RingStats:
        packets, drops, _freeze = struct.unpack("=III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        malformed, self.malformed = self.malformed, 0
        return RingStats(self.name, packets, drops, malformed)

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass
        self.sock.close()


def snaplen_warning(snaplen: int) -> str | None:
    """What the service says at start when its snap length cuts full frames (None: it does not).
    A cut packet's captured bytes are still recorded, the rest is silence (capture/cut.py)."""
    if snaplen >= FULL_FRAME:
        return None
    return (f"snap length {snaplen} is below a full frame: long packets will be cut (a full frame is 1514 "
            f"bytes, {FULL_FRAME} with a VLAN tag; cut RTP keeps its captured bytes, the rest is silence)")


def _attach_filter(sock: socket.socket, snaplen: int = SNAPLEN) -> None:
    program = [(code, jt, jf, snaplen if code == 0x06 and k else k) for code, jt, jf, k in _BPF]  # accept: snaplen
    insns = b"".join(struct.pack("=HBBI", *i) for i in program)
    buf = ctypes.create_string_buffer(insns)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
