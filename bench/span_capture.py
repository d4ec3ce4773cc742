"""Synthetic SPAN captures for the benchmark, made with the project's generator.

A :class:`SpanPlan` says which calls a capture holds (how many, how long, how far apart, which
share dials a designated number); :func:`span_capture` writes it once and caches it under
``bench/results/captures/`` keyed by the plan and by the generator's source, so reruns are quick.

Every call is a :class:`generator.SipCall`: its signalling comes from ``SipCall.signalling()`` and
its RTP frames are built here lazily, with the generator's own ``udp_frame``/``rtp_packet`` layout
and random stream (same SSRCs, sequence and timestamp bases, payload bytes) — byte for byte what
``SipCall.rtp_frames()`` returns (:func:`check_against_generator`, run before each capture is
made), without holding 1.2 M frames in memory or sorting them: the calls' streams are merged in time
order as they are written. Should the generator change so that the check fails, the capture is
made from ``SipCall.rtp_frames()`` itself (slower), and the capture's sidecar says so.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "pcap_fixtures")]

import generator  # noqa: E402
from generator import PAYLOAD_TYPE, SAMPLE_RATE, SipCall, udp_frame  # noqa: E402

from recorderd.config import load_dids  # noqa: E402

CACHE = ROOT / "bench" / "results" / "captures"
DIDS_FILE = ROOT / "config" / "dids.yaml"
T0 = 1_790_000_000.0  # 2026-09-21 23:13 JST, like the tests' calls
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
_record = struct.Struct("<IIII").pack
_rtp_header = struct.Struct("!BBHII").pack
PORTS = 26_000  # distinct media ports per side before the addresses change


@dataclass(frozen=True)
class SpanPlan:
    """The calls of one synthetic capture. Call ``i`` starts at ``T0 + i * spacing``."""

    calls: int
    talk: float  # seconds of audio each way
    spacing: float  # seconds between call starts
    designated_share: float = 0.5  # 0.5: every other call dials a designated number
    codec: str = "PCMU"

    @classmethod
    def concurrent(cls, calls: int, talk: float, stagger: float = 2.0, designated_share: float = 0.5) -> SpanPlan:
        """All calls overlapping: starts spread evenly over ``stagger`` seconds."""
        return cls(calls, talk, stagger / calls, designated_share)

    @property
    def name(self) -> str:
        share = f"{self.designated_share:g}".replace(".", "p")
        return f"span-c{self.calls}-t{self.talk:g}-s{self.spacing:.6g}-d{share}-{self.codec}"

    def is_designated(self, i: int) -> bool:
        return int((i + 1) * self.designated_share) > int(i * self.designated_share)

    def sip_calls(self) -> Iterator[SipCall]:
        dids = [d.number.replace("-", "") for d in load_dids(str(DIDS_FILE)).dids if d.number[:1] == "0"]
        for i in range(self.calls):
            number = dids[i % len(dids)] if self.is_designated(i) else f"0{443330000 + i}"
            uri = f"sip:{number}@192.0.2.10"
            port, block = 10_000 + 2 * (i % PORTS), i // PORTS
            yield SipCall(
                call_id=f"bench-{i}@203.0.113.5", called=uri, to=uri, caller=f"090{10_000_000 + i}",
                start=T0 + i * self.spacing, codec=self.codec, talk=self.talk,
                caller_media=(f"203.0.113.{20 + block}", port), pbx_media=(f"192.0.2.{20 + block}", port),
                seed=i + 1,
            )

    # figures derived from the plan ------------------------------------------------------------

    def call_span(self) -> float:
        """Seconds from a call's INVITE to its last packet (the 200 OK to BYE)."""
        probe = SipCall("x", "sip:x@x", "sip:x@x", "x", 0.0, talk=self.talk)
        return probe.end_time + 0.01

    def peak_window(self) -> tuple[float, float]:
        """Packet times between which every call of a concurrent plan has media flowing."""
        probe = SipCall("x", "sip:x@x", "sip:x@x", "x", 0.0, talk=self.talk)
        last_media = T0 + (self.calls - 1) * self.spacing + probe.media_start
        first_end = T0 + probe.end_time
        return last_media, first_end

    def packets(self) -> int:
        per_call = 2 * round(self.talk / 0.02) + 7  # RTP both ways + INVITE, 100, 180, 200, ACK, BYE, 200
        return self.calls * per_call


def rtp_frames(call: SipCall) -> Iterator[tuple[int, bytes]]:
    """``(microseconds, frame)`` of both directions in time order; the same bytes as
    ``call.rtp_frames()`` (same random draws in the same order as ``SipCall.media``)."""
    rng = random.Random(call.seed)
    n = round(call.talk / call.ptime)
    spp = round(call.ptime * SAMPLE_RATE)
    base_up, base_down = rng.randrange(1 << 32), rng.randrange(1 << 32)
    seq_up, seq_down = rng.randrange(1 << 16), rng.randrange(1 << 16)
    size = 12 + spp  # UDP/IP headers carry lengths only (ident 0): the same prefix for every packet
    up_head = udp_frame(*call.caller_media, *call.pbx_media, bytes(size), vlan=call.vlan)[:-size]
    down_head = udp_frame(*call.pbx_media, *call.caller_media, bytes(size), vlan=call.vlan)[:-size]
    pt = PAYLOAD_TYPE[call.codec]
    ssrc_up, ssrc_down = 0x1000 + call.seed, 0x2000 + call.seed
    randbytes = rng.randbytes
    for i in range(n):
        t = call.media_start + i * call.ptime
        up = _rtp_header(0x80, pt, (seq_up + i) & 0xFFFF, (base_up + i * spp) & 0xFFFFFFFF, ssrc_up) + randbytes(spp)
        down = _rtp_header(0x80, pt, (seq_down + i) & 0xFFFF, (base_down + i * spp) & 0xFFFFFFFF, ssrc_down) + randbytes(spp)
        yield round(t * 1_000_000), up_head + up
        yield round((t + 0.003) * 1_000_000), down_head + down


def generator_rtp_frames(call: SipCall) -> list[tuple[int, bytes]]:
    """The generator's own frames (slower, and held in memory): the fallback."""
    return sorted((round(ts * 1_000_000), f) for ts, f in call.rtp_frames())


def frames(plan: SpanPlan, fast: bool = True) -> Iterator[tuple[int, bytes]]:
    """Every frame of the plan, merged in time order."""
    calls = list(plan.sip_calls())
    signalling = sorted((round(ts * 1_000_000), f) for c in calls for ts, f in c.signalling())
    build = rtp_frames if fast else generator_rtp_frames
    return heapq.merge(signalling, *(build(c) for c in calls))


def write(plan: SpanPlan, path: Path, fast: bool = True) -> int:
    count = 0
    with open(path, "wb", buffering=1 << 22) as f:
        f.write(PCAP_HEADER)
        write_ = f.write
        for usec, frame in frames(plan, fast):
            n = len(frame)
            write_(_record(usec // 1_000_000, usec % 1_000_000, n, n))
            write_(frame)
            count += 1
    return count


def source_digest() -> str:
    """Changes when the generator or this module changes, so a stale cached capture is remade."""
    h = hashlib.sha256()
    fixtures = Path(generator.__file__).parent
    used = sorted(Path(m.__file__) for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and Path(m.__file__).parent == fixtures)
    for path in (*used, Path(__file__), DIDS_FILE):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def span_capture(plan: SpanPlan, cache: Path = CACHE) -> tuple[Path, dict]:
    """The capture of ``plan`` (made now, or taken from the cache) and its sidecar figures."""
    cache.mkdir(parents=True, exist_ok=True)
    digest = source_digest()
    for old in cache.iterdir():  # captures of an older generator, and runs that died half-way
        if old.name.endswith(".part") or (old.suffix in (".pcap", ".json") and not old.stem.endswith(f"-{digest}")):
            old.unlink(missing_ok=True)
    path = cache / f"{plan.name}-{digest}.pcap"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        meta["cached"] = True
        return path, meta
    import time

    try:
        check_against_generator(plan)
        how = ("a fast builder with the generator's layout and random stream "
               "(checked byte-equal to SipCall.rtp_frames() on the first calls)")
        fast = True
    except RuntimeError as exc:  # the generator changed in a way this module does not follow yet
        how = f"SipCall.rtp_frames() itself, slower: {exc}"
        fast = False
    started = time.perf_counter()
    staging = path.with_name(path.name + ".part")
    count = write(plan, staging, fast)
    seconds = time.perf_counter() - started
    os.replace(staging, path)
    meta = {
        "plan": asdict(plan),
        "packets": count,
        "bytes": path.stat().st_size,
        "designated_calls": sum(plan.is_designated(i) for i in range(plan.calls)),
        "rtp_frames": how,
        "generated_in_s": round(seconds, 2),
    }
    sidecar.write_text(json.dumps(meta, indent=1))
    meta["cached"] = False
    return path, meta


def check_against_generator(plan: SpanPlan, calls: int = 2) -> None:
    """The fast frames are the generator's frames, byte for byte (first ``calls`` calls)."""
    for call in list(plan.sip_calls())[:calls]:
        slow = sorted((round(ts * 1_000_000), f) for ts, f in call.rtp_frames())
        fast = sorted(rtp_frames(call))
        if slow != fast:
            raise RuntimeError(f"bench frames of {call.call_id} differ from SipCall.rtp_frames()")


# -- the same capture as a remote mirror delivers it (issue 14) -----------------------------------------

ERSPAN_SOURCE, ERSPAN_PROBE = "198.18.0.1", "198.18.0.9"  # the switch's ERSPAN session -> the recorder
_gre_seq_erspan = struct.Struct("!HHIHHI").pack  # GRE flags (S), 0x88BE, sequence; ERSPAN II header


def _erspan_prefix(length: int) -> bytes:
    """Ethernet + IPv4 (DF, checksum filled in) for an outer packet carrying a frame of ``length``
    bytes in GRE with a sequence number (8 bytes) and an ERSPAN II header (8 bytes)."""
    from frames import ip_checksum

    total = 20 + 8 + 8 + length
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 47, 0, socket.inet_aton(ERSPAN_SOURCE),
                     socket.inet_aton(ERSPAN_PROBE))
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x09\x02\x00\x00\x00\x00\x08\x08\x00" + ip


def erspan_copy(path: Path, meta: dict) -> tuple[Path, dict]:
    """``path`` (a capture made by :func:`span_capture`) with every frame wrapped as a switch's
    ERSPAN type II session sends it: outer Ethernet/IPv4 from 198.18.0.1 to the recorder, GRE with
    the sequence bit (0x88BE), the 8-byte ERSPAN header (version 1, session 1, the index counting
    packets), then the frame as it was. Same times. Cached beside the plain capture (its name plus
    ``-erspan2``, so a new generator's digest removes both)."""
    stem, digest = path.stem.rsplit("-", 1)
    out = path.with_name(f"{stem}-erspan2-{digest}.pcap")
    sidecar = out.with_suffix(".json")
    if out.exists() and sidecar.exists():
        wrapped = json.loads(sidecar.read_text())
        wrapped["cached"] = True
        return out, wrapped
    import mmap
    import time

    started = time.perf_counter()
    prefixes: dict[int, bytes] = {}
    staging = out.with_name(out.name + ".part")
    count = 0
    with open(path, "rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as buf, \
            open(staging, "wb", buffering=1 << 22) as dst:
        dst.write(PCAP_HEADER)
        write_ = dst.write
        off, end = 24, len(buf)
        unpack = struct.Struct("<IIII").unpack_from
        while off + 16 <= end:
            sec, usec, incl, _orig = unpack(buf, off)
            prefix = prefixes.get(incl)
            if prefix is None:
                prefix = prefixes[incl] = _erspan_prefix(incl)
            n = incl + 14 + 20 + 16
            write_(_record(sec, usec, n, n))
            write_(prefix)
            write_(_gre_seq_erspan(0x1000, 0x88BE, count & 0xFFFFFFFF, 0x1000, 1, count & 0xFFFFF))
            write_(buf[off + 16 : off + 16 + incl])
            off += 16 + incl
            count += 1
    os.replace(staging, out)
    wrapped = {**{k: v for k, v in meta.items() if k != "cached"}, "packets": count, "bytes": out.stat().st_size,
               "wrapped_from": path.name, "wrapped_in_s": round(time.perf_counter() - started, 2)}
    sidecar.write_text(json.dumps(wrapped, indent=1))
    wrapped["cached"] = False
    return out, wrapped
