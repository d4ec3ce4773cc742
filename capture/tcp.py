"""Passive TCP reassembly of SIP signalling seen on a SPAN port.

``parse_tcp(segment)`` splits a TCP segment (the bytes after the IP header) into ports, sequence
number, flags and payload, or raises ``ValueError``. ``TcpStreams`` follows each direction
(src, sport, dst, dport) and returns whole SIP messages, framed by Content-Length (RFC 3261 18.3).
A passive observer can never ask for anything again, so the policy is:

* Sequence numbers become stream offsets (32-bit wrap-around handled), anchored at ISN+1 by a SYN,
  else at the first segment with payload (the capture began mid-connection). A SYN with a new ISN
  on a known direction is a new connection.
* Data already delivered is a retransmission, ignored; partial overlaps are trimmed; segments ahead
  are held until the gap fills. Over ``max_buffer`` held bytes the gap is taken as lost: the message
  it cut through is discarded and the stream goes on at the first held segment that begins with a
  SIP start line (else at the first held segment).
* A message begins at a SIP start line, recognised at the front of the data or after a line feed;
  bytes before one are dropped (mid-message capture start, resync), CRLF keep-alives (RFC 5626)
  silently. A header block (CRLFCRLF) plus Content-Length (or ``l``) body bytes is one message. A
  block without a usable Content-Length, or a message that cannot fit in ``max_buffer``, is dropped
  and the stream resynchronises at the next start line.
* FIN ends the stream once the data before it has arrived; RST ends it at once. ``expire`` drops
  streams idle for over ``idle_timeout`` s of packet time; beyond ``max_streams`` the least recently
  used is evicted. Between packets a stream keeps at most ``max_buffer`` unframed plus
  ``max_buffer`` held bytes.

The evidence: a segment pushed with its captured frame (``evidence``: (time, link type, frame)) keeps
that frame while its bytes wait to be framed, and ``completed`` holds, after each push, the frames of
each message it returned (same order): every segment that carried a part of that message, a segment
with parts of two messages going with the first. A retransmission that adds nothing is not kept, nor
a segment whose bytes were all skipped. A stream keeps at most ``MAX_FRAMES`` frames and
2 * ``max_buffer`` bytes of them (``evidence_frames_over_cap`` counts the others).

Counted on the caller's ``Counter``: ``tcp_messages``, ``tcp_retransmission``, ``tcp_gap_skipped``,
``tcp_sip_unframed``, ``tcp_message_too_large``, ``tcp_bytes_skipped`` (dropped before a start
line), ``tcp_stream_evicted``, ``tcp_stream_expired``.
"""
from __future__ import annotations

import heapq
import struct
from collections import Counter, OrderedDict, deque

from .sip import METHODS, SIP_VERSION, looks_like_sip

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10
HEADER_SIZE = 20
SEQ_MASK = 0xFFFFFFFF
SEQ_HALF = 1 << 31
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = (b"content-length", b"l")
MAX_LENGTH_DIGITS = 9  # a longer Content-Length is certainly over max_buffer
START_PROBE = 12  # bytes looks_like_sip() looks at
STARTS = tuple(m + b" " for m in METHODS) + (SIP_VERSION.encode() + b" ",)
# captured frames kept per stream for the evidence (a 1400-byte INVITE in 1-byte segments is more: counted)
MAX_FRAMES = 64

StreamKey = tuple[bytes, int, bytes, int]
Frame = tuple[float, int, bytes]  # (time, link type, frame) as captured
_header = struct.Struct("!HHIxxxxBB")  # ports, seq, (ack), data offset, flags


def parse_tcp(segment: bytes) -> tuple[int, int, int, int, bytes]:
    """(src_port, dst_port, seq, flags, payload) of a TCP segment (the bytes after the IP header);
    ValueError when malformed (data offset < 5 or beyond the segment)."""
    n = len(segment)
    if n < HEADER_SIZE:
        raise ValueError(f"TCP segment of {n} bytes is shorter than the {HEADER_SIZE}-byte header")
    sport, dport, seq, offset, flags = _header.unpack_from(segment)
    size = (offset >> 4) * 4
    if size < HEADER_SIZE:
        raise ValueError(f"TCP data offset of {size} bytes is less than {HEADER_SIZE}")
    if size > n:
        raise ValueError(f"TCP data offset of {size} bytes is beyond the {n}-byte segment")
    return sport, dport, seq, flags, segment[size:]


class _Stream:
    """One direction of one connection: where it is, what waits behind a gap, what is unframed."""

    __slots__ = ("isn", "anchor", "pos", "fin", "last", "buf", "need", "scanned", "held", "starts", "held_bytes",
                 "frames", "held_frames", "frame_bytes")

    def __init__(self, isn: int | None, anchor: int, ts: float) -> None:
        self.isn = isn  # sequence number of the SYN that opened the stream; None when not seen
        self.anchor = anchor  # 32-bit sequence number of stream offset 0
        self.pos = 0  # stream offset of the next byte expected
        self.fin: int | None = None  # stream offset at which the sender's FIN sits
        self.last = ts
        self.buf = bytearray()  # contiguous bytes ending at pos, not yet framed
        self.need = 0  # size of the message at the front of buf once its header block is read
        self.scanned = 0  # how far buf has been searched for the end of the header block
        self.held: dict[int, bytes] = {}  # stream offset -> segment waiting behind a gap
        self.starts: list[int] = []  # heap of the offsets in held
        self.held_bytes = 0
        self.frames: deque[tuple[int, int, Frame]] = deque()  # (start, end, frame) of the bytes taken in, in order
        self.held_frames: dict[int, Frame] = {}  # stream offset -> the frame of the segment held there
        self.frame_bytes = 0  # bytes of the frames kept in both

    def offset(self, seq: int) -> int:
        """Stream offset of a 32-bit sequence number, on whichever side of ``pos`` is nearer."""
        delta = (seq - self.anchor - self.pos) & SEQ_MASK
        return self.pos + (delta - SEQ_MASK - 1 if delta >= SEQ_HALF else delta)


class TcpStreams:
    """The TCP directions being followed, least recently used first."""

    def __init__(
        self, counters: Counter[str], *, max_streams: int = 4096, max_buffer: int = 65536, idle_timeout: float = 300.0
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {idle_timeout}")
        self.counters = counters
        self.max_streams = max_streams
        self.max_buffer = max_buffer
        self.idle_timeout = idle_timeout
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self.completed: list[list[Frame]] = []  # the frames of each message the last push returned

    def __len__(self) -> int:
        return len(self._streams)

    def follows(self, src: bytes, sport: int, dst: bytes, dport: int) -> bool:
        """Whether this direction is being followed (the caller starts new ones only at SIP)."""
        return (src, sport, dst, dport) in self._streams

    @property
    def buffered(self) -> int:
        """Bytes kept over all streams, unframed and held (for stats; walks every stream)."""
        return sum(len(s.buf) + s.held_bytes for s in self._streams.values())

    def push(
        self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, seq: int, flags: int, payload: bytes,
        evidence: Frame | None = None,
    ) -> list[bytes]:
        """Feed one segment of one direction (``evidence``: its captured frame, kept for the evidence
        pcap); returns the complete SIP messages (each as bytes, exactly one message) that this segment
        completes, in stream order, and their frames in ``completed``."""
        self.completed = []
        key = (src, sport, dst, dport)
        streams = self._streams
        stream = streams.get(key)
        if flags & SYN:
            if stream is None or stream.isn != seq:  # a retransmitted SYN changes nothing
                stream = streams[key] = _Stream(seq, (seq + 1) & SEQ_MASK, ts)
            seq = (seq + 1) & SEQ_MASK  # the SYN takes one sequence number
        elif stream is None:
            if not payload or flags & RST:
                return []  # nothing to follow: no state for pure ACKs or stray FINs
            stream = streams[key] = _Stream(None, seq & SEQ_MASK, ts)
        streams.move_to_end(key)
        stream.last = ts
        if len(streams) > self.max_streams:
            streams.popitem(last=False)
            self.counters["tcp_stream_evicted"] += 1
        start = stream.offset(seq)
        out = self._accept(stream, start, payload, evidence) if payload else []
        if flags & FIN:
            stream.fin = start + len(payload)
        if flags & RST or (stream.fin is not None and stream.pos >= stream.fin):
            del streams[key]
        return out

    def expire(self, now: float) -> None:
        """Drop the streams idle for more than idle_timeout, oldest first (stops at a live one)."""
        streams = self._streams
        while streams:
            stream = next(iter(streams.values()))
            if now - stream.last <= self.idle_timeout:
                break
            streams.popitem(last=False)
            self.counters["tcp_stream_expired"] += 1

    # -- sequence space -------------------------------------------------------------------------

    def _accept(self, stream: _Stream, start: int, payload: bytes, evidence: Frame | None) -> list[bytes]:
        end = start + len(payload)
        if end <= stream.pos:
            self.counters["tcp_retransmission"] += 1
            return []
        if start > stream.pos:
            self._hold(stream, start, payload, evidence)
            return self._skip_gaps(stream)
        if evidence is not None and self._room(stream, evidence):
            stream.frames.append((start, end, evidence))
        stream.buf += memoryview(payload)[stream.pos - start :]  # trims an overlap
        stream.pos = end
        self._drain(stream)
        return self._frame(stream)

    def _hold(self, stream: _Stream, start: int, payload: bytes, evidence: Frame | None) -> None:
        old = stream.held.get(start)
        if old is None:
            heapq.heappush(stream.starts, start)
        elif len(old) >= len(payload):
            self.counters["tcp_retransmission"] += 1
            return
        else:
            stream.held_bytes -= len(old)
            self._forget_held_frame(stream, start)  # the longer copy's frame instead
        stream.held[start] = payload
        stream.held_bytes += len(payload)
        if evidence is not None and self._room(stream, evidence):
            stream.held_frames[start] = evidence

    def _room(self, stream: _Stream, evidence: Frame) -> bool:
        """Whether one more frame may be kept for this stream's evidence (counted when not)."""
        if len(stream.frames) + len(stream.held_frames) >= MAX_FRAMES or (
            stream.frame_bytes + len(evidence[2]) > 2 * self.max_buffer
        ):
            self.counters["evidence_frames_over_cap"] += 1
            return False
        stream.frame_bytes += len(evidence[2])
        return True

    def _forget_held_frame(self, stream: _Stream, start: int) -> None:
        frame = stream.held_frames.pop(start, None)
        if frame is not None:
            stream.frame_bytes -= len(frame[2])

    def _drain(self, stream: _Stream) -> None:
        """Move the held segments the stream has caught up with into the buffer."""
        starts = stream.starts
        while starts and starts[0] <= stream.pos:
            start = heapq.heappop(starts)
            data = stream.held.pop(start)
            stream.held_bytes -= len(data)
            end = start + len(data)
            frame = stream.held_frames.pop(start, None)
            if end > stream.pos:
                if frame is not None:
                    stream.frames.append((start, end, frame))
                stream.buf += memoryview(data)[stream.pos - start :]
                stream.pos = end
            elif frame is not None:
                stream.frame_bytes -= len(frame[2])  # nothing new in it

    def _skip_gaps(self, stream: _Stream) -> list[bytes]:
        """While more than max_buffer bytes wait behind a gap, give the gap up as lost."""
        out: list[bytes] = []
        while stream.held_bytes > self.max_buffer:
            self.counters["tcp_gap_skipped"] += 1
            self._drop(stream, len(stream.buf))  # the message the gap cut through
            stream.need = stream.scanned = 0
            held, starts = stream.held, stream.starts
            stream.pos = next((s for s in sorted(starts) if _starts_message(held[s])), starts[0])
            while starts[0] < stream.pos:  # held data before that start line is part of the lost message
                start = heapq.heappop(starts)
                data = held.pop(start)
                self._forget_held_frame(stream, start)
                stream.held_bytes -= len(data)
                self.counters["tcp_bytes_skipped"] += len(data)
            self._drain(stream)
            out += self._frame(stream)
        return out

    # -- framing --------------------------------------------------------------------------------

    def _frame(self, stream: _Stream) -> list[bytes]:
        """Cut every complete message off the front of the buffer."""
        out: list[bytes] = []
        buf = stream.buf
        while True:
            if not stream.need:
                if not self._find_start(stream):
                    return out
                end = buf.find(HEADER_END, stream.scanned)
                if end < 0:
                    if len(buf) <= self.max_buffer:
                        stream.scanned = max(0, len(buf) - len(HEADER_END) + 1)
                        return out
                    self._reject(stream, "tcp_message_too_large")
                    continue
                length = _content_length(bytes(buf[:end]))
                if length is None:
                    self._reject(stream, "tcp_sip_unframed")
                    continue
                stream.need = end + len(HEADER_END) + length
                if stream.need > self.max_buffer:
                    self._reject(stream, "tcp_message_too_large")
                    continue
            if len(buf) < stream.need:
                return out
            out.append(bytes(buf[: stream.need]))
            self.completed.append(self._frames_of(stream, stream.pos - len(buf), stream.need))
            del buf[: stream.need]
            stream.need = stream.scanned = 0
            self.counters["tcp_messages"] += 1

    def _frames_of(self, stream: _Stream, begin: int, size: int) -> list[Frame]:
        """The kept frames of the message at stream offsets [begin, begin + size): those that carried
        a byte of it, and any reaching beyond (a segment goes with the first message it carries);
        frames whose bytes were all skipped before it are let go."""
        frames, end, mine = stream.frames, begin + size, []
        while frames and frames[0][0] < end:
            _start, stop, frame = frames.popleft()
            stream.frame_bytes -= len(frame[2])
            if stop > begin:
                mine.append(frame)
        return mine

    def _find_start(self, stream: _Stream) -> bool:
        """Skip keep-alive CRLFs and any bytes before the first SIP start line. False when there is
        none yet; then only a tail that may still grow into one is kept."""
        buf = stream.buf
        i = 0
        while i < len(buf) and buf[i] in b"\r\n":
            i += 1
        del buf[:i]
        pos = 0
        while not looks_like_sip(bytes(buf[pos : pos + START_PROBE])):
            newline = buf.find(b"\n", pos)
            if newline < 0:
                tail = bytes(buf[pos:])
                if not any(s.startswith(tail) for s in STARTS):
                    pos = len(buf)
                self._drop(stream, pos)
                return False
            pos = newline + 1
        self._drop(stream, pos)
        return True

    def _reject(self, stream: _Stream, reason: str) -> None:
        """Give up the message at the front of the buffer; the next start line is looked for."""
        self.counters[reason] += 1
        stream.need = stream.scanned = 0
        self._drop(stream, 1)

    def _drop(self, stream: _Stream, n: int) -> None:
        if n:
            del stream.buf[:n]
            self.counters["tcp_bytes_skipped"] += n
            frames, begin = stream.frames, stream.pos - len(stream.buf)
            while frames and frames[0][1] <= begin:  # frames of skipped bytes only: not evidence of a message
                stream.frame_bytes -= len(frames.popleft()[2][2])


def _starts_message(segment: bytes) -> bool:
    """Whether a segment begins with a SIP start line (after a keep-alive or two)."""
    return looks_like_sip(segment[: START_PROBE + 4].lstrip(b"\r\n"))


def _content_length(head: bytes) -> int | None:
    """Content-Length of a header block (full or compact name); None when absent or not a number.
    Lines are split as SipMessage.parse splits them; folded continuation lines are not headers."""
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in CONTENT_LENGTH:
            value = value.strip()
            if not value.isdigit():
                return None
            value = value.lstrip(b"0") or b"0"
            return int(value) if len(value) <= MAX_LENGTH_DIGITS else 10**MAX_LENGTH_DIGITS
    return None
