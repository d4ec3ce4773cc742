"""Remote SPAN: opening the encapsulations a remote mirror wraps the SPAN port's frames in.

A remote mirror (a switch's ERSPAN session, a Linux ``gretap`` or ``tc mirred`` to a tunnel,
cloud traffic mirroring over VXLAN, a MikroTik's TZSP sniffer stream) sends each mirrored frame
inside an outer IP packet addressed to the recorder. :func:`open_gre` and :func:`open_udp` are
pure functions: the outer packet's source address and payload in, ``(inner linktype, inner frame,
counter)`` out, or a reason (a counter name) when it cannot or must not be opened. The pipeline
handles the inner frame as if it had arrived on the SPAN port.

Opened (each outer packet counted under its kind):

- ERSPAN type II (``encap_erspan2``): GRE protocol 0x88BE, with or without the GRE sequence
  number, then an 8-byte ERSPAN header (version 1), then the Ethernet frame.
- ERSPAN type I (``encap_erspan1``): GRE protocol 0x88BE without the sequence number and
  without an ERSPAN header, the Ethernet frame right after GRE (as the ERSPAN draft, the Linux
  kernel and Wireshark read 0x88BE without a sequence number). Without the sequence number, a
  type II header is still taken when it says version 1 and the frame after it has an IP (or VLAN)
  ethertype (as the C fast path reads it), else type I when the frame right after GRE has one.
- ERSPAN type III (``encap_erspan3``): GRE protocol 0x22EB, a 12-byte header (version 2), the
  8-byte platform sub-header when its O bit is set, then the frame (Ethernet, or an IP packet
  when the header's frame type says so).
- GRE transparent Ethernet bridging (``encap_gretap``): GRE protocol 0x6558, GRE checksum, key
  and sequence fields as flagged.
- VXLAN (``encap_vxlan``): UDP to port 4789, an 8-byte header with the I flag.
- TZSP (``encap_tzsp``): UDP to port 37008, version 1, type 0 (received), protocol 1
  (Ethernet), tagged fields up to the END tag.

``encap_not_opened`` counts encapsulations seen but not enabled (or from an address that is not
a configured collector, or TZSP of another type or protocol); ``encap_malformed`` a header cut
short or invalid, and nesting deeper than :data:`MAX_DEPTH`. Never an exception.

The bits are shared with the C fast path (capture/_fastpath.c): keep them.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from .source import LINKTYPE_ETHERNET, LINKTYPE_RAW

ERSPAN = 1  # type I, II and III
GRE_TEB = 2
VXLAN = 4
TZSP = 8
ALL = ERSPAN | GRE_TEB | VXLAN | TZSP
NAMES = {"erspan": ERSPAN, "gretap": GRE_TEB, "vxlan": VXLAN, "tzsp": TZSP}  # config names

IPPROTO_GRE = 47
VXLAN_PORT = 4789
TZSP_PORT = 37008
MAX_DEPTH = 3  # an encapsulation inside an encapsulation inside an encapsulation, no deeper

GRE_CHECKSUM = 0x8000
GRE_ROUTING = 0x4000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_VERSION = 0x0007
GRE_ERSPAN2 = 0x88BE
GRE_ERSPAN3 = 0x22EB
GRE_TEB_PROTO = 0x6558

ERSPAN3_FT_ETHERNET = 0
ERSPAN3_FT_IP = 2
TZSP_RECEIVED = 0
TZSP_ETHERNET = 1
TZSP_PADDING = 0
TZSP_END = 1

ETHERNET_MIN = 14
ETHERTYPES_INNER = (0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100)  # IP, or VLAN tags before it

# Counter names (outcomes)
ERSPAN1_OPENED = "encap_erspan1"
ERSPAN2_OPENED = "encap_erspan2"
ERSPAN3_OPENED = "encap_erspan3"
GRETAP_OPENED = "encap_gretap"
VXLAN_OPENED = "encap_vxlan"
TZSP_OPENED = "encap_tzsp"
NOT_OPENED = "encap_not_opened"
MALFORMED = "encap_malformed"
NOT_ENCAP = "not_udp"  # GRE that is no mirror (an IP tunnel, PPTP): what it was counted as before
COUNTER_NAMES = (ERSPAN1_OPENED, ERSPAN2_OPENED, ERSPAN3_OPENED, GRETAP_OPENED, VXLAN_OPENED, TZSP_OPENED, NOT_OPENED,
                 MALFORMED)

Inner = tuple[int, bytes, str]  # (inner linktype, inner frame, counter of the outer packet)


@dataclass(frozen=True, slots=True)
class EncapConfig:
    """Which encapsulations to open (a mask of the bits above) and from which outer source
    addresses (raw 4- or 16-byte forms; empty: from any)."""

    mask: int = ALL
    collectors: frozenset[bytes] = frozenset()

    def allows(self, kind: int, src: bytes) -> bool:
        return bool(self.mask & kind) and (not self.collectors or src in self.collectors)


def open_gre(config: EncapConfig, src: bytes, gre: bytes) -> Inner | str:
    """The frame inside a GRE packet (``gre``: the IP payload, from the GRE header on) sent from
    ``src``, or the reason there is none."""
    n = len(gre)
    if n < 4:
        return MALFORMED
    flags = (gre[0] << 8) | gre[1]
    proto = (gre[2] << 8) | gre[3]
    if flags & GRE_VERSION or proto not in (GRE_ERSPAN2, GRE_ERSPAN3, GRE_TEB_PROTO):
        return NOT_ENCAP  # enhanced GRE (PPTP) or a tunnel of IP: not a mirror
    kind = GRE_TEB if proto == GRE_TEB_PROTO else ERSPAN
    if not config.allows(kind, src):
        return NOT_OPENED
    if flags & GRE_ROUTING:
        return MALFORMED  # RFC 1701 source routing: no mirror sends it
    off = 4 + 4 * (bool(flags & GRE_CHECKSUM) + bool(flags & GRE_KEY) + bool(flags & GRE_SEQUENCE))
    if proto == GRE_TEB_PROTO:
        return _ethernet(gre, off, GRETAP_OPENED)
    if proto == GRE_ERSPAN2:
        if not flags & GRE_SEQUENCE and not (n > off and gre[off] >> 4 == 1 and
                                             _ethertype(gre, off + 8) in ETHERTYPES_INNER):
            if _ethertype(gre, off) in ETHERTYPES_INNER:
                return _ethernet(gre, off, ERSPAN1_OPENED)
        if n < off + 8 or gre[off] >> 4 != 1:
            return MALFORMED
        return _ethernet(gre, off + 8, ERSPAN2_OPENED)
    if n < off + 12 or gre[off] >> 4 != 2:
        return MALFORMED
    frame_type = (gre[off + 10] >> 2) & 0x1F
    inner = off + 12 + (8 if gre[off + 11] & 1 else 0)  # the O bit: a platform sub-header follows
    if frame_type == ERSPAN3_FT_ETHERNET:
        return _ethernet(gre, inner, ERSPAN3_OPENED)
    if frame_type == ERSPAN3_FT_IP and n > inner and gre[inner] >> 4 in (4, 6):
        return LINKTYPE_RAW, gre[inner:], ERSPAN3_OPENED
    return MALFORMED


def open_udp(config: EncapConfig, src: bytes, dport: int, payload: bytes) -> Inner | str | None:
    """The frame inside a UDP payload sent from ``src`` to ``dport``; None when the port is no
    encapsulation's (the caller counts it as before), else the frame or the reason there is none."""
    if dport == VXLAN_PORT:
        if not config.allows(VXLAN, src):
            return NOT_OPENED
        if len(payload) < 8 or not payload[0] & 0x08:
            return MALFORMED
        return _ethernet(payload, 8, VXLAN_OPENED)
    if dport == TZSP_PORT:
        if not config.allows(TZSP, src):
            return NOT_OPENED
        return _tzsp(payload)
    return None


def _tzsp(payload: bytes) -> Inner | str:
    n = len(payload)
    if n < 4 or payload[0] != 1:
        return MALFORMED
    if payload[1] != TZSP_RECEIVED or ((payload[2] << 8) | payload[3]) != TZSP_ETHERNET:
        return NOT_OPENED  # a keepalive, a frame for transmit, 802.11...: nothing of the SPAN port
    off = 4
    while True:
        if off >= n:
            return MALFORMED  # no END tag
        tag = payload[off]
        if tag == TZSP_END:
            return _ethernet(payload, off + 1, TZSP_OPENED)
        if tag == TZSP_PADDING:
            off += 1
            continue
        if off + 1 >= n:
            return MALFORMED
        off += 2 + payload[off + 1]


def _ethertype(data: bytes, off: int) -> int:
    return (data[off + 12] << 8) | data[off + 13] if len(data) >= off + ETHERNET_MIN else -1


def _ethernet(data: bytes, off: int, counter: str) -> Inner | str:
    if len(data) < off + ETHERNET_MIN:
        return MALFORMED
    return LINKTYPE_ETHERNET, data[off:], counter


def parse_config(names: list[str], collectors: list[str]) -> EncapConfig:
    """The config's ``capture.encapsulations`` and ``capture.collectors`` (already checked)."""
    mask = 0
    for name in names:
        mask |= NAMES[name]
    return EncapConfig(mask, frozenset(ipaddress.ip_address(a).packed for a in collectors))


KINDS = (("erspan1", ERSPAN1_OPENED), ("erspan2", ERSPAN2_OPENED), ("erspan3", ERSPAN3_OPENED),
         ("gretap", GRETAP_OPENED), ("vxlan", VXLAN_OPENED), ("tzsp", TZSP_OPENED))


def summary(counters: Mapping[str, int]) -> str:
    """``status``'s line: outer packets opened per kind, and those not opened or malformed."""
    opened = [f"{name} {counters.get(key, 0)}" for name, key in KINDS if counters.get(key, 0)]
    text = "encapsulations: " + (", ".join(opened) + " packet(s) opened" if opened else "none opened")
    for key, what in ((NOT_OPENED, "not opened (not enabled, or not from a collector)"), (MALFORMED, "malformed")):
        if counters.get(key, 0):
            text += f"; {counters[key]} {what}"
    return text
