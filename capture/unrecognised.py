"""Traffic the capture does not understand, counted by what it was, and the alert it raises.

A SPAN port that delivers something recorderd cannot open (a remote mirror's encapsulation not
enabled, MPLS, a tunnel) looks healthy from outside: packets arrive, nothing is malformed, and no
call is recorded. The pipeline counts each frame that ends on one of its "not understood" branches
here, by what it was (only there: never on the RTP fast path):

* ``ethertype(linktype, frame)``: not IP (``not_ip``), by its ethertype (after any VLAN tags);
* ``protocol(proto)``: IP that is not UDP nor TCP (``not_udp``), by its IP protocol;
* ``udp_port(port)``: UDP that is neither RTP nor SIP (``udp_other``), by its destination port.

Live, the kernel's filter (capture/live.py) passes only IPv4 and IPv6: frames of another ethertype
(MPLS, ...) never reach the pipeline. :class:`LeftOut` finds how many there were (the interface's
received frames less the capture socket's) and the service adds them to ``kernel_filtered``. They
count as packets, and as not understood only in a window where they are over ``FILTERED_SHARE`` of
all (a mirror that is all MPLS): a port's ARP and STP beside its IP traffic are not an alarm.
Likewise link-layer chatter that reaches the pipeline (ARP, LLDP, LACP, 802.3 frames such as STP and
CDP: ``CHATTER``) is counted and shown but is not "not understood".

Each table keeps at most ``TOP`` values per window (the rest are counted as ``other``) and is
emptied when the window closes. ``look(now, calls)``, called at every housekeeping tick (about once
a second of packet time, live and in replay alike), decides whether the traffic is understood:

* **not understood**: over a window of ``WINDOW`` s of packet time with at least ``MIN_PACKETS``
  packets, at least ``SHARE`` of them were not understood (``not_ip`` + ``not_udp`` + ``udp_other`` +
  ``encap_not_opened``, the remote mirror's encapsulation seen but not enabled: capture/encap.py);
* **no call signalling**: no INVITE (request, or response to one: ``sip_invites``) for ``NO_SIP`` s
  of packet time while at least ``MIN_PACKETS`` packets arrived in that time and no call is in
  progress (a call in progress may rightly be silent in SIP). Other SIP (REGISTER and OPTIONS from
  phones, one message forged by anyone) does not count: it would hide a trunk that is not mirrored.

When either begins it logs one WARNING (``EVENT=capture-unrecognised``) with the counts (numbers
only: ethertypes, protocols, ports; never an address), then at most once per ``REPEAT`` s of packet
time while it lasts; ``standing`` holds the text meanwhile (the service's status shows it). It clears
on a window whose share is below ``CLEAR_SHARE`` with an INVITE seen (not merely a quiet one), said once at
INFO (``EVENT=capture-understood``); a later episode is logged again. ``counters`` get
``capture_unrecognised`` (packets not understood, the sum above less the chatter) and ``capture_unrecognised_standing``
(1 while the condition lasts, else 0).
"""
from __future__ import annotations

import logging
import os
from collections import Counter

from .decode import _network_offset
from .encap import ALL, KINDS, NOT_OPENED, TZSP_PORT, EncapConfig, open_gre, open_udp
from .sip import SipMessage

log = logging.getLogger(__name__)

# Thresholds (packet time, so replay and the live service agree):
WINDOW = 60.0  # s: long enough that a burst of other traffic (a backup, an ARP storm) is not an alarm,
#                short enough that the technician who mis-set a mirror hears of it within about a minute
MIN_PACKETS = 1000  # a window with fewer says nothing: a quiet port (a night, a lab) is not a broken mirror
SHARE = 0.5  # at least half not understood: a voice VLAN's SPAN is mostly SIP and RTP, and a mirror
#              wrapped in an encapsulation not opened is (nearly) all of it
CLEAR_SHARE = 0.25  # below a quarter (with an INVITE seen) it is over; between the two the state stays (no flapping)
NO_SIP = 300.0  # s without an INVITE although packets flow and no call is in progress: 5 minutes of
#                 RTP with no call signalling at a contact centre means the SIP is not reaching us
REPEAT = 3600.0  # s: said again at most once an hour while it lasts
TOP = 16  # distinct values counted per kind in a window; the rest are "other"
SHOWN = 5  # values named per kind in the journal line and in status, the most frequent first
OTHER = -1
FILTERED_SHARE = 0.9  # live: frames the kernel's filter left out count when over 90 % of the window's
CHATTER = (0x0806, 0x88CC, 0x8809)  # ARP, LLDP, slow protocols (LACP); and every 802.3 length (< 0x0600)
NOT_UNDERSTOOD = ("not_ip", "not_udp", "udp_other", "encap_not_opened")
SIGNALLING = "sip_invites"  # the counter of INVITEs and their responses (capture/pipeline.py counts it)
_EVERY = EncapConfig(ALL)  # what an encapsulation not opened would have been
_KIND_NAMES = {counter: name for name, counter in KINDS}


def is_call_signalling(msg: SipMessage) -> bool:
    """An INVITE, or a response to one (its CSeq's method): what only a call's signalling carries."""
    if msg.method is not None:
        return msg.method == "INVITE"
    cseq = msg.header("cseq")
    return cseq is not None and cseq.rpartition(" ")[2].strip().upper() == "INVITE"


class Unrecognised:
    """The counts of one window, and the condition they raise (see the module's doc)."""

    __slots__ = ("counters", "ethertypes", "protocols", "ports", "encaps", "standing", "_start", "_packets", "_unknown",
                 "_encap", "_sip", "_sip_at", "_packets_at_sip", "_not_understood", "_no_sip", "_said_at", "_last",
                 "chatter")

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.ethertypes: dict[int, int] = {}
        self.protocols: dict[int, int] = {}
        self.ports: dict[int, int] = {}
        self.encaps: dict[str, int] = {}  # encapsulations not opened, by kind (erspan2, vxlan, ...)
        self.standing: str | None = None  # what status shows while the condition lasts
        self.chatter = 0  # not-IP frames that are link-layer chatter (CHATTER), all told
        self._start: float | None = None  # packet time the window began
        self._packets = self._unknown = 0  # the counters' values then
        self._encap = (0, 0)  # encap_not_opened and kernel_filtered then
        self._sip = 0  # sip_invites at the last look
        self._sip_at = 0.0  # packet time an INVITE (or a response to one) was last seen (or the first look)
        self._packets_at_sip = 0
        self._not_understood = self._no_sip = False
        self._said_at = 0.0
        self._last = ""  # the counts of the last window closed, as said

    # -- counting (the pipeline's slow branches) ---------------------------------------------

    def ethertype(self, linktype: int, frame: bytes) -> None:
        net = _network_offset(linktype, frame)
        etype = net[0] if type(net) is tuple else OTHER
        if etype in CHATTER or (linktype == 1 and 0 <= etype < 0x0600):  # (Ethernet: 802.3 length, LLC)
            self.chatter += 1
        _count(self.ethertypes, etype)

    def protocol(self, proto: int) -> None:
        _count(self.protocols, proto)

    def udp_port(self, port: int) -> None:
        _count(self.ports, port)

    def not_opened(self, src: bytes, port: int, outer: bytes) -> None:
        """An encapsulated packet not opened (``port``: its UDP destination port, -1 for GRE): by
        the kind it would have been opened as (``tzsp-other``: TZSP that is no received frame)."""
        opened = open_gre(_EVERY, src, outer) if port < 0 else open_udp(_EVERY, src, port, outer)
        if type(opened) is tuple:
            kind = _KIND_NAMES.get(opened[2], "other")
        else:
            kind = "tzsp-other" if port == TZSP_PORT and opened == NOT_OPENED else "malformed"
        n = self.encaps.get(kind)
        if n is not None:
            self.encaps[kind] = n + 1
        elif len(self.encaps) < TOP:
            self.encaps[kind] = 1

    # -- the condition (once per housekeeping tick) ------------------------------------------

    def look(self, now: float, calls_in_progress: int) -> None:
        c = self.counters
        packets = c["packets"] + c["kernel_filtered"]  # (live: frames the kernel's filter left out, see LeftOut)
        unknown = sum(c[k] for k in NOT_UNDERSTOOD) - self.chatter
        c["capture_unrecognised"] = unknown
        if self._start is None:
            self._start, self._packets, self._unknown, self._encap = now, packets, unknown, _marks(c)
            self._sip, self._sip_at, self._packets_at_sip = c[SIGNALLING], now, packets
            return
        if c[SIGNALLING] != self._sip:
            self._sip, self._sip_at, self._packets_at_sip = c[SIGNALLING], now, packets
        self._no_sip = (now - self._sip_at >= NO_SIP and packets - self._packets_at_sip >= MIN_PACKETS
                        and not calls_in_progress)
        if now - self._start >= WINDOW:
            seen, odd = packets - self._packets, unknown - self._unknown
            filtered = c["kernel_filtered"] - self._encap[1]
            if filtered > FILTERED_SHARE * seen:
                odd += filtered
            if seen >= MIN_PACKETS:
                share = odd / seen
                if share >= SHARE:
                    self._not_understood = True
                elif share < CLEAR_SHARE and self._sip_at > self._start:
                    self._not_understood = False
            self._last = self._counts(odd, seen, now - self._start)
            self.ethertypes, self.protocols, self.ports, self.encaps = {}, {}, {}, {}
            self._start, self._packets, self._unknown, self._encap = now, packets, unknown, _marks(c)
        self._decide(now)

    def _decide(self, now: float) -> None:
        if not (self._not_understood or self._no_sip):
            if self.standing is not None:
                self.standing = None
                self.counters["capture_unrecognised_standing"] = 0
                log.info("capture: the traffic is understood again (INVITE seen, most packets understood)",
                         extra={"EVENT": "capture-understood"})
            return
        reasons = []
        if self._not_understood:
            reasons.append("traffic not understood")
        if self._no_sip:
            minutes = int(now - self._sip_at) // 60
            reasons.append(f"no call signalling (INVITE) for {minutes} min although packets arrive")
        text = f"{' and '.join(reasons)}: {self._last}"
        first = self.standing is None
        self.standing = text
        self.counters["capture_unrecognised_standing"] = 1
        if first or now - self._said_at >= REPEAT:
            self._said_at = now
            log.warning("capture: %s; no call can be recorded from it: is the mirror encapsulated (enable it in "
                        "capture.encapsulations) or the SIP elsewhere?", text,
                        extra={"EVENT": "capture-unrecognised"})

    def _counts(self, odd: int, seen: int, seconds: float) -> str:
        """'N of M packets in S s not understood: ethertype 0x8847: 4210, ip proto 47: 12, ...'"""
        parts = [f"ethertype {_hex(k)}: {n}" for k, n in _top(self.ethertypes)]
        parts += [f"ip proto {_name(k)}: {n}" for k, n in _top(self.protocols)]
        parts += [f"udp port {_name(k)}: {n}" for k, n in _top(self.ports)]
        opened = self.counters["encap_not_opened"] - self._encap[0]
        if opened:
            most = sorted(self.encaps.items(), key=lambda kv: (-kv[1], kv[0]))[:SHOWN]
            kinds = ", ".join(f"{k} {n}" for k, n in most)
            parts.append(f"encapsulation not opened: {kinds or opened} — set capture.encapsulations and "
                         "capture.collectors")
        filtered = self.counters["kernel_filtered"] - self._encap[1]
        if filtered:
            parts.append(f"not IP, left out by the kernel's filter: {filtered}")
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"{odd} of {seen} packets in {seconds:.0f} s not understood{detail}"


class LeftOut:
    """Frames the kernel's filter left out on each interface since the last look: what the interface
    received (``/sys/class/net/IF/statistics/rx_packets``) less what the capture socket received
    (``captured``, PACKET_STATISTICS since its last read, drops included). 0 when not readable."""

    def __init__(self, root: str = "/sys/class/net") -> None:
        self.root = root
        self._last: dict[str, int] = {}

    def frames(self, interface: str, captured: int) -> int:
        if not interface or "/" in interface or interface in (".", ".."):
            return 0
        try:
            fd = os.open(f"{self.root}/{interface}/statistics/rx_packets", os.O_RDONLY | os.O_NOFOLLOW)
            try:
                received = int(os.read(fd, 32).strip() or 0)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return 0
        last = self._last.get(interface)
        self._last[interface] = received
        if last is None or received < last:  # the first look, or the counter reset
            return 0
        return max(0, received - last - captured)


def _marks(c: Counter[str]) -> tuple[int, int]:
    return c["encap_not_opened"], c["kernel_filtered"]


def _count(table: dict[int, int], key: int) -> None:
    n = table.get(key)
    if n is not None:
        table[key] = n + 1
    elif len(table) < TOP:
        table[key] = 1
    else:
        table[OTHER] = table.get(OTHER, 0) + 1


def _top(table: dict[int, int]) -> list[tuple[int, int]]:
    return sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:SHOWN]


def _hex(key: int) -> str:
    return "other" if key == OTHER else f"0x{key:04x}"


def _name(key: int) -> str:
    return "other" if key == OTHER else str(key)
