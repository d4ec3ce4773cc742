"""Traffic recorderd does not understand (issue 14): a SPAN port that delivers a designated call
inside MPLS (ethertype 0x8847), which recorderd does not open. Nothing can be recorded; the replay
must say so once (EVENT=capture-unrecognised, with "ethertype 0x8847: N") instead of a quiet
"0 recorded". The call lasts over a minute: the alert looks at a minute of packet time."""
from __future__ import annotations

import struct

from make_fixtures import TopicFixture, call

MPLS = 0x8847
LABEL = 1001  # an arbitrary label of the carrier's


def _mpls(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Every frame's IP packet behind one MPLS label (bottom of stack, TTL 64)."""
    shim = struct.pack("!HI", MPLS, LABEL << 12 | 1 << 8 | 64)
    return [(ts, frame[:12] + shim + frame[14:]) for ts, frame in packets]


_CALL = call("call-mpls-1", "0442003939", talk=62.0, seed=141)

FIXTURES = {
    "unrecognised-mpls": TopicFixture(
        "A designated call whose every frame arrives inside MPLS (0x8847), which recorderd does not open: "
        "nothing is recorded, every frame is counted as not IP, and the replay says the traffic is not understood.",
        [(_CALL, None)],
        _mpls,
        {"calls_recorded": 0, "not_ip": len(_CALL.packets()), "sip_messages": 0},
    ),
}
