"""IPv4 and IPv6 fragment reassembly for a passive capture.

A SPAN port shows fragments as the wire carried them: out of order, duplicated, now and then crafted.
The decoder parses each fragment's IP (and IPv6 Fragment) header and hands the rest to
``FragmentReassembler.push``, which returns the upper-layer payload (for UDP: the whole datagram with
its header) once that fragment completes it. Every outcome is counted on the caller's ``Counter``.

* A datagram is keyed by (IP version, source, destination, identification, upper-layer protocol).
  Time is packet time: a datagram has ``timeout`` seconds from its first fragment (later fragments do
  not extend it), enforced by ``expire`` and when a fragment for a stale datagram arrives
  (``fragments_timeout``). ``expire`` walks datagrams oldest first and stops at the first young one.
* Memory is bounded: at most ``max_datagrams`` pending and ``max_bytes`` held, each held piece
  charged its length plus ``PIECE_OVERHEAD`` so a flood of tiny fragments is bounded too. When a
  limit would be exceeded the oldest pending datagram is dropped (``fragments_evicted``), even when
  it is the one the new fragment belongs to.
* Held pieces are sorted and disjoint. A fragment overlapping held data must agree with it byte for
  byte: then only its new bytes are kept. If it disagrees, the whole datagram is dropped
  (``fragments_overlap``), as RFC 5722 does for IPv6: guessing which copy is true would let a
  crafted fragment rewrite the SIP we record. A fragment that adds nothing (an exact duplicate, or
  one wholly inside agreeing held data) is ignored (``fragments_duplicate``).
* The final fragment (MF / M clear) fixes the length. Data beyond it (held or arriving), or a second
  final fragment with another end, drops the datagram (``fragments_inconsistent``). A fragment reaching beyond
  65535 bytes drops its datagram at once (``fragments_oversize``): IPv6 jumbograms cannot be
  fragmented (RFC 2675), so the limit is the same for both versions.
* A non-final fragment that is empty or not a multiple of 8 long, or an offset that is negative or
  not a multiple of 8, is ``fragments_malformed``: that fragment alone is dropped.
* An atomic fragment (offset 0 and final, RFC 6946) is returned as it is, apart from any pending
  reassembly with the same key (``fragments_atomic``).
* After a drop or a completion, later fragments with the same key start a new datagram, which times
  out or is evicted: a late copy cannot be told from a new datagram reusing the identification.
* The evidence: a fragment pushed with its captured frame (``evidence``: (time, link type, frame)) keeps
  that frame with its datagram when it adds bytes to it (a duplicate adds nothing and is not kept), and
  ``completed`` holds, after the push that completes a datagram, the frames that made it, in arrival
  order: the call's evidence pcap gets every original fragment. At most ``MAX_FRAMES`` are kept per
  datagram (``evidence_frames_over_cap`` counts the others); each kept frame is charged its length
  against ``max_bytes`` like a piece.
"""
from __future__ import annotations

import collections
from bisect import bisect_left, bisect_right

MAX_PAYLOAD = 65535
PIECE_OVERHEAD = 80  # bytes charged per held piece for the objects that hold it
MAX_FRAMES = 64  # original frames kept per datagram for the evidence (a 65535-byte datagram in 1480-byte fragments: 45)

Key = tuple[int, bytes, bytes, int, int]
Frame = tuple[float, int, bytes]  # (time, link type, frame) as captured


class _Datagram:
    """One datagram being reassembled: disjoint pieces sorted by offset."""

    __slots__ = ("first_ts", "starts", "pieces", "held", "high", "total", "cost", "frames")

    def __init__(self, first_ts: float) -> None:
        self.first_ts = first_ts
        self.starts: list[int] = []  # offset of each piece, ascending
        self.pieces: list[bytes] = []
        self.held = 0  # payload bytes held
        self.high = 0  # end of the last piece
        self.total: int | None = None  # length, once the final fragment is seen
        self.cost = 0  # charged against max_bytes
        self.frames: list[Frame] = []  # the original frames that added bytes, for the evidence

    def add(self, start: int, piece: bytes) -> None:
        if start >= self.high:
            self.starts.append(start)
            self.pieces.append(piece)
            self.high = start + len(piece)
        else:
            i = bisect_left(self.starts, start)
            self.starts.insert(i, start)
            self.pieces.insert(i, piece)
        self.held += len(piece)
        self.cost += len(piece) + PIECE_OVERHEAD

    def new_parts(self, offset: int, data: bytes) -> list[tuple[int, bytes]] | None:
        """The parts of ``data`` (at ``offset``) not held yet, or None if it disagrees with held data."""
        starts, pieces = self.starts, self.pieces
        end = offset + len(data)
        i = bisect_right(starts, offset) - 1
        if i < 0 or starts[i] + len(pieces[i]) <= offset:
            i += 1
        parts: list[tuple[int, bytes]] = []
        pos = offset
        while pos < end and i < len(starts) and starts[i] < end:
            start, piece = starts[i], pieces[i]
            if start > pos:
                parts.append((pos, data[pos - offset : start - offset]))
                pos = start
            stop = min(end, start + len(piece))
            if memoryview(piece)[pos - start : stop - start] != memoryview(data)[pos - offset : stop - offset]:
                return None
            pos = stop
            i += 1
        if pos < end:
            parts.append((pos, data[pos - offset :]))
        return parts


class FragmentReassembler:
    """Pending IP datagrams, bounded in number, bytes and (packet) time."""

    __slots__ = ("counters", "max_datagrams", "max_bytes", "timeout", "_pending", "_bytes", "completed")

    def __init__(self, counters: collections.Counter[str], *, max_datagrams: int = 1024,
                 max_bytes: int = 4 * 1024 * 1024, timeout: float = 30.0) -> None:
        if max_datagrams < 1:
            raise ValueError(f"max_datagrams must be at least 1, not {max_datagrams}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        if not timeout > 0:  # also refuses NaN
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.counters = counters
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        # Oldest first. An OrderedDict pops its front in O(1); a dict scans the holes left in front.
        self._pending: collections.OrderedDict[Key, _Datagram] = collections.OrderedDict()
        self._bytes = 0
        self.completed: list[Frame] = []  # the frames of the datagram the last push completed

    @property
    def pending(self) -> int:
        """Datagrams awaiting fragments."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes charged against ``max_bytes`` (payload plus per-piece overhead)."""
        return self._bytes

    def push(
        self, ts: float, version: int, src: bytes, dst: bytes, ident: int, proto: int,
        offset: int, more: bool, data: bytes, evidence: Frame | None = None,
    ) -> bytes | None:
        """Add one fragment (``evidence``: its captured frame, kept for the call's evidence pcap); the
        reassembled upper-layer payload if it completes its datagram (then its frames are in ``completed``)."""
        counters = self.counters
        if offset < 0 or offset & 7 or (more and (not data or len(data) & 7)):
            counters["fragments_malformed"] += 1
            return None
        if offset == 0 and not more:
            counters["fragments_atomic"] += 1
            self.completed = [evidence] if evidence is not None else []
            return data
        key = (version, src, dst, ident, proto)
        dgram = self._pending.get(key)
        end = offset + len(data)
        if end > MAX_PAYLOAD:
            self._fail(key, dgram, "fragments_oversize")
            return None
        if dgram is not None and ts - dgram.first_ts > self.timeout:
            self._fail(key, dgram, "fragments_timeout")
            dgram = None
        if dgram is None:
            while len(self._pending) >= self.max_datagrams:
                self._evict_oldest()
            dgram = self._pending[key] = _Datagram(ts)
        total = dgram.total
        if more:
            if total is not None and end > total:
                self._fail(key, dgram, "fragments_inconsistent")
                return None
        elif (total is not None and end != total) or end < dgram.high:
            self._fail(key, dgram, "fragments_inconsistent")
            return None
        else:
            total = end
        kept = len(evidence[2]) if evidence is not None and len(dgram.frames) < MAX_FRAMES else 0  # its frame's charge
        if offset >= dgram.high:  # in order, or after a gap: nothing to compare
            if data or kept:
                if not self._reserve(dgram, (len(data) + PIECE_OVERHEAD if data else 0) + kept):
                    return None
                if data:
                    dgram.add(offset, data)
        else:
            parts = dgram.new_parts(offset, data)
            if parts is None:
                self._fail(key, dgram, "fragments_overlap")
                return None
            if not parts and total == dgram.total:
                counters["fragments_duplicate"] += 1
                return None
            cost = sum(len(piece) + PIECE_OVERHEAD for _, piece in parts)
            if not self._reserve(dgram, cost + kept):
                return None
            for start, piece in parts:
                dgram.add(start, piece)
        if kept:
            dgram.frames.append(evidence)  # type: ignore[arg-type]
            dgram.cost += kept
        elif evidence is not None:
            counters["evidence_frames_over_cap"] += 1
        dgram.total = total
        if dgram.held != total:
            return None
        del self._pending[key]
        self._bytes -= dgram.cost
        counters["fragments_reassembled"] += 1
        self.completed = dgram.frames
        return b"".join(dgram.pieces)

    def expire(self, now: float) -> None:
        """Drop the datagrams whose first fragment is more than ``timeout`` before ``now``."""
        pending = self._pending
        while pending:
            key = next(iter(pending))
            dgram = pending[key]
            if now - dgram.first_ts <= self.timeout:
                return
            self._fail(key, dgram, "fragments_timeout")

    def _fail(self, key: Key, dgram: _Datagram | None, reason: str) -> None:
        """Count ``reason`` and drop the datagram, if there is one."""
        self.counters[reason] += 1
        if dgram is not None:
            del self._pending[key]
            self._bytes -= dgram.cost

    def _evict_oldest(self) -> _Datagram:
        key = next(iter(self._pending))
        dgram = self._pending[key]
        self._fail(key, dgram, "fragments_evicted")
        return dgram

    def _reserve(self, dgram: _Datagram, cost: int) -> bool:
        """Make room for ``cost`` more bytes in ``dgram``; False if ``dgram`` itself was evicted."""
        while self._bytes + cost > self.max_bytes:
            if self._evict_oldest() is dgram:
                return False
        self._bytes += cost
        return True
