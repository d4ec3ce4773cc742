"""An SBC's two faces: one conversation shown as two designated calls with their own Call-IDs.

An SBC (or a B2BUA with an outside and an inside interface) takes the carrier's INVITE on its
outside face and sends its own, with a new Call-ID, from its inside face to the PBX: same caller,
same called number, a few milliseconds later, other signalling addresses on both ends. Recorded as
they come, that is two recordings of one conversation.

How legs are matched. A designated INVITE is a *candidate* other face of an active designated call
(the first leg) when it has the same caller and calls the same designated number, comes within
``FACE_WINDOW`` s of the first leg's INVITE, and differs from it in Call-ID and in both signalling
addresses (the source and the destination of the INVITE; the B2BUA whose second leg starts where
the first one went is matched by address in the tracker). Caller, number and timing only make a
candidate; the proof is the media: the SBC relays the caller's audio, so the same payload bytes
appear on both legs' RTP from the caller (channel 1) a few milliseconds apart. Only the caller's
direction proves it: the caller's voice is the caller's own, while what the contact centre sends
need not be (one music-on-hold source plays the same bytes at the same instant to every caller on
hold). A caller that names no one (empty, ``anonymous``, ``unknown``, ``restricted``, in any
case) is never matched: two such calls have nothing in common but the missing number.
While a candidate is open both calls' streams run on the slow path (their class is switched to
:class:`ProbedStream`, the first leg's streams are taken from the C core): the first leg goes on
being recorded as before while the payloads of its first ``OBSERVE_PACKETS`` packets are noted;
the candidate's packets are *held*, not recorded (at most ``HOLD_PACKETS``, for at most
``PROBE_SECONDS`` of packet time after the first of them; at most ``MAX_PROBES`` comparisons at
once, past which a candidate is recorded as a call of its own). ``RELAY_MATCHES`` caller payloads
seen on both legs within ``RELAY_DELAY`` s of each other prove it; a payload of one repeated byte
(silence) proves nothing. Nothing of this runs for a call that has no candidate.

What it decides:

- proven (how ``"rtp-relay"``): the candidate is the other face. It is not recorded (its held
  packets are dropped and its media endpoints no longer routed), the first leg's recording links
  it, counted ``calls_other_leg``.
- the candidate ends having carried no media at all (the mirror sees one face's RTP only, as in
  fax-t38-reinvite.pcap): there is no audio of it to keep; linked how ``"unsure"`` in the first
  leg's recording (which is how its existence shows), counted ``calls_other_leg``.
- not proven within the bound (or the first leg was finalised first): unsure. The candidate is
  recorded after all: its held packets are replayed in order into its recording, which is byte
  for byte what it would have been without the hold; the two recordings link each other with how
  ``"unsure"``, counted ``calls_other_leg_unsure``. A doubt never costs a designated call's audio.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .assembler import StreamAssembler
from .call import CALLER

if TYPE_CHECKING:
    from .call import Call
    from .tracker import CallTracker

FACE_WINDOW = 5.0  # s after the first leg's INVITE within which an SBC's other face begins
PROBE_SECONDS = 3.0  # s of packet time a candidate's media is held at most, from its first packet
HOLD_PACKETS = 300  # candidate packets held at most (both directions; ~3 s of 20 ms audio)
OBSERVE_PACKETS = 400  # first-leg packets whose payloads are noted at most
NOTED_PAYLOADS = 400  # payloads noted per leg at most
RELAY_DELAY = 0.1  # s: a relayed payload appears on the other leg within this
RELAY_MATCHES = 3  # relayed payloads that prove two legs one conversation
MIN_PAYLOAD = 8  # bytes: shorter payloads (DTMF events, comfort noise) prove nothing
FACES_PER_KEY = 16  # calls kept per (designated number, caller) for matching
MAX_PROBES = 64  # comparisons open at once at most: past that a candidate is a call of its own
NO_CALLER = frozenset(("", "anonymous", "unknown", "restricted"))  # (any case) callers that name no one


class ProbedStream(StreamAssembler):
    """A stream of a call with an open probe: its packets are shown to the probe first (which
    holds the candidate's). Same layout as StreamAssembler: a stream's class is switched to this
    and back, the stream itself (and the routes to it) stay."""

    __slots__ = ()

    def arm(self, *recording: object) -> None:
        """Not handed to the C core while probed (a recording that opens now is armed at the end)."""

    def packet(self, ts: float, pt: int, seq: int, rtp_ts: int, ssrc: int, payload: bytes, frame: bytes = b"",
               linktype: int = 1, again: bool = False) -> None:
        probe: LegProbe | None = self.call.leg_probe
        if probe is not None and probe.observe(self, ts, pt, seq, rtp_ts, ssrc, payload, frame, linktype):
            return
        StreamAssembler.packet(self, ts, pt, seq, rtp_ts, ssrc, payload, frame, linktype, again)


class LegProbe:
    """The comparison of a first leg and its candidate other face."""

    def __init__(self, matcher: LegMatcher, first: Call, candidate: Call) -> None:
        self.matcher = matcher
        self.first = first
        self.candidate = candidate
        self.noted: tuple[dict[bytes, float], dict[bytes, float]] = ({}, {})  # (first's, candidate's)
        self.held: list[tuple[StreamAssembler, tuple]] = []  # type: ignore[type-arg]
        self.held_since: float | None = None
        self.observed = 0
        self.matches = 0
        self.tapping = True  # the first leg's payloads are still being noted

    def observe(self, stream: StreamAssembler, ts: float, pt: int, seq: int, rtp_ts: int, ssrc: int,
                payload: bytes, frame: bytes, linktype: int) -> bool:
        """Note the caller's payload; True when the packet is held (the candidate's)."""
        held = stream.call is self.candidate
        mine, theirs = (self.noted[1], self.noted[0]) if held else (self.noted[0], self.noted[1])
        if (stream.channel == CALLER and len(payload) >= MIN_PAYLOAD
                and payload.count(payload[0]) != len(payload)):
            seen = theirs.get(payload)
            if seen is not None and abs(ts - seen) <= RELAY_DELAY:
                self.matches += 1
            if len(mine) < NOTED_PAYLOADS:
                mine.setdefault(bytes(payload), ts)
        if held:
            if self.held_since is None:
                self.held_since = ts
            self.held.append((stream, (ts, pt, seq, rtp_ts, ssrc, bytes(payload), frame, linktype)))
        else:
            self.observed += 1
        if self.matches >= RELAY_MATCHES:
            self.matcher.settle(self, "rtp-relay", ts)
        elif held and (len(self.held) >= HOLD_PACKETS or ts - self.held_since > PROBE_SECONDS):  # type: ignore[operator]
            self.matcher.settle(self, "unsure", ts)
        elif not held and self.observed >= OBSERVE_PACKETS:
            self.matcher.untap(self)
        return held


class LegMatcher:
    """Candidates and probes of the tracker's designated calls (one probe per call at a time)."""

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker
        self.faces: dict[tuple[str, str], deque[Call]] = {}  # (DID key, caller) -> calls, oldest first
        self.probes: list[LegProbe] = []

    def add(self, call: Call) -> None:
        """A designated call recorded as a conversation's first leg: later faces may match it."""
        key = (call.did.key, call.caller)
        faces = self.faces.get(key)
        if faces is None:
            faces = self.faces[key] = deque(maxlen=FACES_PER_KEY)
        faces.append(call)

    def first_face(self, ts: float, did_key: str, caller: str, src: bytes, dst: bytes) -> Call | None:
        """The active designated call this new INVITE may be the other face of (never for a caller
        that names no one)."""
        if caller.strip().lower() in NO_CALLER:
            return None
        faces = self.faces.get((did_key, caller))
        if faces is None or len(self.probes) >= MAX_PROBES:
            return None  # (a flood of lookalikes cannot hold unbounded media: each is simply recorded)
        self._prune(faces, ts)
        if not faces:
            del self.faces[(did_key, caller)]
            return None
        for call in faces:
            if (call.leg_probe is None and call.invite_src != src and call.invite_dst != dst
                    and 0.0 <= ts - call.created_at <= FACE_WINDOW):
                return call
        return None

    def open(self, first: Call, candidate: Call) -> None:
        probe = LegProbe(self, first, candidate)
        first.leg_probe = candidate.leg_probe = probe
        for stream in first.streams:
            stream.disarm()  # (the C core hands its packets back to Python; re-armed when the probe ends)
            stream.__class__ = ProbedStream
        for stream in candidate.streams:
            stream.__class__ = ProbedStream
        self.probes.append(probe)

    def untap(self, probe: LegProbe) -> None:
        """Enough of the first leg's payloads are noted: it goes back to the C core."""
        if not probe.tapping:
            return
        probe.tapping = False
        first = probe.first
        for stream in first.streams:
            stream.__class__ = StreamAssembler
        if first.leg_probe is probe:
            first.leg_probe = None
        if first.handle is not None:
            first._arm()

    def settle(self, probe: LegProbe, how: str, ts: float) -> None:
        """Decide: ``"rtp-relay"`` (proven), ``"unsure"`` (recorded too), ``"no-media"``."""
        if probe not in self.probes:
            return
        self.probes.remove(probe)
        self.untap(probe)
        first, candidate = probe.first, probe.candidate
        for stream in candidate.streams:
            stream.__class__ = StreamAssembler
        candidate.leg_probe = None
        counters = self.tracker.counters
        if how == "unsure":
            counters["calls_other_leg_unsure"] += 1
            counters["calls_designated"] += 1
            _link(first, candidate.call_id, "unsure")
            _link(candidate, first.call_id, "unsure")
            for stream, args in probe.held:  # now recorded, as it would have been without the hold
                StreamAssembler.packet(stream, *args)
            return
        counters["calls_other_leg"] += 1
        _link(first, candidate.call_id, "unsure" if how == "no-media" else how)
        self.tracker.not_recorded_leg(candidate, ts)

    def ending(self, call: Call, ts: float) -> None:
        """``call`` ends (before it is marked ended): a candidate's probe is decided now."""
        probe = call.leg_probe
        if probe is None:
            return
        if call is probe.candidate:
            if probe.matches >= RELAY_MATCHES:
                self.settle(probe, "rtp-relay", ts)
            else:
                self.settle(probe, "unsure" if probe.held else "no-media", ts)
        else:
            self.untap(probe)  # the candidate's decision can still come from what was noted

    def finalising(self, call: Call, ts: float) -> None:
        """The first leg's recording is about to close: a candidate still open is recorded (unsure)."""
        for probe in [p for p in self.probes if p.first is call]:
            self.settle(probe, "unsure", ts)

    def dropped(self, call: Call) -> None:
        """An unanswered call pushed out of the table: its probe ends without a decision."""
        for probe in [p for p in self.probes if call in (p.first, p.candidate)]:
            self.probes.remove(probe)
            self.untap(probe)
            for stream in probe.candidate.streams:
                stream.__class__ = StreamAssembler
            probe.candidate.leg_probe = None
            if call is probe.first:  # the candidate is a call of its own again
                self.tracker.counters["calls_designated"] += 1
                for stream, args in probe.held:
                    StreamAssembler.packet(stream, *args)

    def tick(self, now: float) -> None:
        for probe in list(self.probes):
            if probe.held_since is not None and now - probe.held_since > PROBE_SECONDS:
                self.settle(probe, "unsure", now)
        for key, faces in list(self.faces.items()):
            self._prune(faces, now)
            if not faces:
                del self.faces[key]

    @staticmethod
    def _prune(faces: deque[Call], now: float) -> None:
        while faces and (faces[0].end is not None or now - faces[0].created_at > FACE_WINDOW):
            faces.popleft()


def _link(call: Call, other_call_id: str, how: str) -> None:
    if len(call.linked_legs) < 16:
        call.linked_legs.append((other_call_id, how))
