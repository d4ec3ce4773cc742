"""Nothing of a call in the clear on the disk (issue 13, "Done when", first bullet), seen from outside.

The live service records a real-time call sent by tcpreplay on a veth SPAN link (netns w13…) into a
store on a small ext4 file system in a loop-mounted file, mounted data=journal: each block of a
file goes through the journal before its place, so an overwrite or a removal leaves the old bytes
in the journal's blocks, as a journalling or copy-on-write file system or an SSD's remapping does
to "overwrite with zeros". While the call is in progress and after it is kept, every file on that
file system and the raw bytes of the image are scanned for any run of 32 bytes of the call's audio
(as sent, or one byte in two as a stereo WAV holds it), for the caller's number (as dialled,
E.164, with dashes; ASCII, UTF-16) and for its Call-ID; the service's stderr (its journal) too.
The scan is shown to find each of them when they are there (a plaintext copy written into the file
system, and a file removed after it reached the disk, which only the raw image still holds).
Needs root (netns, AF_PACKET, mount), tcpreplay, mkfs.ext4 and a loop device; skips otherwise."""
from __future__ import annotations

import contextlib
import os
import random
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Site, needs_tool
from generator import PAYLOAD_TYPE, SipCall, write_pcap

from integration.test_live_service import TRUNK, Service, _root_netns
from storage.wav import channel_bytes

pytestmark = pytest.mark.integration

CALLER = "07031415926"  # the caller's number: in the SIP only, never to be on the disk in the clear
RUN = 32  # the shortest run of audio that counts as audio on the disk
KEY = 16  # the scan looks up KEY bytes at every STRIDE-th offset: any run of KEY + STRIDE - 1 = RUN bytes holds one
STRIDE = RUN - KEY + 1
IMAGE_MB = 64


class AudioRuns:
    """Every window of KEY bytes of each channel's payload bytes (as sent, packets in order), to find
    any run of RUN or more bytes of them in a haystack without looking at every offset."""

    def __init__(self, channels: list[bytes]) -> None:
        self.channels = channels
        self.where: dict[bytes, tuple[int, int]] = {}
        for c, data in enumerate(channels):
            for i in range(len(data) - KEY + 1):
                self.where.setdefault(data[i : i + KEY], (c, i))

    def find(self, hay: bytes) -> list[tuple[int, int, int, int]]:
        """(offset in hay, channel, offset in channel, length) of each run of >= RUN bytes."""
        found = []
        get, end = self.where.get, -1
        for p in range(0, len(hay) - KEY + 1, STRIDE):
            hit = get(hay[p : p + KEY])
            if hit is None or p < end:
                continue
            c, q = hit
            data = self.channels[c]
            a, b = p, q
            while a > 0 and b > 0 and hay[a - 1] == data[b - 1]:
                a, b = a - 1, b - 1
            e, f = p + KEY, q + KEY
            while e < len(hay) and f < len(data) and hay[e] == data[f]:
                e, f = e + 1, f + 1
            if e - a >= RUN:
                found.append((a, c, b, e - a))
                end = e
        return found


@dataclass
class Secrets:
    """What of one call must never be on the disk in the clear."""

    audio: AudioRuns
    words: dict[str, bytes]  # what -> bytes

    @classmethod
    def of(cls, call: SipCall) -> Secrets:
        pt = PAYLOAD_TYPE[call.codec]
        channels = [b"".join(p[3] for p in d.packets if p[4] == pt) for d in call.media()]
        forms = {"number as dialled": call.caller, "E.164": "+81" + call.caller[1:], "E.164 without +": "81" + call.caller[1:],
                 "number with dashes": f"{call.caller[:3]}-{call.caller[3:7]}-{call.caller[7:]}", "Call-ID": call.call_id}
        words = {}
        for what, text in forms.items():
            for encoding in ("ascii", "utf-16-le", "utf-16-be"):
                words[f"{what} ({encoding})"] = text.encode(encoding)
        return cls(AudioRuns(channels), words)

    def in_bytes(self, data: bytes, where: str) -> list[str]:
        """What of the call is in ``data``: the words, and runs of audio as they are or one byte in
        two (the channels of a stereo 8-bit WAV, interleaved sample by sample)."""
        out = [f"{where}: {what} at byte {data.find(word)}" for what, word in self.words.items() if word in data]
        for a, c, q, n in self.audio.find(data):
            out.append(f"{where}: {n} bytes of channel {c}'s audio (from its byte {q}) at byte {a}")
        for parity in (0, 1):
            for a, c, q, n in self.audio.find(data[parity::2]):
                out.append(f"{where}: {n} bytes of channel {c}'s audio (from its byte {q}) one byte in two "
                           f"from byte {2 * a + parity}")
        return out

    def in_files(self, root: Path, phase: str) -> list[str]:
        """Every regular file under ``root`` (and every name), opened once without following links."""
        out = []
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root)
                out += self.in_bytes(os.fsencode(name), f"{phase}: the name {rel!r}")
                if name not in files:
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except (FileNotFoundError, OSError):
                    continue  # gone meanwhile (a spool file kept), or a socket
                with os.fdopen(fd, "rb") as f:
                    if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        out += self.in_bytes(f.read(), f"{phase}: file {rel}")
        return out


@dataclass
class LoopFs:
    image: Path
    mount: Path

    def raw(self) -> bytes:
        """The image's bytes once what the file system holds has reached it (syncfs)."""
        subprocess.run(["sync", "-f", str(self.mount)], check=True)
        return self.image.read_bytes()


@contextlib.contextmanager
def loop_fs(tmp: Path) -> Iterator[LoopFs]:
    """A fresh ext4 of IMAGE_MB in a file, loop-mounted with data=journal; unmounted and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("loop-mounting a file system image needs root")
    for tool in ("mkfs.ext4", "mount", "umount", "sync"):
        needs_tool(tool)
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices here (/dev/loop-control is absent)")
    image, mount = tmp / "w13-store.img", tmp / "w13-mnt"
    with open(image, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mount.mkdir()
    done = subprocess.run(["mount", "-o", "loop,data=journal", str(image), str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount a file system image here: {done.stderr.strip()}")
    try:
        yield LoopFs(image, mount)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)
        image.unlink(missing_ok=True)


class W13Span:
    """A network namespace (prefix w13) with a veth pair: tcpreplay writes on w13-tx, the service reads w13-rx."""

    def __init__(self) -> None:
        self.ns = f"w13{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.exec("ip", "link", "add", "w13-tx", "type", "veth", "peer", "name", "w13-rx")
        for dev in ("w13-tx", "w13-rx", "lo"):
            self.exec("ip", "link", "set", dev, "up")
        for dev in ("w13-tx", "w13-rx"):
            self.exec("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")

    def exec(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False)


@pytest.fixture
def span():  # type: ignore[no-untyped-def]
    _root_netns()
    link = W13Span()
    yield link
    link.close()


def _call(talk: float) -> SipCall:
    return SipCall(f"w13-{uuid.uuid4().hex}@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                   CALLER, 1_790_000_000.0, talk=talk, seed=1313)


def summary(found: list[str]) -> str:
    """The findings, the runs of audio of each place counted rather than listed one by one."""
    lines: list[str] = []
    runs: dict[str, list[int]] = {}
    for f in found:
        where, bytes_of, _ = f.partition(" bytes of channel ")
        if bytes_of:
            place, _, n = where.rpartition(": ")
            runs.setdefault(place, []).append(int(n))
        else:
            lines.append(f)
    lines += [f"{place}: audio in {len(ns)} run(s) of {RUN} bytes or more, {sum(ns):,} bytes in all"
              for place, ns in runs.items()]
    return "\n".join(lines)


def _junk(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_the_scan_finds_the_audio_and_the_number_when_they_are_there(tmp_path: Path) -> None:
    """The negative control: what the scan must find, written into the loop file system; what it
    must not (31 bytes of audio are not a run); a file removed after it reached the disk is in no
    file but still in the image's raw bytes."""
    call = _call(talk=2.0)
    secrets = Secrets.of(call)
    audio = secrets.audio.channels[1]
    with loop_fs(tmp_path) as fs:
        (fs.mount / "run32.bin").write_bytes(_junk(1001, 1) + audio[5003 : 5003 + RUN] + _junk(999, 2))
        (fs.mount / "run31.bin").write_bytes(_junk(777, 3) + secrets.audio.channels[0][4000 : 4000 + RUN - 1] + _junk(555, 4))
        for i, word in enumerate(secrets.words.values()):
            (fs.mount / f"word{i}.txt").write_bytes(_junk(100 + i, 10 + i) + word + _junk(50, 99))
        stereo = bytearray(200)  # a WAV's data: the two channels interleaved
        stereo[0::2], stereo[1::2] = secrets.audio.channels[0][1000:1100], audio[2000:2100]
        (fs.mount / "stereo.wav").write_bytes(_junk(44, 8) + stereo)
        removed = fs.mount / "removed.bin"
        removed.write_bytes(_junk(4096, 5) + audio[9000 : 9000 + 2 * RUN] + _junk(4096, 6))
        fs.raw()
        removed.unlink()

        in_files = secrets.in_files(fs.mount, "files")
        raw = secrets.in_bytes(fs.raw(), "raw image")
    assert "files: file run32.bin: 32 bytes of channel 1's audio (from its byte 5003) at byte 1001" in in_files
    assert "files: file stereo.wav: 100 bytes of channel 0's audio (from its byte 1000) one byte in two from byte 44" in in_files
    assert "files: file stereo.wav: 100 bytes of channel 1's audio (from its byte 2000) one byte in two from byte 45" in in_files
    assert not [f for f in in_files + raw if "(from its byte 4000)" in f]  # 31 bytes are not a run
    for i, what in enumerate(secrets.words):
        assert f"files: file word{i}.txt: {what} at byte {100 + i}" in in_files
        assert any(f.startswith(f"raw image: {what} at byte") for f in raw), what
    assert not [f for f in in_files if "removed.bin" in f]
    assert [f for f in raw if f"{2 * RUN} bytes of channel 1's audio (from its byte 9000)" in f]  # only the raw bytes hold it
    assert [f for f in raw if f"{RUN} bytes of channel 1's audio (from its byte 5003)" in f]


def test_a_live_call_is_never_on_the_disk_in_the_clear(span: W13Span, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    call = _call(talk=20.0)
    secrets = Secrets.of(call)
    pcap = tmp_path / "w13-call.pcap"  # the capture itself is plaintext: outside the loop file system
    write_pcap(str(pcap), call.packets())
    with loop_fs(tmp_path) as fs:
        root = fs.mount / "site"
        root.mkdir()
        settings = (f"capture: {{interfaces: [w13-rx], {TRUNK}, ring_mb: 8, block_timeout_ms: 20, idle_timeout_s: 60}}\n"
                    "store: {path: store, critical_free_mb: 1}\n")
        site = Site(root, None, settings).init()
        service = Service(span, site, tmp_path)  # type: ignore[arg-type]  # (Service reads only .ns)
        found: list[str] = []
        try:
            sent = threading.Thread(target=span.exec, args=("tcpreplay", "-q", "-i", "w13-tx", "--multiplier=1", str(pcap)),
                                    kwargs={"timeout": 120})
            started = time.monotonic()
            sent.start()
            time.sleep(max(0.0, started + call.media_start - call.start + 10.0 - time.monotonic()))  # 10 s of the talk sent
            raw = fs.raw()
            spooled = sum(p.stat().st_size for p in (site.store / "spool").rglob("*") if p.is_file())
            found += secrets.in_files(fs.mount, "in progress") + secrets.in_bytes(raw, "in progress: raw image")
            assert sent.is_alive(), "the scan in progress took longer than the rest of the call"
            sent.join(timeout=60)
            service.wait_log("EVENT=call-recorded", 15)
            found += secrets.in_files(fs.mount, "kept") + secrets.in_bytes(fs.raw(), "kept: raw image")
        finally:
            assert service.stop() == 0
        found += secrets.in_files(fs.mount, "stopped") + secrets.in_bytes(fs.raw(), "stopped: raw image")
        log = service.log.read_bytes()
        found += secrets.in_bytes(log, "the service's stderr")

        # What was scanned for is what was recorded: the call is kept, its audio decrypts to the runs sought.
        [rec] = site.list(capsys)
        assert (rec["call_id"], rec["caller"], rec["state"]) == (call.call_id, CALLER, "complete")
        wav = site.wav_bytes(rec)
        for c, channel in enumerate(secrets.audio.channels):
            runs = secrets.audio.find(channel_bytes(wav, c + 1))  # (1-based)
            assert sum(n for _a, ch, _q, n in runs if ch == c) >= 0.9 * len(channel), c
        assert spooled >= 80_000, spooled  # 5 s of both channels on the disk mid-call: the scan saw the spool at work

        # And the same scan finds a plaintext copy in this very image.
        copy = _junk(333, 7) + secrets.audio.channels[0][8000:16000] + secrets.words["number as dialled (utf-16-le)"]
        (fs.mount / "plain-copy.bin").write_bytes(copy)
        control = secrets.in_bytes(fs.raw(), "raw image")
        assert [f for f in control if "8000 bytes of channel 0's audio (from its byte 8000)" in f], control
        assert [f for f in control if "number as dialled (utf-16-le)" in f], control
    assert not found, summary(found)
