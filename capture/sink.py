"""The meeting point between capture and storage: what capture emits for a recorded call.

``capture`` calls a :class:`RecordingSink`; ``storage`` provides one. Neither package imports the
other: storage reads these objects by their attribute names (structural typing), and the service
(``recorderd``) wires the two together.
"""
from __future__ import annotations

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
    codec: str  # "PCMU" or "PCMA"


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


@dataclass(frozen=True, slots=True)
class CallEnd:
    ended_at: float  # packet time
    complete: bool  # True when the end was signalled (BYE); False for timeout, capture end, ...
    reason: str  # "bye", "cancel", "timeout", "capture-end", "shutdown", ...
    streams: tuple[StreamStats, ...] = field(default_factory=tuple)


class RecordingHandle(Protocol):
    def audio(self, channel: int, position: int, payload: bytes) -> None:
        """Place ``payload`` (codec bytes, one per sample for G.711) at sample ``position``."""

    def end(self, result: CallEnd) -> None:
        """The call is over: finalise and keep the recording."""


class RecordingSink(Protocol):
    def call_started(self, call: CallInfo) -> RecordingHandle: ...
