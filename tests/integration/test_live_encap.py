"""Remote SPAN live (issue 14): the service capturing on a veth link in a network namespace of its
own records calls that arrive wrapped in ERSPAN II and VXLAN (sent by tcpreplay) as the plain
captures' replay records them, the kernel's filter lets them through, and `status` counts them.
Needs root (netns, AF_PACKET) and tcpreplay; skips otherwise."""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from integration.test_live_service import TRUNK, Service, _root_netns, audio_from_anchor

pytestmark = pytest.mark.integration


class EncapSpan:
    """A network namespace (prefix e14) with a veth pair: tcpreplay writes on e14-tx, the service
    reads e14-rx. A jumbo MTU, as on a collector's link: the outer packets are bigger than the frames."""

    def __init__(self) -> None:
        self.ns = f"e14{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.exec("ip", "link", "add", "e14-tx", "mtu", "9000", "type", "veth", "peer", "name", "e14-rx", "mtu", "9000")
        for dev in ("e14-tx", "e14-rx", "lo"):
            self.exec("ip", "link", "set", dev, "up")
        for dev in ("e14-tx", "e14-rx"):
            self.exec("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")

    def exec(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def replay(self, pcap: Path, multiplier: float = 20.0) -> None:
        self.exec("tcpreplay", "-q", "-i", "e14-tx", f"--multiplier={multiplier}", str(pcap), timeout=120)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@pytest.fixture
def span():  # type: ignore[no-untyped-def]
    _root_netns()
    link = EncapSpan()
    yield link
    link.close()


def site_at(tmp: Path, name: str, interface: str) -> Site:
    root = tmp / name
    root.mkdir()
    settings = (f"capture: {{interfaces: [{interface}], {TRUNK}, ring_mb: 8, block_timeout_ms: 20, idle_timeout_s: 60, "
                "encapsulations: [erspan, vxlan]}\n"
                "logging: {stats_interval_s: 10}\n")
    return Site(root, None, settings).init()


# ERSPAN II carries inbound-mulaw's call, VXLAN the qinq call (VLAN tags inside): two calls, one service.
WRAPPED = {"encap-erspan2": "inbound-mulaw", "encap-vxlan-vlan": "qinq"}


def test_the_live_service_records_erspan_and_vxlan_mirrors_as_the_plain_calls(
        span: EncapSpan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = site_at(tmp_path, "replay", "e14-rx")
    for plain in WRAPPED.values():
        assert reference.replay(FIXTURES / f"{plain}.pcap") == 0
    expected = {r["call_id"]: r for r in reference.list(capsys)}
    assert len(expected) == 2

    site = site_at(tmp_path, "live", "e14-rx")
    service = Service(span, site, tmp_path)  # type: ignore[arg-type]  # (Service reads only .ns)
    try:
        for wrapped in WRAPPED:
            span.replay(FIXTURES / f"{wrapped}.pcap")
            time.sleep(1.2)  # past the BYE linger
        time.sleep(1.0)
        capsys.readouterr()
        assert site.ctl("status") == 0
        status = capsys.readouterr().out
        service.wait_log("encap_erspan2=307 encap_vxlan=307", 15)  # the periodic stats line
    finally:
        assert service.stop() == 0
    assert "encapsulations: erspan2 307, vxlan 307 packet(s) opened" in status, status

    got = {r["call_id"]: r for r in site.list(capsys)}
    assert sorted(got) == sorted(expected)
    for call_id, rec in got.items():
        ref = expected[call_id]
        assert (rec["did"], rec["codec"], rec["caller"], rec["state"]) == (ref["did"], ref["codec"], ref["caller"],
                                                                           ref["state"])
        assert [s["packets"] for s in rec["streams"]] == [s["packets"] for s in ref["streams"]], call_id
        assert audio_from_anchor(site, rec) == audio_from_anchor(reference, ref), call_id
    log = service.log.read_text()
    for rec in got.values():
        assert rec["caller"] not in log
    assert "kernel dropped" not in log
