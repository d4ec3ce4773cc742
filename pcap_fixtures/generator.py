"""The project's capture generator: SIP calls with exact, known RTP payloads, written as pcap.

A :class:`SipCall` describes one call as a SPAN port would show it (INVITE, 100, 180, 200, ACK,
RTP both ways, BYE, 200 — or CANCEL, or a rejection) between a caller on the trunk side and the
contact centre's PBX, with the odd things real ports carry switched on by its fields: VLAN/QinQ
tags, IPv6, IP-fragmented SIP, SIP over TCP (split and coalesced segments), hold by re-INVITE, a
caller behind NAT, SSRC change, sequence/timestamp wrap-around, loss, reordering, duplicates,
DTMF, forking, a B2BUA second leg, an SRTP offer, a flood of RTP from another address. It knows
the audio it sends, so it can say what a correct recorder must write: each WAV channel byte for
byte (:meth:`SipCall.expected_channels`).

Used by ``make_fixtures.py`` (the fixtures in this folder), the tests, and the benchmark.
Deterministic: the same arguments give the same bytes.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from frames import ip_checksum, rtp_packet, tcp_frame, udp_frame, udp_frames, write_pcap  # noqa: F401

SAMPLE_RATE = 8000
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
PAYLOAD_TYPE = {"PCMU": 0, "PCMA": 8, "G722": 9, "G729": 18}
PAYLOAD_BYTES_PER_MS = {"PCMU": 8, "PCMA": 8, "G722": 8, "G729": 1}  # G.722 at 64 kbit/s, G.729 at 8
PT_DTMF = 101
PBX = ("192.0.2.10", 5060)  # the contact centre's PBX (documentation addresses only)
TRUNK = ("203.0.113.5", 5060)  # the carrier's SBC
EXTENSION = ("192.0.2.30", 5060)  # an operator's phone behind the PBX (B2BUA second leg)
DTMF_DIGITS = "0123456789*#ABCD"


def host(address: str) -> str:
    """An address as the host part of a SIP URI or Via (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def _g722_decoder():  # type: ignore[no-untyped-def]
    import G722

    state = G722.G722(16000, 64000)
    return lambda payload: state.decode(payload).tobytes()


@dataclass
class Direction:
    """One direction's RTP as sent: (arrival, seq, rtp ts, payload, payload type, ssrc, anchor),
    in sending order; ``anchor`` marks a packet a recorder must place at its arrival time (the
    first of a source, or the first after a paused sender resumed)."""

    src: tuple[str, int]
    dst: tuple[str, int]
    ssrc: int
    packets: list[tuple[float, int, int, bytes, int, int, bool]] = field(default_factory=list)


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
    lose: tuple[int, ...] = ()  # caller packets (by index) lost in the network
    extra_headers: tuple[str, ...] = ()
    vlan: int | None = None
    tags: tuple[int, ...] = ()  # VLAN TPIDs: (0x8100,) or QinQ (0x88A8, 0x8100)
    fragment: int = 0  # IP-fragment SIP datagrams longer than this (a multiple of 8)
    transport: str = "udp"  # "udp" | "tcp"
    tcp_segment: int = 0  # over TCP: cut each write into segments of this size (0: one per write)
    coalesce: bool = False  # over TCP: consecutive messages of one side go out in one write
    hold: tuple[float, float] | None = None  # (seconds into the talk, duration): re-INVITE sendonly
    nat_private: str | None = None  # the caller's SDP shows this private address (real: caller_media)
    ssrc_change_at: int | None = None  # caller packet index where its SSRC (and seq/ts) restart
    seq_start: int | None = None  # caller's first sequence number (wrap-around tests)
    ts_start: int | None = None  # caller's first RTP timestamp
    reorder: tuple[tuple[int, int], ...] = ()  # caller packet indexes swapped in arrival order
    duplicate: tuple[int, ...] = ()  # caller packets sent twice
    dtmf: tuple[tuple[int, str], ...] = ()  # (caller packet index, digit): an RFC 4733 event replaces 3 packets
    forking: bool = False  # two early dialogs (180 with two To-tags), the second answers
    b2bua: bool = False  # the PBX also originates a second leg to an extension (same conversation)
    srtp: bool = False  # the SDP offers and answers RTP/SAVP with a=crypto
    multipart: bool = False  # the INVITE's SDP travels in a multipart/mixed body beside an ISUP part
    flood: int = 0  # RTP packets from another address into each direction (half with its sender's SSRC)

    def __post_init__(self) -> None:
        self.from_tag = f"ft{self.seed}"
        self.to_tag = f"tt{self.seed}"
        self.answer_at = self.start + self.ring
        self.media_start = self.answer_at + 0.05
        self.frame_kw = {"tags": self.tags, "vlan": self.vlan}

    @property
    def end_time(self) -> float:
        return self.media_start + self.talk + (self.hold[1] if self.hold else 0.0) + 0.1

    # -- SIP ------------------------------------------------------------------------------------

    def _sdp(self, media: tuple[str, int], session: int, direction: str = "sendrecv") -> bytes:
        pt = PAYLOAD_TYPE.get(self.codec, 0)
        ip = "IP6" if ":" in media[0] else "IP4"  # (G722/8000: its RTP clock, RFC 3551)
        proto = "RTP/SAVP" if self.srtp else "RTP/AVP"
        crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n" if self.srtp else ""
        return (
            f"v=0\r\no=- {session} {session} IN {ip} {media[0]}\r\ns=-\r\nc=IN {ip} {media[0]}\r\nt=0 0\r\n"
            f"m=audio {media[1]} {proto} {pt} {PT_DTMF}\r\na=rtpmap:{pt} {self.codec}/8000\r\n"
            f"a=rtpmap:{PT_DTMF} telephone-event/8000\r\na=fmtp:{PT_DTMF} 0-15\r\na=ptime:20\r\n{crypto}a={direction}\r\n"
        ).encode()

    def _message(self, start_line: str, cseq: str, *, to_tag: str | bool, body: bytes = b"",
                 extra: tuple[str, ...] = (), reverse: bool = False) -> bytes:
        """A message of this dialog; ``reverse`` for a request the PBX side sends (From/To swap)."""
        src = self.sip_dst if reverse else self.sip_src
        tag = self.to_tag if to_tag is True else (to_tag or "")
        caller = f'"Caller" <sip:{self.caller}@{host(self.sip_src[0])}>;tag={self.from_tag}'
        callee = f"<{self.to}>" + (f";tag={tag}" if tag else "")
        transport = self.transport.upper()
        lines = [
            start_line,
            f"Via: SIP/2.0/{transport} {host(src[0])}:{src[1]};branch=z9hG4bK{self.seed}{cseq.split()[0]}{'r' if reverse else ''}",
            "Max-Forwards: 70",
            f"From: {callee if reverse else caller}",
            f"To: {caller if reverse else callee}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq}",
            f"Contact: <sip:{'pbx' if reverse else self.caller}@{host(src[0])}:{src[1]}>",
            *extra,
        ]
        if body and self.multipart and start_line.startswith("INVITE "):
            body = (b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n" + body +
                    b"\r\n--unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
                    b"Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\x00\x03\x02\x00\x07"
                    b"\r\n--unique-boundary-1--\r\n")
            lines.append('Content-Type: multipart/mixed;boundary="unique-boundary-1"')
        elif body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _response(self, status: str, cseq: str, *, to_tag: str | bool, body: bytes = b"", reverse: bool = False) -> bytes:
        data = self._message(f"SIP/2.0 {status}", cseq, to_tag=to_tag, body=body, reverse=reverse)
        return data.replace(f"Contact: <sip:{self.caller}@".encode(), b"Contact: <sip:pbx@", 1)

    def messages(self) -> list[tuple[float, bool, bytes]]:
        """The dialog's SIP messages: (time, sent by the caller side, bytes)."""
        t = self.start
        offer_media = (self.nat_private, self.caller_media[1]) if self.nat_private else self.caller_media
        out = [
            (t, True, self._message(f"INVITE {self.called} SIP/2.0", "1 INVITE", to_tag=False,
                                    body=self._sdp(offer_media, 1), extra=self.extra_headers)),
            (t + 0.01, False, self._response("100 Trying", "1 INVITE", to_tag=False)),
        ]
        answer_tag: str | bool = True
        if self.forking:
            out.append((t + 0.1, False, self._response("180 Ringing", "1 INVITE", to_tag=f"fork-a{self.seed}")))
            answer_tag = f"fork-b{self.seed}"
            self.to_tag = answer_tag
            out.append((t + 0.12, False, self._response("180 Ringing", "1 INVITE", to_tag=answer_tag)))
        else:
            out.append((t + 0.1, False, self._response("180 Ringing", "1 INVITE", to_tag=True)))
        if self.outcome == "cancel":
            out += [
                (t + self.ring, True, self._message(f"CANCEL {self.called} SIP/2.0", "1 CANCEL", to_tag=False)),
                (t + self.ring + 0.01, False, self._response("200 OK", "1 CANCEL", to_tag=True)),
                (t + self.ring + 0.02, False, self._response("487 Request Terminated", "1 INVITE", to_tag=True)),
                (t + self.ring + 0.03, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=True)),
            ]
            return out
        if self.outcome == "rejected":
            out += [
                (t + self.ring, False, self._response("486 Busy Here", "1 INVITE", to_tag=True)),
                (t + self.ring + 0.01, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=True)),
            ]
            return out
        out += [
            (self.answer_at, False, self._response("200 OK", "1 INVITE", to_tag=answer_tag, body=self._sdp(self.pbx_media, 2))),
            (self.answer_at + 0.01, True, self._message(f"ACK {self.called} SIP/2.0", "1 ACK", to_tag=answer_tag)),
        ]
        if self.hold:
            h0 = self.media_start + self.hold[0]
            h1 = h0 + self.hold[1]
            uri = f"sip:{self.caller}@{host(self.sip_src[0])}"
            for when, cseq, pbx_dir, caller_dir in ((h0, 1, "sendonly", "recvonly"), (h1 - 0.05, 2, "sendrecv", "sendrecv")):
                out += [
                    (when, False, self._message(f"INVITE {uri} SIP/2.0", f"{cseq} INVITE", to_tag=True, reverse=True,
                                                body=self._sdp(self.pbx_media, 2 + cseq, pbx_dir))),
                    (when + 0.01, True, self._response("200 OK", f"{cseq} INVITE", to_tag=True, reverse=True,
                                                       body=self._sdp(offer_media, 1 + cseq, caller_dir))),
                    (when + 0.02, False, self._message(f"ACK {uri} SIP/2.0", f"{cseq} ACK", to_tag=True, reverse=True)),
                ]
        end = self.end_time
        out += [
            (end, True, self._message(f"BYE {self.called} SIP/2.0", "2 BYE", to_tag=answer_tag)),
            (end + 0.01, False, self._response("200 OK", "2 BYE", to_tag=answer_tag)),
        ]
        return out

    def signalling(self) -> list[tuple[float, bytes]]:
        """The SIP messages as frames (UDP, possibly fragmented; or TCP segments)."""
        msgs = sorted(self.messages(), key=lambda m: m[0])
        if self.transport == "tcp":
            return self._tcp(msgs)
        out = []
        for i, (t, forward, data) in enumerate(msgs):
            a, b = (self.sip_src, self.sip_dst) if forward else (self.sip_dst, self.sip_src)
            for frame in udp_frames(a[0], int(a[1]), b[0], int(b[1]), data, fragment=self.fragment,
                                    ident=self.seed * 100 + i, **self.frame_kw):  # type: ignore[arg-type]
                out.append((t, frame))
        out += self._second_leg()
        return out

    def _tcp(self, msgs: list[tuple[float, bool, bytes]]) -> list[tuple[float, bytes]]:
        writes: list[tuple[float, bool, bytes]] = []
        for t, forward, data in msgs:
            if self.coalesce and writes and writes[-1][1] == forward:
                writes[-1] = (t, forward, writes[-1][2] + data)  # one write, sent when the last is ready
            else:
                writes.append((t, forward, data))
        seq = {True: 1_000_000 + self.seed, False: 0xFFFFF000 + self.seed}  # the PBX side wraps past 2^32
        out = []
        for t, forward, data in writes:
            a, b = (self.sip_src, self.sip_dst) if forward else (self.sip_dst, self.sip_src)
            size = self.tcp_segment or len(data)
            for off in range(0, len(data), size):
                piece = data[off : off + size]
                out.append((t, tcp_frame(a[0], int(a[1]), b[0], int(b[1]), seq[forward], seq[not forward], 0x18, piece,
                                         **self.frame_kw)))
                seq[forward] += len(piece)
        return out

    def _second_leg(self) -> list[tuple[float, bytes]]:
        """The B2BUA's own leg towards the operator's phone: same caller, same To, its own Call-ID,
        media relayed by the PBX. The recorder must not record this conversation twice."""
        if not self.b2bua or self.outcome != "answered":
            return []
        leg = SipCall(self.call_id + "-leg2", f"sip:3001@{EXTENSION[0]}", self.to, self.caller, self.start + 0.05,
                      codec=self.codec, talk=self.talk, ring=self.ring - 0.05, caller_media=(self.pbx_media[0], self.pbx_media[1] + 100),
                      pbx_media=(EXTENSION[0], 30000), sip_src=self.sip_dst, sip_dst=EXTENSION, seed=self.seed + 500,
                      tags=self.tags, vlan=self.vlan)
        return leg.signalling() + leg.rtp_frames()

    # -- media ----------------------------------------------------------------------------------

    def media(self) -> tuple[Direction, Direction]:
        """(caller -> PBX, PBX -> caller) as sent; empty when the call is not answered."""
        up = Direction(self.caller_media, self.pbx_media, 0x1000 + self.seed)
        down = Direction(self.pbx_media, self.caller_media, 0x2000 + self.seed)
        if self.outcome != "answered":
            return up, down
        rng = random.Random(self.seed)
        n = round(self.talk / self.ptime)
        spp = round(self.ptime * SAMPLE_RATE)  # RTP clock ticks per packet (8 kHz clock for all of these)
        size = round(self.ptime * 1000) * PAYLOAD_BYTES_PER_MS[self.codec]
        pt = PAYLOAD_TYPE.get(self.codec, 0)
        base_up, base_down = rng.randrange(1 << 32), rng.randrange(1 << 32)
        seq_up, seq_down = rng.randrange(1 << 16), rng.randrange(1 << 16)
        if self.seq_start is not None:
            seq_up = self.seq_start
        if self.ts_start is not None:
            base_up = self.ts_start
        dtmf = {i + k: (digit, k) for i, digit in self.dtmf for k in range(3)}
        hold_at = round(self.hold[0] / self.ptime) if self.hold else None
        ssrc_up, first_up = up.ssrc, 0
        for i in range(n):
            t = self.media_start + i * self.ptime
            resumed = False
            if hold_at is not None and i >= hold_at:
                t += self.hold[1]  # type: ignore[index]
                resumed = i == hold_at
            if self.ssrc_change_at is not None and i == self.ssrc_change_at:
                ssrc_up, first_up = 0x3000 + self.seed, i
                seq_up, base_up = rng.randrange(1 << 16), rng.randrange(1 << 32)
            # The caller's phone pauses on hold and resumes with its timestamp where it stopped;
            # the PBX's clock runs on through the hold.
            k = i - first_up
            if i in dtmf:
                digit, part = dtmf[i]
                event_ts = base_up + (k - part) * spp
                duration = (part + 1) * spp
                payload = bytes([DTMF_DIGITS.index(digit), 0x80 if part == 2 else 0x0A, duration >> 8, duration & 0xFF])
                up.packets.append((t, seq_up + k, event_ts, payload, PT_DTMF, ssrc_up, False))
            elif i not in self.lose:
                up.packets.append((t, seq_up + k, base_up + k * spp, rng.randbytes(size), pt, ssrc_up,
                                   k == 0 or resumed))
            else:
                rng.randbytes(size)
            ts_down = base_down + round((t - self.media_start) * SAMPLE_RATE)
            down.packets.append((t + 0.003, seq_down + i, ts_down, rng.randbytes(size), pt, down.ssrc, i == 0))
        for a, b in self.reorder:  # each keeps its sending time, so they arrive swapped
            ta, tb = up.packets[a][0], up.packets[b][0]
            up.packets[a], up.packets[b] = (ta,) + up.packets[b][1:], (tb,) + up.packets[a][1:]
        for i in self.duplicate:
            up.packets.insert(i + 1, up.packets[i])
        return up, down

    def rtp_frames(self) -> list[tuple[float, bytes]]:
        out = []
        for d in self.media():
            for t, seq, ts, payload, pt, ssrc, _anchor in d.packets:
                data = rtp_packet(pt, seq, ts, ssrc, payload)
                out.append((t, udp_frames(d.src[0], d.src[1], d.dst[0], d.dst[1], data, **self.frame_kw)[0]))  # type: ignore[arg-type]
        return out + self._flood()

    def _flood(self) -> list[tuple[float, bytes]]:
        """RTP sent at the call's media endpoints from an address that is not in the call, after each
        direction's first packet: every other packet spoofs the direction's SSRC with sequence
        numbers and timestamps running ahead of it. None of it is the call's audio."""
        if not self.flood or self.outcome != "answered":
            return []
        rng = random.Random(self.seed + 9000)
        size = round(self.ptime * 1000) * PAYLOAD_BYTES_PER_MS[self.codec]
        pt = PAYLOAD_TYPE.get(self.codec, 0)
        out = []
        for d in self.media():
            first_t, seq, ts = d.packets[0][0], d.packets[-1][1], d.packets[-1][2]
            for k in range(self.flood):
                t = first_t + 0.001 + k * self.talk / self.flood
                ssrc = d.ssrc if k % 2 else rng.randrange(1 << 32)
                data = rtp_packet(pt, (seq + 1 + k) & 0xFFFF, (ts + (k + 1) * 160) & 0xFFFFFFFF, ssrc, rng.randbytes(size))
                out.append((t, udp_frames("198.51.100.66", 40000 + k % 4, d.dst[0], d.dst[1], data, **self.frame_kw)[0]))  # type: ignore[arg-type]
        return out

    def packets(self) -> list[tuple[float, bytes]]:
        return self.signalling() + self.rtp_frames()

    def expected_channels(self) -> list[bytes]:
        """The two WAV channels a correct recorder writes: payloads placed by RTP timestamp from the
        recording's start (the 200 OK), a source anchored at the arrival of its first packet (and
        again after a pause), gaps and the tail filled with the codec's silence. G.711 bytes as
        sent; G.722 decoded (in arrival order, the ITU reference decoder) to 16-bit PCM at 16 kHz."""
        t0 = self.answer_at
        audio_pt = PAYLOAD_TYPE[self.codec]
        wide = self.codec == "G722"
        fill, width, ratio = (b"\0", 2, 2) if wide else (bytes([SILENCE[self.codec]]), 1, 1)
        chans = []
        for d in self.media():
            position: dict[tuple[int, int], int] = {}  # (ssrc, seq) -> place, by the anchoring rule
            anchor_pos = anchor_ts = end = 0
            for t, seq, ts, payload, pt, ssrc, anchor in sorted(d.packets, key=lambda p: (p[5], p[1])):
                if (ssrc, seq) in position or pt != audio_pt:
                    continue
                if anchor:
                    anchor_pos, anchor_ts = max(round((t - t0) * SAMPLE_RATE), end), ts
                position[(ssrc, seq)] = pos = anchor_pos + ((ts - anchor_ts) & 0xFFFFFFFF)
                end = max(end, pos + len(payload))  # G.711 and G.722 carry one byte per 8 kHz clock tick
            decode = _g722_decoder() if wide else bytes  # decoders keep state: in arrival order, like the recorder
            buf = bytearray()
            for _t, seq, _ts, payload, _pt, ssrc, _anchor in sorted(d.packets, key=lambda p: p[0]):
                pos = position.pop((ssrc, seq), None)
                if pos is None:
                    continue  # a duplicate, or not audio
                samples = decode(payload)
                at = pos * ratio * width
                if len(buf) < at:
                    buf += fill * (at - len(buf))
                buf[at : at + len(samples)] = samples
            chans.append(buf)
        length = max(len(c) for c in chans)
        return [bytes(c) + fill * (length - len(c)) for c in chans]

    def expected_recording(self, did: str, did_label: str) -> dict:
        up = self.media()[0]
        digits = [p for p in up.packets if p[4] == PT_DTMF and p[3][1] & 0x80]
        if self.codec == "G729":  # not decoded here: the recording is the call's original RTP
            return {
                "call_id": self.call_id, "did": did, "did_label": did_label, "caller": self.caller,
                "codec": self.codec, "audio": "not-decoded", "state": "complete",
                "rtp_packets": sum(len(d.packets) for d in self.media()), "dtmf": [],
            }
        channels = self.expected_channels()
        width = 2 if self.codec == "G722" else 1
        return {
            "audio": "transcoded" if self.codec == "G722" else "exact",
            "rate": 16000 if self.codec == "G722" else 8000,
            "call_id": self.call_id,
            "did": did,
            "did_label": did_label,
            "caller": self.caller,
            "codec": self.codec,
            "state": "complete",
            "frames": len(channels[0]) // width,
            "channels": [
                {"channel": i + 1, "sha256": hashlib.sha256(c).hexdigest(), "length": len(c)}
                for i, c in enumerate(channels)
            ],
            "lost": [len(self.lose), 0],
            "dtmf": [DTMF_DIGITS[p[3][0]] for p in digits],
        }
