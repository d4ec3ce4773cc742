"""Call: the state of one designated inbound call being tracked (the tracker changes it).

A call has two directions (``StreamAssembler``), the media endpoints its SDP announced, the codecs
its SDP mapped, and — once its first audio packet arrives — a recording handle from the sink.
"""
from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .assembler import StreamAssembler
from .dids import Did
from .lanes import Lanes, PyLanes, PyRecords, Records
from .media import Endpoint
from .sdp import Codec
from .sink import CallEnd, CallInfo, RecordingHandle, RecordingSink, StreamStats

if TYPE_CHECKING:  # capture/legs.py imports this module
    from .legs import LegProbe

log = logging.getLogger(__name__)

NOT_AUDIO = frozenset(("TELEPHONE-EVENT", "CN", "RED", "ULPFEC", "FLEXFEC", "RTX"))
STATIC_CODECS = {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}
CALLER, CALLEE = 1, 2  # WAV channels: 1 = audio sent by the caller, 2 = by the contact centre
MAX_ENDPOINTS = 32  # per call: a flood of re-INVITEs cannot grow the media map without bound
MAX_PENDING_FRAMES = 64  # SIP frames held per call before its recording opens
DRIFT_LIMIT_S = 3.0  # s: a packet this much later than its timestamp says means a paused sender
MAX_PARTS = 64  # per call: a flood of re-INVITEs flipping codecs cannot open recordings without bound
RECENT_FRAMES = 8  # SIP frames a part begun by a codec change gets first (the re-INVITE or UPDATE that made it)
Held = tuple[float, StreamAssembler, int, int, int, int, bytes, bytes, int]  # a packet of a run: (ts, stream, pt, seq, ...)
SWITCH_RUN = 3  # packets in a row of another audio codec, one the SDP listed but did not choose, that begin a part


class Call:
    def __init__(self, call_id: str, did: Did, caller: str, caller_tag: str, ts: float,
                 invite_src: bytes = b"", invite_dst: bytes = b"") -> None:
        self.call_id = call_id
        self.did = did
        self.caller = caller  # personal data: handed to the sink, never logged
        self.caller_tag = caller_tag
        self.invite_src = invite_src  # where the INVITE came from and went to (B2BUA leg detection)
        self.invite_dst = invite_dst
        self.created_at = ts
        self.last_signal = ts
        self.conversation = conversation_token(call_id, ts, did.key)  # a transfer's next call inherits it
        self.part = 1  # the recording part in progress (a codec change or a transfer starts another)
        self.part_reason = ""
        self.part_sdp: Codec | None = None  # sdp_codec when the part in progress began
        self.parts_ended = 0  # parts ended by a codec change before the one in progress (each kept)
        self.recent_frames: deque[tuple[float, int, bytes]] = deque(maxlen=RECENT_FRAMES)
        self.runs: tuple[list[Held], list[Held]] = ([], [])  # per direction: packets in a row of another codec
        self.strangers = [-1, -1]  # per direction: the SSRC of the last run refused as not the sender's
        self.answered_at: float | None = None
        self.invite_cseq = 0
        self.codecs: dict[int, Codec] = dict(STATIC_CODECS)
        self.sdp_codec: Codec | None = None  # first audio format the answer (else the offer) lists
        self.sdp_listed: frozenset[int] = frozenset()  # every audio payload type either side's SDP listed
        self.capped = False  # MAX_PARTS reached: the part in progress is the last (counted, logged once)
        self.endpoints: list[Endpoint] = []
        self.streams = (StreamAssembler(self, CALLER), StreamAssembler(self, CALLEE))
        self.audio_pt = -1  # payload type of the recording's codec, once chosen
        self.codec = ""
        self.clock = 8000  # RTP clock rate of the recording's codec: positions are in its ticks
        self.drift_limit = DRIFT_LIMIT_S * 8000
        self.t0 = 0.0  # packet time of the recording's sample 0
        self.evidence: Callable[[float, int, bytes], None] | None = None  # the sink's packet(), if it keeps them
        self.pending_frames: list[tuple[float, int, bytes]] = []  # SIP frames before the recording opened
        self.sink: RecordingSink | None = None
        self.handle: RecordingHandle | None = None
        # capture's buffers the recording took (use_buffers): the C kernel writes into them; None: it declined
        self.buffers: tuple[PyLanes, PyRecords | None] | None = None
        self.lost = ""  # why the recording could not be opened (store full, write error)
        self.end: CallEnd | None = None  # set when the call ends
        self.linger_until = 0.0
        self.late_strangers = 0  # packets of a new source after the end: another call's, dropped
        self.leg_probe: LegProbe | None = None  # capture/legs.py LegProbe while an SBC's other face is being compared
        self.linked_legs: list[tuple[str, str]] = []  # (Call-ID, how): legs linked to this recording at its end

    def accepts_payload(self, pt: int, ts: float) -> bool:
        """Slow path for a payload type other than the chosen one; starts the recording on the
        first audio packet (whatever its codec: the sink decides how to keep it) of a payload type
        the SDP listed, when it listed any (forged RTP of another codec opens nothing)."""
        codec = self.codecs.get(pt)
        if codec is None or codec.name in NOT_AUDIO or self.lost:
            return False
        if self.handle is None:
            if self.sdp_listed and pt not in self.sdp_listed:
                return False
            self.audio_pt = pt
            return self.start(codec, ts)
        return codec.name == self.codec

    def start(self, codec: Codec, ts: float) -> bool:
        """Open the recording; False (and the call marked lost) when the store cannot take it."""
        assert self.sink is not None
        self.codec = codec.name
        self.clock = codec.rate
        self.drift_limit = DRIFT_LIMIT_S * codec.rate
        self.part_sdp = self.sdp_codec
        # from the answer (or the first packet, early media); a part a codec change began, from its first packet
        self.t0 = ts if self.answered_at is None or self.parts_ended else min(self.answered_at, ts)
        info = CallInfo(self.call_id, self.did.key, self.did.label, self.caller, self.t0, codec.name,
                        codec.rate, codec.channels, self.conversation, self.part, self.part_reason)
        try:
            self.handle = self.sink.call_started(info)
        except OSError as exc:
            self.lost = str(exc)
            log.critical("designated call to %s NOT RECORDED: %s", self.did.label, exc,
                         extra={"EVENT": "call-lost", "DID_LABEL": self.did.label})
            return False
        self.handle.figures = self.figures  # the figures so far, saved by the sink as it writes
        self.evidence = self.handle.packet if self.handle.keeps_packets else None
        lanes, records = Lanes(), Records() if self.evidence is not None else None
        self.buffers = (lanes, records) if self.handle.use_buffers(lanes, records) else None
        if self.evidence is not None:
            for when, linktype, frame in self.pending_frames:
                self.evidence(when, linktype, frame)
        self.pending_frames = []
        self._arm()
        return True

    def codec_changed(self, stream: StreamAssembler, ts: float, pt: int, seq: int, rtp_ts: int, ssrc: int,
                      payload: bytes, frame: bytes, linktype: int) -> bool:
        """Whether this packet (payload type ``pt``, not the part's) ends the part in progress and
        begins the next, in its codec (an audio codec, another than the part's, the call live):
        at once when the call's SDP negotiated that codec since the part began (a re-INVITE, an
        UPDATE or their answer: ``sdp_codec``, the answer's first audio format); else only at the
        ``SWITCH_RUN``-th packet in a row of it from one sender (consecutive sequence numbers, one
        SSRC: an answer that listed several codecs lets the sender change without signalling), the
        packets of that run (either way) then placed in the new part too. A stray packet of another
        codec, DTMF and comfort noise never begin a part. True even when the store could not open
        the next part (``lost``)."""
        codec = self.codecs.get(pt)
        if (
            codec is None or codec.name in NOT_AUDIO or codec.name == self.codec or self.handle is None
            or self.end is not None
        ):
            return False
        if self.part >= MAX_PARTS:
            self._cap()
            return False
        held: list[Held] = []
        if codec != self.sdp_codec or codec == self.part_sdp:  # not negotiated since the part began
            if pt not in self.sdp_listed:
                return False  # a codec the SDP never listed: forged or stray, another payload of the part
            run = self.runs[stream.channel - 1]
            if run:
                last = run[-1]
                if last[3] == seq and last[5] == ssrc:
                    return False  # the same packet again: the duplicate check has it
                if last[2] != pt or last[5] != ssrc or (last[3] + 1) & 0xFFFF != seq:
                    run.clear()
            if not run and (ssrc != stream.ssrc or ssrc == self.strangers[stream.channel - 1]):
                # a run begins only from the SSRC the direction is on (a stranger's first packet becomes
                # the direction's latest SSRC as it is counted: it is remembered, to begin no run either)
                self.strangers[stream.channel - 1] = ssrc
                return False
            if len(run) < SWITCH_RUN - 1 or not self._other_follows(stream, run[0][0], pt):
                run.append((ts, stream, pt, seq, rtp_ts, ssrc, payload, frame, linktype))
                del run[: len(run) - (SWITCH_RUN - 1)]  # (kept to the last ones: bounded)
                return False  # (this one goes on as another payload of the part in progress)
            other = self.runs[2 - stream.channel]
            held = sorted(run + (other if self._current(other, pt) else []), key=lambda p: p[0])
        self._next_part(codec, pt, held[0][0] if held else ts)
        if self.handle is not None:
            for when, into, p, seq, rtp_ts, ssrc, payload, frame, linktype in held:  # already counted as another
                into.packet(when, p, seq, rtp_ts, ssrc, payload, frame, linktype, again=True)  # payload in their part
        return True

    def _other_follows(self, stream: StreamAssembler, since: float, pt: int) -> bool:
        """Whether the other direction sends ``pt`` too, or nothing since ``since``: one side on a
        codec of its own while the other keeps the part's (asymmetric codecs) begins no part."""
        other = self.streams[1] if stream is self.streams[0] else self.streams[0]
        return other.last_arrival < since or self._current(self.runs[other.channel - 1], pt)

    def _current(self, run: list[Held], pt: int) -> bool:
        """Whether ``run`` (a direction's) is of ``pt`` and ends with that direction's latest packet."""
        return bool(run) and run[-1][2] == pt and run[-1][0] >= run[-1][1].last_arrival

    def _cap(self) -> None:
        """MAX_PARTS parts: the part in progress stays in its codec to the call's end (its audio kept,
        another codec's packets counted as another payload); counted and logged once per call."""
        if self.capped:
            return
        self.capped = True
        log.warning("recording %s: a call to %s reached %d parts; the rest is kept in this part's codec (%s), "
                    "other codecs counted, not recorded", self.handle.id if self.handle else "-", self.did.label,
                    MAX_PARTS, self.codec, extra={"EVENT": "call-parts-capped", "DID_LABEL": self.did.label})

    def _next_part(self, codec: Codec, pt: int, ts: float) -> None:
        """End the part in progress at ``ts`` (complete, ``codec-change``) and open the next there."""
        handle = self.handle
        assert handle is not None
        figures = self.figures()
        self.close()
        self.evidence = None
        handle.end(CallEnd(ts, True, "codec-change", figures))  # kept as it is
        self.parts_ended += 1
        for stream in self.streams:
            stream.next_part()
        for run in self.runs:
            run.clear()
        self.part += 1
        self.part_reason = "codec-change"
        self.pending_frames = list(self.recent_frames)
        self.audio_pt = pt
        if self.start(codec, ts) and self.handle is not None:
            log.info("recording %s: part %d of a call to %s, the codec changed to %s", self.handle.id,
                     self.part, self.did.label, codec.name,
                     extra={"EVENT": "call-codec-change", "DID_LABEL": self.did.label})

    def _arm(self) -> None:
        """Hand the steady case of both directions to the C kernel (a no-op in pure Python), where the
        recording took capture's buffers: the kernel writes into those alone."""
        if self.buffers is None:
            return  # the recording declined them: every packet goes to its audio() and packet()
        lanes, records = self.buffers
        for stream in self.streams:
            stream.arm(self.audio_pt, self.t0, self.clock, self.drift_limit, lanes, records)

    def flush_buffers(self) -> None:
        """A buffer the kernel wrote reached its limit: the recording writes it out."""
        if self.handle is not None:
            self.handle.flush_buffers()

    def close(self) -> None:
        """The recording is over: every packet goes back through Python (and the handle is let go)."""
        for stream in self.streams:
            stream.disarm()
        self.handle = None
        self.buffers = None

    def sip_frame(self, ts: float, linktype: int, frame: bytes) -> None:
        """A frame of this call's signalling, for the evidence pcap (held until the recording opens)."""
        if self.handle is not None:
            if self.evidence is not None:
                self.evidence(ts, linktype, frame)
            self.recent_frames.append((ts, linktype, frame))  # for the next part's evidence, if one begins
        elif len(self.pending_frames) < MAX_PENDING_FRAMES:
            self.pending_frames.append((ts, linktype, frame))

    def figures(self) -> tuple[StreamStats, ...]:
        """Both directions' figures (and DTMF events) so far."""
        return tuple(s.stats() for s in self.streams)

    def media_announced(self, key: Endpoint, into: StreamAssembler) -> None:
        """A side's SDP announced ``key`` (``into``: the direction flowing to it). With symmetric RTP
        that side also sends from there; a new address (a re-INVITE: a transfer, another media
        server) may move its sender elsewhere: its own direction learns its source again."""
        sender = self.streams[1] if into is self.streams[0] else self.streams[0]
        if key not in self.endpoints:
            sender.relearn_source()
        if len(sender.announced) < MAX_ENDPOINTS and (key in self.endpoints or len(self.endpoints) < MAX_ENDPOINTS):
            sender.announced.add(key)  # (only what the tracker routes: the C loop asks Python about those)

    def is_telephone_event(self, pt: int) -> bool:
        codec = self.codecs.get(pt)
        return codec is not None and codec.name == "TELEPHONE-EVENT"

    @property
    def last_activity(self) -> float:
        return max(self.last_signal, self.streams[0].last_arrival, self.streams[1].last_arrival)


def conversation_token(call_id: str, ts: float, did_key: str) -> str:
    """The opaque id of the conversation a call begins: the same for every part of it (later parts
    inherit it), not personal. Made from its first Call-ID, its first INVITE's packet time and the
    designated number's key: two calls that reuse a Call-ID (a device's counter restarting, a forged
    one) are two conversations; a replay gives the same tokens (the same capture kept twice gives one
    token to both: the ops refuse a conversation whose part numbers repeat)."""
    text = f"{call_id}\x00{ts!r}\x00{did_key}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
