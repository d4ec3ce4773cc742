"""Topic fixtures: an SBC with two faces (issue 14), and its near misses.

The SBC takes the carrier's INVITE on its outside face (203.0.113.5 -> 198.51.100.1) and sends its
own, with a new Call-ID, from its inside face (198.51.100.2) to the PBX (192.0.2.10): same caller,
same called number, 2 ms later. It relays the RTP: the caller's payloads reach the PBX 2 ms after
they reached the SBC, the PBX's reach the caller 2 ms after they left the PBX. One conversation:
one recording (the outside face, the earlier leg), the inside face linked, not recorded.
"""
from __future__ import annotations

import dataclasses

from generator import SipCall

T = 1_790_000_000.0 + 3600.0  # the fixtures' day, an hour on
NUMBER = "0442003939"
CARRIER = ("203.0.113.5", 5060)
SBC_OUTSIDE = ("198.51.100.1", 5060)
SBC_INSIDE = ("198.51.100.2", 5060)
PBX = ("192.0.2.10", 5060)


@dataclasses.dataclass
class InsideFace(SipCall):
    """The SBC's inside leg of ``outside``: its media the outside leg's payloads, relayed ``delay``
    s later towards the PBX (and ``delay`` s earlier from it); with ``relay`` off its own audio (a
    call that only looks like the other face); with ``media`` off no RTP seen at all (a mirror of
    one face only)."""

    outside: SipCall | None = None
    delay: float = 0.002
    relay: bool = True
    media_seen: bool = True

    def media(self):  # type: ignore[no-untyped-def]
        up, down = super().media()
        if self.relay and self.outside is not None:
            o_up, o_down = self.outside.media()
            up.packets = [(t + self.delay, seq, ts, p, pt, up.ssrc, a) for t, seq, ts, p, pt, _s, a in o_up.packets]
            down.packets = [(t - self.delay, seq, ts, p, pt, down.ssrc, a) for t, seq, ts, p, pt, _s, a in o_down.packets]
        return up, down

    def rtp_frames(self) -> list[tuple[float, bytes]]:
        return super().rtp_frames() if self.media_seen else []


def outside(call_id: str, caller: str, start: float, seed: int) -> SipCall:
    return SipCall(call_id, f"sip:{NUMBER}@{SBC_OUTSIDE[0]}", f"sip:{NUMBER}@{SBC_OUTSIDE[0]}", caller, start,
                   caller_media=("203.0.113.20", 40000 + seed), pbx_media=("198.51.100.1", 30000 + seed),
                   sip_src=CARRIER, sip_dst=SBC_OUTSIDE, seed=seed)


def inside(call_id: str, face: SipCall | None, caller: str, start: float, seed: int, **kw: object) -> InsideFace:
    ring = face.ring - 0.006 if face is not None else 0.4
    return InsideFace(call_id, f"sip:{NUMBER}@{PBX[0]}", f"sip:{NUMBER}@{PBX[0]}", caller, start, ring=ring,
                      caller_media=("198.51.100.2", 32000 + seed), pbx_media=("192.0.2.20", 20000 + seed),
                      sip_src=SBC_INSIDE, sip_dst=PBX, seed=seed, outside=face, **kw)  # type: ignore[arg-type]


def adding(*calls: SipCall):  # type: ignore[no-untyped-def]
    """A transform adding the packets of legs that are neither recorded nor 'not recorded' (an
    other face, linked by Call-ID: its Call-ID is in the index)."""

    def transform(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        return sorted(packets + [p for c in calls for p in c.packets()], key=lambda p: p[0])

    return transform


def _fixtures() -> dict:  # type: ignore[type-arg]
    from make_fixtures import TopicFixture

    sbc = outside("sbc-outside-1@203.0.113.5", "09055556666", T, 71)
    sbc_in = inside("sbc-inside-1@198.51.100.2", sbc, "09055556666", T + 0.002, 72)
    one = outside("sbc-outside-2@203.0.113.5", "09055556667", T, 73)
    one_in = inside("sbc-inside-2@198.51.100.2", one, "09055556667", T + 0.002, 74, media_seen=False)
    like = outside("sbc-outside-3@203.0.113.5", "09055556668", T, 75)
    like_in = inside("sbc-inside-3@198.51.100.2", like, "09055556668", T + 0.002, 76, relay=False)
    early = outside("sbc-later-1@203.0.113.5", "09055556669", T, 77)
    later = inside("sbc-later-2@198.51.100.2", None, "09055556669", T + 60.0, 78, relay=False)
    x = outside("sbc-two-callers-1@203.0.113.5", "09055556670", T, 79)
    y = inside("sbc-two-callers-2@198.51.100.2", None, "09055556671", T + 0.002, 80, relay=False)
    return {
        "sbc-two-faces": TopicFixture(
            "An SBC with two faces: the carrier's INVITE to 044-200-3939 on the outside face, the SBC's own "
            "(new Call-ID) from its inside face to the PBX 2 ms later, RTP relayed both ways 2 ms apart: one "
            "recording (the outside face), the inside face linked.",
            [(sbc, NUMBER)], adding(sbc_in), {"calls_other_leg": 1, "calls_designated": 1},
        ),
        "sbc-one-face-mirrored": TopicFixture(
            "An SBC with two faces whose inside face's RTP the mirror does not see (as fax-t38-reinvite.pcap): "
            "one recording, the inside face linked (unsure: nothing to compare, nothing of it to record).",
            [(one, NUMBER)], adding(one_in), {"calls_other_leg": 1},
        ),
        "sbc-lookalike": TopicFixture(
            "Looks like an SBC's two faces (same caller, same number, 2 ms apart, other addresses) but the "
            "audio is not relayed between them: both recorded, byte for byte (the second held while "
            "compared, then replayed), linked to each other as unsure.",
            [(like, NUMBER), (like_in, NUMBER)], None, {"calls_other_leg_unsure": 1, "calls_other_leg": 0},
        ),
        "sbc-near-misses": TopicFixture(
            "Near misses of an SBC's two faces: the same caller calls the same number again a minute later "
            "from the inside address; two different callers call the same number 2 ms apart: four recordings.",
            [(early, NUMBER), (later, NUMBER), (x, NUMBER), (y, NUMBER)], None,
            {"calls_other_leg": 0, "calls_other_leg_unsure": 0},
        ),
    }


FIXTURES = _fixtures()
