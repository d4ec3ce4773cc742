"""The per-packet path: frames -> UDP -> SIP to the tracker, RTP to its stream (or dropped).

IP fragments and TCP segments leave the loop for their own (rare) paths: fragment reassembly and
SIP-over-TCP stream reassembly; what they complete joins the same dispatch.

This is the hot path. Per packet it decodes link/IP/UDP with ``struct``, sends an RTP-looking
payload through one MediaMap lookup on its destination (no match: counted and dropped) and one
compare of its source with its direction's (learned from the direction's first packet; another
source is counted as ``rtp_other_source`` and dropped), and hands anything that looks like SIP to
the parser and the tracker. Errors in a packet are counted by kind
and the packet is dropped; nothing is logged per packet. Time is packet time only.
"""
from __future__ import annotations

import hashlib
import math
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .assembler import MIRROR_WINDOW_S, StreamAssembler
from .cut import split_cut_rtp
from .decode import CUT, FRAGMENT, IPPROTO_UDP, NOT_IP, NOT_UDP, TCP, decode_cut, decode_ip, decode_udp, split_udp
from .dids import DidDirectory
from .encap import IPPROTO_GRE, MAX_DEPTH, NOT_OPENED, TZSP_PORT, VXLAN_PORT, EncapConfig, open_gre, open_udp
from .fast import FRAMES
from .fragments import FragmentReassembler
from .media import MediaMap
from .rtp import RTCP_PT_FIRST, RTCP_PT_LAST, parse_rtp
from .sink import RecordingSink
from .sip import SipMessage, looks_like_sip
from .source import Packet
from .tcp import TcpStreams, parse_tcp
from .tracker import CallTracker
from .unrecognised import SIGNALLING, Unrecognised, is_call_signalling

TICK = 1.0  # s of packet time between housekeeping passes
_II = struct.Struct("!II")
SIP_TLS_PORT = 5061
MAX_RECENT_SIP = 256  # SIP messages remembered (for MIRROR_WINDOW_S) to spot a second mirror session's copy


class CapturePipeline:
    def __init__(self, dids: DidDirectory, sink: RecordingSink, *, encap: EncapConfig | None = None,
                 **tracker_options: object) -> None:
        self.counters: Counter[str] = Counter()
        self.encap = encap if encap is not None else EncapConfig()  # remote SPAN: what to open (capture/encap.py)
        self._depth = 0  # encapsulations around the frame being handled
        self.media = MediaMap()
        self.tracker = CallTracker(dids, sink, self.media, self.counters, **tracker_options)  # type: ignore[arg-type]
        self.fragments = FragmentReassembler(self.counters)
        self.tcp = TcpStreams(self.counters)
        self.unrecognised = Unrecognised(self.counters)  # what is not understood, and the alert (unrecognised.py)
        self.now = 0.0
        self._next_tick = 0.0
        self._recent_sip: dict[tuple[bytes, bytes, bytes], float] = {}  # (src, dst, digest) -> when first seen
        if self.media.table is not None:  # the C loop opens the common remote mirrors itself
            self.media.table.set_encap(self.encap.mask, self.encap.collectors)

    def feed(self, batch: Iterable[Packet]) -> None:
        table = self.media.table
        kind = type(batch)
        if table is None or (kind is not list and kind is not FRAMES):
            self._feed(batch)
            return
        if TYPE_CHECKING:  # a list, or the C module's in-place batch (Frames): both sequences
            assert isinstance(batch, Sequence)
        # The C fast path (capture/_fastpath.c) handles what it can of the batch: media of calls not
        # recorded, steady RTP of recorded calls. It stops at a packet that needs this module (SIP,
        # a new source, a tick of housekeeping, ...): _feed handles that one, then C goes on. It also
        # stops after a packet that filled a buffer of its recording (``full``: that packet's stream):
        # the recording writes the buffer out, then C goes on with the next packet.
        run = table.run
        i, n = 0, len(batch)
        while i < n:
            j, self.now, full = run(batch, i, self.now, self._next_tick)
            if j > i:
                self.counters["packets"] += j - i
            if full is not None:
                full.flush_buffers()
            elif j < n:
                self._feed(batch[j : j + 1])
                j += 1
            i = j
        not_recorded = table.take_not_recorded()
        if not_recorded:
            self.counters["rtp_not_recorded"] += not_recorded
        other_source = table.take_other_source()
        if other_source:
            self.counters["rtp_other_source"] += other_source
        erspan2, erspan3, gretap, vxlan = table.take_encap()  # remote SPAN packets C opened
        if erspan2 or erspan3 or gretap or vxlan:
            for name, n in (("encap_erspan2", erspan2), ("encap_erspan3", erspan3), ("encap_gretap", gretap),
                            ("encap_vxlan", vxlan)):
                if n:
                    self.counters[name] += n

    def _feed(self, batch: Iterable[Packet]) -> None:
        """The per-packet path in Python (all of it without the C module, else its rare cases)."""
        counters = self.counters
        media_get = self.media.get
        on_sip = self.on_sip_payload
        from_source = self._from_source
        unpack_ii = _II.unpack_from
        now = self.now
        next_tick = self._next_tick
        n = not_recorded = 0
        for ts, linktype, frame in batch:
            n += 1
            if ts > now:
                now = ts
                if now >= next_tick:  # housekeeping as packet time passes (endings, timeouts)
                    counters["packets"] += n - 1  # what housekeeping reads (the traffic check)
                    n = 1  # counts what came before this packet
                    if not_recorded:
                        counters["rtp_not_recorded"] += not_recorded
                        not_recorded = 0
                    self.now = now
                    self.housekeeping(now)
                    next_tick = now + TICK
            # Fast path: Ethernet, IPv4 without options, not a fragment, UDP, RTP version 2 — the
            # bulk of a SPAN port. One dict lookup decides; nothing is sliced for media not ours.
            if (
                linktype == 1 and len(frame) > 54 and frame[12] == 8 and frame[13] == 0 and frame[14] == 0x45
                and frame[23] == 17 and not frame[20] & 0x3F and not frame[21] and frame[42] & 0xC0 == 0x80
            ):
                end = 14 + ((frame[16] << 8) | frame[17])
                if 54 < end <= len(frame):
                    stream = media_get((frame[30:34], (frame[36] << 8) | frame[37]))
                    if stream is None:
                        not_recorded += 1
                        continue
                    source = (frame[26:30], (frame[34] << 8) | frame[35])
                    if source != stream.source and not from_source(stream, source, frame[50:54]):
                        continue
                    pt = frame[43] & 0x7F
                    if frame[42] == 0x80 and not RTCP_PT_FIRST <= pt <= RTCP_PT_LAST:  # no CSRC, extension, padding
                        rtp_ts, ssrc = unpack_ii(frame, 46)
                        stream.packet(ts, pt, (frame[44] << 8) | frame[45], rtp_ts, ssrc, frame[54:end], frame)
                    else:
                        self._rtp(ts, stream, frame[42:end], frame, 1)
                    continue
            udp = decode_udp(linktype, frame)
            if type(udp) is str:
                if udp is FRAGMENT:
                    self._fragment(ts, linktype, frame)
                elif udp is TCP:
                    self._tcp(ts, linktype, frame)
                elif udp is CUT:
                    self._cut(ts, linktype, frame)
                elif udp is NOT_UDP:  # GRE (a remote mirror) or another protocol
                    self.now, self._next_tick = now, next_tick
                    self._gre(ts, linktype, frame)
                else:
                    counters[udp] += 1
                    if udp is NOT_IP:
                        self.unrecognised.ethertype(linktype, frame)
                continue
            if TYPE_CHECKING:  # a reason is a plain str: type() narrows as isinstance would, and costs less per packet
                assert not isinstance(udp, str)
            src, sport, dst, dport, payload = udp
            if payload and payload[0] & 0xC0 == 0x80:  # RTP version 2 (or RTCP)
                stream = media_get((dst, dport))
                if stream is None:
                    not_recorded += 1
                    continue
                source = (src, sport)
                if source != stream.source and not from_source(stream, source, payload[8:12]):
                    continue
                self._rtp(ts, stream, payload, frame, linktype)
            elif looks_like_sip(payload):
                on_sip(ts, src, dst, payload, frame, linktype)
            elif dport == VXLAN_PORT or dport == TZSP_PORT:
                self.now, self._next_tick = now, next_tick
                self._inner(ts, open_udp(self.encap, src, dport, payload), src, dport, payload)
            else:
                counters["udp_other"] += 1
                self.unrecognised.udp_port(dport)
        counters["packets"] += n
        if not_recorded:
            counters["rtp_not_recorded"] += not_recorded
        self.now = now
        self._next_tick = next_tick

    def _gre(self, ts: float, linktype: int, frame: bytes) -> None:
        """Rare path: an IP packet that is not UDP nor TCP; GRE may carry a remote mirror's frame."""
        ip = decode_ip(linktype, frame)
        if type(ip) is str:
            self.counters[NOT_UDP] += 1
            return
        if TYPE_CHECKING:
            assert not isinstance(ip, str)
        if ip[3] != IPPROTO_GRE:
            self.counters[NOT_UDP] += 1
            self.unrecognised.protocol(ip[3])
            return
        self._inner(ts, open_gre(self.encap, ip[1], ip[4]), ip[1], -1, ip[4])

    def _inner(self, ts: float, opened: tuple[int, bytes, str] | str | None, src: bytes, port: int,
               outer: bytes) -> None:
        """A remote mirror's outer packet, opened: its frame goes through the same dispatch as a
        frame of the SPAN port (it is what the evidence pcap keeps), counted once in ``packets``.
        (``src``, ``port`` and ``outer``: the outer packet's, for the kind of one not opened.)"""
        if opened is None:
            self.counters["udp_other"] += 1
            return
        if type(opened) is str:
            self.counters[opened] += 1
            if opened == NOT_OPENED:
                self.unrecognised.not_opened(src, port, outer)
            return
        if self._depth >= MAX_DEPTH:
            self.counters["encap_malformed"] += 1  # nested deeper than any mirror nests
            return
        if TYPE_CHECKING:
            assert not isinstance(opened, str)
        linktype, frame, kind = opened
        self.counters[kind] += 1
        self._depth += 1
        next_tick, self._next_tick = self._next_tick, math.inf  # the outer packet's loop does the housekeeping
        try:
            self._feed(((ts, linktype, frame),))
        finally:
            self._depth -= 1
            self._next_tick = next_tick
        self.counters["packets"] -= 1  # the outer packet was counted; its frame is not another one

    def _from_source(self, stream: StreamAssembler, source: tuple[bytes, int], ssrc: bytes) -> bool:
        """A packet from another source than its direction's (``ssrc``: its SSRC field). It is
        the sender's when it is the direction's first (the source is learned now, as behind NAT),
        when it comes from an address the sender's SDP announced (symmetric RTP), or, after the
        sender announced a new address (a re-INVITE), when it carries the sender's SSRC (a sender
        behind NAT that moved); the source moves to it. Anything else is not the call's sender:
        dropped and counted."""
        if stream.source is not None and (source not in stream.announced or self.media.owner(source) is None):
            # (an announced address no longer routed is as the C loop sees it: not the call's)
            if stream.learned or len(ssrc) < 4 or int.from_bytes(ssrc, "big") != stream.ssrc:
                stream.other_source += 1
                self.counters["rtp_other_source"] += 1
                return False
        stream.source = source
        self.tracker.learn_source(stream, *source)
        return True

    def _rtp(self, ts: float, stream: StreamAssembler, payload: bytes, frame: bytes = b"", linktype: int = 1) -> None:
        """RTP with CSRCs, an extension or padding (or RTCP multiplexed on the port)."""
        try:
            pt, _marker, seq, rtp_ts, ssrc, audio = parse_rtp(payload)
        except ValueError:
            self.counters["rtcp" if RTCP_PT_FIRST <= payload[1] & 0x7F <= RTCP_PT_LAST else "rtp_malformed"] += 1
            return
        stream.packet(ts, pt, seq, rtp_ts, ssrc, audio, frame, linktype)

    def _cut(self, ts: float, linktype: int, frame: bytes) -> None:
        """Rare path: a UDP datagram the capture cut short (a snap length, a truncating mirror). RTP
        of a recorded stream whose header was captured whole keeps its captured payload bytes in
        their place and the rest of the packet is its codec's silence (capture/cut.py): counted in
        ``rtp_truncated``; cut inside its header it is counted (``rtp_truncated_header``) and
        dropped. A cut SIP message is counted (``sip_truncated``), never parsed as if whole."""
        counters = self.counters
        cut = decode_cut(linktype, frame)
        if type(cut) is str:
            counters[cut] += 1
            return
        if TYPE_CHECKING:
            assert not isinstance(cut, str)
        src, sport, dst, dport, captured, wire = cut
        if captured and captured[0] & 0xC0 == 0x80:
            stream = self.media.get((dst, dport))
            if stream is None:
                counters["rtp_not_recorded"] += 1
                return
            if len(captured) > 1 and RTCP_PT_FIRST <= captured[1] & 0x7F <= RTCP_PT_LAST:
                counters["rtcp"] += 1
                return
            rtp = split_cut_rtp(captured, wire)
            if rtp is None:
                counters["rtp_truncated_header"] += 1
                return
            source = (src, sport)
            if source != stream.source and not self._from_source(stream, source, captured[8:12]):
                return
            pt, seq, rtp_ts, ssrc, payload, missing = rtp
            if stream.cut(ts, pt, seq, rtp_ts, ssrc, payload, missing, frame, linktype):
                counters["rtp_truncated"] += 1
        elif looks_like_sip(captured):
            counters["sip_truncated"] += 1
        else:
            counters["truncated"] += 1

    def _fragment(self, ts: float, linktype: int, frame: bytes) -> None:
        """Rare path: one IP fragment; a completed UDP datagram goes on as if it came whole."""
        self.counters["ip_fragment"] += 1
        ip = decode_ip(linktype, frame)
        if type(ip) is str:
            self.counters["ip_fragment_malformed"] += 1
            return
        if TYPE_CHECKING:
            assert not isinstance(ip, str)
        version, src, dst, proto, data, fragment = ip
        if fragment is None:
            self.counters["ip_fragment_malformed"] += 1
            return
        ident, offset, more = fragment
        whole = self.fragments.push(ts, version, src, dst, ident, proto, offset, more, data, (ts, linktype, frame))
        if whole is None:
            return
        if proto == IPPROTO_GRE:  # a remote mirror's packet, fragmented on its way (the frame and headers > MTU)
            self._inner(ts, open_gre(self.encap, src, whole), src, -1, whole)
            return
        if proto != IPPROTO_UDP:
            self.counters["ip_reassembled_not_udp"] += 1
            self.unrecognised.protocol(proto)
            return
        udp = split_udp(whole)
        if type(udp) is str:
            self.counters[udp] += 1
            return
        if TYPE_CHECKING:
            assert not isinstance(udp, str)
        sport, dport, payload = udp
        self.feed_udp(ts, src, sport, dst, dport, payload, self.fragments.completed)  # its fragments: the evidence

    def _tcp(self, ts: float, linktype: int, frame: bytes) -> None:
        """Rare path: a TCP segment; SIP over TCP is reassembled and framed, anything else dropped."""
        ip = decode_ip(linktype, frame)
        if type(ip) is str:
            self.counters["tcp_unusable"] += 1  # truncated
            return
        if TYPE_CHECKING:
            assert not isinstance(ip, str)
        _version, src, dst, _proto, segment, fragment = ip
        if fragment is not None:
            self.counters["tcp_unusable"] += 1  # fragmented TCP (not worth following)
            return
        try:
            sport, dport, seq, flags, payload = parse_tcp(segment)
        except ValueError:
            self.counters["tcp_malformed"] += 1
            return
        if not self.tcp.follows(src, sport, dst, dport) and not looks_like_sip(payload):
            if payload[:2] == b"\x16\x03" and SIP_TLS_PORT in (sport, dport):
                self.counters["sip_tls"] += 1  # a TLS handshake on the SIPS port
                self.tracker.warn("tls", "SIP over TLS seen on port 5061: calls signalled over TLS cannot be "
                                   "recorded passively (their called number and media are encrypted)", "-")
            else:
                self.counters["tcp_not_sip"] += 1
            return
        tcp = self.tcp
        messages = tcp.push(ts, src, sport, dst, dport, seq, flags, payload, (ts, linktype, frame))
        for message, frames in zip(messages, tcp.completed, strict=False):  # frames: its segments, for the evidence
            self.on_sip_payload(ts, src, dst, message, frames=frames)

    def feed_udp(self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes,
                 frames: Sequence[Packet] = ()) -> None:
        """One UDP payload outside the batch loop (reassembled datagrams; ``frames``: the frames it
        came in, kept as a SIP message's evidence): same dispatch."""
        if payload and payload[0] & 0xC0 == 0x80:
            stream = self.media.get((dst, dport))
            if stream is None:
                self.counters["rtp_not_recorded"] += 1
                return
            source = (src, sport)
            if source != stream.source and not self._from_source(stream, source, payload[8:12]):
                return
            self._rtp(ts, stream, payload)
        elif looks_like_sip(payload):
            self.on_sip_payload(ts, src, dst, payload, frames=frames)
        elif dport == VXLAN_PORT or dport == TZSP_PORT:  # a remote mirror's packet that came in fragments
            self._inner(ts, open_udp(self.encap, src, dport, payload), src, dport, payload)
        else:
            self.counters["udp_other"] += 1
            self.unrecognised.udp_port(dport)

    def on_sip_payload(self, ts: float, src: bytes, dst: bytes, payload: bytes, frame: bytes = b"",
                       linktype: int = 1, frames: Sequence[Packet] = ()) -> None:
        if self._sip_mirror_copy(ts, src, dst, payload):
            self.counters["mirror_duplicates"] += 1
            return
        try:
            msg = SipMessage.parse(payload)
        except ValueError:
            self.counters["sip_malformed"] += 1
            return
        self.counters["sip_messages"] += 1
        if is_call_signalling(msg):
            self.counters[SIGNALLING] += 1  # (what tells the no-signalling alarm a call's SIP reaches us)
        self.tracker.on_sip(ts, src, dst, msg, frame, linktype, frames=frames)

    def _sip_mirror_copy(self, ts: float, src: bytes, dst: bytes, payload: bytes) -> bool:
        """Whether this SIP message (the same bytes between the same addresses) came within
        ``MIRROR_WINDOW_S`` of its first copy: a second mirror session's, dropped before the parser
        and the tracker (neither a retransmission nor a second evidence frame). A real retransmission
        comes 500 ms (T1) or more later and goes through. The table holds the messages of the last
        window, at most ``MAX_RECENT_SIP``, each by a digest of its bytes (16 bytes however long the
        message: a flood of large messages holds no memory; a digest no one can make collide, so no
        message can be forged to hide another)."""
        recent = self._recent_sip
        while recent:
            oldest = next(iter(recent))
            if len(recent) < MAX_RECENT_SIP and ts - recent[oldest] <= MIRROR_WINDOW_S:
                break
            del recent[oldest]
        key = (src, dst, hashlib.blake2b(payload, digest_size=16).digest())
        first = recent.get(key)
        if first is not None and -MIRROR_WINDOW_S <= ts - first <= MIRROR_WINDOW_S:
            return True
        if first is not None:
            del recent[key]  # (it goes to the end: the table stays in the order first seen)
        recent[key] = ts
        return False

    def advance(self, now: float) -> None:
        """Move packet time on without packets (live capture on a silent port), running the
        housekeeping that is due."""
        if now > self.now:
            self.now = now
        if self.now >= self._next_tick:
            self.housekeeping(self.now)
            self._next_tick = self.now + TICK

    def housekeeping(self, now: float) -> None:
        self.tracker.tick(now)
        self.fragments.expire(now)
        self.tcp.expire(now)
        self.unrecognised.look(now, len(self.tracker.calls))

    def finish(self, reason: str) -> None:
        """End every call in progress at the last packet time seen."""
        self.tracker.finish(self.now, reason)
