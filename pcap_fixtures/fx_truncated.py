"""Packets cut short by the capture (issue 14): a snap length or a truncating mirror delivers some
frames with fewer bytes than crossed the wire (the pcap record's captured length below its original
length). The recording keeps every captured payload byte in its place and the rest of each cut
packet is the codec's silence; a packet cut inside its RTP header is dropped (lost); a cut SIP
message is counted, not parsed. The expected channels are the clean call's with exactly those bytes
replaced by silence. A remote mirror that truncates (ERSPAN with the inner frame cut, the outer packet
whole) gives the same recording."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from frames import CutFrame, erspan2, gre, ip_frames
from generator import SILENCE, SipCall
from make_fixtures import T, TopicFixture

SIP_SNAP = 120  # a cut SIP message keeps this many bytes of its frame
MIRROR, RECORDER = "198.51.100.7", "198.51.100.20"  # a remote mirror (ERSPAN) and the recorder


def erspan_truncating(packets: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """Every frame as a remote mirror that truncates sends it: the (cut) frame inside ERSPAN II,
    the outer packet whole (the capture itself cut nothing)."""
    return [(t, ip_frames(MIRROR, RECORDER, 47, gre(0x88BE, erspan2(bytes(f), session=7, index=i), seq=i))[0])
            for i, (t, f) in enumerate(packets)]


def rtp_offset(frame: bytes) -> int:
    """Where the RTP header starts in a generator frame (Ethernet, tags, IPv4 or IPv6, UDP)."""
    off = 12
    etype = struct.unpack_from("!H", frame, off)[0]
    while etype in (0x8100, 0x88A8):
        off += 4
        etype = struct.unpack_from("!H", frame, off)[0]
    off += 2
    return off + ((frame[off] & 0x0F) * 4 if etype == 0x0800 else 40) + 8


@dataclass
class CutCall(SipCall):
    """A SipCall as a truncating capture shows it: every ``cut_every``-th RTP packet of each
    direction (in sending order: the ``cut_every``-th, twice that, ...) cut to ``snap`` captured
    bytes; the packets ``header_cut`` names ((direction 0 caller / 1 PBX, index)) cut inside their
    RTP header (6 bytes of it kept); the SIP response whose status line starts ``sip_cut`` cut to
    ``SIP_SNAP`` bytes."""

    cut_every: int = 10
    snap: int = 100
    header_cut: tuple[tuple[int, int], ...] = ()
    sip_cut: str = ""

    def cuts(self) -> dict[tuple[int, int], str]:
        """(ssrc, seq) -> "payload" (cut to ``snap``) or "header" (cut inside the RTP header)."""
        out = {}
        for k, d in enumerate(self.media()):
            for i, p in enumerate(d.packets):
                if (k, i) in self.header_cut:
                    out[(p[5], p[1] & 0xFFFF)] = "header"
                elif i % self.cut_every == self.cut_every - 1:
                    out[(p[5], p[1] & 0xFFFF)] = "payload"
        return out

    def packets(self) -> list[tuple[float, bytes]]:
        cuts = self.cuts()
        out = []
        for t, frame in self.signalling():
            off = rtp_offset(frame)
            if self.sip_cut and frame[off:].startswith(b"SIP/2.0 " + self.sip_cut.encode()):
                frame = CutFrame(frame, SIP_SNAP)
            out.append((t, frame))
        for t, frame in self.rtp_frames():
            off = rtp_offset(frame)
            seq, ssrc = struct.unpack_from("!H", frame, off + 2)[0], struct.unpack_from("!I", frame, off + 8)[0]
            how = cuts.get((ssrc, seq))
            if how == "payload":
                frame = CutFrame(frame, self.snap)
            elif how == "header":
                frame = CutFrame(frame, off + 6)
            out.append((t, frame))
        return out

    def expected_channels(self) -> list[bytes]:
        """The clean call's channels with each cut packet's missing payload bytes silence."""
        channels = [bytearray(c) for c in super().expected_channels()]
        cuts = self.cuts()
        fill = bytes([SILENCE[self.codec]])
        for d, channel in zip(self.media(), channels, strict=False):
            first = d.packets[0]
            anchor_pos, anchor_ts = round((first[0] - self.answer_at) * 8000), first[2]
            for _t, seq, ts, payload, _pt, ssrc, _anchor in d.packets:
                how = cuts.get((ssrc, seq & 0xFFFF))
                if how is None:
                    continue
                pos = anchor_pos + ((ts - anchor_ts) & 0xFFFFFFFF)
                keep = 0 if how == "header" else self.snap - self.rtp_header_end
                channel[pos + keep : pos + len(payload)] = fill * (len(payload) - keep)
        return [bytes(c) for c in channels]

    @property
    def rtp_header_end(self) -> int:
        """Bytes of a frame up to the end of its RTP header (no CSRCs, no extension)."""
        return rtp_offset(self.rtp_frames()[0][1]) + 12

    def expected_recording(self, did: str, did_label: str) -> dict:
        record = super().expected_recording(did, did_label)
        record["lost"] = [sum(1 for k, _ in self.header_cut if k == side) + (len(self.lose) if side == 0 else 0)
                          for side in (0, 1)]
        return record

    def truncated(self) -> int:
        """RTP packets cut short whose captured bytes the recording keeps."""
        return sum(1 for how in self.cuts().values() if how == "payload")


def _call(call_id: str, number: str, **options: object) -> CutCall:
    return CutCall(call_id + "@203.0.113.5", f"sip:{number}@192.0.2.10", f"sip:{number}@192.0.2.10", "09011112222",
                   T, **options)  # type: ignore[arg-type]


MULAW = _call("call-cut-1", "0442003939", seed=91, header_cut=((0, 25), (0, 75), (1, 55)), sip_cut="100 Trying")
ALAW_V6 = _call("call-cut-2", "0442013113", seed=92, codec="PCMA", tags=(0x8100,),
                sip_src=("2001:db8:5::5", 5060), sip_dst=("2001:db8:10::10", 5060),
                caller_media=("2001:db8:5::20", 40000), pbx_media=("2001:db8:10::20", 20000))

FIXTURES = {
    "truncated-rtp": TopicFixture(
        "An inbound G.711 mu-law call through a truncating capture: every 10th RTP frame of each direction "
        "captured only to 100 bytes (46 payload bytes of 160), three cut inside their RTP header, the 100 Trying "
        "cut to 120 bytes. The captured payload bytes are in place, the rest of each cut packet is silence, "
        "the three cut in their header are lost.",
        [(MULAW, "0442003939")],
        counters={"rtp_truncated": MULAW.truncated(), "rtp_truncated_header": 3, "sip_truncated": 1},
    ),
    "truncated-ipv6-vlan": TopicFixture(
        "An inbound G.711 A-law call over IPv6 behind an 802.1Q tag with a 100-byte snap length on every 10th "
        "RTP frame (22 payload bytes captured): captured bytes in place, the rest A-law silence.",
        [(ALAW_V6, "0442013113")],
        counters={"rtp_truncated": ALAW_V6.truncated()},
    ),
    "truncated-erspan": TopicFixture(
        "The call of truncated-rtp from a remote mirror that truncates: every frame inside ERSPAN II (outer "
        "packets whole), the frames cut as in truncated-rtp. Recorded as truncated-rtp is.",
        [(MULAW, "0442003939")],
        transform=erspan_truncating,
        counters={"rtp_truncated": MULAW.truncated(), "rtp_truncated_header": 3, "sip_truncated": 1,
                  "encap_erspan2": len(MULAW.packets())},
    ),
}
