"""StreamAssembler: one direction of a recorded call, from RTP packets to placed audio.

Positions are in the call's RTP clock units (8 kHz for G.711 and G.722, 48 kHz for Opus); the sink
turns them into samples. Each packet of the recording's codec is placed by its RTP timestamp: the
first packet of a source
(SSRC) is anchored at its arrival time in the recording, later ones at ``anchor + (ts - ts0)``
(32-bit wrap handled). Duplicates are dropped by sequence number; gaps are left to the writer, which
fills them with the codec's silence. When a packet arrives more than ``DRIFT_LIMIT_S`` (capture/call.py) later than its
timestamp says (a sender that paused on hold and resumed with a timestamp that did not advance), the
source is re-anchored at its arrival time, so the pause stays as silence; a burst delayed by a
network stall shorter than that is placed by its timestamps (the writer patches what it had already
written). A timestamp *ahead* of the arrival clock (a fast sender clock) is trusted: re-anchoring
there would only pile anchors on top of audio already written. Only a leap ahead of both the
arrival clock and the audio written by more than ``DRIFT_LIMIT_S`` (a sender that reset its clock,
or a forged packet) is re-anchored: trusted, one packet could open hours of silence (2^31 ticks
are 74 hours at 8 kHz) and fill memory and disk with it.
Packets of other payload types (DTMF events, comfort noise, other codecs) are counted, not mixed in.

A direction's packets come from one source (``source``: address bytes and port), learned from its
first packet (``learned``; the pipeline checks it before a packet reaches :meth:`packet`): packets
from any other address or port are not the call's sender (a flood, a spoofed SSRC) and are dropped
and counted (``other_source``), unless they come from an address the sender's SDP announced
(``announced``: symmetric RTP), to which the source then moves. When the sender announces a new media address (a re-INVITE), a packet from elsewhere that
carries its SSRC also moves the source (a sender behind NAT): until then the old source still
counts as its own. At most ``MAX_SSRCS`` SSRCs are kept for the record.

Two mirror sessions onto the SPAN port (ingress and egress, a local and a remote SPAN) deliver each
packet two or three times, microseconds apart. A packet identical to one of the direction's last
``MIRROR_RING`` (same SSRC, sequence number, timestamp, payload type and payload) that arrives within
``MIRROR_WINDOW_S`` of it is such a copy: dropped before anything else looks at it (no evidence
frame, no figure changes) and counted in ``mirror_duplicates``. An identical packet later than that
is the sender's (or the network's) duplicate as before: counted in ``duplicates``, a quality figure.
A truncating mirror's copy (cut short by the capture: :meth:`StreamAssembler.cut`) is a copy when its
captured bytes begin the other's payload. Whichever comes first, the recording has the most of the
packet that arrived: a whole copy after a cut one is placed over the silence the cut one was
completed with (the cut one is then not counted in ``truncated``; the whole frame goes into the
evidence too), a cut copy after a whole one is dropped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .cut import completed
from .fast import fastpath
from .lanes import PyLanes, PyRecords
from .rtp import PT_CN
from .sink import StreamStats

if TYPE_CHECKING:
    from .call import Call

SEQ_WINDOW = 64  # how far back a reordered packet is still checked for duplication
MAX_EVENTS = 1000  # DTMF events kept per direction
DTMF = "0123456789*#ABCD"
MAX_ANCHORS = 32  # anchorings kept for the record (each SSRC change or clock jump adds one)
MAX_SSRCS = 32  # SSRCs kept for the record (each change adds one)
MIRROR_WINDOW_S = 0.010  # a copy this close to the first is a second mirror session's (the C module's too)
MIRROR_RING = 8  # the last packets of a direction a copy is compared with, by sequence number (the C module's too)


class _PyStreamCore:
    """The per-packet state of a stream; in C (``_fastpath.StreamCore``) when the module is built,
    which then also runs the steady case of :meth:`StreamAssembler.packet` once armed."""

    __slots__ = (
        "channel", "ssrc", "base_ts", "base_pos", "end", "max_seq", "seen", "ext_max", "received", "packets",
        "duplicates", "jitter", "last_transit", "last_arrival", "max_gap", "learned", "source", "other_source",
        "recent", "mirror_duplicates",
    )
    channel: int
    ssrc: int | None
    base_ts: int
    base_pos: int
    end: int
    max_seq: int
    seen: int
    ext_max: int
    received: int
    packets: int
    duplicates: int
    jitter: float
    last_transit: float | None
    last_arrival: float
    max_gap: float
    learned: bool
    source: tuple[bytes, int] | None
    other_source: int
    recent: list[tuple[int, int, int, int, float, bytes, int] | None]
    mirror_duplicates: int

    def __new__(cls, *args: object) -> _PyStreamCore:
        self = super().__new__(cls)
        self.recent = [None] * MIRROR_RING  # made once: a new part (StreamAssembler.__init__ again) keeps it
        return self

    def mirror_copy(self, ts: float, seq: int, rtp_ts: int, ssrc: int, pt: int, payload: bytes, cut: int = 0) -> int:
        """Whether this packet is a second mirror session's copy of one of the last seen (counted):
        0 not a copy (it is remembered as the first of its kind), 1 a copy (dropped), 2 a copy that
        holds more of the packet than the one remembered (that one was cut short by the capture,
        ``cut`` 1, its ``payload`` the captured bytes only; this one whole, or cut less short): it is
        remembered instead, and its payload goes over the silence the cut one was completed with."""
        slot = seq & (MIRROR_RING - 1)
        first = self.recent[slot]
        if (
            first is not None and first[0] == seq and first[1] == rtp_ts and first[2] == ssrc and first[3] == pt
            and -MIRROR_WINDOW_S <= ts - first[4] <= MIRROR_WINDOW_S
        ):
            copy = _same_packet(first[5], first[6], payload, cut)
            if copy:
                self.mirror_duplicates += 1
                if copy == 1:
                    return 1
        else:
            copy = 0
        self.recent[slot] = (seq, rtp_ts, ssrc, pt, ts, payload, cut)
        return copy

    def arm(self, audio_pt: int, t0: float, clock: float, drift_limit: float, lanes: PyLanes,
            records: PyRecords | None = None) -> None:
        """The C kernel takes over the steady case here, writing into capture's buffers ``lanes`` and
        ``records`` (capture/lanes.py; capture/call.py ``_arm``); in Python there is nothing to do."""

    def disarm(self) -> None:
        pass


def _same_packet(had: bytes, had_cut: int, payload: bytes, cut: int) -> int:
    """(StreamCore's mirror_match in C) The same packet as the one remembered (same header): 1 when
    it holds no more of it, 2 when it holds more (the one remembered was cut shorter), 0 not the same.
    A cut packet's bytes are the same packet's when they begin the other's."""
    a, b = len(had), len(payload)
    if not had_cut and not cut:
        return 1 if had == payload else 0
    if had_cut and cut:
        n = min(a, b)
        return (2 if b > a else 1) if had[:n] == payload[:n] else 0
    if had_cut:  # the first was cut, this one whole
        return (2 if b > a else 1) if b >= a and payload[:a] == had else 0
    return 1 if b <= a and had[:b] == payload else 0  # the first whole, this one cut


if TYPE_CHECKING:  # the C type has the same names (capture/_fastpath.c core_members, core_getset)
    _StreamCore = _PyStreamCore
else:
    _StreamCore = fastpath.StreamCore if fastpath is not None else _PyStreamCore


class StreamAssembler(_StreamCore):
    __slots__ = (
        "call", "ssrcs", "first_ext", "expected_before", "other_payload", "anchors", "ignorable", "events", "early",
        "announced", "truncated", "cuts",
    )

    def __init__(self, call: Call, channel: int) -> None:
        self.call = call
        self.channel = channel
        self.ssrc: int | None = None
        self.ssrcs: list[int] = []
        self.base_ts = 0
        self.base_pos = 0
        self.end = 0  # one past the last sample written
        self.max_seq = 0  # highest 16-bit sequence number of the current source
        self.seen = 0  # bit i set: sequence number (max_seq - i) received
        self.first_ext = 0
        self.ext_max = 0
        self.expected_before = 0  # packets expected from sources before the current one
        self.received = 0  # distinct packets of any payload type (for loss)
        self.packets = 0  # packets of the recording's codec placed in the audio
        self.duplicates = 0
        self.other_payload = 0
        self.anchors: list[tuple[int, int, int]] = []
        self.jitter = 0.0
        self.last_transit: float | None = None
        self.last_arrival = 0.0
        self.max_gap = 0.0  # longest silence between two packets of this direction, s
        self.ignorable = 0  # DTMF events and comfort noise: not audio, not a codec problem
        self.events: list[list[float | str]] = []  # DTMF: [seconds into the recording, digit, duration ms]
        self.learned = False  # whether this direction's real source address was learned (NAT)
        self.source: tuple[bytes, int] | None = None  # (address, port) its packets come from, once learned
        self.other_source = 0  # packets from another source: not this direction's sender, dropped
        self.announced: set[tuple[bytes, int]] = set()  # its sender's media addresses, as its SDP announced them
        self.early = 0  # packets whose place would be before the recording's start: dropped
        self.truncated = 0  # audio packets cut short by the capture: captured bytes placed, the rest silence
        self.mirror_duplicates = 0  # copies of a packet a second mirror session delivered again: dropped
        self.cuts: list[tuple[int, int, int, int] | None] = [None] * MIRROR_RING  # cut packets placed, by
        #   sequence number as the mirror ring: (seq, rtp_ts, ssrc, position), for a whole copy to go over

    def packet(self, ts: float, pt: int, seq: int, rtp_ts: int, ssrc: int, payload: bytes, frame: bytes = b"",
               linktype: int = 1, again: bool = False) -> None:
        """``again``: a packet a codec change held back (Call.codec_changed), placed in the new part now."""
        if not again:
            copy = self.mirror_copy(ts, seq, rtp_ts, ssrc, pt, payload)
            if copy:  # a second mirror session's copy of a packet just seen: as if it had not come,
                if copy == 2:  # unless the first was cut short by the capture and this one is whole
                    self._uncut(ts, seq, rtp_ts, ssrc, payload, frame, linktype, whole=True)
                return
        call = self.call
        last = self.last_arrival
        if last and ts - last > self.max_gap:
            self.max_gap = ts - last
        self.last_arrival = ts
        if call.handle is None and not call.accepts_payload(pt, ts):
            self._not_audio(pt, rtp_ts, payload, placed=False)  # before the first audio packet
            return
        if pt != call.audio_pt and call.codec_changed(self, ts, pt, seq, rtp_ts, ssrc, payload, frame, linktype) \
                and call.handle is None:
            self.other_payload += 1  # a codec change whose part the store could not open (full): counted
            return  # (else this packet is the first of the new part, whose figures both directions begin afresh)
        if ssrc != self.ssrc and call.end is not None:  # after the BYE only media already flowing is ours
            call.late_strangers += 1
            return
        if frame and call.evidence is not None:
            call.evidence(ts, linktype, frame)
        if ssrc != self.ssrc:
            self._new_source(ts, seq, rtp_ts, ssrc)
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if delta == 0:
                self.duplicates += 1
                return
            if delta < 0x8000:  # newer
                self.max_seq = seq
                self.ext_max += delta
                self.seen = ((self.seen << delta) | 1) & 0xFFFFFFFFFFFFFFFF
            else:  # older: reordered or duplicate
                back = 0x10000 - delta
                if back < SEQ_WINDOW:
                    bit = 1 << back
                    if self.seen & bit:
                        self.duplicates += 1
                        return
                    self.seen |= bit
        self.received += 1
        if pt != call.audio_pt and not call.accepts_payload(pt, ts):
            self._not_audio(pt, rtp_ts, payload, placed=True)  # DTMF, comfort noise, another codec
            return
        offset = ((rtp_ts - self.base_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        pos = self.base_pos + offset
        arrival = (ts - call.t0) * call.clock
        if arrival - pos > call.drift_limit or (pos - arrival > call.drift_limit and pos - self.end > call.drift_limit):
            # the sender paused without advancing its clock, or its clock leapt far ahead
            self.base_pos = pos = max(int(arrival + 0.5), self.end)
            self.base_ts = rtp_ts
            self._anchor(ssrc, rtp_ts, pos)
        if pos < 0:  # would sit before the recording began (a packet from before the call, or forged)
            self.early += 1
            return
        transit = arrival - offset
        last_transit = self.last_transit
        if last_transit is not None:
            d = transit - last_transit
            self.jitter += ((d if d >= 0 else -d) - self.jitter) * 0.0625
        self.last_transit = transit
        self.packets += 1
        stop = pos + len(payload)
        if stop > self.end:
            self.end = stop
        if payload:  # (an Opus packet cut short has none: its place stays silent, nothing is made up)
            call.handle.audio(self.channel, pos, payload)  # type: ignore[union-attr]

    def cut(self, ts: float, pt: int, seq: int, rtp_ts: int, ssrc: int, captured: bytes, missing: int,
            frame: bytes, linktype: int) -> bool:
        """A packet the capture cut short (``missing`` payload bytes not captured): its payload
        completed with its codec's silence (capture/cut.py) and placed as any packet is; True (and
        counted in ``truncated``) when it went into the audio."""
        copy = self.mirror_copy(ts, seq, rtp_ts, ssrc, pt, captured, 1)
        if copy == 1:
            return False  # a copy of a packet just seen (whole, or cut as short or shorter): dropped
        codec = self.call.codecs.get(pt)
        payload = completed(codec.name if codec is not None else "", captured, missing)
        if copy == 2:  # a copy of one cut shorter: its longer captured part goes over (still cut short)
            self._uncut(ts, seq, rtp_ts, ssrc, payload, frame, linktype, whole=False)
            return False
        placed = self.packets
        self.packet(ts, pt, seq, rtp_ts, ssrc, payload, frame, linktype, again=True)
        if self.packets == placed:
            return False
        self.truncated += 1
        offset = ((rtp_ts - self.base_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        self.cuts[seq & (MIRROR_RING - 1)] = (seq, rtp_ts, ssrc, self.base_pos + offset)  # where it went
        return True

    def _uncut(self, ts: float, seq: int, rtp_ts: int, ssrc: int, payload: bytes, frame: bytes, linktype: int,
               *, whole: bool) -> None:
        """A second mirror session's copy of a packet placed cut short (``cuts``) that holds more of
        it: its payload goes where the cut one went, over the silence that completed it (and its
        frame into the evidence, which then holds the bytes the recording has). Whole, the packet
        is no longer counted in ``truncated``. (Counted in ``mirror_duplicates`` by mirror_copy.)"""
        slot = seq & (MIRROR_RING - 1)
        placed = self.cuts[slot]
        call = self.call
        if placed is None or placed[0] != seq or placed[1] != rtp_ts or placed[2] != ssrc or call.handle is None:
            return  # the cut one was not placed (before the answer, a duplicate...): neither is this
        pos = placed[3]
        if frame and call.evidence is not None:
            call.evidence(ts, linktype, frame)
        stop = pos + len(payload)
        if stop > self.end:
            self.end = stop
        if payload:
            call.handle.audio(self.channel, pos, payload)
        if whole:
            self.truncated -= 1
            self.cuts[slot] = None

    def _not_audio(self, pt: int, rtp_ts: int, payload: bytes, *, placed: bool) -> None:
        """Counted, never mixed into the audio. DTMF (RFC 4733) is kept as events with the recording."""
        self.other_payload += 1
        if pt == PT_CN:
            self.ignorable += 1
        elif self.call.is_telephone_event(pt):
            self.ignorable += 1
            if placed and len(payload) >= 4 and payload[0] < len(DTMF):
                self._event(rtp_ts, payload)

    def _event(self, rtp_ts: int, payload: bytes) -> None:
        duration_ms = ((payload[2] << 8) | payload[3]) / 8.0
        offset = ((rtp_ts - self.base_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        at = round((self.base_pos + offset) / self.call.clock, 3)
        if self.events and self.events[-1][0] == at:
            self.events[-1][2] = max(self.events[-1][2], duration_ms)
        elif len(self.events) < MAX_EVENTS:
            self.events.append([at, DTMF[payload[0]], duration_ms])

    def next_part(self) -> None:
        """A new part of the recording begins (a codec change): positions from the new part's start,
        sequence numbers, loss, duplicates, anchors and every other figure counted afresh, as for a
        new call; where this direction's packets come from (the learned source, the announced
        addresses) and when its last packet arrived stay."""
        keep = self.learned, self.source, self.announced, self.last_arrival
        StreamAssembler.__init__(self, self.call, self.channel)
        self.learned, self.source, self.announced, self.last_arrival = keep

    def flush_buffers(self) -> None:
        """The kernel stopped after a packet of this direction filled a buffer of its recording
        (capture/pipeline.py): the recording writes it out."""
        self.call.flush_buffers()

    def relearn_source(self) -> None:
        """Its sender announced a new media address: the next packet from a new source is its own."""
        self.learned = False

    def _new_source(self, ts: float, seq: int, rtp_ts: int, ssrc: int) -> None:
        if self.ssrc is not None:
            self.expected_before += self.ext_max - self.first_ext + 1
        self.ssrc = ssrc
        if len(self.ssrcs) < MAX_SSRCS:
            self.ssrcs.append(ssrc)
        self.base_ts = rtp_ts
        self.base_pos = max(int((ts - self.call.t0) * self.call.clock + 0.5), self.end)
        self.max_seq = seq
        self.seen = 1
        self.first_ext = self.ext_max = seq
        self.last_transit = None
        self._anchor(ssrc, rtp_ts, self.base_pos)

    def _anchor(self, ssrc: int, rtp_ts: int, pos: int) -> None:
        if len(self.anchors) < MAX_ANCHORS:
            self.anchors.append((ssrc, rtp_ts, pos))

    def stats(self) -> StreamStats:
        expected = self.expected_before + (self.ext_max - self.first_ext + 1 if self.ssrc is not None else 0)
        return StreamStats(
            channel=self.channel,
            ssrcs=tuple(self.ssrcs),
            packets=self.packets,
            expected=expected,
            lost=max(0, expected - self.received),
            duplicates=self.duplicates,
            other_payload=self.other_payload,
            anchors=tuple(self.anchors),
            jitter_ms=round(self.jitter / self.call.clock * 1000.0, 3),
            max_gap_ms=round(self.max_gap * 1000.0, 1),
            events=tuple((float(a), str(d), float(ms)) for a, d, ms in self.events),
            other_source=self.other_source,
            truncated=self.truncated,
            mirror_duplicates=self.mirror_duplicates,
        )
