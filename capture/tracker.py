"""CallTracker: SIP dialogs -> designated inbound calls -> expected media.

The tracker keeps dict registries (Call-ID -> call; endpoint -> stream in the MediaMap) and applies
what the SIP and SDP parsers return. It decides which calls are recorded: an INVITE (not in an
existing dialog) whose *called* number is designated and, where trunk networks are configured, that
came from the trunk side. Every other call is counted and forgotten: no audio, no metadata. The
called number is the Request-URI's; only when that is not a complete number (an extension, a PBX's
trunk user) do To, P-Called-Party-ID, Diversion and History-Info say which number was called: a
call to another complete number that merely carries a designated one in its retargeting headers
is not a call to it.

Unanswered calls are bounded apart from answered ones (``RingingCalls``): a source holding
``ringing_per_source`` of them loses its oldest to its newest, and a full table drops the oldest
unanswered call of the largest source, never an answered one; each dropped or refused call counts
in ``calls_over_capacity``.

A PBX that is a B2BUA shows one conversation as two calls: the trunk leg, then the leg it originates
itself towards the extension. A designated INVITE that comes *from* the address an active designated
call's INVITE went *to*, from the same caller, within ``LEG_WINDOW`` s, is that second leg: it is
not recorded again. The active calls are indexed by (INVITE destination, caller), so finding the
first leg costs one lookup, not a scan of the table.

An SBC with two faces (capture/legs.py) shows one conversation as two designated calls with other
signalling addresses on both ends and a new Call-ID: same caller, same designated number, within
``legs.FACE_WINDOW`` s. That makes the later one a candidate; the proof is the RTP payloads the SBC
relays between them within milliseconds, compared on the slow path for the first packets only
while the candidate's media is held. Proven, or carrying no media at all, the candidate is not
recorded and the first call's recording links it (``calls_other_leg``); unsure, it is recorded as
well (its held packets replayed, byte for byte) and both are linked as unsure
(``calls_other_leg_unsure``): a doubt never costs a designated call's audio. With trunk networks
configured the inside face is not from the trunk side and is not recorded (``calls_not_inbound``).

Transfers (capture/transfer.py): a REFER the contact centre's side sends in a recorded dialog makes
the same caller's new INVITE to its target (from the address the REFER went to, or with its
Replaces) the next part of the same conversation, whatever number it calls (``calls_transferred``),
when the target is inside the contact centre (an extension, a SIP user, a designated number; a
transfer to an outside number is not followed: ``calls_transfer_not_followed``). An INVITE to a
designated number that follows a transfer in a dialog seen and ignored as not designated, from the
same caller, is not recorded (``calls_transferred_in``).

A recording starts with the call's first G.711 packet (or, for an answered call that never
carried media, at its end) and ends on BYE, CANCEL, a final error, an inactivity timeout measured
in packet time, or the end of the capture. Hold (sendonly/inactive/0.0.0.0) is neither an end nor
a timeout while the SIP dialog lives.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import TypeVar

from .call import CALLEE, CALLER, MAX_ENDPOINTS, NOT_AUDIO, Call
from .dids import Did, DidDirectory, complete_number
from .legs import LegMatcher
from .media import Endpoint, MediaMap, endpoint
from .ringing import RingingCalls
from .sdp import SessionDescription, sdp_in_body
from .sink import CallEnd, RecordingSink
from .sip import SipMessage, header_tag, name_addr, split_list, uri_user, uri_user_context
from .transfer import Transfers, replaces_call_id

log = logging.getLogger(__name__)
_V = TypeVar("_V")

FORGET_AFTER = 64.0  # s: INVITE retransmissions and proxy hops of an ignored or ended call
MAX_REMEMBERED = 100_000  # ignored / ended Call-IDs kept at most (an INVITE flood stays bounded)
CALLED_NUMBER_HEADERS = ("p-called-party-id", "diversion", "history-info")
AUTH_CHALLENGES = (401, 407)  # the caller retries the INVITE with credentials in the same dialog
END_LINGER = 1.0  # s of packet time a signalled end waits for media still in flight
LEG_WINDOW = 30.0  # s after the first leg's INVITE within which a B2BUA's second leg appears
LEGS_PER_KEY = 16  # calls kept per (INVITE destination, caller) for second-leg matching
WARN_EVERY = 600.0  # s between repeated warnings of one kind (wall clock: this is for people)


class CallTracker:
    def __init__(
        self,
        dids: DidDirectory,
        sink: RecordingSink,
        media: MediaMap,
        counters: Counter[str],
        *,
        trunk_networks: Iterable[str] = (),
        ring_timeout: float = 180.0,
        idle_timeout: float = 900.0,
        max_calls: int = 10_000,
        ringing_per_source: int | None = None,
    ) -> None:
        self.dids = dids
        self.sink = sink
        self.media = media
        self.counters = counters
        self.trunks = [ipaddress.ip_network(n) for n in trunk_networks]
        self.ring_timeout = ring_timeout
        self.idle_timeout = idle_timeout
        self.max_calls = max_calls
        self.calls: dict[str, Call] = {}
        self.ignored: dict[str, float] = {}  # Call-ID -> when; never the numbers
        self.ended: dict[str, tuple[float, int]] = {}  # Call-ID -> (when, CSeq of its INVITE)
        self.closing: dict[str, Call] = {}  # ended calls whose media may still be in flight
        self.ringing: RingingCalls[Call] = RingingCalls(ringing_per_source or max(1, max_calls // 4))
        self._legs: dict[tuple[bytes, str], deque[Call]] = {}  # (INVITE dst, caller) -> calls, oldest first
        self._warned: dict[str, float] = {}
        self.faces = LegMatcher(self)  # an SBC's other face (capture/legs.py)
        self.transfers = Transfers(self._inside)  # REFERs of recorded calls (capture/transfer.py)

    # -- SIP ----------------------------------------------------------------------------------

    def on_sip(self, ts: float, src: bytes, dst: bytes, msg: SipMessage, frame: bytes = b"", linktype: int = 1,
               frames: Sequence[tuple[float, int, bytes]] = ()) -> None:
        """One SIP message, with its frame for the evidence pcap; ``frames`` instead: the original
        (time, link type, frame) of a message reassembled from IP fragments or TCP segments."""
        if msg.not_utf8:
            self.counters["sip_header_not_utf8"] += 1  # read as latin-1 (a Shift_JIS display name): kept
        call = self.calls.get(msg.call_id)
        if call is None:
            closing = self.closing.get(msg.call_id)
            if closing is not None and (frame or frames):
                for when, lt, f in frames or ((ts, linktype, frame),):
                    closing.sip_frame(when, lt, f)  # the 200 to the BYE, for the evidence
            if msg.method != "INVITE":
                if msg.method == "REFER" and msg.is_request and closing is None:
                    self.transfers.refer_not_recorded(ts, msg, src, dst)  # a call not designated, transferred
                elif msg.method in ("BYE", "CANCEL") and msg.is_request:
                    self.transfers.outside_ended(msg.call_id)
                return
            call = self._new_call(ts, src, dst, msg)
            if call is None:
                return
        if frame or frames:
            for when, lt, f in frames or ((ts, linktype, frame),):
                call.sip_frame(when, lt, f)
        call.last_signal = ts
        from_caller = (header_tag(msg.header("from")) == call.caller_tag) == msg.is_request
        if msg.method == "REFER" and msg.is_request:
            self.transfers.refer(ts, call, msg, dst, from_caller, self.counters)
        if msg.is_request:
            self._request(ts, call, msg, from_caller)
        else:
            self._response(ts, call, msg, from_caller)

    def _request(self, ts: float, call: Call, msg: SipMessage, from_caller: bool) -> None:
        method = msg.method
        if method == "BYE":
            self.end(call, ts, complete=True, reason="bye")
        elif method == "CANCEL":
            if call.answered_at is None:
                self.end(call, ts, complete=True, reason="cancel")
        elif method in ("INVITE", "ACK", "PRACK", "UPDATE"):
            self._apply_sdp(call, msg, from_caller)

    def _response(self, ts: float, call: Call, msg: SipMessage, from_caller: bool) -> None:
        try:
            _, method = msg.cseq
        except ValueError:
            self.counters["sip_malformed"] += 1
            return
        if method == "INVITE":
            status = msg.status
            if 200 <= status < 300 and call.answered_at is None:
                call.answered_at = ts
                self.ringing.discard(call.call_id)
            elif status >= 300 and call.answered_at is None and status not in AUTH_CHALLENGES:
                self.end(call, ts, complete=True, reason=f"rejected-{status}")
                return
        if msg.status < 300 and method in ("INVITE", "PRACK", "UPDATE"):
            self._apply_sdp(call, msg, from_caller)

    def _new_call(self, ts: float, src: bytes, dst: bytes, msg: SipMessage) -> Call | None:
        cid = msg.call_id
        if cid in self.ignored:
            return None
        ended = self.ended.get(cid)
        if ended is not None and _cseq_number(msg) <= ended[1]:
            return None  # a late retransmission of a call already ended
        if header_tag(msg.header("to")):
            self.counters["sip_dialog_unknown"] += 1  # a re-INVITE of a dialog we never saw begin
            return None
        try:
            caller = uri_user(name_addr(msg.header("from") or "")[0])
        except ValueError:
            caller = ""
        prior = self._transferred(ts, src, msg, caller)
        first_face = None
        did: Did | None
        if prior is not None:  # the next part of a recorded conversation, whatever number it calls
            did = prior.did  # (its caller is its own: the transfer matched only the same caller)
        else:
            did = self.called_did(msg)
            if did is None:
                self.transfers.ignored_outside(ts, cid, src, dst, caller)  # a REFER there may follow
                self._ignore(cid, ts, "calls_not_designated")
                return None
            if self._transferred_in(ts, src, msg, caller):
                self._ignore(cid, ts, "calls_transferred_in")  # first received on another number
                return None
            if self.trunks and not any(ipaddress.ip_address(src) in net for net in self.trunks):
                self._ignore(cid, ts, "calls_not_inbound")
                return None
            first_leg = self._first_leg(ts, src, caller)
            if first_leg is not None:
                if len(first_leg.linked_legs) < 16:
                    first_leg.linked_legs.append((cid, "address"))  # the B2BUA's own leg, linked to the recording
                self._ignore(cid, ts, "calls_second_leg")
                return None
            first_face = self.faces.first_face(ts, did.key, caller, src, dst)
        if not self._make_room(ts, src, did):
            self._ignore(cid, ts, "calls_over_capacity")
            return None
        call = Call(cid, did, caller, header_tag(msg.header("from")), ts, src, dst)
        call.invite_cseq = _cseq_number(msg)
        if prior is not None:
            call.conversation, call.part, call.part_reason = prior.conversation, prior.part + 1, "transfer"
            self.counters["calls_transferred"] += 1
        call.sink = self.sink
        self.calls[cid] = call
        self.ringing.add(src, cid, call)
        legs = self._legs.get((dst, caller))
        if legs is None:
            legs = self._legs[(dst, caller)] = deque(maxlen=LEGS_PER_KEY)
        legs.append(call)
        if first_face is not None:
            self.faces.open(first_face, call)  # counted as designated only if it proves another call
            return call
        if prior is None:
            self.faces.add(call)
            self.counters["calls_designated"] += 1  # (a transfer's next part is counted in calls_transferred)
        return call

    def _transferred(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> Call | None:
        """The recorded call this new INVITE continues after a transfer (capture/transfer.py): the
        REFER it follows, or a Replaces naming the recorded dialog itself; the same caller always."""
        referral = self.transfers.match(ts, src, msg, caller)
        if referral is not None:
            return referral.call
        replaced = replaces_call_id(msg)
        if replaced and replaced != msg.call_id:
            prior = self.calls.get(replaced) or self.closing.get(replaced)
            return prior if prior is not None and prior.caller == caller else None
        return None

    def _transferred_in(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> bool:
        """The INVITE (Referred-By or Replaces) follows a transfer of a call ignored as not
        designated, from the same caller: a REFER seen in that dialog, or a Replaces naming it."""
        if not (msg.header("replaces") or msg.header("referred-by")):
            return False
        return self.transfers.transferred_in(ts, src, msg, caller)

    def _inside(self, user: str, context: str) -> bool:
        """A transfer target inside the contact centre: not a complete number (an extension, a SIP
        user), or a designated one. A complete outside number is another agency, a mobile."""
        return complete_number(user, context) is None or self.dids.match(user, context) is not None

    def not_recorded_leg(self, call: Call, ts: float) -> None:
        """An SBC's other face of a recorded call (capture/legs.py): let go, its media not routed."""
        self.calls.pop(call.call_id, None)
        self.ringing.discard(call.call_id)
        _remember(self.ignored, call.call_id, ts)
        call.end = CallEnd(ts, True, "other-leg")
        for key in call.endpoints:
            for stream in call.streams:
                self.media.unregister(key, stream)

    def _make_room(self, ts: float, src: bytes, did: Did) -> bool:
        """Room for one more call from ``src``: its oldest unanswered call goes when it holds its
        share; in a full table the oldest unanswered call of the largest source. False (the new
        call is not tracked) only when every call in the table is answered."""
        if self.ringing.count(src) >= self.ringing.per_source:
            oldest = self.ringing.oldest_of(src, _still_ringing)
            if oldest is not None:
                self._drop(oldest, ts, did.label, "unanswered INVITEs from one source exceed "
                           f"{self.ringing.per_source}: the oldest are dropped (an INVITE flood?)")
        if len(self.calls) < self.max_calls:
            return True
        oldest = self.ringing.oldest_of_largest(_still_ringing)
        if oldest is not None:
            self._drop(oldest, ts, did.label, f"call table full ({self.max_calls} calls): the oldest unanswered "
                       "calls are dropped (an INVITE flood?)")
            return True
        self.warn("call-table-full", f"call table full ({self.max_calls} answered calls): designated calls are "
                  "not recorded", did.label, logging.ERROR)
        return False

    def _drop(self, call: Call, ts: float, did_label: str, message: str) -> None:
        """An unanswered call (no recording open) leaves the table to make room: counted, not kept."""
        self.warn("ringing-dropped", message, did_label, logging.ERROR)
        self.faces.dropped(call)
        self.calls.pop(call.call_id, None)
        self.ringing.discard(call.call_id)
        _remember(self.ended, call.call_id, (ts, call.invite_cseq))  # its retransmissions open nothing
        call.end = CallEnd(ts, False, "over-capacity")
        for key in call.endpoints:
            for stream in call.streams:
                self.media.unregister(key, stream)
        self.counters["calls_over_capacity"] += 1

    def _ignore(self, cid: str, ts: float, counter: str) -> None:
        self.counters[counter] += 1
        _remember(self.ignored, cid, ts)
        return None

    def _first_leg(self, ts: float, src: bytes, caller: str) -> Call | None:
        """The active call whose INVITE went to ``src`` from the same caller just before: this new
        INVITE is the B2BUA's second leg of that conversation."""
        key = (src, caller)
        legs = self._legs.get(key)
        if legs is None:
            return None
        _prune_legs(legs, ts)
        if not legs:
            del self._legs[key]
            return None
        return legs[0] if ts >= legs[0].created_at else None

    def called_did(self, msg: SipMessage) -> Did | None:
        """The designated number this INVITE calls, if any. A Request-URI that is a complete
        number is authoritative; only one that is not (an extension, a trunk user) lets To and
        the retargeting headers name the called number."""
        match = self.dids.match
        user, context = uri_user_context(msg.request_uri)
        found = match(user, context)
        if found is not None or complete_number(user, context) is not None:
            return found
        for name in ("to", *CALLED_NUMBER_HEADERS):
            for value in msg.headers.get(name, ()):
                for item in split_list(value):
                    try:
                        found = match(*uri_user_context(name_addr(item)[0]))
                    except ValueError:
                        continue
                    if found is not None:
                        return found
        return None

    def _apply_sdp(self, call: Call, msg: SipMessage, from_caller: bool) -> None:
        body = sdp_in_body(msg.header("content-type") or "", msg.body)
        if body is None:
            return
        try:
            sdp = SessionDescription.parse(body)
        except ValueError:
            self.counters["sdp_malformed"] += 1
            return
        # Media sent *to* what the caller announced is the contact centre's audio, and vice versa.
        stream = call.streams[CALLEE - 1] if from_caller else call.streams[CALLER - 1]
        for m in sdp.media:
            if m.kind != "audio" or m.port == 0 or m.address in (None, "0.0.0.0", "::"):
                continue
            if m.secure:
                self.counters["srtp_media"] += 1
                self.warn("srtp", "a designated call negotiates SRTP (RTP/SAVP): encrypted media cannot be "
                           "recorded passively; only its signalling is seen", call.did.label)
                continue
            for pt, codec in m.codecs.items():
                call.codecs.setdefault(pt, codec)
            # Each side sends in the payload types the other listed (RFC 3264 6.1): what either side's
            # SDP lists may carry the call's audio; anything else is no one's.
            call.sdp_listed |= frozenset(int(f) for f in m.formats if f.isdigit() and len(f) < 4)
            if call.sdp_codec is None or not from_caller:
                listed = (m.codecs.get(int(f)) for f in m.formats if f.isdigit())
                call.sdp_codec = next((c for c in listed if c and c.name not in NOT_AUDIO), call.sdp_codec)
            key = endpoint(m.address, m.port)
            call.media_announced(key, stream)  # before it is routed: its sender's own address, perhaps a new one
            self._route(call, key, stream)

    def _route(self, call: Call, key: Endpoint, stream: object) -> None:
        if key not in call.endpoints:
            if len(call.endpoints) >= MAX_ENDPOINTS:
                self.counters["media_endpoints_over_limit"] += 1
                return
            call.endpoints.append(key)
        previous = self.media.register(key, stream)
        if previous is not None and previous is not stream:
            self.counters["media_endpoint_taken_over"] += 1

    def learn_source(self, stream: object, src: bytes, sport: int) -> None:
        """The first packet of a direction tells where its sender really is (behind NAT the SDP
        shows a private address): media sent back *to* that address is the other direction."""
        call: Call = stream.call  # type: ignore[attr-defined]
        stream.learned = True  # type: ignore[attr-defined]
        if call.end is not None:
            return
        other = call.streams[1] if stream is call.streams[0] else call.streams[0]
        key = (src, sport)
        owner = self.media.owner(key)
        if owner is None or owner.call.end is not None:  # free, or held by a call already over
            self._route(call, key, other)
            self.counters["media_source_learned"] += 1

    # -- time and endings ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Periodic housekeeping in packet time: inactivity timeouts, forgetting ignored calls."""
        for call in list(self.calls.values()):
            if call.answered_at is None and call.handle is None:
                if now - call.last_signal > self.ring_timeout:
                    self.end(call, now, complete=False, reason="timeout")
            elif now - call.last_activity > self.idle_timeout:
                self.end(call, call.last_activity, complete=False, reason="timeout")  # ended when last heard
        for call in [c for c in self.closing.values() if now >= c.linger_until]:
            self._finalise(call)
        for key, legs in list(self._legs.items()):
            _prune_legs(legs, now)
            if not legs:
                del self._legs[key]
        self.faces.tick(now)
        self.transfers.expire(now)
        horizon = now - FORGET_AFTER
        registry: dict[str, float] | dict[str, tuple[float, int]]
        for registry in (self.ignored, self.ended):
            while registry:
                cid = next(iter(registry))
                value = registry[cid]
                when = value if isinstance(value, float) else value[0]
                if when >= horizon:
                    break
                del registry[cid]

    def finish(self, now: float, reason: str) -> None:
        """End every call in progress (capture ended, service stopping) keeping what was recorded."""
        for call in list(self.closing.values()):
            self._finalise(call)
        for call in list(self.calls.values()):
            self.end(call, max(now, call.last_activity), complete=False, reason=reason)  # finalises at once

    def end(self, call: Call, ts: float, *, complete: bool, reason: str) -> None:
        """The call is over. A recording stays open ``END_LINGER`` s longer (packet time) for the
        media still in flight when the BYE crossed the wire; then it is finalised."""
        self.faces.ending(call, ts)  # an SBC face being compared is decided first
        if call.end is not None:
            return  # (it was the other face of a recorded call: let go)
        self.calls.pop(call.call_id, None)
        self.ringing.discard(call.call_id)
        _remember(self.ended, call.call_id, (ts, call.invite_cseq))  # late retransmissions must not reopen it
        call.end = CallEnd(ts, complete, reason)
        if call.handle is None or not complete:
            self._finalise(call)
        else:
            call.linger_until = ts + END_LINGER
            self.closing[call.call_id] = call

    def _finalise(self, call: Call) -> None:
        self.closing.pop(call.call_id, None)
        end = call.end
        assert end is not None
        self.faces.finalising(call, end.ended_at)
        self.counters["rtp_other_source_after_end"] += call.late_strangers
        self.counters["rtp_before_recording_start"] += sum(s.early for s in call.streams)
        self.counters["mirror_duplicates"] += sum(s.mirror_duplicates for s in call.streams)  # (SIP's: pipeline)
        self.counters["calls_recorded"] += call.parts_ended  # parts a codec change ended: each kept already
        self.counters["recording_parts_codec_change"] += call.parts_ended
        self.counters["recording_parts_capped"] += call.capped  # MAX_PARTS reached: the rest kept in the last part
        for key in call.endpoints:
            for stream in call.streams:
                self.media.unregister(key, stream)
        if call.handle is None:
            if call.lost:
                self.counters["calls_lost_store_full"] += 1
                return
            if call.answered_at is None:
                self.counters["calls_unanswered"] += 1
                return
            if call.sdp_codec is None:
                self.counters["calls_codec_unsupported"] += 1
                self.warn("codec", "an answered designated call negotiated no audio that can be captured "
                           "(e.g. SRTP only): not recorded", call.did.label)
                return
            if not call.start(call.sdp_codec, call.answered_at):
                self.counters["calls_lost_store_full"] += 1
                return
        self.counters["calls_recorded"] += 1
        assert call.handle is not None
        complete, reason = end.complete, end.reason
        if not any(s.packets for s in call.streams):
            complete, reason = False, reason + "; no media captured"
        handle = call.handle
        for other, how in call.linked_legs:
            handle.link_leg(other, how)
        call.close()
        handle.end(CallEnd(end.ended_at, complete, reason, tuple(s.stats() for s in call.streams)))

    def warn(self, kind: str, message: str, did_label: str, level: int = logging.WARNING) -> None:
        """A warning a technician should see, at most once per ``WARN_EVERY`` per kind."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            log.log(level, message, extra={"EVENT": f"call-{kind}", "DID_LABEL": did_label})


def _remember(registry: dict[str, _V], cid: str, value: _V) -> None:
    registry.pop(cid, None)  # re-insert: the dict stays ordered by time
    registry[cid] = value
    if len(registry) > MAX_REMEMBERED:
        del registry[next(iter(registry))]


def _still_ringing(call: Call) -> bool:
    """Unanswered, no recording open (no early media), not over: a call a flood may push out."""
    return call.answered_at is None and call.handle is None and call.end is None


def _prune_legs(legs: deque[Call], now: float) -> None:
    """Drop from the front the calls that ended or are past the second-leg window."""
    while legs and (legs[0].end is not None or now - legs[0].created_at > LEG_WINDOW):
        legs.popleft()


def _cseq_number(msg: SipMessage) -> int:
    try:
        return msg.cseq[0]
    except ValueError:
        return 0
