"""Topic fixtures: the operator transfers a designated call (issue 14), and a call transferred in.

A blind transfer (REFER, then the caller's new INVITE with Referred-By to the extension), an
attended one (the operator's consultation call, then REFER with Refer-To ...?Replaces=, then the
caller's INVITE with Replaces), a B2BUA PBX moving the caller to another phone by re-INVITE in the
same dialog, and a call to a number that is not designated transferred to a designated one. The
expected recordings carry their ``conversation`` token and ``part``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from urllib.parse import quote

from generator import SipCall, host, udp_frames

T = 1_790_000_000.0 + 7200.0  # the fixtures' day, two hours on
NUMBER = "0442003939"
PBX_HOST = "192.0.2.10"
PHONE_B = ("192.0.2.31", 5060)  # the second operator's phone behind the PBX


def token(call_id: str, start: float, did: str) -> str:
    """The conversation's token: its first Call-ID, its first INVITE's time as the pcap gives it
    back (microseconds) and the DID key."""
    usec = round(start * 1_000_000)
    ts = usec // 1_000_000 + (usec % 1_000_000) * 1e-6
    return hashlib.sha256(f"{call_id}\x00{ts!r}\x00{did}".encode()).hexdigest()[:16]


@dataclasses.dataclass
class Part(SipCall):
    """A call of a conversation: its expected recording names the conversation (the first part's
    Call-ID's token) and its part. With ``refer_to`` the contact centre's side sends REFER (202,
    NOTIFY, 200) ``refer_at`` s into the talk; with ``move_to`` the PBX re-INVITEs the caller
    ``move_at`` s into the talk to that media address (a B2BUA handing the call to another phone),
    whose audio then comes from there with its own SSRC."""

    first_call_id: str = ""
    first_start: float = 0.0  # the first part's INVITE time (with first_call_id)
    part: int = 1
    refer_to: str = ""
    refer_at: float = 2.0
    move_to: tuple[str, int] | None = None
    move_at: float = 1.5

    @property
    def refer_time(self) -> float:
        return self.media_start + self.refer_at

    def messages(self) -> list[tuple[float, bool, bytes]]:
        out = super().messages()
        uri = f"sip:{self.caller}@{host(self.sip_src[0])}"
        if self.refer_to and self.outcome == "answered":
            t = self.refer_time
            sipfrag = b"SIP/2.0 100 Trying\r\n"
            out += [
                (t, False, self._message(f"REFER {uri} SIP/2.0", "10 REFER", to_tag=True, reverse=True,
                                         extra=(f"Refer-To: <{self.refer_to}>", f"Referred-By: <sip:operator@{PBX_HOST}>"))),
                (t + 0.01, True, self._response("202 Accepted", "10 REFER", to_tag=True, reverse=True)),
                (t + 0.02, True, self._message(f"NOTIFY sip:pbx@{PBX_HOST} SIP/2.0", "3 NOTIFY", to_tag=True,
                                               extra=("Event: refer", "Subscription-State: terminated;reason=noresource",
                                                      "Content-Type: message/sipfrag"), body=b"")
                 .replace(b"Content-Length: 0", b"Content-Length: %d" % len(sipfrag)) + sipfrag),
                (t + 0.03, False, self._response("200 OK", "3 NOTIFY", to_tag=True)),
            ]
        if self.move_to is not None and self.outcome == "answered":
            t = self.media_start + self.move_at - 0.05
            out += [
                (t, False, self._message(f"INVITE {uri} SIP/2.0", "11 INVITE", to_tag=True, reverse=True,
                                         body=self._sdp(self.move_to, 5))),
                (t + 0.01, True, self._response("200 OK", "11 INVITE", to_tag=True, reverse=True,
                                                body=self._sdp(self.caller_media, 6))),
                (t + 0.02, False, self._message(f"ACK {uri} SIP/2.0", "11 ACK", to_tag=True, reverse=True)),
            ]
        return sorted(out, key=lambda m: m[0])

    def media(self):  # type: ignore[no-untyped-def]
        up, down = super().media()
        if self.move_to is not None:
            switch = self.media_start + self.move_at
            moved = [p for p in down.packets if p[0] >= switch]
            kept = [p for p in down.packets if p[0] < switch]
            seq0, ts0 = 7000 + self.seed, 900_000 + self.seed
            down.packets = kept + [(t, (seq0 + i) & 0xFFFF, ts0 + i * 160, payload, pt, 0x4000 + self.seed, i == 0)
                                   for i, (t, _s, _ts, payload, pt, _ss, _a) in enumerate(moved)]
        return up, down

    def rtp_frames(self) -> list[tuple[float, bytes]]:
        if self.move_to is None:
            return super().rtp_frames()
        from generator import rtp_packet

        switch = self.media_start + self.move_at
        up, down = self.media()
        out = []
        for d, is_up in ((up, True), (down, False)):
            for t, seq, ts, payload, pt, ssrc, _anchor in d.packets:
                src, dst = d.src, d.dst
                if t >= switch:
                    src, dst = (src, self.move_to) if is_up else (self.move_to, dst)
                data = rtp_packet(pt, seq, ts, ssrc, payload)
                out.append((t, udp_frames(src[0], src[1], dst[0], dst[1], data)[0]))
        return out

    def expected_recording(self, did: str, did_label: str) -> dict:
        expected = super().expected_recording(did, did_label)
        first = (self.first_call_id, self.first_start) if self.first_call_id else (self.call_id, self.start)
        expected["conversation"] = token(*first, did)
        expected["part"] = self.part
        expected["part_reason"] = "transfer" if self.part > 1 else ""
        return expected


def designated_call(call_id: str, caller: str, start: float, seed: int, **kw: object) -> Part:
    return Part(call_id, f"sip:{NUMBER}@{PBX_HOST}", f"sip:{NUMBER}@{PBX_HOST}", caller, start,
                caller_media=("203.0.113.20", 41000 + seed), pbx_media=("192.0.2.20", 21000 + seed), seed=seed,
                **kw)  # type: ignore[arg-type]


def transferred(first: Part, call_id: str, extension: str, seed: int, extra: tuple[str, ...]) -> Part:
    """The caller's new INVITE after the REFER, from the trunk side to the extension."""
    return Part(call_id, f"sip:{extension}@{PBX_HOST}", f"sip:{extension}@{PBX_HOST}", first.caller,
                first.refer_time + 0.1, caller_media=("203.0.113.20", 42000 + seed),
                pbx_media=(PHONE_B[0], 22000 + seed), seed=seed, extra_headers=extra,
                first_call_id=first.first_call_id or first.call_id,
                first_start=first.first_start if first.first_call_id else first.start, part=first.part + 1)


def _fixtures() -> dict:  # type: ignore[type-arg]
    from make_fixtures import TopicFixture

    referred_by = f"Referred-By: <sip:operator@{PBX_HOST}>"
    blind = designated_call("xfer-blind-1@203.0.113.5", "09012340001", T, 81, refer_to=f"sip:2001@{PBX_HOST}")
    blind_2 = transferred(blind, "xfer-blind-2@203.0.113.5", "2001", 82, (referred_by,))

    consult = SipCall("xfer-consult-1@192.0.2.10", f"sip:2002@{PHONE_B[0]}", f"sip:2002@{PHONE_B[0]}", "3001",
                      T + 1.0, talk=1.0, caller_media=("192.0.2.20", 23084), pbx_media=(PHONE_B[0], 23184),
                      sip_src=(PBX_HOST, 5060), sip_dst=PHONE_B, seed=84)
    replaces = f"{consult.call_id};to-tag={consult.to_tag};from-tag={consult.from_tag}"
    attended = designated_call("xfer-attended-1@203.0.113.5", "09012340002", T, 83,
                               refer_to=f"sip:2002@{PBX_HOST}?Replaces={quote(replaces, safe='')}")
    attended_2 = transferred(attended, "xfer-attended-2@203.0.113.5", "2002", 85,
                             (referred_by, f"Replaces: {replaces}"))

    moved = designated_call("xfer-reinvite-1@203.0.113.5", "09012340003", T, 86, move_to=(PHONE_B[0], 24086))

    elsewhere = Part("xfer-in-1@203.0.113.5", f"sip:0449999999@{PBX_HOST}", f"sip:0449999999@{PBX_HOST}",
                     "09012340004", T, caller_media=("203.0.113.20", 41087), pbx_media=("192.0.2.20", 21087),
                     seed=87, refer_to=f"sip:{NUMBER}@{PBX_HOST}")
    elsewhere_2 = Part("xfer-in-2@203.0.113.5", f"sip:{NUMBER}@{PBX_HOST}", f"sip:{NUMBER}@{PBX_HOST}",
                       "09012340004", elsewhere.refer_time + 0.1, caller_media=("203.0.113.20", 42088),
                       pbx_media=("192.0.2.20", 22088), seed=88, extra_headers=(referred_by,))
    return {
        "transfer-blind": TopicFixture(
            "A call to 044-200-3939 that the operator transfers blind: REFER (Refer-To extension 2001), 202, "
            "NOTIFY; the caller's new INVITE (new Call-ID, Referred-By) to 2001: two parts of one conversation, "
            "the second with the DID of the first.",
            [(blind, NUMBER), (blind_2, NUMBER)], None, {"calls_transferred": 1, "calls_recorded": 2},
        ),
        "transfer-attended": TopicFixture(
            "An attended transfer: the operator's consultation call to extension 2002 (not recorded), then REFER "
            "with Refer-To ...?Replaces= naming it; the caller's INVITE to 2002 with Replaces: two parts of one "
            "conversation.",
            [(attended, NUMBER), (attended_2, NUMBER), (consult, None)], None,
            {"calls_transferred": 1, "calls_recorded": 2},
        ),
        "transfer-b2bua-reinvite": TopicFixture(
            "A B2BUA PBX hands the caller to another phone with a re-INVITE in the same dialog: new media address, "
            "new SSRC; one recording goes on.",
            [(moved, NUMBER)], None, {"calls_recorded": 1},
        ),
        "transfer-in-not-designated": TopicFixture(
            "A call to a number that is not designated, transferred (REFER, then INVITE with Referred-By) to "
            "044-200-3939: not recorded (only calls received on the designated numbers are).",
            [(elsewhere, None), (elsewhere_2, None)], None, {"calls_transferred_in": 1, "calls_recorded": 0},
        ),
    }


FIXTURES = _fixtures()
