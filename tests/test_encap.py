"""Remote SPAN (issue 14): ERSPAN I/II/III, gretap, VXLAN and TZSP are opened and their frames
recorded as if they came from the SPAN port; anything cut short, odd or not allowed is a counter,
never an exception; tshark reads the same inner calls as recorderd records."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site
from frames import erspan2, erspan3, gre, ip_frames, tzsp, udp_frame, vxlan, write_pcap
from hypothesis import given
from hypothesis import strategies as st

from capture import encap
from capture.encap import ALL, ERSPAN, GRE_TEB, TZSP, VXLAN, EncapConfig, open_gre, open_udp, summary
from capture.live import _BPF
from capture.pipeline import CapturePipeline
from capture.source import CaptureFile
from recorderd.config import ConfigError, load, load_dids
from storage.wav import channel_bytes

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))
MIRROR = socket.inet_aton("198.51.100.7")
OTHER = socket.inet_aton("198.51.100.99")
ENCAP_FIXTURES = sorted(p.stem for p in FIXTURES.glob("encap-*.pcap"))
INNER = udp_frame("203.0.113.5", 5060, "192.0.2.10", 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n")  # any SPAN frame


def frames_of(path: Path) -> list[tuple[float, int, bytes]]:
    with CaptureFile(path) as source:
        return [p for batch in source.batches() for p in batch]


class Calls:
    """A sink that notes which calls were started as recordings (the store's tests keep the rest)."""

    id = "calls"
    keeps_packets = False

    def __init__(self) -> None:
        self.started: list[str] = []

    def call_started(self, call):  # type: ignore[no-untyped-def]
        self.started.append(call.call_id)
        return self

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        pass

    def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
        return False  # capture's buffers declined: audio() gets every payload

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        pass

    def end(self, result) -> None:  # type: ignore[no-untyped-def]
        pass

    def link_leg(self, call_id: str, how: str) -> None:
        pass


def replay(path: Path, config: EncapConfig | None = None) -> tuple[CapturePipeline, Calls]:
    sink = Calls()
    pipeline = CapturePipeline(DIDS, sink, encap=config)
    with CaptureFile(path) as source:
        for batch in source.batches():
            pipeline.feed(batch)
    pipeline.finish("capture-end")
    return pipeline, sink


# -- each header, as the mirror sends it -----------------------------------------------------------


@pytest.mark.parametrize("gre_packet,kind", [
    (gre(0x88BE, erspan2(INNER), seq=5), "encap_erspan2"),
    (gre(0x88BE, erspan2(INNER, session=1023, vlan=0xFFF)), "encap_erspan2"),  # no sequence, header kept
    (gre(0x88BE, INNER), "encap_erspan1"),  # no sequence, no header: type I
    (gre(0x22EB, erspan3(INNER), seq=1), "encap_erspan3"),
    (gre(0x22EB, erspan3(INNER, subheader=b"\x0c" + b"\xff" * 7), seq=1), "encap_erspan3"),
    (gre(0x6558, INNER), "encap_gretap"),
    (gre(0x6558, INNER, checksum=True), "encap_gretap"),
    (gre(0x6558, INNER, key=7), "encap_gretap"),
    (gre(0x6558, INNER, checksum=True, key=7, seq=9), "encap_gretap"),
])
def test_every_gre_variant_gives_the_frame_inside(gre_packet: bytes, kind: str) -> None:
    assert open_gre(EncapConfig(), MIRROR, gre_packet) == (1, INNER, kind)


def test_erspan3_of_an_ip_packet_gives_the_packet_as_raw_ip() -> None:
    packet = INNER[14:]
    assert open_gre(EncapConfig(), MIRROR, gre(0x22EB, erspan3(packet, frame_type=2))) == (101, packet, "encap_erspan3")


@pytest.mark.parametrize("port,payload,kind", [
    (4789, vxlan(INNER), "encap_vxlan"),
    (37008, tzsp(INNER), "encap_tzsp"),
    (37008, tzsp(INNER, tags=b"\x00\x00\x0a\x01\xc4\x28\x04\x00\x00\x00\x01"), "encap_tzsp"),  # padding, fields
])
def test_udp_encapsulations_give_the_frame_inside(port: int, payload: bytes, kind: str) -> None:
    assert open_udp(EncapConfig(), MIRROR, port, payload) == (1, INNER, kind)
    assert open_udp(EncapConfig(), MIRROR, 5060, payload) is None  # another port: not an encapsulation


@pytest.mark.parametrize("gre_packet,reason", [
    (gre(0x88BE, erspan2(INNER))[:4] + b"\x20" + erspan2(INNER)[1:], "encap_malformed"),  # version 2 in a type II
    (gre(0x22EB, erspan3(INNER))[:4] + b"\x10" + erspan3(INNER)[1:], "encap_malformed"),  # version 1 in a type III
    (gre(0x22EB, erspan3(INNER, frame_type=5)), "encap_malformed"),  # a frame type that is neither Ethernet nor IP
    (b"\x40\x00\x65\x58" + INNER, "encap_malformed"),  # the routing bit (RFC 1701 source routes)
    (b"\x00\x01\x88\xbe" + erspan2(INNER), "not_udp"),  # GRE version 1 (PPTP): no mirror
    (gre(0x0800, INNER[14:]), "not_udp"),  # GRE of an IP packet: a tunnel, not a mirror
    (gre(0x6558, INNER[:13]), "encap_malformed"),  # an inner frame shorter than an Ethernet header
    (b"", "encap_malformed"),
])
def test_odd_gre_is_counted_by_what_it_is(gre_packet: bytes, reason: str) -> None:
    assert open_gre(EncapConfig(), MIRROR, gre_packet) == reason


@pytest.mark.parametrize("port,payload,reason", [
    (4789, b"\x00" + vxlan(INNER)[1:], "encap_malformed"),  # no I flag
    (4789, vxlan(INNER)[:7], "encap_malformed"),
    (37008, b"\x02" + tzsp(INNER)[1:], "encap_malformed"),  # TZSP version 2
    (37008, struct.pack("!BBH", 1, 4, 0), "encap_not_opened"),  # a keepalive
    (37008, struct.pack("!BBH", 1, 0, 18) + b"\x01" + INNER, "encap_not_opened"),  # 802.11: not a SPAN port's
    (37008, struct.pack("!BBH", 1, 0, 1) + b"\x0a\x05\x01", "encap_malformed"),  # a field past the end, no END
    (37008, struct.pack("!BBH", 1, 0, 1) + b"\x00\x00", "encap_malformed"),  # padding, no END
])
def test_odd_udp_encapsulations_are_counted(port: int, payload: bytes, reason: str) -> None:
    assert open_udp(EncapConfig(), MIRROR, port, payload) == reason


def test_every_cut_of_every_header_is_a_counter_never_an_exception() -> None:
    for packet in (gre(0x88BE, erspan2(INNER), seq=1), gre(0x22EB, erspan3(INNER, subheader=b"\0" * 8), seq=1),
                   gre(0x6558, INNER, checksum=True, key=1, seq=1)):
        for cut in range(len(packet) - len(INNER) + 14):
            assert open_gre(EncapConfig(), MIRROR, packet[:cut]) == "encap_malformed", cut
    for port, payload in ((4789, vxlan(INNER)), (37008, tzsp(INNER, tags=b"\x00\x0a\x01\xc4"))):
        for cut in range(len(payload) - len(INNER) + 14):
            assert open_udp(EncapConfig(), MIRROR, port, payload[:cut]) == "encap_malformed", (port, cut)


HEADERS = [gre(0x88BE, b"", seq=1), gre(0x88BE, b""), gre(0x22EB, b"", seq=1), gre(0x6558, b"", key=3)]


@given(st.sampled_from(HEADERS), st.binary(max_size=200))
def test_any_bytes_after_a_gre_header_are_opened_or_counted(header: bytes, rest: bytes) -> None:
    out = open_gre(EncapConfig(), MIRROR, header + rest)
    assert out in encap.COUNTER_NAMES or (type(out) is tuple and out[2] in encap.COUNTER_NAMES)
    pipeline = CapturePipeline(DIDS, Calls())
    pipeline.feed([(1.0, 1, ip_frames("198.51.100.7", "198.51.100.20", 47, header + rest)[0])])
    assert pipeline.counters["packets"] == 1


@given(st.sampled_from([4789, 37008]), st.binary(max_size=200))
def test_any_bytes_in_vxlan_or_tzsp_are_opened_or_counted(port: int, payload: bytes) -> None:
    out = open_udp(EncapConfig(), MIRROR, port, payload)
    assert out in encap.COUNTER_NAMES or (type(out) is tuple and out[2] in encap.COUNTER_NAMES)
    pipeline = CapturePipeline(DIDS, Calls())
    pipeline.feed([(1.0, 1, udp_frame("198.51.100.7", 40000, "198.51.100.20", port, payload))])
    assert pipeline.counters["packets"] == 1


@given(st.binary(max_size=300))
def test_any_frame_inside_vxlan_is_handled_as_a_span_frame_would_be(inner: bytes) -> None:
    pipeline = CapturePipeline(DIDS, Calls())
    pipeline.feed([(1.0, 1, udp_frame("198.51.100.7", 40000, "198.51.100.20", 4789, vxlan(inner)))])
    assert pipeline.counters["packets"] == 1


# -- the pipeline: recorded as from the SPAN port, or counted and not recorded -------------------


def test_nesting_three_deep_is_opened_four_deep_is_counted() -> None:
    def nest(frame: bytes, depth: int) -> bytes:
        for _ in range(depth):
            frame = udp_frame("198.51.100.7", 40000, "198.51.100.20", 4789, vxlan(frame))
        return frame

    plain = frames_of(FIXTURES / "inbound-mulaw.pcap")
    for depth, recorded in ((3, 1), (4, 0)):
        pipeline = CapturePipeline(DIDS, Calls())
        pipeline.feed([(ts, 1, nest(f, depth)) for ts, _, f in plain])
        pipeline.finish("capture-end")
        assert pipeline.counters["calls_recorded"] == recorded
        assert pipeline.counters["packets"] == len(plain)
        assert pipeline.counters["encap_vxlan"] == len(plain) * min(depth, 3)
        assert pipeline.counters["encap_malformed"] == (len(plain) if depth == 4 else 0)


@pytest.mark.parametrize("name,disabled", [("encap-erspan2", ALL & ~ERSPAN), ("encap-gretap", ALL & ~GRE_TEB),
                                           ("encap-vxlan", ALL & ~VXLAN), ("encap-tzsp", ALL & ~TZSP)])
def test_a_disabled_encapsulation_is_counted_and_nothing_recorded(name: str, disabled: int) -> None:
    n = len(frames_of(FIXTURES / f"{name}.pcap"))
    pipeline, sink = replay(FIXTURES / f"{name}.pcap", EncapConfig(disabled))
    assert sink.started == [] and pipeline.counters["calls_recorded"] == 0
    assert pipeline.counters["encap_not_opened"] == n and pipeline.counters["packets"] == n
    assert pipeline.counters["sip_messages"] == 0


def test_collectors_open_only_what_their_addresses_send() -> None:
    path = FIXTURES / "encap-vxlan.pcap"
    n = len(frames_of(path))
    pipeline, sink = replay(path, EncapConfig(ALL, frozenset({OTHER})))
    assert sink.started == [] and pipeline.counters["encap_not_opened"] == n
    pipeline, sink = replay(path, EncapConfig(ALL, frozenset({OTHER, MIRROR})))
    assert sink.started == ["call-mulaw-1@203.0.113.5"] and pipeline.counters["encap_vxlan"] == n
    v6 = FIXTURES / "encap-vxlan-ipv6.pcap"
    _, sink = replay(v6, EncapConfig(ALL, frozenset({socket.inet_pton(socket.AF_INET6, "2001:db8:77::7")})))
    assert sink.started == ["call-mulaw-1@203.0.113.5"]


def test_the_config_names_what_to_open_and_refuses_unknown_names(tmp_path: Path) -> None:
    from capture.encap import parse_config

    (tmp_path / "dids.yaml").write_text((ROOT / "config" / "dids.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    path = tmp_path / "recorderd.yaml"
    path.write_text("store: {path: s}\n", encoding="utf-8")
    config = load(str(path))
    assert parse_config(config["capture.encapsulations"], config["capture.collectors"]) == EncapConfig(0)  # none
    shipped = load(str(ROOT / "config" / "recorderd.yaml"), dids_optional=True)
    # a remote mirror is configured
    assert (shipped["capture.encapsulations"], shipped["capture.collectors"]) == ([], [])
    path.write_text("store: {path: s}\ncapture: {encapsulations: [vxlan], collectors: [198.51.100.7, '2001:db8::7']}\n",
                    encoding="utf-8")
    config = load(str(path))
    assert parse_config(config["capture.encapsulations"], config["capture.collectors"]) == EncapConfig(
        VXLAN, frozenset({MIRROR, socket.inet_pton(socket.AF_INET6, "2001:db8::7")}))
    for text, message in (
        ("capture: {encapsulations: [erspan, nvgre]}", 'capture.encapsulations: "nvgre" is not an encapsulation '
                                                        "recorderd opens (erspan, gretap, vxlan, tzsp)"),
        ("capture: {encapsulations: vxlan}", 'capture.encapsulations: "vxlan" is not a list of names'),
        ("capture: {collectors: [198.51.100.300]}", 'capture.collectors: "198.51.100.300" is not an IP address'),
    ):
        path.write_text(f"store: {{path: s}}\n{text}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            load(str(path))
        assert message in str(err.value)


def test_a_disabled_encapsulation_leaves_no_recording_in_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = Site(tmp_path, settings="capture: {encapsulations: [gretap, vxlan, tzsp]}").init()
    assert site.replay(FIXTURES / "encap-erspan2.pcap") == 0
    assert site.list(capsys) == [] and site.stored_files() == [] and site.evidence_files() == []
    assert b"call-mulaw-1" not in (site.store / "index.sqlite").read_bytes()


def test_the_evidence_pcap_keeps_the_frames_as_they_crossed_the_pbx_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "wrapped").mkdir()
    plain_site, wrapped_site = Site(tmp_path / "plain").init(), Site(tmp_path / "wrapped").init()
    assert plain_site.replay(FIXTURES / "inbound-mulaw.pcap") == 0
    assert wrapped_site.replay(FIXTURES / "encap-erspan2-in-vxlan.pcap") == 0
    evidence = []
    for site in (plain_site, wrapped_site):
        (rec,) = site.list(capsys)
        store = site.open_store()
        evidence.append(b"".join(store.reading.plaintext(store.reading.get(rec["id"]), pcap=True)))
        store.close()
        audio = site.wav_bytes(rec)
        evidence.append(hashlib.sha256(channel_bytes(audio, 1) + channel_bytes(audio, 2)).hexdigest())
    assert evidence[0] == evidence[2]  # the inner frames, byte for byte, as the plain capture's
    assert evidence[1] == evidence[3]


def test_status_says_what_was_opened() -> None:
    assert summary({}) == "encapsulations: none opened"
    assert summary({"encap_erspan2": 307, "encap_vxlan": 2, "encap_not_opened": 5, "encap_malformed": 1}) == (
        "encapsulations: erspan2 307, vxlan 2 packet(s) opened; 5 not opened (not enabled, or not from a collector); "
        "1 malformed")


def test_the_metrics_name_every_encapsulation_counter() -> None:
    from recorderd.metrics import COUNTERS

    assert set(encap.COUNTER_NAMES) <= set(COUNTERS)


# -- the live filter lets remote mirrors through -----------------------------------------------


def run_bpf(program: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """The classic BPF program as the kernel runs it (the instructions capture/live.py uses)."""
    pc = a = 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x28:  # ldh [k]
            if k + 2 > len(frame):
                return 0
            a = (frame[k] << 8) | frame[k + 1]
        elif code == 0x30:  # ldb [k]
            if k + 1 > len(frame):
                return 0
            a = frame[k]
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"instruction {code:#x} not known to this test")
        pc += 1


@pytest.mark.parametrize("name", ENCAP_FIXTURES)
def test_the_live_filter_passes_every_remote_mirror_packet(name: str) -> None:
    for _, _, frame in frames_of(FIXTURES / f"{name}.pcap"):
        assert run_bpf(_BPF, frame) >= len(frame)


# -- tshark reads the inner calls as recorderd records them -------------------------------------

# Wireshark reads GRE 0x88BE without a sequence number as ERSPAN type I (no ERSPAN header), as the
# ERSPAN draft defines it; a type II header sent without the sequence number (which recorderd also
# opens) is not decoded by it.
NOT_FOR_TSHARK = {"encap-erspan2-noseq"}


def tshark(path: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-E", "occurrence=l", *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("name", [n for n in ENCAP_FIXTURES if n not in NOT_FOR_TSHARK])
def test_tshark_reads_the_same_inner_sip_and_rtp(name: str) -> None:
    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    path = FIXTURES / f"{name}.pcap"
    sip = tshark(path, "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID")
    rtp = tshark(path, "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields", "-e", "rtp.ssrc", "-e", "rtp.seq",
                 "-e", "udp.dstport")
    pipeline, sink = replay(path)
    # SIP: every message, with its Call-ID, and the calls recorderd recorded are those tshark saw.
    assert {row[0] for row in sip} == {r["call_id"] for r in expected["recordings"]} == set(sink.started)
    assert len(sip) == pipeline.counters["sip_messages"]
    # RTP: the streams tshark reads (SSRC, packets, sequence numbers) are those the recording took in.
    streams: dict[str, list[int]] = {}
    for ssrc, seq, _port in rtp:
        streams.setdefault(ssrc, []).append(int(seq))
    plain = tshark(FIXTURES / ("qinq.pcap" if "vlan" in name or "fields" in name else "inbound-mulaw.pcap"),
                   "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields", "-e", "rtp.ssrc", "-e", "rtp.seq",
                   "-e", "udp.dstport")
    assert rtp == plain  # the inner RTP as the plain capture's, packet for packet
    assert len(streams) == 2 == len(expected["recordings"][0]["channels"])
    assert pipeline.counters["rtp_not_recorded"] == 0 and pipeline.counters["rtp_malformed"] == 0


def test_erspan_without_a_sequence_number_is_read_as_the_c_loop_reads_it() -> None:
    # A type II header (version 1) whose frame has an IP ethertype is type II even when the bytes
    # after GRE could pass for a frame (the PBX's MAC ending in 08 00): as the C fast path reads it.
    odd_mac = b"\x02\x00\x00\x00\x08\x00" + INNER[6:]
    assert open_gre(EncapConfig(), MIRROR, gre(0x88BE, erspan2(odd_mac))) == (1, odd_mac, "encap_erspan2")
    # A type I frame whose destination MAC begins like a type II header (10:...) stays type I.
    type1 = b"\x10\x00\x00\x07\x00\x00" + INNER[6:]
    assert open_gre(EncapConfig(), MIRROR, gre(0x88BE, type1)) == (1, type1, "encap_erspan1")


def test_replay_says_what_the_remote_mirror_sent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    site = Site(tmp_path / "on").init()
    capsys.readouterr()
    assert site.replay(FIXTURES / "encap-erspan2.pcap") == 0
    assert capsys.readouterr().out.rstrip().endswith("; encapsulations: erspan2 307 packet(s) opened")
    site = Site(tmp_path / "off", settings="capture: {encapsulations: []}").init()
    capsys.readouterr()
    assert site.replay(FIXTURES / "encap-vxlan.pcap") == 0
    out = capsys.readouterr().out
    assert ": 0 recorded," in out and out.rstrip().endswith(
        "; encapsulations: none opened; 307 not opened (not enabled, or not from a collector)")
    assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 0
    assert "encapsulations" not in capsys.readouterr().out  # a plain SPAN capture: as before


@pytest.mark.parametrize("outer", ["ipv6", "vlan"])
def test_erspan_over_ipv6_or_a_tagged_collector_port_is_recorded(outer: str) -> None:
    plain = frames_of(FIXTURES / "inbound-mulaw.pcap")
    src, dst = ("2001:db8:77::7", "2001:db8:77::20") if outer == "ipv6" else ("198.51.100.7", "198.51.100.20")
    tags = (0x8100,) if outer == "vlan" else ()
    sink = Calls()
    pipeline = CapturePipeline(DIDS, sink)
    pipeline.feed([(ts, 1, ip_frames(src, dst, 47, gre(0x88BE, erspan2(f), seq=i), tags=tags)[0])
                   for i, (ts, _, f) in enumerate(plain)])
    pipeline.finish("capture-end")
    assert sink.started == ["call-mulaw-1@203.0.113.5"]
    assert pipeline.counters["encap_erspan2"] == pipeline.counters["packets"] == len(plain)


# -- the default opens nothing (the review of issue 14, finding 2) ------------------------------


def test_by_default_no_host_can_inject_a_call_wrapped_in_vxlan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any host that reaches the capture port (IP source guard stops it spoofing its own address)
    sends VXLAN whose inner frames claim to come from the trunk: with the shipped default nothing of
    it is opened, nothing is stored, and the count says what arrived."""
    from generator import SipCall

    fake = SipCall("fake-1@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "0312345678",
                   1_790_000_000.0, talk=2.0, seed=7)
    pcap = tmp_path / "inject.pcap"
    write_pcap(str(pcap), [(t, udp_frame("192.0.2.99", 40000, "192.0.2.250", 4789, vxlan(f)))
                           for t, f in fake.packets()])
    (tmp_path / "site").mkdir()
    site = Site(tmp_path / "site", settings="capture: {}").init()  # the shipped capture settings
    capsys.readouterr()
    assert site.replay(pcap) == 0
    out = capsys.readouterr().out
    assert ": 0 recorded," in out and f"{len(fake.packets())} not opened" in out
    assert site.list(capsys) == [] and site.stored_files() == [] and site.evidence_files() == []
    assert b"fake-1" not in (site.store / "index.sqlite").read_bytes()


@pytest.mark.parametrize("capture, warned", [
    ("{encapsulations: [vxlan]}", True),
    ("{encapsulations: [erspan, vxlan], collectors: [198.51.100.7]}", False),
    ("{}", False),
])
def test_encapsulations_opened_from_any_address_are_warned_at_start(tmp_path: Path, capture: str, warned: bool,
                                                                      ) -> None:
    import logging

    from recorderd import service

    site = Site(tmp_path, settings=f"capture: {capture}").init()
    config = load(str(site.config))
    store = site.open_store()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("recorderd.service").addHandler(handler)  # (recorderctl init reset the root's handlers)
    try:
        service.build_pipeline(config, store)  # what the service and replay build at start
    finally:
        logging.getLogger("recorderd.service").removeHandler(handler)
        store.close()
    said = [r for r in records if getattr(r, "EVENT", None) == "capture-collectors-any"]
    assert [r.getMessage() for r in said] == (["capture: encapsulated frames are opened from any address: set "
                                               "capture.collectors to the mirror's addresses"] if warned else [])
    assert all(r.levelname == "WARNING" for r in said)
