"""The meeting point between capture and storage: what capture emits for a recorded call.

``capture`` calls a :class:`RecordingSink`; ``storage`` provides one. Neither package imports the
other: storage reads these objects by their attribute names (structural typing), and the service
(``recorderd``) wires the two together. What capture may use on a recording is declared here as
Protocols (:class:`RecordingHandle`; and what capture's buffers, which it hands to a recording and
its per-packet kernel writes into, offer the recording: :class:`AudioLanes`, :class:`EvidenceRecords`);
tests/test_sink_contract.py checks that capture uses no other name and that storage's recording
satisfies them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


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


class AudioLanes(Protocol):
    """Capture's audio placement buffers of a recording (capture/lanes.py ``Lanes``), handed to it by
    :meth:`RecordingHandle.use_buffers`: the per-packet kernel places the steady case's payloads
    into them; the recording sets ``silence`` and ``limit``, writes the buffers out (``interleaved``)
    and moves ``frontier``."""

    bufs: tuple[bytearray, bytearray]  # channel 1's and channel 2's samples (one byte each) from ``frontier``
    frontier: int  # the sample both buffers start at
    limit: int  # a buffer this long (bytes) is due to be written out (flush_buffers())
    silence: int  # the codec's silence byte: a gap before a payload is padded with it

    def interleaved(self, size: int, extra: int = 0) -> bytearray:
        """The first ``size`` samples of both buffers as stereo frames (channel 1's byte, then
        channel 2's), then channel 1's next ``extra`` (0 or 1) byte: the WAV's next frames, made in
        one pass (the recording then deletes them from both buffers)."""


class EvidenceRecords(Protocol):
    """Capture's buffer of a recording's evidence pcap records (capture/lanes.py ``Records``)."""

    buf: bytearray  # pcap records (nanosecond pcap, little-endian) not yet written: the kernel appends here
    limit: int  # once ``buf`` holds this many bytes it is due to be written out (flush_buffers())
    linktype: int  # the file's link type, -1 until its first frame (the kernel leaves frames to packet() till then)


class RecordingHandle(Protocol):
    """What capture may use on a recording (``RecordingSink.call_started`` returns one): nothing else."""

    id: str  # the recording's id: what capture may log about it
    keeps_packets: bool  # whether packet() wants the call's frames (the evidence pcap)
    # Set by capture once the recording is open: a callable returning the streams' StreamStats so
    # far (the sink saves them as it writes, for crash recovery); the sink lets it go at the end.
    figures: Callable[[], tuple[StreamStats, ...]] | None

    def use_buffers(self, lanes: AudioLanes, records: EvidenceRecords | None) -> bool:
        """Capture's buffers for this recording (``records`` None where it keeps no packets), offered
        once when it opens: True, the recording places its audio into ``lanes`` and appends its frames
        to ``records`` from now on (in audio() and packet() too), and the per-packet kernel writes
        into them for the steady case; False (a codec not one byte a sample, a handle without them),
        every packet goes to audio() and packet()."""

    def flush_buffers(self) -> None:
        """A buffer taken by :meth:`use_buffers` reached its ``limit``: write out what is settled."""

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
