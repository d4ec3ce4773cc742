"""Traffic not understood (issue 14): a SPAN port that delivers what recorderd cannot open (MPLS, a
remote mirror's encapsulation not enabled) or packets without any SIP is said once in the journal
(EVENT=capture-unrecognised, with ethertype / protocol / port counts, never an address), again at
most once an hour while it lasts and after it cleared, and ``status`` shows it meanwhile. Before,
such a capture replayed as "0 recorded, malformed: 0" with no word at all."""
from __future__ import annotations

import re
import struct
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, Site
from frames import erspan2, gre, ip_frames, udp_frame, write_pcap
from make_fixtures import call

from capture import unrecognised as un
from capture.unrecognised import Unrecognised
from recorderd.config import load
from recorderd.control import ControlServer
from recorderd.service import build_pipeline, replay

EVENT = "[EVENT=capture-unrecognised]"
ADDRESS = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|\b[0-9a-f]{1,4}::?[0-9a-f]{1,4}\b")


def said(err: str) -> list[str]:
    return [line for line in err.splitlines() if EVENT in line]


def test_a_capture_in_mpls_is_said_once_with_its_ethertype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    capsys.readouterr()
    assert site.replay(FIXTURES / "unrecognised-mpls.pcap") == 0
    out, err = capsys.readouterr()
    assert "0 recorded" in out
    [line] = said(err)
    assert "WARNING" in line and "traffic not understood" in line
    assert re.search(r"\b(\d+) of \1 packets in 60 s not understood \(ethertype 0x8847: \1\)", line), line
    message = line.split("capture.unrecognised: ", 1)[1]
    assert not ADDRESS.search(message) and "0442003939" not in message and "09011112222" not in message


def _erspan_capture(path: Path) -> int:
    """A designated call of a minute, every frame inside ERSPAN II from a remote mirror."""
    packets = call("call-erspan-long", "0442003939", talk=62.0, seed=142).packets()
    wrapped = [(ts, ip_frames("198.51.100.7", "198.51.100.20", 47, gre(0x88BE, erspan2(frame, index=i), seq=i))[0])
               for i, (ts, frame) in enumerate(sorted(packets, key=lambda p: p[0]))]
    return write_pcap(str(path), wrapped)


def test_erspan_not_enabled_is_said_with_its_count_and_enabled_it_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "erspan.pcap"
    n = _erspan_capture(capture)
    (tmp_path / "closed").mkdir()
    (tmp_path / "opened").mkdir()
    closed = Site(tmp_path / "closed", settings="capture: {encapsulations: []}").init()
    capsys.readouterr()
    assert closed.replay(capture) == 0
    out, err = capsys.readouterr()
    assert "0 recorded" in out
    [line] = said(err)
    counts = re.search(r"(\d+) of (\d+) packets in 60 s not understood \(encapsulation not opened: erspan2 (\d+) — "
                       r"set capture.encapsulations and capture.collectors\)", line)
    assert counts and counts[1] == counts[2] == counts[3] and 1000 <= int(counts[1]) <= n, line
    opened = Site(tmp_path / "opened").init()  # the tests' sites open ERSPAN: the call is recorded, nothing said
    capsys.readouterr()
    assert opened.replay(capture) == 0
    out, err = capsys.readouterr()
    assert "1 recorded" in out and said(err) == []


def _served_status(site: Site, pcap: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`recorderctl status` against a control server whose pipeline replayed ``pcap``."""
    config = load(str(site.config))
    store = site.open_store()
    try:
        pipeline = build_pipeline(config, store)
        replay(pipeline, [str(pcap)])
        server = ControlServer(config, pipeline=pipeline)
        assert server.start()
        try:
            capsys.readouterr()
            assert site.ctl("status") == 0
            return capsys.readouterr().out
        finally:
            server.stop()
    finally:
        store.close()


def test_status_shows_it_while_it_lasts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    text = _served_status(site, FIXTURES / "unrecognised-mpls.pcap", capsys)
    [line] = [x for x in text.splitlines() if x.startswith("capture: ")]
    assert re.fullmatch(r"capture: traffic not understood: (\d+) of \1 packets in 60 s not understood "
                        r"\(ethertype 0x8847: \1\)", line), line
    clean = _served_status(site, FIXTURES / "inbound-mulaw.pcap", capsys)
    assert "service: running" in clean and not [x for x in clean.splitlines() if x.startswith("capture: ")]


def test_packets_without_any_sip_for_five_minutes_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RTP-looking packets to a port no call announced (the SIP goes elsewhere: another VLAN, TLS):
    understood as RTP, so only the missing SIP can tell; after 5 minutes of packet time it is said."""
    packets = [(1_790_000_000.0 + i * 0.2, udp_frame("203.0.113.20", 40000, "192.0.2.20", 20000,
                                                     struct.pack("!BBHII", 0x80, 0, i, i * 160, 7) + b"\xff" * 160))
               for i in range(5 * 60 * 5 + 100)]
    capture = tmp_path / "rtp-only.pcap"
    write_pcap(str(capture), packets)
    (tmp_path / "site").mkdir()
    site = Site(tmp_path / "site").init()
    capsys.readouterr()
    assert site.replay(capture) == 0
    [line] = said(capsys.readouterr().err)
    assert "no call signalling (INVITE) for 5 min although packets arrive" in line and "traffic not understood" not in line


# -- the condition itself, on a counter as the pipeline keeps it ----------------------------------


class Port:
    """A SPAN port's counters as the pipeline keeps them, moved on second by second."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.counters: Counter[str] = Counter()
        self.watch = Unrecognised(self.counters)
        self.now = 0.0
        self.caplog = caplog
        self.watch.look(self.now, 0)

    def run(self, seconds: int, *, per_s: int = 100, odd: int = 100, sip: int = 0, calls: int = 0) -> None:
        for _ in range(seconds):
            self.now += 1.0
            self.counters["packets"] += per_s
            self.counters["not_ip"] += odd
            for _ in range(odd):
                self.watch.ethertype(1, b"\0" * 12 + b"\x88\x47")
            self.counters["sip_messages"] += sip
            self.counters["sip_invites"] += sip  # (an INVITE or a response to one)
            self.watch.look(self.now, calls)

    def events(self, name: str) -> list[float]:
        return [r.created for r in self.caplog.records if getattr(r, "EVENT", "") == name]


@pytest.fixture
def port(caplog: pytest.LogCaptureFixture) -> Port:
    caplog.set_level("INFO", logger="capture.unrecognised")
    return Port(caplog)


def test_said_once_then_once_an_hour_then_cleared_then_again(port: Port) -> None:
    port.run(59)
    assert port.watch.standing is None and port.events("capture-unrecognised") == []  # a minute is needed
    port.run(1)
    assert len(port.events("capture-unrecognised")) == 1 and port.counters["capture_unrecognised_standing"] == 1
    assert port.watch.standing == "traffic not understood: 6000 of 6000 packets in 60 s not understood (ethertype 0x8847: 6000)"
    port.run(3500)
    assert len(port.events("capture-unrecognised")) == 1  # not again within the hour
    port.run(100)
    assert len(port.events("capture-unrecognised")) == 2  # once an hour while it lasts
    port.run(60, odd=40, sip=1)  # 40 % with SIP: between the two thresholds, it stays
    assert port.watch.standing is not None and port.events("capture-understood") == []
    port.run(60, odd=10, sip=1)  # 10 % and SIP: over
    assert port.watch.standing is None and len(port.events("capture-understood")) == 1
    assert port.counters["capture_unrecognised_standing"] == 0
    port.run(120)
    assert len(port.events("capture-unrecognised")) == 3  # a new episode is said again at once


def test_a_quiet_port_says_nothing(port: Port) -> None:
    port.run(600, per_s=1, odd=1)  # 600 packets in 10 minutes, all odd: too few to judge, no SIP missed
    assert port.watch.standing is None and port.events("capture-unrecognised") == []


def test_no_sip_is_not_said_while_a_call_is_in_progress(port: Port) -> None:
    port.run(400, odd=0, calls=1)  # a long call's RTP, its SIP quiet (until its BYE, which never comes)
    assert port.watch.standing is None
    port.run(1, odd=0)  # the call timed out: nothing in progress, and still no SIP
    assert port.watch.standing is not None and port.watch.standing.startswith("no call signalling (INVITE) for 6 min ")


def test_the_tables_are_bounded_and_the_line_names_the_most_frequent(port: Port) -> None:
    watch = port.watch
    for kind in range(40):
        for _ in range(kind + 1):
            watch.ethertype(1, b"\0" * 12 + struct.pack("!H", 0x9000 + kind))
            watch.protocol(kind)
            watch.udp_port(10000 + kind)
    assert len(watch.ethertypes) == len(watch.protocols) == len(watch.ports) == un.TOP + 1  # + "other"
    counts = watch._counts(100, 200, 60.0)
    assert counts.startswith("100 of 200 packets in 60 s not understood (ethertype other: ")
    assert counts.count("ethertype") == counts.count("ip proto") == counts.count("udp port") == un.SHOWN
    assert "ethertype 0x900f: 16" in counts and "udp port 10015: 16" in counts  # the most frequent kept one


def test_a_frame_too_short_for_its_ethertype_is_other(port: Port) -> None:
    port.watch.ethertype(1, b"\0" * 5)
    port.watch.ethertype(999, b"\0" * 40)
    assert port.watch.ethertypes == {un.OTHER: 2}


def test_link_chatter_is_shown_but_is_not_an_alarm(port: Port) -> None:
    """ARP, LLDP and STP (an 802.3 frame) on a quiet port with SIP: counted, named, not understood-or-not."""
    for _ in range(120):
        port.now += 1.0
        for etype in (b"\x08\x06", b"\x88\xcc", b"\x00\x26"):  # ARP, LLDP, an 802.3 length (STP)
            for _ in range(10):
                port.watch.ethertype(1, b"\0" * 12 + etype)
        port.counters["packets"] += 40
        port.counters["not_ip"] += 30
        port.counters["sip_messages"] += 1
        port.counters["sip_invites"] += 1
        port.watch.look(port.now, 0)
    assert port.watch.standing is None and port.counters["capture_unrecognised"] == 0
    assert port.watch.ethertypes == {}  # (the window just closed: emptied)


def test_frames_the_kernel_left_out_alarm_only_when_they_are_nearly_all(port: Port) -> None:
    """Live, a mirror that is all MPLS never reaches the pipeline: the interface's count less the
    socket's says how many frames the kernel's filter left out. Beside IP traffic they are chatter."""
    for _ in range(60):
        port.now += 1.0
        port.counters["kernel_filtered"] += 50  # ARP and the like, beside...
        port.counters["packets"] += 100  # ...understood IP
        port.counters["sip_messages"] += 1
        port.counters["sip_invites"] += 1
        port.watch.look(port.now, 0)
    assert port.watch.standing is None
    for _ in range(60):
        port.now += 1.0
        port.counters["kernel_filtered"] += 100  # all of it left out
        port.watch.look(port.now, 0)
    assert port.watch.standing == ("traffic not understood: 6000 of 6000 packets in 60 s not understood "
                                   "(not IP, left out by the kernel's filter: 6000)")


def test_left_out_is_the_interface_count_less_the_sockets(tmp_path: Path) -> None:
    stats = tmp_path / "span0" / "statistics"
    stats.mkdir(parents=True)
    (stats / "rx_packets").write_text("1000\n")
    left = un.LeftOut(str(tmp_path))
    assert left.frames("span0", 700) == 0  # the first look is the baseline
    (stats / "rx_packets").write_text("5000\n")
    assert left.frames("span0", 1000) == 3000
    assert left.frames("span0", 10) == 0  # nothing new
    (stats / "rx_packets").write_text("10\n")
    assert left.frames("span0", 0) == 0  # the counter was reset (the link re-created)
    assert left.frames("../span0", 0) == left.frames("absent0", 0) == left.frames("", 0) == 0
    (tmp_path / "link0").mkdir()
    (tmp_path / "link0" / "statistics").mkdir()
    (tmp_path / "link0" / "statistics" / "rx_packets").symlink_to(stats / "rx_packets")
    assert left.frames("link0", 0) == 0  # not followed


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.pcap") if not p.name.startswith("unrecognised-")))
def test_no_other_fixture_says_it(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    capsys.readouterr()
    site.replay(FIXTURES / name)
    assert said(capsys.readouterr().err) == []


# -- the live service -----------------------------------------------------------------------------


class MplsSpan:
    """A network namespace (prefix a14) with a veth pair: tcpreplay writes on a14-tx, the service
    reads a14-rx (IPv6 off: only what tcpreplay sends arrives)."""

    def __init__(self) -> None:
        self.ns = f"a14{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.exec("ip", "link", "add", "a14-tx", "type", "veth", "peer", "name", "a14-rx")
        for dev in ("a14-tx", "a14-rx"):
            self.exec("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        for dev in ("a14-tx", "a14-rx", "lo"):
            self.exec("ip", "link", "set", dev, "up")

    def exec(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@pytest.mark.integration
def test_the_live_service_says_a_mirror_in_mpls_and_status_shows_it(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's filter drops MPLS frames before the service sees them: the interface's count
    says they came. Within a minute of wall time (live packet time) the service logs it once and
    `recorderctl status` and STATUS= say it; nothing is recorded."""
    from integration.test_live_service import TRUNK, Service, _root_netns

    _root_netns()
    span = MplsSpan()
    try:
        settings = (f"capture: {{interfaces: [a14-rx], {TRUNK}, ring_mb: 8, block_timeout_ms: 20}}\n"
                    "logging: {stats_interval_s: 10}\n")
        site = Site(tmp_path, None, settings).init()
        service = Service(span, site, tmp_path)  # type: ignore[arg-type]  # (Service reads only .ns)
        try:
            time.sleep(1.5)  # the interface's count read once: the baseline
            span.exec("tcpreplay", "-q", "-i", "a14-tx", "--multiplier=20", str(FIXTURES / "unrecognised-mpls.pcap"),
                      timeout=120)
            service.wait_log(EVENT, 90)
            service.read_notify(1.5)
            capsys.readouterr()
            assert site.ctl("status") == 0
            status = capsys.readouterr().out
        finally:
            assert service.stop() == 0
        [line] = said(service.log.read_text())
        counts = re.search(r"(\d+) of (\d+) packets in \d+ s not understood \(not IP, left out by the kernel's "
                           r"filter: (\d+)\)", line)
        assert counts and counts[1] == counts[2] == counts[3] and int(counts[1]) >= 6000, line
        assert f"capture: traffic not understood: {counts[1]} of" in status, status
        assert any("TRAFFIC NOT UNDERSTOOD" in m for m in service.messages)
        assert site.list(capsys) == []
    finally:
        span.close()


# -- only call signalling resets the no-SIP alarm (the review of issue 14, finding 8c) ------------


def _sip(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


REGISTER = _sip("REGISTER sip:192.0.2.10 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.31:5060;branch=z9hG4bK-r\n"
                "From: <sip:2001@192.0.2.10>;tag=a\nTo: <sip:2001@192.0.2.10>\nCall-ID: reg-1\nCSeq: 7 REGISTER\n"
                "Content-Length: 0\n\n")
OPTIONS = _sip("OPTIONS sip:192.0.2.10 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.32:5060;branch=z9hG4bK-o\n"
               "From: <sip:2002@192.0.2.10>;tag=b\nTo: <sip:192.0.2.10>\nCall-ID: opt-1\nCSeq: 1 OPTIONS\n"
               "Content-Length: 0\n\n")
OK_TO_OPTIONS = _sip("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.32:5060;branch=z9hG4bK-o\n"
                     "From: <sip:2002@192.0.2.10>;tag=b\nTo: <sip:192.0.2.10>;tag=c\nCall-ID: opt-1\nCSeq: 1 OPTIONS\n"
                     "Content-Length: 0\n\n")
RINGING = _sip("SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-i\n"
               "From: <sip:09011112222@203.0.113.5>;tag=d\nTo: <sip:0442003939@192.0.2.10>;tag=e\nCall-ID: inv-1\n"
               "CSeq: 1 INVITE\nContent-Length: 0\n\n")


def test_only_an_invite_or_its_response_is_call_signalling() -> None:
    from capture.sip import SipMessage

    invite = call("call-signalling-1", "0442003939", talk=1.0, seed=5).signalling()[0][1]
    assert un.is_call_signalling(SipMessage.parse(invite[42:]))
    assert un.is_call_signalling(SipMessage.parse(RINGING))
    bye = RINGING.replace(b"SIP/2.0 180 Ringing", b"BYE sip:x SIP/2.0").replace(b"1 INVITE", b"2 BYE")
    for other in (REGISTER, OPTIONS, OK_TO_OPTIONS, bye, bye.replace(b"BYE sip:x SIP/2.0", b"SIP/2.0 200 OK"),
                  RINGING.replace(b"1 INVITE", b"1 INVITEX")):
        assert not un.is_call_signalling(SipMessage.parse(other)), other


def _rtp_without_calls(extra: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    packets = [(1_790_000_000.0 + i * 0.2, udp_frame("203.0.113.20", 40000, "192.0.2.20", 20000,
                                                     struct.pack("!BBHII", 0x80, 0, i, i * 160, 7) + b"\xff" * 160))
               for i in range(5 * 60 * 5 + 100)]
    return sorted(packets + extra, key=lambda p: p[0])


@pytest.mark.parametrize("chatter, alarmed", [("phones", True), ("a call's", False)])
def test_registrations_and_keepalives_do_not_hide_missing_call_signalling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], chatter: str, alarmed: bool
) -> None:
    """Phones REGISTER and send OPTIONS every 10 s on the voice VLAN while the trunk's SIP is not
    mirrored (only RTP-looking packets otherwise): that is still no call signalling, said after 5
    minutes. A call's INVITE response every 10 s is: nothing said."""
    t0 = 1_790_000_000.0
    if chatter == "phones":
        sip = [m for k in range(31) for m in (
            (t0 + 10 * k, udp_frame("192.0.2.31", 5060, "192.0.2.10", 5060, REGISTER)),
            (t0 + 10 * k + 1, udp_frame("192.0.2.32", 5060, "192.0.2.10", 5060, OPTIONS)),
            (t0 + 10 * k + 1.01, udp_frame("192.0.2.10", 5060, "192.0.2.32", 5060, OK_TO_OPTIONS)))]
    else:
        sip = [(t0 + 10 * k, udp_frame("192.0.2.10", 5060, "203.0.113.5", 5060, RINGING)) for k in range(31)]
    capture = tmp_path / "rtp-and-chatter.pcap"
    write_pcap(str(capture), _rtp_without_calls(sip))
    (tmp_path / "site").mkdir()
    site = Site(tmp_path / "site").init()
    capsys.readouterr()
    assert site.replay(capture) == 0
    lines = said(capsys.readouterr().err)
    if alarmed:
        [line] = lines
        assert "no call signalling (INVITE) for 5 min although packets arrive" in line
    else:
        assert lines == []
