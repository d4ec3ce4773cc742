"""The C kernel and the pure Python pipeline keep the same bytes for any frames (issue 15).

Hypothesis makes frame sequences from pcap_fixtures' builders: a designated G.711 call's SIP and
RTP, each RTP frame kept, dropped, sent again (at once: a second mirror session's copy; or later:
the sender's duplicate), held back behind later ones (reordered), damaged (cut short, a header or
payload byte changed), sent from another address or port, or given another payload type (DTMF,
comfort noise, the other G.711, an unknown one). The same sequence goes to two worker processes,
one with the C module (``capture/_fastpath.c``) and one with ``RECORDERD_PURE_PYTHON=1``, each
replaying it through the real pipeline into a real store (every other batch of 64 packed into a
ring block and walked as capture/live.py walks the SPAN port's ring: in C a Frames the kernel reads
in place, released and written over once fed; in Python a list); every kept byte (the WAV and the evidence
pcap as the store decrypts them), every recording's row (its streams' figures) and every counter
must be the same.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "pcap_fixtures"))
sys.path.insert(0, str(ROOT))

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install hypothesis)")
from frames import ip_checksum  # noqa: E402
from generator import SipCall  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WALL_CLOCK = ("created_at", "wrapped_key", "erasing_at", "retain_until", "id", "wav_path", "pcap_path")
T0 = 1_790_000_000.0
ACTIONS = ("keep", "drop", "mirror", "again", "hold", "cut", "header", "payload", "source", "port", "pt")
WEIGHTED = ("keep",) * 12 + ACTIONS[1:]  # mostly the steady case, so the kernel has runs to take


def digest(store: Any, pipeline: Any, call_ids: set[str]) -> dict:
    """What the store kept of these calls (rows without wall-clock fields, WAV and pcap bytes' hashes)
    and the pipeline's counters."""
    kept = {}
    for row in store.reading.recordings():
        if row.call_id not in call_ids:
            continue
        fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in WALL_CLOCK}
        wav = b"".join(store.reading.plaintext(row))
        pcap = b"".join(store.reading.plaintext(row, pcap=True)) if row.pcap_path else b""
        fields["wav"] = (len(wav), hashlib.sha256(wav).hexdigest())
        fields["pcap"] = (len(pcap), hashlib.sha256(pcap).hexdigest())
        kept[f"{row.call_id}/{row.part}"] = json.loads(json.dumps(fields, default=str))
    return {"recordings": kept, "counters": dict(pipeline.counters)}


def worker() -> None:
    """Replay each (call ids, packets) read from stdin into one store; the digest to stdout."""
    import mmap
    from zoneinfo import ZoneInfo

    from capture import live
    from capture.fast import MODE
    from capture.pipeline import CapturePipeline
    from capture.source import release
    from recorderd.config import load_dids
    from storage.spool import SpoolSink
    from storage.store import Store

    dids = load_dids(str(ROOT / "config" / "dids.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"{tmp}/store", tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=f"{tmp}/key")
        store.init()
        store.open()
        inp, out = sys.stdin.buffer, sys.stdout.buffer
        while True:
            head = inp.read(4)
            if len(head) < 4:
                break
            call_ids, packets = pickle.loads(inp.read(struct.unpack("<I", head)[0]))
            pipeline = CapturePipeline(dids, SpoolSink(store))
            ring = mmap.mmap(-1, live.BLOCK_SIZE)
            for k in range(0, len(packets), 64):
                if k % 128 == 0:
                    pipeline.feed([(t, 1, frame) for t, frame in packets[k : k + 64]])
                    continue
                part = [(*divmod(round(t * 1e9), 10**9), frame) for t, frame in packets[k : k + 64]]
                block, first = ring_block(part)
                ring[: len(block)] = block
                batch, _bad = live.walk_block(ring, first, len(part), len(block))
                pipeline.feed(batch)
                release(batch)
                ring[: len(block)] = b"\xee" * len(block)  # the kernel's again: written over
            ring.close()  # (a batch still holding the ring: BufferError)
            pipeline.finish("capture-end")
            result = digest(store, pipeline, call_ids)
            result["mode"] = MODE
            result["handled"] = pipeline.media.table.handled if pipeline.media.table is not None else 0
            blob = pickle.dumps(result)
            out.write(struct.pack("<I", len(blob)) + blob)
            out.flush()
        store.close()


def ring_block(frames: list[tuple[int, int, bytes]]) -> tuple[bytes, int]:
    """A TPACKET_V3 block as the kernel fills it (tests/test_fastpath.py's ring_block)."""
    block = bytearray(48)
    first = len(block)
    for n, (sec, nsec, frame) in enumerate(frames):
        mac = 82
        size = (mac + len(frame) + 15) // 16 * 16
        nxt = 0 if n == len(frames) - 1 else size
        block += struct.pack("=IIIIIIHH", nxt, sec, nsec, len(frame), len(frame), 1, mac, mac + 14)
        block += bytes(mac - 28) + frame + bytes(size - mac - len(frame))
    return bytes(block), first


class Worker:
    def __init__(self, pure: bool) -> None:
        env = {**os.environ, "RECORDERD_PURE_PYTHON": "1" if pure else "0", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, __file__, "worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def replay(self, call_ids: set[str], packets: list[tuple[float, bytes]]) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        blob = pickle.dumps((call_ids, packets))
        self.proc.stdin.write(struct.pack("<I", len(blob)) + blob)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(4)
        assert len(head) == 4, "the worker died"
        return pickle.loads(self.proc.stdout.read(struct.unpack("<I", head)[0]))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Worker, Worker]]:
    from capture.fast import MODE

    if MODE != "native":
        pytest.skip("capture/_fastpath.c is not built (make venv): nothing to compare the pure pipeline with")
    native, pure = Worker(pure=False), Worker(pure=True)
    yield native, pure
    native.close()
    pure.close()


def with_checksum(frame: bytearray) -> bytes:
    frame[24:26] = b"\0\0"
    frame[24:26] = struct.pack("!H", ip_checksum(bytes(frame[14:34])))
    return bytes(frame)


def mangle(t: float, frame: bytes, action: str, k: int) -> list[tuple[float, bytes]]:
    """One RTP frame after ``action`` (``k``: the action's own number, 0-255)."""
    if action == "keep":
        return [(t, frame)]
    if action == "drop":
        return []
    if action == "mirror":  # a second mirror session's copy, microseconds to milliseconds later
        return [(t, frame), (t + (k % 9 + 1) * 1e-3 * (0.002 if k & 1 else 1), frame)]
    if action == "again":  # the sender's (or the network's) duplicate, well after the first
        return [(t, frame), (t + 0.02 + k * 0.004, frame)]
    if action == "hold":  # arrives late, behind later packets (up to ~1 s: past the reorder margin)
        return [(t + 0.021 * (k % 48 + 1), frame)]
    if action == "cut":  # cut short anywhere (the header too)
        return [(t, frame[: 14 + k % (len(frame) - 14)])]
    f = bytearray(frame)
    if action == "header":  # a byte of the IP, UDP or RTP header changed
        f[14 + k % 40] ^= k % 255 + 1
        return [(t, bytes(f))]
    if action == "payload":
        f[54 + k % (len(f) - 54)] ^= 0xFF
        return [(t, bytes(f))]
    if action == "source":  # another address sends it (a flood, a spoofed SSRC)
        f[29] ^= k % 255 + 1
        return [(t, with_checksum(f))]
    if action == "port":
        f[35] ^= k % 255 + 1
        return [(t, bytes(f))]
    assert action == "pt"  # DTMF, comfort noise, the other G.711, an unknown one, RTCP's range
    f[43] = (f[43] & 0x80) | (101, 13, 8, 0, 99, 72)[k % 6]
    return [(t, bytes(f))]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SipCall, list[tuple[str, int]]]:
    codec = draw(st.sampled_from(["PCMU", "PCMA"]))
    seed = draw(st.integers(1, 10_000))
    call = SipCall("", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", T0, codec=codec,
                   talk=draw(st.sampled_from([1.5, 3.0])), seed=seed)
    n = len(call.rtp_frames())
    plan = draw(st.lists(st.tuples(st.sampled_from(WEIGHTED), st.integers(0, 255)), min_size=n, max_size=n))
    return call, plan


COUNT = iter(range(1, 1 << 30))


def frames_of(call: SipCall, plan: list[tuple[str, int]]) -> tuple[set[str], list[tuple[float, bytes]]]:
    call = dataclasses.replace(call, call_id=f"kernel-{os.getpid()}-{next(COUNT)}@203.0.113.5")
    rtp = sorted(call.rtp_frames(), key=lambda p: p[0])
    packets = list(call.signalling())
    for (t, frame), (action, k) in zip(rtp, plan, strict=False):
        packets += mangle(t, frame, action, k)
    packets.sort(key=lambda p: p[0])  # (stable: a copy at the same time stays after its first)
    return {call.call_id}, packets


def compare(workers: tuple[Worker, Worker], call_ids: set[str], packets: list[tuple[float, bytes]]) -> dict:
    native, pure = (w.replay(call_ids, packets) for w in workers)
    assert (native.pop("mode"), pure.pop("mode")) == ("native", "python")
    assert pure.pop("handled") == 0
    handled = native.pop("handled")
    assert native == pure
    native["handled"] = handled
    return native


def test_the_steady_case_is_the_kernel_s_and_keeps_the_same_bytes(workers: tuple[Worker, Worker]) -> None:
    """Without a mangled frame (and with every kind once): the comparison is about C's work."""
    call = SipCall("", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", T0, talk=3.0, seed=5)
    n = len(call.rtp_frames())
    clean = compare(workers, *frames_of(call, [("keep", 0)] * n))
    (rec,) = clean["recordings"].values()
    assert clean["handled"] > 0.9 * n and rec["wav"][0] > 44 and rec["pcap"][0] > 0
    plan = [("keep", 0)] * n
    for i, action in enumerate(ACTIONS[1:]):
        plan[20 + 17 * i] = (action, 3 * i + 1)
    mixed = compare(workers, *frames_of(call, plan))
    assert mixed["handled"] > 0.6 * n


@settings(max_examples=int(os.environ.get("KERNEL_EXAMPLES", "40")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_any_frames_keep_the_same_bytes_and_counters_in_c_and_python(
    workers: tuple[Worker, Worker], scenario: tuple[SipCall, list[tuple[str, int]]]
) -> None:
    compare(workers, *frames_of(*scenario))


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker()
