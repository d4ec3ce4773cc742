"""Remote SPAN fixtures (issue 14): the calls of plain fixtures as a remote mirror delivers them,
every frame wrapped in ERSPAN II / III, GRE TEB, VXLAN or TZSP from a mirror at 198.51.100.7 (or
2001:db8:77::7) to the recorder. The recordings must be the plain calls' byte for byte; the
counters say how many outer packets of each kind were opened."""
from __future__ import annotations

from collections.abc import Callable

from frames import erspan2, erspan3, gre, ip_frames, tzsp, udp_frame, udp_frames, vxlan
from make_fixtures import TopicFixture, fixtures

MIRROR, RECORDER = "198.51.100.7", "198.51.100.20"
MIRROR6, RECORDER6 = "2001:db8:77::7", "2001:db8:77::20"
IPPROTO_GRE = 47
VXLAN_PORT, TZSP_PORT = 4789, 37008

Packets = list[tuple[float, bytes]]
Wrap = Callable[[int, bytes], bytes]  # (index of the packet, the frame) -> the outer frame


def _over_gre(proto: int, body: Callable[[int, bytes], bytes], *, v6: bool = False, **gre_fields: object) -> Wrap:
    def wrap(i: int, frame: bytes) -> bytes:
        fields = {k: (i if v == "index" else v) for k, v in gre_fields.items()}
        src, dst = (MIRROR6, RECORDER6) if v6 else (MIRROR, RECORDER)
        return ip_frames(src, dst, IPPROTO_GRE, gre(proto, body(i, frame), **fields))[0]  # type: ignore[arg-type]

    return wrap


def _over_udp(port: int, body: Callable[[int, bytes], bytes], *, v6: bool = False) -> Wrap:
    def wrap(i: int, frame: bytes) -> bytes:
        src, dst = (MIRROR6, RECORDER6) if v6 else (MIRROR, RECORDER)
        return udp_frame(src, 49152 + i % 1000, dst, port, body(i, frame))

    return wrap


def _transform(*wraps: Wrap) -> Callable[[Packets], Packets]:
    """Every frame wrapped by each of ``wraps`` in turn (the last is the outermost)."""

    def transform(packets: Packets) -> Packets:
        out = []
        for i, (ts, frame) in enumerate(packets):
            for wrap in wraps:
                frame = wrap(i, frame)
            out.append((ts, frame))
        return out

    return transform


ERSPAN2_SEQ = _over_gre(0x88BE, lambda i, f: erspan2(f, session=7, index=i), seq="index")
ERSPAN2_NOSEQ = _over_gre(0x88BE, lambda i, f: erspan2(f, session=7, index=i))
ERSPAN3 = _over_gre(0x22EB, lambda i, f: erspan3(f, session=9, timestamp=1000 * i), seq="index")
ERSPAN3_SUB = _over_gre(0x22EB, lambda i, f: erspan3(f, session=9, timestamp=1000 * i, subheader=b"\x0c" + b"\0" * 7),
                        seq="index")
GRETAP = _over_gre(0x6558, lambda i, f: f)
GRETAP_FIELDS = _over_gre(0x6558, lambda i, f: f, checksum=True, key=0x2A, seq="index")
VXLAN = _over_udp(VXLAN_PORT, lambda i, f: vxlan(f, 5001))
VXLAN6 = _over_udp(VXLAN_PORT, lambda i, f: vxlan(f, 5001), v6=True)
TZSP = _over_udp(TZSP_PORT, lambda i, f: tzsp(f, tags=b"\x00\x0a\x01\xc4\x00"))  # padding, a signal tag (-60 dBm)

PLAIN = fixtures()
MULAW = PLAIN["inbound-mulaw"][1]  # one inbound G.711 mu-law call
QINQ = PLAIN["qinq"][1]  # one inbound call whose frames carry two VLAN tags
N_MULAW = sum(len(c.packets()) for c, _ in MULAW)
N_QINQ = sum(len(c.packets()) for c, _ in QINQ)


def _counters(n: int, **kinds: int) -> dict[str, int]:
    return {"packets": n, "encap_not_opened": 0, "encap_malformed": 0, **kinds}


FIXTURES = {
    "encap-erspan2": TopicFixture(
        "inbound-mulaw's call from an ERSPAN type II session (GRE with sequence numbers).",
        MULAW, _transform(ERSPAN2_SEQ), _counters(N_MULAW, encap_erspan2=N_MULAW)),
    "encap-erspan2-noseq": TopicFixture(
        "inbound-mulaw's call from an ERSPAN type II session whose GRE header has no sequence number.",
        MULAW, _transform(ERSPAN2_NOSEQ), _counters(N_MULAW, encap_erspan2=N_MULAW)),
    "encap-erspan3": TopicFixture(
        "inbound-mulaw's call from an ERSPAN type III session (12-byte header, no platform sub-header).",
        MULAW, _transform(ERSPAN3), _counters(N_MULAW, encap_erspan3=N_MULAW)),
    "encap-erspan3-subheader": TopicFixture(
        "inbound-mulaw's call from an ERSPAN type III session with the optional 8-byte platform sub-header.",
        MULAW, _transform(ERSPAN3_SUB), _counters(N_MULAW, encap_erspan3=N_MULAW)),
    "encap-gretap": TopicFixture(
        "inbound-mulaw's call from a Linux gretap mirror (GRE transparent Ethernet bridging, 0x6558).",
        MULAW, _transform(GRETAP), _counters(N_MULAW, encap_gretap=N_MULAW)),
    "encap-gretap-fields": TopicFixture(
        "The qinq call (two VLAN tags inside) from a gretap mirror whose GRE carries a checksum, a key and "
        "sequence numbers.",
        QINQ, _transform(GRETAP_FIELDS), _counters(N_QINQ, encap_gretap=N_QINQ)),
    "encap-vxlan": TopicFixture(
        "inbound-mulaw's call from cloud traffic mirroring (VXLAN, UDP 4789).",
        MULAW, _transform(VXLAN), _counters(N_MULAW, encap_vxlan=N_MULAW)),
    "encap-vxlan-vlan": TopicFixture(
        "The qinq call (VLAN tags inside) from a VXLAN mirror: a tag nested inside the encapsulation.",
        QINQ, _transform(VXLAN), _counters(N_QINQ, encap_vxlan=N_QINQ)),
    "encap-vxlan-ipv6": TopicFixture(
        "inbound-mulaw's call from a VXLAN mirror over IPv6.",
        MULAW, _transform(VXLAN6), _counters(N_MULAW, encap_vxlan=N_MULAW)),
    "encap-tzsp": TopicFixture(
        "inbound-mulaw's call from a TZSP sniffer stream (UDP 37008, a padding and a tagged field before END).",
        MULAW, _transform(TZSP), _counters(N_MULAW, encap_tzsp=N_MULAW)),
    "encap-erspan2-in-vxlan": TopicFixture(
        "inbound-mulaw's call from an ERSPAN type II session carried over a VXLAN overlay (two encapsulations).",
        MULAW, _transform(ERSPAN2_SEQ, VXLAN), _counters(N_MULAW, encap_erspan2=N_MULAW, encap_vxlan=N_MULAW)),
}

ERSPAN1 = _over_gre(0x88BE, lambda i, f: f)
FIXTURES["encap-erspan1"] = TopicFixture(
    "inbound-mulaw's call from an ERSPAN type I session (GRE 0x88BE without a sequence number or an ERSPAN header).",
    MULAW, _transform(ERSPAN1), _counters(N_MULAW, encap_erspan1=N_MULAW))



def _pieces(kind: str, i: int, frame: bytes) -> list[bytes]:
    """One frame inside ERSPAN II or VXLAN, the outer IP packet cut into 512-byte fragments when
    longer (a mirror whose path has a smaller MTU than its frames and headers): SIP arrives in pieces."""
    if kind == "erspan2":
        body = gre(0x88BE, erspan2(frame, index=i), seq=i)
        return ip_frames(MIRROR, RECORDER, IPPROTO_GRE, body, fragment=512, ident=i + 1)
    return udp_frames(MIRROR, 49152, RECORDER, VXLAN_PORT, vxlan(frame, 5001), fragment=512, ident=i + 1)


def _fragmented(kind: str) -> Callable[[Packets], Packets]:
    return lambda packets: [(ts, f) for i, (ts, frame) in enumerate(packets) for f in _pieces(kind, i, frame)]


_MULAW_PACKETS = sorted((p for c, _ in MULAW for p in c.packets()), key=lambda p: p[0])
for _kind, _counter in (("erspan2", "encap_erspan2"), ("vxlan", "encap_vxlan")):
    _split = [_pieces(_kind, i, f) for i, (_, f) in enumerate(_MULAW_PACKETS)]
    FIXTURES[f"encap-{_kind}-fragmented"] = TopicFixture(
        f"inbound-mulaw's call from a {'ERSPAN type II' if _kind == 'erspan2' else 'VXLAN'} mirror whose outer "
        "packets longer than 512 bytes (the SIP messages) arrive as IP fragments, last first.",
        MULAW, _fragmented(_kind), {**_counters(sum(map(len, _split)), **{_counter: N_MULAW}),
                                    "ip_fragment": sum(len(p) for p in _split if len(p) > 1)})
