"""A live call between two real SIP peers (SIPp) in two network namespaces, recorded by the service
capturing on the contact centre's link: the caller talks, is put on hold by re-INVITE (sendonly)
for 4 s, resumes, hangs up. The recording holds the caller's payload bytes exactly, the hold as
silence, and the contact centre's side (SIPp echoes the caller's RTP back) in channel 2.

Needs root (namespaces), sipp (Debian sip-tester); skips otherwise."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import Site, needs_tool
from generator import SipCall, rtp_packet, udp_frame, write_pcap

from storage.wav import channel_bytes

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
CALLER_IP, PBX_IP = "198.51.100.1", "198.51.100.2"  # only inside the test's own namespaces
SPP = 160


@pytest.fixture
def link():  # type: ignore[no-untyped-def]
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    needs_tool("sipp")
    tag = uuid.uuid4().hex[:6]
    trunk, pbx = f"rdtr{tag}", f"rdpbx{tag}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", trunk)
    run("ip", "netns", "add", pbx)
    run("ip", "link", "add", "tr0", "netns", trunk, "type", "veth", "peer", "name", "pbx0", "netns", pbx)
    run("ip", "netns", "exec", trunk, "ip", "addr", "add", f"{CALLER_IP}/24", "dev", "tr0")
    run("ip", "netns", "exec", pbx, "ip", "addr", "add", f"{PBX_IP}/24", "dev", "pbx0")
    for ns, dev in ((trunk, "tr0"), (pbx, "pbx0")):
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
    yield trunk, pbx
    for ns in (trunk, pbx):
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_sipp_call_with_hold_is_recorded_live(link: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trunk, pbx = link
    sipp = needs_tool("sipp")
    for name in ("uac_hold.xml", "uas_hold.xml"):
        shutil.copy(HERE / "sipp" / name, tmp_path / name)
    # The caller's audio: 2 s before the hold, 2 s after; made by the project's generator.
    call = SipCall("x", "sip:1@h", "sip:1@h", "1", 1_790_000_000.0, talk=4.0, seed=5)
    up = call.media()[0].packets
    frames = [(t, udp_frame(CALLER_IP, 6000, PBX_IP, 6000, rtp_packet(pt, seq, ts, ssrc, pl))) for t, seq, ts, pl, pt, ssrc, _ in up]
    write_pcap(str(tmp_path / "audio1.pcap"), frames[:100])
    write_pcap(str(tmp_path / "audio2.pcap"), frames[100:200])
    (tmp_path / "dids.csv").write_text("SEQUENTIAL\n0442003939;\n")

    root = tmp_path / "site"
    root.mkdir()
    site = Site(root, None, f"capture: {{interfaces: [pbx0], trunk_networks: [{CALLER_IP}/32], ring_mb: 8, block_timeout_ms: 20}}\n").init()
    service = subprocess.Popen(["ip", "netns", "exec", pbx, str(Path(sys.executable).parent / "recorderd"),
                                "--config", str(site.config)], stdout=open(tmp_path / "service.log", "w"),
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while "EVENT=started" not in (tmp_path / "service.log").read_text():
            assert time.monotonic() < deadline and service.poll() is None, (tmp_path / "service.log").read_text()
            time.sleep(0.1)
        uas = subprocess.Popen(["ip", "netns", "exec", pbx, sipp, "-sf", "uas_hold.xml", "-i", PBX_IP, "-p", "5060",
                                "-mi", PBX_IP, "-mp", "6000", "-rtp_echo", "-m", "1", "-nostdin"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        uac = subprocess.run(["ip", "netns", "exec", trunk, sipp, f"{PBX_IP}:5060", "-sf", "uac_hold.xml", "-inf",
                              "dids.csv", "-i", CALLER_IP, "-p", "5060", "-mi", CALLER_IP, "-mp", "6000", "-m", "1",
                              "-nostdin"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert uac.returncode == 0, uac.stdout[-2000:]
        assert uas.wait(timeout=20) == 0
        time.sleep(2.0)  # the BYE's linger (1 s) and a housekeeping pass
    finally:
        service.terminate()
        service.wait(timeout=10)
    [rec] = site.list(capsys)
    assert (rec["did_label"], rec["codec"], rec["state"], rec["end_reason"]) == ("サンキューコールかわさき", "PCMU", "complete", "bye")
    wav = site.wav_bytes(rec)
    caller, centre = channel_bytes(wav, 1), channel_bytes(wav, 2)
    before = b"".join(p[3] for p in up[:100])
    after = b"".join(p[3] for p in up[100:200])
    start = caller.find(before)
    assert start >= 0, "the caller's audio before the hold is not in channel 1 byte for byte"
    resumed = caller.find(after, start + len(before))
    assert resumed >= 0, "the caller's audio after the hold is not in channel 1 byte for byte"
    hold = caller[start + len(before) : resumed]
    assert set(hold) == {0xFF} and 3.0 * 8000 <= len(hold) <= 6.0 * 8000  # the hold, as silence
    assert before[:1600] in centre  # the contact centre's side (the echo) in channel 2
    assert "09011112222" not in (tmp_path / "service.log").read_text()
