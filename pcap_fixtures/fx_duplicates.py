"""Fixtures: the same packet twice (issue 14). Two mirror sessions onto the SPAN port (ingress and
egress, or a local and a remote SPAN) deliver every frame twice, some three times, microseconds to a
few milliseconds apart. The copies differ where a second session's copy differs (another VLAN tag,
the TTL one or two lower, so another IP checksum); their UDP payload is the same. Each call must be
recorded once with the clean call's audio, byte for byte, and every copy counted as a mirror
duplicate, none as the sender's.
"""
from __future__ import annotations

import dataclasses
import struct

from frames import ip_checksum
from make_fixtures import TopicFixture, fixtures

SECOND_VLAN = 200  # the second session's copy arrives tagged
SOON = 2e-6  # s after the first: the usual gap between two sessions' copies
LATER = 0.004  # s after the first for every 5th frame: another packet arrives between them
THIRD_EVERY = 7  # every 7th frame comes a third time (untagged, TTL two lower)


def copy(frame: bytes, ttl_less: int, vlan: int | None) -> bytes:
    """``frame`` (Ethernet II, IPv4) as another mirror session delivers it: the TTL ``ttl_less``
    lower, the IP checksum recomputed, an 802.1Q tag ``vlan`` inserted when given."""
    assert frame[12:14] == b"\x08\x00" and frame[14] >> 4 == 4, "an untagged IPv4 frame"
    ihl = (frame[14] & 0x0F) * 4
    header = bytearray(frame[14 : 14 + ihl])
    header[8] -= ttl_less
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", ip_checksum(bytes(header)))
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return frame[:12] + tag + frame[12:14] + bytes(header) + frame[14 + ihl :]


def mirrored_twice(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Every frame, then its second session's copy; every ``THIRD_EVERY``-th a third copy too."""
    out = []
    for i, (t, frame) in enumerate(packets):
        out.append((t, frame))
        out.append((t + (LATER if i % 5 == 4 else SOON), copy(frame, 1, SECOND_VLAN)))
        if i % THIRD_EVERY == THIRD_EVERY - 1:
            out.append((t + 2 * SOON, copy(frame, 2, None)))
    return out


def clean_entries() -> list:
    """The calls of inbound-mulaw, dtmf and hold, one after another (20 s apart: same media ports)."""
    entries = []
    for n, name in enumerate(("inbound-mulaw", "dtmf", "hold")):
        for call, number in fixtures()[name][1]:
            entries.append((dataclasses.replace(call, start=call.start + 20.0 * n), number))
    return entries


ENTRIES = clean_entries()
FRAMES = sum(len(call.packets()) for call, _ in ENTRIES)
COPIES = FRAMES + FRAMES // THIRD_EVERY

FIXTURES = {
    "mirror-duplicates": TopicFixture(
        "The calls of inbound-mulaw, dtmf and hold seen through two mirror sessions: every frame twice (the "
        "copy tagged VLAN 200, TTL one lower), every 7th three times; each recorded once as the clean call, "
        "every copy counted as a mirror duplicate.",
        ENTRIES,
        mirrored_twice,
        {"mirror_duplicates": COPIES, "calls_recorded": 3},
    ),
}
