"""The meeting point between capture and storage: what capture emits for a recorded call.

``capture`` calls a :class:`RecordingSink`; ``storage`` provides one. Neither package imports the
other: storage reads these objects by their attribute names (structural typing), and the service
(``recorderd``) wires the two together. What capture may use on a recording is declared here as
Protocols (:class:`RecordingHandle`, and the buffers the C fast path writes into: :class:`LaneBuffers`,
:class:`EvidenceBuffer`); tests/test_sink_contract.py checks that capture uses no other name and
that storage's recording satisfies them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A designated inbound call whose recording starts now."""

    call_id: str
    did: str  # E.164 ("+81442003939") or the configured extension / SIP user
    did_label: str
    caller: str  # the caller's number or user as signalled (personal data: never logged)
    started_at: float  # packet time (seconds since the epoch) of sample 0 of the recording
    codec: str  # encoding name as the SDP gives it: "PCMU", "PCMA", "G722", "OPUS", "G729", ...
    clock_rate: int = 8000  # its RTP clock: positions passed to audio() are in these ticks
    channels: int = 1
    # One conversation may be kept in parts (a transfer, a codec change mid-call): every part carries
    # the same ``conversation`` (an opaque token made by capture, not personal), its ``part`` number
    # (1, 2, ...) and why it began (``part_reason``: "" for the first, "transfer", "codec-change").
    conversation: str = ""
    part: int = 1
    part_reason: str = ""


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One direction's media figures (RFC 3550 where it defines them)."""

    channel: int  # 1 = caller's audio, 2 = contact centre's audio
    ssrcs: tuple[int, ...]
    packets: int  # RTP packets of the recorded codec written
    expected: int  # from the extended sequence number range
    lost: int
    duplicates: int
    other_payload: int  # DTMF, comfort noise, other codecs: not mixed into the audio
    anchors: tuple[tuple[int, int, int], ...]  # (ssrc, rtp timestamp, sample position) per anchoring
    jitter_ms: float
    max_gap_ms: float = 0.0  # longest time between two packets of this direction
    events: tuple[tuple[float, str, float], ...] = ()  # DTMF (s into the recording, digit, ms): never logged
    other_source: int = 0  # packets from another address or port than this direction's sender: dropped
    truncated: int = 0  # packets cut short by the capture (snap length): captured bytes kept, rest silence
    mirror_duplicates: int = 0  # copies of one packet delivered again by a second mirror session: dropped


@dataclass(frozen=True, slots=True)
class CallEnd:
    ended_at: float  # packet time
    complete: bool  # True when the end was signalled (BYE); False for timeout, capture end, ...
    reason: str  # "bye", "cancel", "timeout", "capture-end", "shutdown", ...
    streams: tuple[StreamStats, ...] = field(default_factory=tuple)


@runtime_checkable
class EvidenceBuffer(Protocol):
    """A recording's evidence pcap as capture's C fast path appends to it (capture/_fastpath.c)."""

    buf: bytearray  # pcap records not yet written (nanosecond pcap, little-endian): C appends here
    linktype: int | None  # the file's link type, None until its first frame (C leaves frames to packet() till then)
    flush_bytes: int  # once ``buf`` holds this many bytes C calls flush()

    def flush(self) -> None:
        """Write ``buf`` out and empty it."""


@runtime_checkable
class LaneBuffers(Protocol):
    """The direct-buffer part of a recording handle: where the C fast path places the steady case's
    audio itself instead of calling ``audio()`` (capture/call.py ``_arm`` checks a handle with
    ``isinstance(handle, LaneBuffers)``: the one check of whether C may write into its buffers; a
    handle without them records through ``audio()`` and ``packet()`` alone)."""

    # One buffer per channel, one byte a sample (G.711), starting at sample ``frontier``; None when
    # the codec is not one byte a sample (C then calls ``audio()``). A payload is placed at
    # ``position - frontier``, the gap before it padded with ``silence_byte``; ``flush_lanes()`` once
    # a buffer reaches ``lane_limit`` bytes. A position before ``frontier`` still goes to ``audio()``.
    lanes: tuple[bytearray, bytearray] | None
    frontier: int  # read by C for each packet it places
    lane_limit: int
    silence_byte: int

    def flush_lanes(self) -> None:
        """A buffer of ``lanes`` reached ``lane_limit``: write what is settled."""


class RecordingHandle(Protocol):
    """What capture may use on a recording (``RecordingSink.call_started`` returns one): nothing
    else on it, but the :class:`LaneBuffers` where the handle also is one."""

    id: str  # the recording's id: what capture may log about it
    keeps_packets: bool  # whether packet() wants the call's frames (the evidence pcap)
    # Set by capture once the recording is open: a callable returning the streams' StreamStats so
    # far (the sink saves them as it writes, for crash recovery); the sink lets it go at the end.
    figures: Callable[[], tuple[StreamStats, ...]] | None
    # Where keeps_packets: the buffer packet() appends to, which the C fast path appends to as well
    # (an EvidenceBuffer), or None: packet() is all there is, and C leaves the call's RTP to Python.
    # Read only where keeps_packets.
    evidence: EvidenceBuffer | None

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        """Place ``payload`` (as the codec carried it) at ``position`` (RTP clock ticks from the start)."""

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        """One captured frame of the call (SIP or RTP), as it crossed the wire."""

    def end(self, result: CallEnd) -> None:
        """The call is over: finalise and keep the recording."""

    def link_leg(self, call_id: str, how: str) -> None:
        """Another call leg of this same conversation (an SBC's or B2BUA's other face, with its own
        Call-ID) was seen and not recorded: the index notes it with this recording. ``how`` says
        how the legs were matched ("address", "rtp-relay", "unsure")."""


class RecordingSink(Protocol):
    def call_started(self, call: CallInfo) -> RecordingHandle: ...
