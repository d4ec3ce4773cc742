"""Fixtures: a codec change mid-call (issue 14). The PBX re-INVITEs the caller with another codec
(PCMU -> PCMA, PCMU -> G.722, PCMU -> PCMA -> PCMU), both sides answer and switch their RTP to it
(same SSRC, sequence numbers and timestamps running on). Nothing may be lost or altered: each codec's
stretch is a recording part of its own (the same Call-ID and conversation, part 1, 2, ...), its
audio placed from the part's start (its first packet), PCMA bytes as they crossed the wire, G.722
decoded as for a whole G.722 call.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from generator import (
    PAYLOAD_BYTES_PER_MS,
    PAYLOAD_TYPE,
    PT_DTMF,
    SAMPLE_RATE,
    SILENCE,
    Direction,
    SipCall,
    _g722_decoder,
)
from make_fixtures import TopicFixture, call

REINVITE_LEAD = 0.03  # s: the PBX's re-INVITE goes this long before the first packet of the new codec


@dataclass
class CodecChangeCall(SipCall):
    """A SipCall whose PBX changes the codec by re-INVITE at ``changes`` (seconds into the talk, codec).
    Its recordings are :meth:`parts`: one per codec stretch."""

    changes: tuple[tuple[float, str], ...] = ()
    late_old: bool = False  # the caller's last packet of the old codec arrives after the first of the new
    offer_both: bool = False  # the PBX's re-INVITE offers the old codec first, then the new; the caller answers the new
    listed: tuple[str, ...] = ()  # the call's first offer and answer list these codecs (else its codec alone)

    def _sdp(self, media: tuple[str, int], session: int, direction: str = "sendrecv") -> bytes:
        if not self.listed:
            return super()._sdp(media, session, direction)
        return self._codec_sdp(media, session, *self.listed)

    def _codec_sdp(self, media: tuple[str, int], session: int, *codecs: str) -> bytes:
        pts = " ".join(str(PAYLOAD_TYPE[c]) for c in codecs)
        maps = "".join(f"a=rtpmap:{PAYLOAD_TYPE[c]} {c}/8000\r\n" for c in codecs)
        return (
            f"v=0\r\no=- {session} {session} IN IP4 {media[0]}\r\ns=-\r\nc=IN IP4 {media[0]}\r\nt=0 0\r\n"
            f"m=audio {media[1]} RTP/AVP {pts} {PT_DTMF}\r\n{maps}"
            f"a=rtpmap:{PT_DTMF} telephone-event/8000\r\na=fmtp:{PT_DTMF} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()

    def messages(self) -> list[tuple[float, bool, bytes]]:
        out = super().messages()
        uri = f"sip:{self.caller}@{self.sip_src[0]}"
        previous = self.codec
        for n, (at, codec) in enumerate(self.changes, start=1):
            offer = (previous, codec) if self.offer_both else (codec,)
            previous = codec
            when = self.media_start + round(at / self.ptime) * self.ptime - REINVITE_LEAD
            out += [
                (when, False, self._message(f"INVITE {uri} SIP/2.0", f"{n} INVITE", to_tag=True, reverse=True,
                                            body=self._codec_sdp(self.pbx_media, 2 + n, *offer))),
                (when + 0.01, True, self._response("200 OK", f"{n} INVITE", to_tag=True, reverse=True,
                                                   body=self._codec_sdp(self.caller_media, 1 + n, codec))),
                (when + 0.02, False, self._message(f"ACK {uri} SIP/2.0", f"{n} ACK", to_tag=True, reverse=True)),
            ]
        return out

    def switches(self) -> list[tuple[int, str]]:
        """(first packet index, codec) of each part."""
        return [(0, self.codec)] + [(round(at / self.ptime), codec) for at, codec in self.changes]

    def media(self) -> tuple[Direction, Direction]:
        up = Direction(self.caller_media, self.pbx_media, 0x1000 + self.seed)
        down = Direction(self.pbx_media, self.caller_media, 0x2000 + self.seed)
        rng = random.Random(self.seed)
        n = round(self.talk / self.ptime)
        spp = round(self.ptime * SAMPLE_RATE)
        base_up, base_down = rng.randrange(1 << 32), rng.randrange(1 << 32)
        seq_up, seq_down = rng.randrange(1 << 16), rng.randrange(1 << 16)
        starts = dict(self.switches())
        codec = self.codec
        for i in range(n):
            first = i in starts  # the first packet of a part: placed at its arrival in the part
            codec = starts.get(i, codec)
            size = round(self.ptime * 1000) * PAYLOAD_BYTES_PER_MS[codec]
            pt = PAYLOAD_TYPE[codec]
            t = self.media_start + i * self.ptime
            up.packets.append((t, seq_up + i, base_up + i * spp, rng.randbytes(size), pt, up.ssrc, first))
            ts_down = base_down + round((t - self.media_start) * SAMPLE_RATE)
            down.packets.append((t + 0.003, seq_down + i, ts_down, rng.randbytes(size), pt, down.ssrc, first))
        if self.late_old:  # arrives just after the first packet of the new codec
            k = self.switches()[1][0]
            up.packets[k - 1] = (up.packets[k][0] + 0.001,) + up.packets[k - 1][1:]
        return up, down

    def parts(self) -> list[CodecPart]:
        return [CodecPart(self, n) for n in range(1, len(self.switches()) + 1)]


class CodecPart:
    """One part of a :class:`CodecChangeCall`, as a fixture entry: the first part carries the whole
    call's packets, every part its expected recording."""

    def __init__(self, whole: CodecChangeCall, number: int) -> None:
        self.whole = whole
        self.number = number
        self.call_id = whole.call_id
        self.transport = whole.transport
        self.fragment = whole.fragment

    def packets(self) -> list[tuple[float, bytes]]:
        return self.whole.packets() if self.number == 1 else []

    def messages(self) -> list[tuple[float, bool, bytes]]:
        return self.whole.messages() if self.number == 1 else []

    def expected_recording(self, did: str, did_label: str) -> dict:
        whole = self.whole
        switches = whole.switches()
        first, codec = switches[self.number - 1]
        stop = switches[self.number][0] if self.number < len(switches) else 1 << 30
        directions = whole.media()

        def begins(number: int) -> float:  # a part begins at the first arrival of its packets (either way)
            if number == 1:
                return whole.answer_at
            if number > len(switches):
                return float("inf")
            at, stop_at = switches[number - 1][0], switches[number][0] if number < len(switches) else 1 << 30
            return min(p[0] for d in directions for p in d.packets if at <= p[1] - d.packets[0][1] < stop_at)

        t0, t_next = begins(self.number), begins(self.number + 1)
        chans = []
        wide = codec == "G722"
        fill, width, ratio = (b"\0", 2, 2) if wide else (bytes([SILENCE[codec]]), 1, 1)
        for d in directions:
            base = d.packets[0][1]
            mine = [p for p in d.packets if first <= p[1] - base < stop]
            arrived = sorted(mine, key=lambda p: p[0])
            kept: list[tuple[int, bytes]] = []
            anchor_pos: int | None = None
            anchor_ts = 0
            for t, _seq, ts, payload, _pt, _ssrc, _anchor in arrived:
                if t >= t_next:
                    continue  # came after the next part began: dropped (counted there as another payload)
                if anchor_pos is None:  # the part's first packet of this direction: at its arrival
                    anchor_pos, anchor_ts = round((t - t0) * SAMPLE_RATE), ts
                kept.append((anchor_pos + ((ts - anchor_ts) & 0xFFFFFFFF), payload))
            decode = _g722_decoder() if wide else bytes
            buf = bytearray()
            for pos, payload in kept:
                samples = decode(payload)
                at = pos * ratio * width
                if len(buf) < at:
                    buf += fill * (at - len(buf))
                buf[at : at + len(samples)] = samples
            chans.append(buf)
        length = max(len(c) for c in chans)
        channels = [bytes(c) + fill * (length - len(c)) for c in chans]
        return {
            "audio": "transcoded" if wide else "exact",
            "rate": 16000 if wide else 8000,
            "call_id": self.call_id,
            "part": self.number,
            "part_reason": "" if self.number == 1 else "codec-change",
            "did": did,
            "did_label": did_label,
            "caller": whole.caller,
            "codec": codec,
            "state": "complete",
            "frames": len(channels[0]) // width,
            "channels": [
                {"channel": i + 1, "sha256": hashlib.sha256(c).hexdigest(), "length": len(c)}
                for i, c in enumerate(channels)
            ],
            "lost": [0, 0],
            "dtmf": [],
        }


def codec_call(call_id: str, number: str, seed: int, changes: tuple[tuple[float, str], ...], **options: object
               ) -> CodecChangeCall:
    like = call(call_id, number, seed=seed)
    return CodecChangeCall(like.call_id, like.called, like.to, like.caller, like.start, seed=seed, changes=changes,
                           **options)  # type: ignore[arg-type]


def _entries(whole: CodecChangeCall, number: str) -> list[tuple[object, str | None]]:
    return [(part, number) for part in whole.parts()]


FIXTURES = {
    "codec-change-alaw": TopicFixture(
        "The PBX re-INVITEs an inbound call from PCMU to PCMA 1.5 s into the talk: two recording parts, the PCMU "
        "one and the PCMA one, each byte for byte as it crossed the wire.",
        _entries(codec_call("call-codec-1", "0442003939", 91, ((1.5, "PCMA"),)), "0442003939"),  # type: ignore[arg-type]
        counters={"calls_recorded": 2, "recording_parts_codec_change": 1},
    ),
    "codec-change-g722": TopicFixture(
        "The PBX re-INVITEs an inbound call from PCMU to G.722 (HD voice) 1.5 s into the talk: a PCMU part and a "
        "G.722 part decoded to 16 kHz PCM.",
        _entries(codec_call("call-codec-2", "0442002111", 92, ((1.5, "G722"),)), "0442002111"),  # type: ignore[arg-type]
        counters={"calls_recorded": 2, "recording_parts_codec_change": 1},
    ),
    "codec-change-offer-both": TopicFixture(
        "The PBX's re-INVITE offers PCMU then PCMA and the caller answers PCMA: the contact centre's SDP still "
        "lists PCMU first, so the change shows only in the RTP; the third PCMA packet in a row begins the PCMA "
        "part, and the first two of each direction are placed in it too: nothing lost.",
        _entries(codec_call("call-codec-4", "0445566666", 94, ((1.5, "PCMA"),), offer_both=True), "0445566666"),  # type: ignore[arg-type]
        counters={"calls_recorded": 2, "recording_parts_codec_change": 1},
    ),
    "codec-change-back": TopicFixture(
        "PCMU, then PCMA by re-INVITE at 1 s, then PCMU again at 2 s: three parts; the caller's last PCMU packet "
        "before the first change arrives after the first PCMA one and is dropped (counted as another payload).",
        _entries(codec_call("call-codec-3", "0442013113", 93, ((1.0, "PCMA"), (2.0, "PCMU")), late_old=True),
                 "0442013113"),  # type: ignore[arg-type]
        counters={"calls_recorded": 3, "recording_parts_codec_change": 2},
    ),
}
