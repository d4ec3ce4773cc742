"""The C fast path (capture/_fastpath.c) against the Python loops it replaces.

The Python code is the specification: every capture here is recorded twice, once with the C module
and once without (``RECORDERD_PURE_PYTHON=1`` in a process of its own, or the C parts switched off
in this one), and everything kept must be the same: each recording's index row (with the SHA-256
of its WAV and of its evidence pcap), the pipeline's counters, the reader's batches and errors.

Run as a script (``python tests/test_fastpath.py digest STORE_DIR PCAP...``) it prints the digest
of replaying each capture into a store of its own: what the subprocess comparisons compare.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "pcap_fixtures"))

import pytest  # noqa: E402

FIXTURES = ROOT / "pcap_fixtures"
PUBLIC = Path(os.environ.get("RECORDERD_PUBLIC_PCAPS") or ROOT.parent / "shared" / "pcaps" / "public")
WALL_CLOCK = ("created_at", "wrapped_key", "erasing_at", "retain_until")  # differ between any two runs


def digest(store_root: Path, pcaps: list[str]) -> dict:
    """Replay each capture into a fresh store; what was kept, row by row, and the counters."""
    from capture.fast import MODE
    from capture.pipeline import CapturePipeline
    from recorderd.config import load_dids
    from recorderd.service import replay
    from storage.spool import SpoolSink
    from storage.store import Store

    dids = load_dids(str(ROOT / "config" / "dids.yaml"))
    out: dict = {"mode": MODE, "captures": {}}
    for n, pcap in enumerate(pcaps):
        store = Store(str(store_root / str(n)), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                      key_file=str(store_root / f"{n}.key"))
        store.init()
        store.open()
        pipeline = CapturePipeline(dids, SpoolSink(store))
        result = replay(pipeline, [pcap])
        rows = []
        for row in sorted(store.db().all(), key=lambda r: r.id):
            fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in WALL_CLOCK}
            rows.append(json.loads(json.dumps(fields, default=str)))
        store.close()
        counters = dict(pipeline.counters)
        out["captures"][Path(pcap).name] = {"packets": result.packets, "errors": result.errors,
                                            "counters": counters, "recordings": rows}
        table = pipeline.media.table
        out["handled_in_c"] = out.get("handled_in_c", 0) + (table.handled if table is not None else 0)
        out["rtp_recorded"] = out.get("rtp_recorded", 0) + sum(  # of the codecs the kernel places (G.711)
            s["packets"] + s["duplicates"] for r in rows if r["audio"] == "exact" for s in r["streams"])
    return out


def digest_in_subprocess(pcaps: list[Path], pure: bool, tmp: Path) -> dict:
    env = {**os.environ, "RECORDERD_PURE_PYTHON": "1" if pure else "0", "PYTHONPATH": str(ROOT)}
    store_root = tmp / ("pure" if pure else "native")
    store_root.mkdir()
    done = subprocess.run([sys.executable, __file__, "digest", str(store_root), *map(str, pcaps)],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def native_built() -> None:
    from capture.fast import MODE

    assert MODE == "native", "capture/_fastpath.c is not built: `make venv` builds it (needs gcc and Python headers)"


def test_the_c_module_is_built_and_used() -> None:
    """The speed targets (issue 7) rest on it: a test environment without it is a broken build."""
    native_built()
    from capture.assembler import StreamAssembler
    from capture.fast import fastpath
    from capture.media import MediaMap

    assert fastpath is not None and issubclass(StreamAssembler, fastpath.StreamCore)
    assert MediaMap().table is not None


def compare(pcaps: list[Path], tmp: Path) -> float:
    """Both digests equal; the share of the recorded G.711 RTP that C handled whole (G.722, Opus
    and L16 are Python's: docs/hot-path.md)."""
    native_built()
    native = digest_in_subprocess(pcaps, pure=False, tmp=tmp)
    pure = digest_in_subprocess(pcaps, pure=True, tmp=tmp)
    assert (native["mode"], pure["mode"]) == ("native", "python")
    assert native["captures"].keys() == pure["captures"].keys()
    for name in native["captures"]:
        assert native["captures"][name] == pure["captures"][name], name
    assert pure["handled_in_c"] == 0
    return native["handled_in_c"] / max(1, native["rtp_recorded"])


def test_every_fixture_is_kept_byte_for_byte_the_same_by_c_and_python(tmp_path: Path) -> None:
    pcaps = sorted(FIXTURES.glob("*.pcap"))
    assert len(pcaps) >= 20
    # and the comparison is about C's work, not Python's: ~0.80 of the fixtures' G.711 RTP (made of
    # the rare cases), the same packets as before the kernel stopped calling audio() for G.722 and Opus
    assert compare(pcaps, tmp_path) > 0.75


@pytest.mark.skipif(not PUBLIC.is_dir(), reason=f"public captures not present ({PUBLIC})")
def test_every_public_capture_is_kept_byte_for_byte_the_same_by_c_and_python(tmp_path: Path) -> None:
    pcaps = sorted(p for p in PUBLIC.iterdir() if p.suffix in (".pcap", ".pcapng"))
    compare(pcaps, tmp_path)


def mangled_calls(seed: int, flood: int = 0) -> list[tuple[float, bytes]]:
    """Several overlapping designated calls (and one not designated) whose media is lost,
    duplicated, reordered, delayed in bursts (a stall), shifted past the drift limit and whose
    sender changes SSRC: every way out of the C steady case and back. ``flood``: packets from an
    address not in the calls into each direction of each call (dropped as another source)."""
    from generator import SipCall

    rng = random.Random(seed)
    packets: list[tuple[float, bytes]] = []
    for i in range(4):
        did = "0442003939" if i != 3 else "0443330000"
        call = SipCall(f"mangle-{seed}-{i}", f"sip:{did}@192.0.2.10", f"sip:{did}@192.0.2.10", "09011112222",
                       1_790_000_000.0 + i * 0.37, talk=6.0, seed=seed * 10 + i,
                       caller_media=("203.0.113.20", 40000 + 2 * i), pbx_media=("192.0.2.20", 20000 + 2 * i),
                       ssrc_change_at=150 if i == 1 else None, dtmf=((40, "5"),) if i == 2 else (),
                       flood=flood)
        packets.extend(call.packets())
    packets.sort(key=lambda p: p[0])
    out: list[tuple[float, bytes]] = []
    stall_at = packets[len(packets) // 2][0]
    for ts, frame in packets:
        r = rng.random()
        if r < 0.03:
            continue  # lost
        if stall_at <= ts < stall_at + 0.6:
            ts = stall_at + 0.6 + (ts - stall_at) * 0.01  # a network stall: a burst arrives late
        if r < 0.06:
            out.append((ts, frame))  # duplicated
        elif r < 0.10:
            ts += rng.uniform(0.0, 0.5)  # reordered (some beyond the spool's reorder margin)
        elif r < 0.102:
            ts += 4.0  # later than the drift limit: re-anchored
        out.append((ts, frame))
    out.sort(key=lambda p: p[0])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mangled_calls_are_kept_the_same_by_c_and_python(seed: int, tmp_path: Path) -> None:
    from frames import write_pcap

    pcap = tmp_path / f"mangled-{seed}.pcap"
    write_pcap(str(pcap), mangled_calls(seed))
    assert compare([pcap], tmp_path) > 0.5


def test_media_from_another_source_is_dropped_the_same_by_c_and_python(tmp_path: Path) -> None:
    """Mangled calls flooded from an address not in them (half with the senders' SSRCs): C drops
    and counts what Python drops and counts, per recording and in the counters."""
    from frames import write_pcap

    pcap = tmp_path / "flooded.pcap"
    write_pcap(str(pcap), mangled_calls(4, flood=400))
    assert compare([pcap], tmp_path) > 0.5


def test_packet_times_past_2106_are_kept_the_same_by_c_and_python(tmp_path: Path) -> None:
    """A damaged capture whose times pass 2^32 s (no pcap record can carry them): neither path
    fails, and they agree on what is kept. Media of another call keeps the recorded call's packets
    off the housekeeping ticks, so C meets them (found by review: it wrapped the seconds)."""
    import struct

    from frames import rtp_packet, udp_frame
    from generator import SipCall

    start = 2**32 - 2.0
    call = SipCall("wrap-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", start,
                   talk=3.0)
    packets = [(t, f) for t, f in call.packets() if not (t >= 2**32 and f[42] & 0xC0 != 0x80)]  # no BYE
    t = start + 0.3005
    while t < start + 4.0:
        packets.append((t, udp_frame("198.51.100.7", 30000, "198.51.100.8", 30002, rtp_packet(0, 1, 1, 99, bytes(160)))))
        t += 0.001
    pcap = tmp_path / "past-2106.pcap"
    with open(pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in sorted(packets, key=lambda p: p[0]):
            us = round(ts * 1e6)
            sec = min(us // 10**6, 0xFFFFFFFF)  # past 2^32 s the microseconds field grows beyond 10^6
            f.write(struct.pack("<IIII", sec, us - sec * 10**6, len(frame), len(frame)) + frame)
    compare([pcap], tmp_path)


def test_the_pcap_reader_gives_the_same_batches_and_errors_in_c_and_python(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """Every prefix of a capture (each cut is a damaged file) and one with an impossible length."""
    native_built()
    import capture.source as source

    data = (FIXTURES / "dtmf.pcap").read_bytes()
    bad = bytearray(data)
    bad[24 + 8 : 24 + 12] = (300_000).to_bytes(4, "little")  # first record: longer than any snaplen
    cases = [data[:n] for n in range(0, len(data), 97)] + [data, bytes(bad)]

    def read(blob: bytes) -> tuple[list, str | None]:
        path = tmp_path / "cut.pcap"
        path.write_bytes(blob)
        got: list = []
        try:
            with source.CaptureFile(path, batch_size=7) as f:
                for batch in f.batches():
                    got.append(batch)
        except source.CaptureFileError as exc:
            return got, str(exc)
        return got, None

    native = [read(blob) for blob in cases]
    monkeypatch.setattr(source, "fastpath", None)
    pure = [read(blob) for blob in cases]
    assert native == pure
    assert any(err for _, err in native) and any(not err and got for got, err in native)
    monkeypatch.undo()
    (tmp_path / "whole.pcap").write_bytes(data)
    with source.CaptureFile(tmp_path / "whole.pcap", batch_size=0) as f:  # C once looped forever here
        assert all(len(b) == 1 for b in f.batches())


def ring_block(frames: list[tuple[int, int, bytes]], pad: int = 0) -> tuple[bytearray, int]:
    """A TPACKET_V3 block as the kernel fills it: tpacket3_hdr + sockaddr_ll room before each frame,
    each packet 16-aligned; ``pad`` extra bytes at the end of the block."""
    import struct

    block = bytearray(48)
    first = len(block)
    for n, (sec, nsec, frame) in enumerate(frames):
        mac = 82  # tpacket3_hdr + sockaddr_ll, aligned (what the kernel uses), minus nothing
        size = (mac + len(frame) + 15) // 16 * 16
        nxt = 0 if n == len(frames) - 1 else size
        block += struct.pack("=IIIIIIHH", nxt, sec, nsec, len(frame), len(frame), 1, mac, mac + 14)
        block += bytes(mac - 28) + frame + bytes(size - mac - len(frame))
    return block + bytes(pad), first


def test_the_ring_walk_gives_the_same_batches_in_c_and_python() -> None:
    """Frames of every size up to a jumbo one, nanosecond times; and a block whose header lies (a
    walk off the end, a frame beyond the ring, more packets than the ring holds): both walks keep
    the packets before the lie, say the block was malformed, and neither raises (C raised, Python
    read a truncated frame or raised struct.error)."""
    native_built()
    from capture import live

    rng = random.Random(7)
    frames = [(1_790_000_000 + i, rng.randrange(1_000_000_000), rng.randbytes(rng.choice([60, 214, 1514, 9000])))
              for i in range(200)]
    block, first = ring_block(frames, pad=64)
    c = live.walk_block(block, first, len(frames))
    py = live._walk_block(block, first, len(frames))
    assert c == py and c[1] == 0 and [f for _, _, f in c[0]] == [f for _, _, f in frames]
    off = first
    for _ in range(len(frames) - 1):  # to the last packet: its next offset is 0 in a real block
        off += int.from_bytes(block[off : off + 4], "little")
    beyond = bytearray(block)
    beyond[off : off + 4] = (len(block) - off).to_bytes(4, "little")  # a next offset off the end
    lying = bytearray(block)
    lying[off + 12 : off + 16] = (1 << 30).to_bytes(4, "little")  # the last one's snaplen beyond the ring
    for ring, num in ((beyond, len(frames) + 1), (lying, len(frames)), (block, len(block) // 32 + 5)):
        c_batch, c_bad = live.walk_block(ring, first, num)
        py_batch, py_bad = live._walk_block(ring, first, num)
        assert (c_batch, c_bad) == (py_batch, py_bad)
        assert c_bad == 1
        whole = len(frames) if ring is beyond or ring is block else len(frames) - 1
        assert [f for _, _, f in c_batch][:whole] == [f for _, _, f in frames][:whole]
        last = len(frames) - 1  # (a block of a next offset 0 claiming more packets: the last one again)
        assert all(len(f) == len(frames[min(k, last)][2]) for k, (_, _, f) in enumerate(c_batch))  # none cut short
    lie_first = bytearray(block)
    lie_first[first + 12 : first + 16] = (1 << 30).to_bytes(4, "little")
    assert live.walk_block(lie_first, first, 1) == live._walk_block(lie_first, first, 1) == ([], 1)
    assert live.walk_block(block, len(block) - 8, 1) == live._walk_block(block, len(block) - 8, 1) == ([], 1)


def test_a_stream_whose_channel_was_changed_after_arming_is_left_to_python() -> None:
    """``channel`` is a member Python may set; arm() checks it, and the kernel checks it again at
    each packet (was: a channel of 3 set after arming indexed past the two lanes: a crash)."""
    native_built()
    import struct

    from capture import _fastpath as fp

    def ip(a: str) -> bytes:
        return bytes(int(x) for x in a.split("."))

    table, lanes = fp.FastPath(), fp.Lanes()
    lanes.limit = 8000
    stream = fp.StreamCore()
    stream.channel, stream.ssrc, stream.source, stream.learned = 1, 7, (ip("203.0.113.1"), 4000), True
    stream.arm(0, 0.0, 8000.0, 24000.0, lanes)
    table.set(ip("192.0.2.1"), 20000, stream)
    rtp = struct.pack("!BBHII", 0x80, 0, 1, 0, 7) + bytes(160)
    udp = struct.pack("!HHHH", 4000, 20000, 8 + len(rtp), 0) + rtp
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, ip("203.0.113.1"), ip("192.0.2.1"))
    frame = bytes(12) + b"\x08\x00" + iph + udp
    for channel in (3, 0, -1):
        stream.channel = channel
        i, _now, full = table.run([(0.001, 1, frame)], 0, 0.0, 1e9)
        assert (i, full) == (0, None)  # stopped before it, for Python
        assert [bytes(b) for b in lanes.bufs] == [b"", b""]


def test_a_ring_walk_never_reads_past_its_block() -> None:
    """Two blocks side by side in the ring: the first's last next offset leads into the second (the
    kernel's, being written). Both walks stop at the first block's end, keep its whole packets and
    say it was malformed (was: bounded by the whole ring, they read the neighbour's packets)."""
    native_built()
    from capture import live

    frames = [(1_790_000_000 + i, i, bytes([i]) * 214) for i in range(4)]
    first_block, first = ring_block(frames[:2], pad=32)
    second_block, _ = ring_block(frames[2:])
    ring = first_block + second_block
    assert live.walk_block(ring, first, 2, len(first_block)) == live._walk_block(ring, first, 2, len(first_block))
    off = first + int.from_bytes(ring[first : first + 4], "little")  # the block's last packet
    ring[off : off + 4] = (len(first_block) + first - off).to_bytes(4, "little")  # its next: the neighbour's first
    for walk in (live.walk_block, live._walk_block):
        batch, bad = walk(ring, first, 3, len(first_block))
        assert bad == 1 and [f for _, _, f in batch] == [f for _, _, f in frames[:2]]
        whole, bad = walk(ring, first, 3)  # bounded by the ring only: the neighbour's packet read
        assert bad == 0 and len(whole) == 3


def test_the_constants_c_and_python_share_are_the_same() -> None:
    """MAX_SNAPLEN, SEQ_WINDOW, the RTCP payload types and the mirror window: one value each."""
    native_built()
    from capture import assembler, rtp, source
    from capture.fast import fastpath

    assert fastpath is not None
    assert fastpath.MAX_SNAPLEN == source.MAX_SNAPLEN
    assert fastpath.SEQ_WINDOW == assembler.SEQ_WINDOW
    assert (fastpath.RTCP_PT_FIRST, fastpath.RTCP_PT_LAST) == (rtp.RTCP_PT_FIRST, rtp.RTCP_PT_LAST)
    assert fastpath.MIRROR_WINDOW_S == assembler.MIRROR_WINDOW_S
    assert fastpath.MIRROR_RING == assembler.MIRROR_RING


if __name__ == "__main__" and sys.argv[1:2] == ["digest"]:
    root = Path(sys.argv[2])
    with tempfile.TemporaryDirectory():
        print(json.dumps(digest(root, sys.argv[3:])))


def test_the_c_modules_stub_names_what_the_c_types_have() -> None:
    """capture/_fastpath.pyi (for mypy) declares each C type's attributes and methods by hand: it
    must name exactly the members and getset attributes of the built types, and the module's
    functions and constants (a member added in C and not in the stub, or the other way, fails)."""
    native_built()
    import ast
    import inspect

    from capture import _fastpath as fp

    tree = ast.parse((Path(__file__).parent.parent / "capture" / "_fastpath.pyi").read_text(encoding="utf-8"))
    declared: dict[str, set[str]] = {}
    module: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)
                                   and isinstance(n.target, ast.Name)}
            declared[node.name] |= {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            module.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            module.add(node.target.id)
    for name, names in declared.items():
        kind = getattr(fp, name)
        own = {k for k, v in vars(kind).items()
               if not k.startswith("_") and (inspect.ismemberdescriptor(v) or inspect.isgetsetdescriptor(v)
                                             or inspect.ismethoddescriptor(v))}
        if "__len__" in names:
            own.add("__len__")
        assert names == own, f"{name}: the stub lacks {sorted(own - names)}, names what C lacks {sorted(names - own)}"
    c_module = {k for k in vars(fp) if not k.startswith("_") and k not in declared}
    assert module == c_module, f"module: the stub lacks {sorted(c_module - module)}, names {sorted(module - c_module)}"
