"""The live service on a real SPAN-like link: a veth pair in a network namespace made by the test,
tcpreplay sending captures onto one end, `recorderd --config` capturing on the other. Also the
service's lifecycle: sd_notify on a real NOTIFY_SOCKET, SIGTERM, SIGHUP and file-edit reloads,
kill -9 and recovery. Needs root (netns, AF_PACKET) and tcpreplay; skips otherwise."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool
from generator import SipCall, write_pcap

from storage.wav import channel_bytes

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TRUNK = "trunk_networks: [203.0.113.0/24, \"2001:db8:5::/48\"]"  # the fixtures' carrier side (generator.TRUNK)


def _root_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture needs root (network namespaces, AF_PACKET)")
    needs_tool("ip")
    needs_tool("tcpreplay")


class Span:
    """A network namespace with a veth pair: tcpreplay writes on `span-tx`, recorderd reads `span-rx`."""

    def __init__(self) -> None:
        self.ns = f"rd{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.exec("ip", "link", "add", "span-tx", "type", "veth", "peer", "name", "span-rx")
        for dev in ("span-tx", "span-rx", "lo"):
            self.exec("ip", "link", "set", dev, "up")
        for dev in ("span-tx", "span-rx"):  # no IPv6 chatter (router solicitations) on the mirror link
            self.exec("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")

    def exec(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def replay(self, *pcaps: Path, multiplier: float = 20.0) -> None:
        for pcap in pcaps:
            self.exec("tcpreplay", "-q", "-i", "span-tx", f"--multiplier={multiplier}", str(pcap), timeout=120)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


class Service:
    """`recorderd --config` in the namespace, with a real NOTIFY_SOCKET the test reads."""

    def __init__(self, span: Span, site: Site, tmp: Path) -> None:
        self.notify_path = str(tmp / f"notify-{uuid.uuid4().hex[:6]}.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.stamps: list[float] = []  # when each message arrived (time.monotonic())
        self.log = tmp / f"service-{uuid.uuid4().hex[:6]}.log"
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": "2000000"}
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", span.ns, str(BIN / "recorderd"), "--config", str(site.config)],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)  # like systemd, always reading
        self.reader.start()
        self.wait_for("READY=1", 20)

    def _read(self) -> None:
        while True:
            try:
                message = self.notify.recv(4096).decode()
                self.stamps.append(time.monotonic())
                self.messages.append(message)
            except TimeoutError:
                continue
            except OSError:
                return

    def read_notify(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_for(self, needle: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if any(needle in m for m in self.messages):
                return
            if self.proc.poll() is not None:
                break
            self.read_notify(0.2)
        raise AssertionError(f"no {needle!r} from the service; log:\n{self.log.read_text()}")

    def wait_log(self, needle: str, seconds: float = 10) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if needle in self.log.read_text():
                return
            self.read_notify(0.1)
        raise AssertionError(f"{needle!r} not logged:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        start = time.monotonic()
        rc = self.proc.wait(timeout=timeout)
        self.elapsed = time.monotonic() - start
        self.read_notify(0.3)
        self.notify.close()
        return rc


@pytest.fixture
def span():  # type: ignore[no-untyped-def]
    _root_netns()
    link = Span()
    yield link
    link.close()


def live_site(tmp: Path, name: str, dids: list[dict] | None = None) -> Site:
    root = tmp / name
    root.mkdir()
    settings = f"capture: {{interfaces: [span-rx], {TRUNK}, ring_mb: 8, block_timeout_ms: 20, idle_timeout_s: 60}}\n"
    return Site(root, dids, settings).init()


def audio_from_anchor(site: Site, rec: dict) -> list[list[bytes]]:
    """Each channel cut at its anchors (a source's first packet, a resumed sender), trailing fill
    removed: the payload bytes as placed. Where an anchor falls depends on when packets arrived,
    which live capture cannot reproduce to the sample; what follows each anchor must be the same."""
    data = site.wav_bytes(rec)
    fill = bytes([0xFF if rec["codec"] == "PCMU" else 0xD5])
    out = []
    for stream in sorted(rec["streams"], key=lambda s: s["channel"]):
        channel = channel_bytes(data, stream["channel"])
        cuts = sorted(pos for _ssrc, _ts, pos in stream["anchors"]) + [len(channel)]
        out.append([channel[a:b].rstrip(fill) for a, b in zip(cuts, cuts[1:], strict=False)])
    return out


# Every fixture, sent at 20x speed; "hold" in real time (its 5 s pause is what is tested).
FAST = ["inbound-mulaw", "inbound-e164", "inbound-alaw", "not-designated", "outbound-presenting-did", "overlapping",
        "cancelled", "fragmented-invite", "qinq", "ipv6", "tcp-split", "tcp-coalesced", "nat", "ssrc-change",
        "wrap-around", "loss-reorder", "b2bua", "forking", "dtmf", "multipart-sdp", "srtp-offer", "loss-gap"]


def test_span_capture_records_what_replay_records(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = live_site(tmp_path, "replay")
    for name in FAST + ["hold"]:
        assert reference.replay(FIXTURES / f"{name}.pcap") == 0
    expected = {r["call_id"]: r for r in reference.list(capsys)}

    site = live_site(tmp_path, "live")
    service = Service(span, site, tmp_path)
    for name in FAST:
        span.replay(FIXTURES / f"{name}.pcap", multiplier=20)
        time.sleep(1.2)  # past the BYE linger: the next capture reuses the same media ports
    span.replay(FIXTURES / "hold.pcap", multiplier=1)
    time.sleep(1.5)  # the last block is retired within block_timeout_ms; the BYE linger is 1 s
    assert service.stop() == 0 and service.elapsed < 10
    assert any("STOPPING=1" in m for m in service.messages)
    assert any(m.startswith("WATCHDOG=1") for m in service.messages)
    assert any("STATUS=" in m and "active calls" in m for m in service.messages)

    got = {r["call_id"]: r for r in site.list(capsys)}
    assert sorted(got) == sorted(expected)
    for call_id, rec in got.items():
        ref = expected[call_id]
        assert (rec["did"], rec["codec"], rec["caller"]) == (ref["did"], ref["codec"], ref["caller"])
        assert [s["packets"] for s in rec["streams"]] == [s["packets"] for s in ref["streams"]], (call_id, rec["streams"])
        assert audio_from_anchor(site, rec) == audio_from_anchor(reference, ref), call_id
    log = service.log.read_text()
    for rec in got.values():
        assert rec["caller"] not in log  # no personal data in the journal
    assert "kernel dropped" not in log


def _call(call_id: str, start: float, talk: float, seed: int) -> SipCall:
    return SipCall(call_id, "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09012345678", start,
                   talk=talk, seed=seed)


def test_sigterm_mid_call_keeps_the_audio_as_incomplete(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    call = _call("term-1", 1_790_000_000.0, talk=3.0, seed=5)
    partial = tmp_path / "partial.pcap"
    cut = call.end_time - 1.0
    write_pcap(str(partial), [p for p in call.packets() if p[0] < cut])  # no BYE
    sent = sum(1 for t, *_ in call.media()[0].packets if t < cut)
    site = live_site(tmp_path, "live")
    service = Service(span, site, tmp_path)
    span.replay(partial, multiplier=10)
    time.sleep(0.5)
    assert service.stop() == 0
    [rec] = site.list(capsys)
    assert rec["state"] == "incomplete" and rec["end_reason"] == "shutdown"
    assert rec["streams"][0]["packets"] == sent  # all the caller audio that crossed the wire


def test_kill_9_mid_call_then_recovery(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    call = _call("crash-1", 1_790_000_000.0, talk=6.0, seed=6)
    partial = tmp_path / "partial.pcap"
    cut = call.media_start + 4.0  # 4 s of audio, sent in real time, then the service dies
    write_pcap(str(partial), [p for p in call.packets() if p[0] < cut])
    site = live_site(tmp_path, "live")
    service = Service(span, site, tmp_path)
    span.replay(partial, multiplier=1)
    service.stop(signal.SIGKILL)
    assert list((site.store / "spool").glob("*.wav"))  # left behind by the crash
    again = Service(span, site, tmp_path)
    again.wait_log("recovered recording")
    assert again.stop() == 0
    [rec] = site.list(capsys)
    assert rec["state"] == "incomplete" and rec["end_reason"].startswith("recovered after an unclean stop; quality figures")
    assert rec["streams"][0]["packets"] > 0  # its figures up to their last save, not none
    sent = (cut - call.answer_at)  # seconds of recording time the crash interrupted
    assert sent - 1.0 <= rec["frames"] / 8000 <= sent + 0.1  # at most the last second is lost
    assert site.spool_files() == []


def test_did_list_reload_by_edit_and_sighup_and_a_bad_file(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = live_site(tmp_path, "live", [{"number": "044-200-2111", "label": "本庁舎代表"}])
    service = Service(span, site, tmp_path)

    def send(call_id: str, seed: int) -> None:
        pcap = tmp_path / f"{call_id}.pcap"
        write_pcap(str(pcap), _call(call_id, 1_790_000_000.0 + seed * 10, talk=0.5, seed=seed).packets())
        span.replay(pcap, multiplier=5)
        time.sleep(1.3)  # past the BYE linger

    send("before-edit", 1)  # 044-200-3939 is not designated yet
    dids = site.root / "dids.yaml"
    dids.write_text('dids:\n  - {number: "044-200-2111", label: 本庁舎代表}\n'
                    '  - {number: "044-200-3939", label: サンキューコールかわさき}\n', encoding="utf-8")
    service.wait_log("DID list reloaded: 2 designated numbers")
    send("after-edit", 2)
    dids.write_text('dids:\n  - {number: "044-200-39x9", label: broken}\n', encoding="utf-8")
    service.wait_log('dids.yaml: dids[0].number: "044-200-39x9" is not a phone number')
    assert "the previous list (2 numbers) stays in force" in service.log.read_text()
    send("after-bad-edit", 3)
    dids.write_text('dids:\n  - {number: "044-200-2111", label: 本庁舎代表}\n', encoding="utf-8")
    service.wait_log("DID list reloaded: 1 designated numbers")
    service.proc.send_signal(signal.SIGHUP)  # the same list again, by `systemctl reload`
    time.sleep(0.5)
    assert service.log.read_text().count("DID list reloaded") >= 2
    send("after-removal", 4)
    assert service.stop() == 0
    assert sorted(r["call_id"] for r in site.list(capsys)) == ["after-bad-edit", "after-edit"]
    assert any("RELOADING=1" in m for m in service.messages)


def test_a_shift_jis_or_huge_did_file_is_refused_while_capture_goes_on(span: Span, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16, items 5, 16, 17: a Windows editor's Shift_JIS file crashed the service; a broken file
    made every recorderctl command fail; a large file stalled capture on the capture thread."""
    site = live_site(tmp_path, "live", [{"number": "044-200-2111", "label": "本庁舎代表"}])
    service = Service(span, site, tmp_path)
    dids = site.root / "dids.yaml"
    dids.write_bytes('dids:\n  - {number: "044-200-3939", label: "サンキューコールかわさき"}\n'.encode("shift_jis"))
    service.wait_log("dids.yaml: not UTF-8 at byte 43 (line 2): save it as UTF-8")
    assert "the previous list (1 numbers) stays in force" in service.log.read_text()
    service.wait_for("DID FILE REFUSED: the previous list (1) in force", 5)  # systemctl status
    capsys.readouterr()
    assert site.ctl("status") == 0  # through the socket
    out = capsys.readouterr().out
    assert out.startswith("WARNING: the DID file on disk is broken (dids.yaml: not UTF-8 at byte 43 (line 2)")
    assert "the service runs on the previous list" in out and "service: running" in out
    assert site.list(capsys) == []
    lines = ["dids:"] + [f'  - {{number: "044-{i // 10000 % 1000:03d}-{i % 10000:04d}", label: "l{i}"}}' for i in range(22_000)]
    dids.write_text("\n".join(lines) + '\n  - {number: "044-200-39x9", label: broken}\n', encoding="utf-8")  # < 1 MiB
    start = time.monotonic()
    service.wait_log('dids[22000].number: "044-200-39x9" is not a phone number', 90)
    took = time.monotonic() - start
    beats = [t for t, m in zip(service.stamps, service.messages, strict=False) if "WATCHDOG=1" in m and t >= start]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(beats) >= took - 2 and max(gaps, default=0) < 2.5, (took, gaps)  # the loop never waited on it (5 s here before)
    dids.write_text('dids:\n  - {number: "044-200-3939", label: サンキューコールかわさき}\n', encoding="utf-8")
    service.wait_log("DID list reloaded: 1 designated numbers (サンキューコールかわさき)")
    pcap = tmp_path / "after.pcap"
    write_pcap(str(pcap), _call("after-fix", 1_790_000_000.0, talk=0.5, seed=5).packets())
    span.replay(pcap, multiplier=5)
    time.sleep(1.3)
    assert service.stop() == 0
    assert [r["call_id"] for r in site.list(capsys)] == ["after-fix"]


def test_direction_unknown_starts_loudly_and_says_so(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16, items 9 and 12: a site that cannot name its trunk side chooses capture.direction:
    unknown, and every start, STATUS= and recorderctl status say so; likewise the volume opt-out."""
    root = tmp_path / "live"
    root.mkdir()
    site = Site(root, None, "capture: {interfaces: [span-rx], direction: unknown, ring_mb: 8, block_timeout_ms: 20}\n").init()
    service = Service(span, site, tmp_path)
    log = service.log.read_text()
    assert ("CRITICAL recorderd.daemon: capture.direction is unknown (no capture.trunk_networks): every call to a "
            "designated number is recorded, internal and outbound ones too") in log
    assert "[EVENT=direction-unknown]" in log and "[EVENT=store-volume-unencrypted]" in log
    assert any("STATUS=DIRECTION UNKNOWN: internal and outbound calls are recorded too; STORE VOLUME NOT ENCRYPTED; "
               in m for m in service.messages)
    service.wait_for("WATCHDOG=1", 5)
    capsys.readouterr()
    assert site.ctl("status") == 0  # the service's alerts, in its status reply from its start
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "WARNING: capture.direction: unknown: every call to a designated number is recorded, internal and outbound "
        "ones too (Art. 2(1): inbound only); set capture.trunk_networks",
        "WARNING: the store is not on an encrypted volume (store.require_encrypted_volume: false)",
    ]
    assert service.stop() == 0


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = needs_tool("systemd-analyze")
    root = Path(__file__).resolve().parents[2]
    unit = root / "systemd" / "recorderd.service"
    text = unit.read_text().replace("/usr/bin/recorderd", str(BIN / "recorderd"))
    (tmp_path / "recorderd.service").write_text(text)
    result = subprocess.run([analyze, "verify", str(tmp_path / "recorderd.service")], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "recorderd.service" in line]
    assert result.returncode == 0 and not problems, result.stderr
    json.dumps(problems)


def test_store_full_is_loud_and_deletes_nothing(span: Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "live"
    root.mkdir()
    site = Site(root, None, f"capture: {{interfaces: [span-rx], {TRUNK}, ring_mb: 8, block_timeout_ms: 20}}\n"
                            "store: {path: store, critical_free_mb: 999999}\n").init()
    site.replay(FIXTURES / "inbound-alaw.pcap")  # one recording already kept
    kept = site.list(capsys)
    service = Service(span, site, tmp_path)
    service.wait_log("NEW CALLS ARE NOT BEING RECORDED")
    span.replay(FIXTURES / "inbound-mulaw.pcap", multiplier=10)
    service.wait_log("designated call to サンキューコールかわさき NOT RECORDED")
    assert service.stop() == 0
    assert site.list(capsys) == kept  # nothing new, nothing deleted
