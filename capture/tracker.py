"""CallTracker: SIP dialogs -> designated inbound calls -> expected media.

The tracker keeps dict registries (Call-ID -> call; endpoint -> stream in the MediaMap) and applies
what the SIP and SDP parsers return. It decides which calls are recorded: an INVITE (not in an
existing dialog) whose *called* number is designated — taken from the Request-URI, then To, then
P-Called-Party-ID, Diversion and History-Info — and, where trunk networks are configured, that came
from the trunk side. Every other call is counted and forgotten: no audio, no metadata.

A recording starts with the call's first G.711 packet (or, for an answered call that never
carried media, at its end) and ends on BYE, CANCEL, a final error, an inactivity timeout measured
in packet time, or the end of the capture.
"""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable

from .assembler import SAMPLE_RATE, StreamAssembler
from .dids import Did, DidDirectory
from .media import Endpoint, MediaMap, endpoint
from .sdp import Codec, SessionDescription
from .sink import CallEnd, CallInfo, RecordingHandle, RecordingSink
from .sip import SipMessage, header_tag, name_addr, split_list, uri_user

log = logging.getLogger(__name__)

RECORDABLE_CODECS = frozenset(("PCMU", "PCMA"))
STATIC_CODECS = {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}
CALLER, CALLEE = 1, 2  # WAV channels: 1 = audio sent by the caller, 2 = by the contact centre
FORGET_IGNORED_AFTER = 64.0  # s: INVITE retransmissions and proxy hops of an ignored call
CALLED_NUMBER_HEADERS = ("p-called-party-id", "diversion", "history-info")
AUTH_CHALLENGES = (401, 407)
END_LINGER = 1.0  # s of packet time a signalled end waits for media still in flight  # the caller retries the INVITE with credentials in the same dialog


class Call:
    """One designated inbound call being tracked."""

    def __init__(self, call_id: str, did: Did, caller: str, caller_tag: str, ts: float) -> None:
        self.call_id = call_id
        self.did = did
        self.caller = caller
        self.caller_tag = caller_tag
        self.created_at = ts
        self.last_signal = ts
        self.answered_at: float | None = None
        self.codecs: dict[int, Codec] = dict(STATIC_CODECS)
        self.endpoints: list[Endpoint] = []
        self.streams = (StreamAssembler(self, CALLER), StreamAssembler(self, CALLEE))
        self.audio_pt = -1  # payload type of the recording's codec, once chosen
        self.codec = ""
        self.invite_cseq = 0
        self.sdp_codec: str | None = None  # first G.711 format the answer (else the offer) lists
        self.t0 = 0.0  # packet time of the recording's sample 0
        self.handle: RecordingHandle | None = None
        self.sink: RecordingSink | None = None
        self.end: CallEnd | None = None  # set when the call ends
        self.lost = ""  # why the recording could not be opened (store full, write error)
        self.linger_until = 0.0

    def accepts_payload(self, pt: int, ts: float) -> bool:
        """Slow path for a payload type other than the chosen one; starts the recording on the
        first G.711 packet."""
        codec = self.codecs.get(pt)
        if codec is None or codec.name not in RECORDABLE_CODECS or self.lost:
            return False
        if self.handle is None:
            self.audio_pt = pt
            return self._start(codec.name, ts)
        return codec.name == self.codec

    def _start(self, codec: str, ts: float) -> bool:
        """Open the recording; False (and the call marked lost) when the store cannot take it."""
        assert self.sink is not None
        self.codec = codec
        self.t0 = ts if self.answered_at is None else min(self.answered_at, ts)
        info = CallInfo(self.call_id, self.did.key, self.did.label, self.caller, self.t0, codec)
        try:
            self.handle = self.sink.call_started(info)
        except OSError as exc:
            self.lost = str(exc)
            log.critical("designated call to %s NOT RECORDED: %s", self.did.label, exc,
                         extra={"EVENT": "call-lost", "DID_LABEL": self.did.label})  # fmt: skip
            return False
        return True

    @property
    def last_activity(self) -> float:
        return max(self.last_signal, self.streams[0].last_arrival, self.streams[1].last_arrival)


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

    # -- SIP ----------------------------------------------------------------------------------

    def on_sip(self, ts: float, src: bytes, msg: SipMessage) -> None:
        call = self.calls.get(msg.call_id)
        if msg.method == "INVITE" and call is None:
            call = self._new_call(ts, src, msg)
            if call is None:
                return
        if call is None:
            return
        call.last_signal = ts
        from_tag = header_tag(msg.header("from"))
        from_caller = (from_tag == call.caller_tag) == msg.is_request
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
            elif status >= 300 and call.answered_at is None and status not in AUTH_CHALLENGES:
                self.end(call, ts, complete=True, reason=f"rejected-{status}")
                return
        if msg.status < 300 and method in ("INVITE", "PRACK", "UPDATE"):
            self._apply_sdp(call, msg, from_caller)

    def _new_call(self, ts: float, src: bytes, msg: SipMessage) -> Call | None:
        cid = msg.call_id
        if cid in self.ignored:
            return None
        ended = self.ended.get(cid)
        if ended is not None and _cseq_number(msg) <= ended[1]:
            return None  # a late retransmission of a call already ended
        if header_tag(msg.header("to")):
            self.counters["sip_dialog_unknown"] += 1  # a re-INVITE of a dialog we never saw begin
            return None
        did = self.called_did(msg)
        if did is None:
            self.counters["calls_not_designated"] += 1
            self.ignored[cid] = ts
            return None
        if self.trunks and not any(ipaddress.ip_address(src) in net for net in self.trunks):
            self.counters["calls_not_inbound"] += 1
            self.ignored[cid] = ts
            return None
        if len(self.calls) >= self.max_calls:
            self.counters["calls_over_capacity"] += 1
            log.error("call table full (%d calls): a designated call is not recorded", self.max_calls,
                      extra={"EVENT": "call-table-full", "DID_LABEL": did.label})
            self.ignored[cid] = ts
            return None
        try:
            caller = uri_user(name_addr(msg.header("from") or "")[0])
        except ValueError:
            caller = ""
        call = Call(cid, did, caller, header_tag(msg.header("from")), ts)
        call.invite_cseq = _cseq_number(msg)
        call.sink = self.sink
        self.calls[cid] = call
        self.counters["calls_designated"] += 1
        return call

    def called_did(self, msg: SipMessage) -> Did | None:
        """The designated number this INVITE calls, if any."""
        match = self.dids.match
        found = match(uri_user(msg.request_uri))
        if found is not None:
            return found
        for name in ("to", *CALLED_NUMBER_HEADERS):
            for value in msg.headers.get(name, ()):
                for item in split_list(value):
                    try:
                        found = match(uri_user(name_addr(item)[0]))
                    except ValueError:
                        continue
                    if found is not None:
                        return found
        return None

    def _apply_sdp(self, call: Call, msg: SipMessage, from_caller: bool) -> None:
        if not msg.body or msg.content_type != "application/sdp":
            return
        try:
            sdp = SessionDescription.parse(msg.body)
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
                continue
            for pt, codec in m.codecs.items():
                call.codecs.setdefault(pt, codec)
            if call.sdp_codec is None or not from_caller:
                listed = (m.codecs.get(int(f)) for f in m.formats if f.isdigit())
                call.sdp_codec = next((c.name for c in listed if c and c.name in RECORDABLE_CODECS), call.sdp_codec)
            key = endpoint(m.address, m.port)  # type: ignore[arg-type]
            previous = self.media.register(key, stream)
            if previous is not None and previous is not stream:
                self.counters["media_endpoint_taken_over"] += 1
            if key not in call.endpoints:
                call.endpoints.append(key)

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
        horizon = now - FORGET_IGNORED_AFTER
        if self.ignored:
            for cid in [c for c, t in self.ignored.items() if t < horizon]:
                del self.ignored[cid]
        if self.ended:
            for cid in [c for c, (t, _) in self.ended.items() if t < horizon]:
                del self.ended[cid]

    def finish(self, now: float, reason: str) -> None:
        """End every call in progress (capture ended, service stopping) keeping what was recorded."""
        for call in list(self.closing.values()):
            self._finalise(call)
        for call in list(self.calls.values()):
            self.end(call, max(now, call.last_activity), complete=False, reason=reason)  # finalises at once

    def end(self, call: Call, ts: float, *, complete: bool, reason: str) -> None:
        """The call is over. A recording stays open ``END_LINGER`` s longer (packet time) for the
        media still in flight when the BYE crossed the wire; then it is finalised."""
        self.calls.pop(call.call_id, None)
        self.ended[call.call_id] = (ts, call.invite_cseq)  # late retransmissions must not reopen it
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
            if call.sdp_codec is None or any(s.other_payload for s in call.streams):
                self.counters["calls_codec_unsupported"] += 1
                log.warning("answered designated call carried no G.711 audio: not recorded",
                            extra={"EVENT": "call-codec-unsupported", "DID_LABEL": call.did.label})
                return
            if not call._start(call.sdp_codec, call.answered_at):
                self.counters["calls_lost_store_full"] += 1
                return
        self.counters["calls_recorded"] += 1
        assert call.handle is not None
        complete, reason = end.complete, end.reason
        if not any(s.packets for s in call.streams):
            complete, reason = False, reason + "; no media captured"
        call.handle.end(CallEnd(end.ended_at, complete, reason, tuple(s.stats() for s in call.streams)))
        call.handle = None


def _cseq_number(msg: SipMessage) -> int:
    try:
        return msg.cseq[0]
    except ValueError:
        return 0


__all__ = ["CallTracker", "Call", "CALLER", "CALLEE", "SAMPLE_RATE"]
