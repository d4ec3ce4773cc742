"""The project's capture generator: SIP calls with exact, known RTP payloads, written as pcap.

A :class:`SipCall` describes one call as a SPAN port would show it (INVITE, 100, 180, 200, ACK,
RTP both ways, BYE, 200 — or CANCEL, or a rejection) between a caller on the trunk side and the
contact centre's PBX. It knows the audio it sends, so it can say what a correct recorder must write:
each WAV channel byte for byte (:meth:`SipCall.expected_channels`).

Used by ``make_fixtures.py`` (the small fixtures in this folder) and by the benchmark (large
synthetic SPAN captures). Deterministic: the same arguments give the same bytes.
"""
from __future__ import annotations

import hashlib
import random
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

SAMPLE_RATE = 8000
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
PAYLOAD_TYPE = {"PCMU": 0, "PCMA": 8}
PBX = ("192.0.2.10", 5060)  # the contact centre's PBX (documentation addresses only)
TRUNK = ("203.0.113.5", 5060)  # the carrier's SBC


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, vlan: int | None = None, ident: int = 0) -> bytes:
    """Ethernet + (802.1Q) + IPv4 + UDP, checksums filled in (UDP checksum 0: allowed on IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    return eth + b"\x08\x00" + ip + udp


def write_pcap(path: str, packets: Iterable[tuple[float, bytes]]) -> int:
    """Write (timestamp, frame) pairs, sorted by time, as a microsecond pcap. Returns the count."""
    ordered = sorted(packets, key=lambda p: p[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in ordered:
            usec_total = round(ts * 1_000_000)
            f.write(struct.pack("<IIII", usec_total // 1_000_000, usec_total % 1_000_000, len(frame), len(frame)))
            f.write(frame)
    return len(ordered)


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


@dataclass
class Direction:
    """One direction's RTP as sent: (arrival time, seq, rtp ts, payload), in sending order."""

    src: tuple[str, int]
    dst: tuple[str, int]
    ssrc: int
    packets: list[tuple[float, int, int, bytes]] = field(default_factory=list)


@dataclass
class SipCall:
    call_id: str
    called: str  # Request-URI, e.g. "sip:0442003939@192.0.2.10"
    to: str  # To header URI
    caller: str  # From user, e.g. "09012345678"
    start: float  # time of the INVITE
    codec: str = "PCMU"
    talk: float = 3.0  # seconds of audio each way
    ring: float = 0.4  # INVITE -> 200
    outcome: str = "answered"  # "answered" | "cancel" | "rejected"
    caller_media: tuple[str, int] = ("203.0.113.20", 40000)
    pbx_media: tuple[str, int] = ("192.0.2.20", 20000)
    sip_src: tuple[str, str | int] = TRUNK
    sip_dst: tuple[str, str | int] = PBX
    ptime: float = 0.02
    seed: int = 1
    lose: tuple[int, ...] = ()  # packet indexes (caller direction) not sent
    extra_headers: tuple[str, ...] = ()
    vlan: int | None = None

    def __post_init__(self) -> None:
        self.from_tag = f"ft{self.seed}"
        self.to_tag = f"tt{self.seed}"
        self.answer_at = self.start + self.ring
        self.media_start = self.answer_at + 0.05

    # -- SIP ------------------------------------------------------------------------------------

    def _sdp(self, media: tuple[str, int], session: int) -> bytes:
        pt = PAYLOAD_TYPE[self.codec]
        return (
            f"v=0\r\no=- {session} {session} IN IP4 {media[0]}\r\ns=-\r\nc=IN IP4 {media[0]}\r\nt=0 0\r\n"
            f"m=audio {media[1]} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {self.codec}/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        ).encode()

    def _message(self, start_line: str, cseq: str, *, to_tag: bool, body: bytes = b"", extra: tuple[str, ...] = ()) -> bytes:
        src = self.sip_src
        lines = [
            start_line,
            f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{self.seed}{cseq.split()[0]}",
            "Max-Forwards: 70",
            f'From: "Caller" <sip:{self.caller}@{src[0]}>;tag={self.from_tag}',
            f"To: <{self.to}>" + (f";tag={self.to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq}",
            f"Contact: <sip:{self.caller}@{src[0]}:{src[1]}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _sip(self, ts: float, forward: bool, data: bytes) -> tuple[float, bytes]:
        a, b = (self.sip_src, self.sip_dst) if forward else (self.sip_dst, self.sip_src)
        return ts, udp_frame(a[0], int(a[1]), b[0], int(b[1]), data, vlan=self.vlan)

    def signalling(self) -> list[tuple[float, bytes]]:
        t = self.start
        out = [
            self._sip(t, True, self._message(f"INVITE {self.called} SIP/2.0", "1 INVITE", to_tag=False,
                                             body=self._sdp(self.caller_media, 1), extra=self.extra_headers)),
            self._sip(t + 0.01, False, self._response("100 Trying", "1 INVITE", to_tag=False)),
            self._sip(t + 0.1, False, self._response("180 Ringing", "1 INVITE", to_tag=True)),
        ]  # fmt: skip
        if self.outcome == "cancel":
            out.append(self._sip(t + self.ring, True, self._message(f"CANCEL {self.called} SIP/2.0", "1 CANCEL", to_tag=False)))
            out.append(self._sip(t + self.ring + 0.01, False, self._response("200 OK", "1 CANCEL", to_tag=True)))
            out.append(self._sip(t + self.ring + 0.02, False, self._response("487 Request Terminated", "1 INVITE", to_tag=True)))
            out.append(self._sip(t + self.ring + 0.03, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=True)))
            return out
        if self.outcome == "rejected":
            out.append(self._sip(t + self.ring, False, self._response("486 Busy Here", "1 INVITE", to_tag=True)))
            out.append(self._sip(t + self.ring + 0.01, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=True)))
            return out
        out.append(self._sip(self.answer_at, False, self._response("200 OK", "1 INVITE", to_tag=True, body=self._sdp(self.pbx_media, 2))))
        out.append(self._sip(self.answer_at + 0.01, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=True)))
        end = self.media_start + self.talk + 0.1
        out.append(self._sip(end, True, self._message(f"BYE {self.called} SIP/2.0", "2 BYE", to_tag=True)))
        out.append(self._sip(end + 0.01, False, self._response("200 OK", "2 BYE", to_tag=True)))
        return out

    def _response(self, status: str, cseq: str, *, to_tag: bool, body: bytes = b"") -> bytes:
        data = self._message(f"SIP/2.0 {status}", cseq, to_tag=to_tag, body=body)
        return data.replace(f"Contact: <sip:{self.caller}@".encode(), b"Contact: <sip:pbx@", 1)

    @property
    def end_time(self) -> float:
        return self.media_start + self.talk + 0.1

    # -- media ----------------------------------------------------------------------------------

    def media(self) -> tuple[Direction, Direction]:
        """(caller -> PBX, PBX -> caller) as sent; empty when the call is not answered."""
        up = Direction(self.caller_media, self.pbx_media, 0x1000 + self.seed)
        down = Direction(self.pbx_media, self.caller_media, 0x2000 + self.seed)
        if self.outcome != "answered":
            return up, down
        rng = random.Random(self.seed)
        n = round(self.talk / self.ptime)
        spp = round(self.ptime * SAMPLE_RATE)
        base_up, base_down = rng.randrange(1 << 32), rng.randrange(1 << 32)
        seq_up, seq_down = rng.randrange(1 << 16), rng.randrange(1 << 16)
        for i in range(n):
            t = self.media_start + i * self.ptime
            if i not in self.lose:
                up.packets.append((t, seq_up + i, base_up + i * spp, rng.randbytes(spp)))
            down.packets.append((t + 0.003, seq_down + i, base_down + i * spp, rng.randbytes(spp)))
        return up, down

    def rtp_frames(self) -> list[tuple[float, bytes]]:
        out = []
        pt = PAYLOAD_TYPE[self.codec]
        for d in self.media():
            for t, seq, ts, payload in d.packets:
                data = rtp_packet(pt, seq, ts, d.ssrc, payload)
                out.append((t, udp_frame(d.src[0], d.src[1], d.dst[0], d.dst[1], data, vlan=self.vlan)))
        return out

    def packets(self) -> list[tuple[float, bytes]]:
        return self.signalling() + self.rtp_frames()

    def expected_channels(self) -> list[bytes]:
        """The two WAV channels a correct recorder writes: payloads placed by RTP timestamp from the
        recording's start (the 200 OK), gaps and the tail filled with the codec's silence byte."""
        t0 = self.answer_at
        fill = SILENCE[self.codec]
        chans = []
        for d in self.media():
            if not d.packets:
                chans.append(bytearray())
                continue
            first_t, _, first_ts, _ = d.packets[0]
            anchor = round((first_t - t0) * SAMPLE_RATE)
            buf = bytearray()
            for _, _, ts, payload in d.packets:
                pos = anchor + ((ts - first_ts) & 0xFFFFFFFF)
                if len(buf) < pos:
                    buf += bytes([fill]) * (pos - len(buf))
                buf[pos : pos + len(payload)] = payload
            chans.append(buf)
        length = max(len(c) for c in chans)
        return [bytes(c) + bytes([fill]) * (length - len(c)) for c in chans]

    def expected_recording(self, did: str, did_label: str) -> dict:
        channels = self.expected_channels()
        return {
            "call_id": self.call_id,
            "did": did,
            "did_label": did_label,
            "caller": self.caller,
            "codec": self.codec,
            "state": "complete",
            "frames": len(channels[0]),
            "channels": [
                {"channel": i + 1, "sha256": hashlib.sha256(c).hexdigest(), "length": len(c)}
                for i, c in enumerate(channels)
            ],
            "lost": [len(self.lose), 0],
        }
