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


def ring_replay(pipeline: object, pcap: str) -> tuple[int, list]:
    """``pcap``'s packets (Ethernet) through the pipeline as the SPAN port's ring delivers them:
    blocks of up to 300 packets packed as the kernel packs them (ring_block below) into one mmap
    reused for each, walked by capture/live.py's walk (C: a Frames lying in the map), each batch
    released once fed, then the block scribbled over before the next is packed; the map closes at
    the end (a batch still holding it: BufferError). (packets, errors) as replay() says them."""
    import mmap

    from capture import live
    from capture.source import CaptureFile, release

    with CaptureFile(pcap) as f:
        packets = [p for b in f.batches() for p in b]
    ring = mmap.mmap(-1, live.BLOCK_SIZE)
    for k in range(0, len(packets), 300):
        part = []
        for ts, linktype, frame in packets[k : k + 300]:
            assert linktype == 1
            sec, nsec = divmod(round(ts * 1e9), 10**9)
            part.append((sec, nsec, frame))
        block, first = ring_block(part)
        ring[: len(block)] = block
        batch, bad = live.walk_block(ring, first, len(part), len(block))
        assert bad == 0 and len(batch) == len(part)
        pipeline.feed(batch)  # type: ignore[attr-defined]
        release(batch)
        ring[: len(block)] = b"\xee" * len(block)  # what the kernel writes next into the block
    ring.close()
    return len(packets), []


def digest(store_root: Path, pcaps: list[str], ring: bool = False) -> dict:
    """Replay each capture into a fresh store; what was kept, row by row, and the counters.
    ``ring``: its packets in ring blocks (ring_replay) rather than read from the file."""
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
        if ring:
            packets, errors = ring_replay(pipeline, pcap)
            pipeline.finish("capture-end")
        else:
            result = replay(pipeline, [pcap])
            packets, errors = result.packets, result.errors
        rows = []
        for row in sorted(store.db().all(), key=lambda r: r.id):
            fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in WALL_CLOCK}
            rows.append(json.loads(json.dumps(fields, default=str)))
        store.close()
        counters = dict(pipeline.counters)
        out["captures"][Path(pcap).name] = {"packets": packets, "errors": errors,
                                            "counters": counters, "recordings": rows}
        table = pipeline.media.table
        out["handled_in_c"] = out.get("handled_in_c", 0) + (table.handled if table is not None else 0)
        out["rtp_recorded"] = out.get("rtp_recorded", 0) + sum(  # of the codecs the kernel places (G.711)
            s["packets"] + s["duplicates"] for r in rows if r["audio"] == "exact" for s in r["streams"])
    return out


def digest_in_subprocess(pcaps: list[Path], pure: bool, tmp: Path, ring: bool = False) -> dict:
    env = {**os.environ, "RECORDERD_PURE_PYTHON": "1" if pure else "0", "PYTHONPATH": str(ROOT)}
    store_root = tmp / (("pure" if pure else "native") + ("-ring" if ring else ""))
    store_root.mkdir()
    done = subprocess.run([sys.executable, __file__, "ring-digest" if ring else "digest", str(store_root),
                           *map(str, pcaps)],
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


def compare(pcaps: list[Path], tmp: Path, ring: bool = False) -> float:
    """Both digests equal; the share of the recorded G.711 RTP that C handled whole (G.722, Opus
    and L16 are Python's: docs/hot-path.md). ``ring``: the packets in ring blocks (ring_replay)."""
    native_built()
    native = digest_in_subprocess(pcaps, pure=False, tmp=tmp, ring=ring)
    pure = digest_in_subprocess(pcaps, pure=True, tmp=tmp, ring=ring)
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
                    got.append(batch)  # kept past the file's close (C: a copy of its bytes then)
        except source.CaptureFileError as exc:
            return [list(b) for b in got], str(exc)
        return [list(b) for b in got], None

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


def walk(ring: bytes | bytearray, off: int, num: int, end: int = -1) -> tuple[list, int]:
    """The C ring walk, its batch (a Frames lying in ``ring``) as a list of its tuples."""
    from capture import live

    batch, bad = live.walk_block(ring, off, num, end)
    return list(batch), bad


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
    c = walk(block, first, len(frames))
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
        c_batch, c_bad = walk(ring, first, num)
        py_batch, py_bad = live._walk_block(ring, first, num)
        assert (c_batch, c_bad) == (py_batch, py_bad)
        assert c_bad == 1
        whole = len(frames) if ring is beyond or ring is block else len(frames) - 1
        assert [f for _, _, f in c_batch][:whole] == [f for _, _, f in frames][:whole]
        last = len(frames) - 1  # (a block of a next offset 0 claiming more packets: the last one again)
        assert all(len(f) == len(frames[min(k, last)][2]) for k, (_, _, f) in enumerate(c_batch))  # none cut short
    lie_first = bytearray(block)
    lie_first[first + 12 : first + 16] = (1 << 30).to_bytes(4, "little")
    assert walk(lie_first, first, 1) == live._walk_block(lie_first, first, 1) == ([], 1)
    assert walk(block, len(block) - 8, 1) == live._walk_block(block, len(block) - 8, 1) == ([], 1)


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
    assert walk(ring, first, 2, len(first_block)) == live._walk_block(ring, first, 2, len(first_block))
    off = first + int.from_bytes(ring[first : first + 4], "little")  # the block's last packet
    ring[off : off + 4] = (len(first_block) + first - off).to_bytes(4, "little")  # its next: the neighbour's first
    for walker in (walk, live._walk_block):
        batch, bad = walker(ring, first, 3, len(first_block))
        assert bad == 1 and [f for _, _, f in batch] == [f for _, _, f in frames[:2]]
        whole, bad = walker(ring, first, 3)  # bounded by the ring only: the neighbour's packet read
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


if __name__ == "__main__" and sys.argv[1:2] in (["digest"], ["ring-digest"]):
    root = Path(sys.argv[2])
    with tempfile.TemporaryDirectory():
        print(json.dumps(digest(root, sys.argv[3:], ring=sys.argv[1] == "ring-digest")))


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
        names = {n for n in names if not n.startswith("_") or n == "__len__"}  # (the sequence protocol's slots)
        if "__len__" in names:
            own.add("__len__")
        assert names == own, f"{name}: the stub lacks {sorted(own - names)}, names what C lacks {sorted(names - own)}"
    c_module = {k for k in vars(fp) if not k.startswith("_") and k not in declared}
    assert module == c_module, f"module: the stub lacks {sorted(c_module - module)}, names {sorted(module - c_module)}"


def test_calls_delivered_in_ring_blocks_are_kept_the_same_by_c_and_python(tmp_path: Path) -> None:
    """The in-place path: mangled and flooded calls packed into ring blocks; C walks each block into
    a Frames lying in the buffer and the kernel reads the frames there, Python walks it into a list
    of tuples; each batch is released and its buffer overwritten before the next block. Every byte
    kept and every counter the same, and most of the recorded RTP handled in C."""
    from frames import write_pcap

    pcaps = []
    for seed, flood in ((5, 0), (6, 300)):
        pcap = tmp_path / f"ring-{seed}.pcap"
        write_pcap(str(pcap), mangled_calls(seed, flood=flood))
        pcaps.append(pcap)
    pcaps += [FIXTURES / "dtmf.pcap", FIXTURES / "mirror-duplicates.pcap"]
    assert all(p.exists() for p in pcaps)
    assert compare(pcaps, tmp_path, ring=True) > 0.5


def block_ring(frames: list[tuple[int, int, bytes]], blocks: int = 2) -> tuple[object, int]:
    """An anonymous mmap laid out as a TPACKET_V3 ring of ``blocks`` blocks: the first retired to
    user space (TP_STATUS_USER) holding ``frames``, the others the kernel's. (the map, first offset)"""
    import mmap
    import struct

    from capture import live

    block, first = ring_block(frames)
    ring = mmap.mmap(-1, live.BLOCK_SIZE * blocks)
    ring[: len(block)] = block
    struct.pack_into("=IIIIIIQ", ring, 0, 3, 0, live.TP_STATUS_USER, len(frames), first, len(block), 1)
    return ring, first


def ring_of(ring: object, blocks: int = 2) -> object:
    """capture/live.py's _Ring over ``ring`` (an mmap laid out as by block_ring), without a socket:
    what drain() does is the same code over the same kind of memory."""
    from capture import live

    r = object.__new__(live._Ring)
    r.name, r.map, r.block_nr, r.block, r.malformed, r._held = "k2-test", ring, blocks, 0, 0, set()
    return r


def test_a_ring_batch_is_given_back_only_after_use_and_raises_once_released() -> None:
    """The block goes back to the kernel only when the caller asks for the next batch (or stops),
    and its batch is released first: any use of it afterwards raises ValueError (its length, an
    item, a slice, iteration, the kernel's run) and never reads the memory the kernel writes again;
    the ring's map closes (no BufferError). Was: the block went back before its batch was used (the
    batch then was a copy)."""
    native_built()
    import struct

    from capture import _fastpath as fp
    from capture import live

    frames = [(1_790_000_000, i * 1000, bytes([i]) * 200) for i in range(5)]
    ring, _ = block_ring(frames)
    it = ring_of(ring).drain()  # type: ignore[attr-defined]
    batch = next(it)
    assert type(batch) is fp.Frames and not batch.released
    assert struct.unpack_from("=I", ring, 8)[0] == live.TP_STATUS_USER  # still ours while it is used
    assert [f for _, _, f in batch] == [f for _, _, f in frames] and batch[-1][2] == frames[-1][2]
    assert batch[1:3] == [(1_790_000_000 + k * 1e-6, 1, bytes([k]) * 200) for k in (1, 2)]
    with pytest.raises(StopIteration):
        next(it)  # the next block is the kernel's: nothing more
    assert struct.unpack_from("=I", ring, 8)[0] == live.TP_STATUS_KERNEL
    assert batch.released
    for use in (len, lambda b: b[0], lambda b: b[0:2], list, lambda b: fp.FastPath().run(b, 0, 0.0, 1e9)):
        with pytest.raises(ValueError, match="released"):
            use(batch)
    ring.close()  # type: ignore[attr-defined]

    ring, _ = block_ring(frames)
    it = ring_of(ring).drain()  # type: ignore[attr-defined]
    batch = next(it)
    it.close()  # the caller stops (a service shutting down): the block is not left held
    assert batch.released and struct.unpack_from("=I", ring, 8)[0] == live.TP_STATUS_KERNEL
    ring.close()  # type: ignore[attr-defined]


def test_a_second_drain_while_a_batch_is_held_reads_the_next_block_and_none_twice() -> None:
    """A drain left open while its batch is held (a traceback or a cycle keeps it), then a second
    drain of the same ring: the second reads the blocks after the held one, never the held one
    again (a lap round to it stops there), and the held block goes back to the kernel once, when its
    drain closes, without moving the ring's position again. Was: the position moved only when the
    batch was given back, so the second drain read the held block a second time, and closing the
    first then skipped a block the kernel had filled meanwhile (the review's drain2 scenario)."""
    native_built()
    import mmap
    import struct

    from capture import live

    blocks = 3
    ring = mmap.mmap(-1, live.BLOCK_SIZE * blocks)
    for k in range(blocks):
        block, first = ring_block([(1_790_000_000, k, bytes([0x41 + k]) * 60)])
        ring[k * live.BLOCK_SIZE : k * live.BLOCK_SIZE + len(block)] = block
        struct.pack_into("=IIIIIIQ", ring, k * live.BLOCK_SIZE, 3, 0, live.TP_STATUS_USER, 1, first, len(block), k)
    r = ring_of(ring, blocks)
    first_drain = r.drain()  # type: ignore[attr-defined]
    held = next(first_drain)  # block 0, kept
    second = [b[0][2][:1] for b in r.drain()]  # type: ignore[attr-defined]
    assert held[0][2][:1] == b"A"
    assert second == [b"B", b"C"]  # never block 0 again: the lap round to it stops
    status = [struct.unpack_from("=I", ring, k * live.BLOCK_SIZE + 8)[0] for k in range(blocks)]
    assert status == [live.TP_STATUS_USER, live.TP_STATUS_KERNEL, live.TP_STATUS_KERNEL]  # block 0 still ours
    first_drain.close()
    assert held.released and struct.unpack_from("=I", ring, 8)[0] == live.TP_STATUS_KERNEL
    assert r.block == 0  # (3 blocks read: one lap) not moved again by the late close
    ring.close()


def test_a_capture_file_whose_held_batch_cannot_copy_still_closes_its_descriptor() -> None:
    """close() copies the batches still held out of the file's map (detach); when a copy fails (no
    memory for a large batch), the file's descriptor is closed all the same and the failure raised
    (the batch that could not copy keeps the map alive). Was: the descriptor leaked."""
    native_built()
    import capture.source as source

    class Stuck:  # a held batch whose copy fails
        def detach(self) -> None:
            raise MemoryError("no room for the copy")

    f = source.CaptureFile(FIXTURES / "mirror-duplicates.pcap", batch_size=50)
    fd = f._fd
    held = next(iter(f.batches()))
    stuck = Stuck()
    f._lent.add(stuck)
    with pytest.raises(MemoryError):
        f.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    assert len(held) == 50 and held[0][2]  # the held batch copied before the stuck one, or still mapped


def test_a_capture_file_closes_while_its_batches_are_held_and_they_keep_their_bytes(tmp_path: Path) -> None:
    """Batches of a pcap file lie in its mmap; the file closes (no BufferError) with batches still
    held after they were fed to the pipeline, and those batches then hold a copy of their bytes:
    the same packets as the pure reader's."""
    native_built()
    import capture.source as source
    from capture.fast import fastpath
    from capture.pipeline import CapturePipeline
    from recorderd.config import load_dids
    from storage.spool import SpoolSink
    from storage.store import Store

    assert fastpath is not None
    pcap = FIXTURES / "mirror-duplicates.pcap"
    store = Store(str(tmp_path / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                  key_file=str(tmp_path / "key"))
    store.init()
    store.open()
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store))
    with source.CaptureFile(pcap, batch_size=50) as f:
        kept = list(f.batches())
        assert kept and all(type(b) is fastpath.Frames for b in kept)
        for batch in kept:
            pipeline.feed(batch)
    assert f._map is None  # closed
    assert [p for b in kept for p in b] == read_pure(pcap)
    pipeline.finish("capture-end")
    assert store.reading.recordings()  # (the call was recorded from those batches)
    store.close()


def read_pure(pcap: Path) -> list:
    """The pure Python reader's packets of ``pcap``."""
    import capture.source as source

    saved = source.fastpath
    source.fastpath = None
    try:
        with source.CaptureFile(pcap) as f:
            return [p for b in f.batches() for p in b]
    finally:
        source.fastpath = saved


def armed_stream() -> tuple[object, object, object]:
    """A FastPath routing 192.0.2.1:20000 to an armed StreamCore (channel 1, SSRC 7, PCMU) whose
    source 203.0.113.1:4000 is learned. (table, stream, lanes)"""
    from capture import _fastpath as fp

    table, lanes = fp.FastPath(), fp.Lanes()
    lanes.limit = 1 << 20
    stream = fp.StreamCore()
    stream.channel, stream.ssrc, stream.source, stream.learned = 1, 7, (bytes([203, 0, 113, 1]), 4000), True
    stream.arm(0, 0.0, 8000.0, 24000.0, lanes)
    table.set(bytes([192, 0, 2, 1]), 20000, stream)
    return table, stream, lanes


def rtp_frame(seq: int, payload: bytes) -> bytes:
    import struct

    rtp = struct.pack("!BBHII", 0x80, 0, seq, (seq - 1) * len(payload), 7) + payload  # seq 1: sample 0
    udp = struct.pack("!HHHH", 4000, 20000, 8 + len(rtp), 0) + rtp
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([203, 0, 113, 1]),
                      bytes([192, 0, 2, 1]))
    return bytes(12) + b"\x08\x00" + iph + udp


def test_the_kernel_keeps_no_reference_to_a_frame() -> None:
    """The mirror ring remembers a payload by a copy of its own: a frame the kernel handled is not
    held after its batch (was: a reference to every one of the last eight frames of a direction,
    which kept them alive; a frame lying in a ring block cannot be held at all)."""
    native_built()
    import sys as _sys

    table, stream, _lanes = armed_stream()
    frame = rtp_frame(1, bytes(range(160)))
    before = _sys.getrefcount(frame)
    i, _now, _full = table.run([(0.001, 1, frame)], 0, 0.0, 1e9)  # type: ignore[attr-defined]
    assert i == 1 and table.handled == 1  # type: ignore[attr-defined]
    assert _sys.getrefcount(frame) == before


@pytest.mark.parametrize("size", [160, 256, 257, 1400])
def test_a_mirror_copy_is_known_after_the_first_ones_memory_was_written_over(size: int) -> None:
    """A packet in one ring block, its second mirror session's copy in the next: the first block
    released and written over (the kernel's again) before the copy comes. The copy is still known
    by its payload (kept in the slot, in place up to 256 bytes, beyond that in the slot's own
    buffer), counted and not placed again; a packet of the same header whose payload differs is not
    a copy."""
    native_built()
    from capture import live

    table, stream, lanes = armed_stream()
    payload = bytes((k * 7 + size) & 0xFF for k in range(size))
    buf = bytearray()
    for ts_ns, data, copies in ((1_000_000, payload, 0), (3_000_000, payload, 1), (5_000_000, payload[:-1] + b"!", 1)):
        block, first = ring_block([(0, ts_ns, rtp_frame(1, data))])
        buf[:] = block
        batch, bad = live.walk_block(buf, first, 1, len(buf))
        i, _now, _full = table.run(batch, 0, 0.0, 1e9)  # type: ignore[attr-defined]
        batch.release()
        buf[:] = b"\xee" * len(buf)
        assert (bad, stream.mirror_duplicates) == (0, copies)  # type: ignore[attr-defined]
        if i == 0:  # (a payload that differs: Python's, the kernel changed nothing)
            assert data != payload
    assert bytes(lanes.bufs[0][:size]) == payload  # type: ignore[attr-defined]
