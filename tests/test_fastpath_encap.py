"""Remote SPAN in the C fast path (capture/_fastpath.c) against the Python code it stands in for.

C opens the common remote mirrors itself (ERSPAN II and III over plain GRE, a plain gretap, VXLAN;
outer Ethernet/IPv4 without options from a collector) and runs its RTP steady case on the inner
frame; anything else (TZSP, IPv6 outside, a VLAN tag inside, nesting, optional GRE fields, a
malformed or odd header, a source that is not a collector, an encapsulation not enabled) stops the
C loop before anything changes and capture/encap.py (Python) handles the packet. Every capture here
is recorded twice, with the C module and without it (``RECORDERD_PURE_PYTHON=1``, each in a process
of its own), and what is kept must be the same: each recording's index row (with the SHA-256 of its
WAV and of its evidence pcap), the pipeline's counters (the outer packets per encapsulation among
them), the reader's packet count. And what C keeps of an encapsulated call is what it keeps of the
same call unencapsulated.

Run as a script (``python tests/test_fastpath_encap.py digest STORE_DIR SPEC_JSON``) it prints the
digest of replaying each capture of the spec (path, encapsulation mask, collectors) into a store
of its own.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "pcap_fixtures"))

import pytest  # noqa: E402

WALL_CLOCK = ("created_at", "wrapped_key", "erasing_at", "retain_until")  # differ between any two runs
ALL = 15  # capture/encap.py: ERSPAN | GRE_TEB | VXLAN | TZSP
ERSPAN, GRE_TEB, VXLAN, TZSP = 1, 2, 4, 8
COLLECTOR, STRANGER = "198.18.0.1", "198.18.0.2"
PROBE = "198.18.0.9"  # the recorder's address: where the mirrors send


# -- the digest (in a process of its own, with or without the C module) -------------------------------


def digest(store_root: Path, spec: list[dict]) -> dict:
    from capture.encap import EncapConfig
    from capture.fast import MODE
    from capture.pipeline import CapturePipeline
    from recorderd.config import load_dids
    from recorderd.service import replay
    from storage.spool import SpoolSink
    from storage.store import Store

    dids = load_dids(str(ROOT / "config" / "dids.yaml"))
    out: dict = {"mode": MODE, "captures": {}, "handled_in_c": 0, "rtp_recorded": 0}
    for n, item in enumerate(spec):
        store = Store(str(store_root / str(n)), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                      key_file=str(store_root / f"{n}.key"))
        store.init()
        store.open()
        encap = EncapConfig(item["mask"], frozenset(socket.inet_aton(a) for a in item["collectors"]))
        pipeline = CapturePipeline(dids, SpoolSink(store), encap=encap)
        result = replay(pipeline, [item["pcap"]])
        rows = []
        for row in sorted(store.db().all(), key=lambda r: r.id):
            fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in WALL_CLOCK}
            rows.append(json.loads(json.dumps(fields, default=str)))
        store.close()
        out["captures"][item["name"]] = {"packets": result.packets, "errors": result.errors,
                                         "counters": dict(pipeline.counters), "recordings": rows}
        table = pipeline.media.table
        handled = table.handled if table is not None else 0
        recorded = sum(s["packets"] + s["duplicates"] for r in rows for s in r["streams"])
        out["captures"][item["name"]]["c_share"] = handled / max(1, recorded)
        out["handled_in_c"] += handled
        out["rtp_recorded"] += recorded
    return out


def run_digest(spec: list[dict], pure: bool, tmp: Path) -> dict:
    env = {**os.environ, "RECORDERD_PURE_PYTHON": "1" if pure else "0", "PYTHONPATH": str(ROOT)}
    store_root = Path(tempfile.mkdtemp(prefix="pure-" if pure else "native-", dir=tmp))
    done = subprocess.run([sys.executable, __file__, "digest", str(store_root), json.dumps(spec)],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def compare(spec: list[dict], tmp: Path) -> dict:
    """Both digests equal, capture by capture; the native one."""
    from capture.fast import MODE

    assert MODE == "native", "capture/_fastpath.c is not built: `make venv` builds it (needs gcc and Python headers)"
    native = run_digest(spec, pure=False, tmp=tmp)
    pure = run_digest(spec, pure=True, tmp=tmp)
    assert (native["mode"], pure["mode"]) == ("native", "python")
    assert native["captures"].keys() == pure["captures"].keys()
    for name in native["captures"]:
        a, b = dict(native["captures"][name]), dict(pure["captures"][name])
        a.pop("c_share"), b.pop("c_share")
        assert a == b, name
    assert pure["handled_in_c"] == 0
    return native


# -- the remote mirrors' wrappers (the byte layouts of RFC 2784/2890, draft-foschiano-erspan, RFC 7348) --


def ipv4(src: str, dst: str, proto: int, body: bytes, *, ihl: int = 5, flags_frag: int = 0x4000,
         total: int | None = None) -> bytes:
    from frames import ip_checksum

    options = bytes(4 * (ihl - 5))
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total if total is not None else 4 * ihl + len(body), 0,
                       flags_frag, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + options
    return head[:10] + struct.pack("!H", ip_checksum(head)) + head[12:] + body


def outer_frame(packet: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02\x00\x00\x00\x00\x09\x02\x00\x00\x00\x00\x08" + struct.pack("!H", ethertype) + packet


def gre(proto: int, body: bytes, *, flags: int = 0, seq: int = 0) -> bytes:
    """A GRE header with the optional fields its flags ask for (checksum, key, sequence)."""
    head = struct.pack("!HH", flags, proto)
    if flags & 0x8000:
        head += b"\x00\x00\x00\x00"
    if flags & 0x2000:
        head += struct.pack("!I", 0x1234)
    if flags & 0x1000:
        head += struct.pack("!I", seq & 0xFFFFFFFF)
    return head + body


def erspan2_header(session: int = 7, version: int = 1, index: int = 0) -> bytes:
    return struct.pack("!HHI", version << 12 | 0, session & 0x3FF, index & 0xFFFFF)


def erspan3_header(session: int = 7, version: int = 2, frame_type: int = 0, sub: bool = False) -> bytes:
    head = struct.pack("!HHIHH", version << 12, session & 0x3FF, 0x01020304, 0, (frame_type & 0x1F) << 10 | int(sub))
    return head + (struct.pack("!II", 0x05060708, 0x090A0B0C) if sub else b"")


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, length if length is not None else 8 + len(payload), 0) + payload


def vxlan_header(flags: int = 0x08, vni: int = 5001, reserved: int = 0) -> bytes:
    return struct.pack("!B3sI", flags, reserved.to_bytes(3, "big"), (vni << 8) | 0)


def tzsp_header() -> bytes:
    return bytes([1, 0, 0, 1, 1])  # version 1, received, Ethernet, END


def _ipv6_outer(body: bytes, proto: int) -> bytes:
    src = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    dst = socket.inet_pton(socket.AF_INET6, "2001:db8::9")
    return outer_frame(struct.pack("!IHBB16s16s", 0x60000000, len(body), proto, 64, src, dst) + body, 0x86DD)


def add_vlan(frame: bytes) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, 42) + frame[12:]


def wrap(kind: str, frame: bytes, n: int, src: str = COLLECTOR) -> bytes:
    """``frame`` as the remote mirror of ``kind`` delivers it (``n``: its sequence number)."""
    g = lambda proto, body, **kw: outer_frame(ipv4(src, PROBE, 47, gre(proto, body, **kw)))  # noqa: E731
    v = lambda payload, **kw: outer_frame(ipv4(src, PROBE, 17, udp(50000 + n % 1000, 4789, payload, **kw)))  # noqa: E731
    cases = {
        # opened in C
        "erspan2": lambda: g(0x88BE, erspan2_header(index=n) + frame),
        "erspan2-seq": lambda: g(0x88BE, erspan2_header() + frame, flags=0x1000, seq=n),
        "erspan3": lambda: g(0x22EB, erspan3_header() + frame),
        "erspan3-seq": lambda: g(0x22EB, erspan3_header() + frame, flags=0x1000, seq=n),
        "gretap": lambda: g(0x6558, frame),
        "vxlan": lambda: v(vxlan_header() + frame),
        # opened in Python (C stops at them)
        "erspan1": lambda: g(0x88BE, frame),  # type I: no ERSPAN header, the frame right after GRE
        "erspan3-sub": lambda: g(0x22EB, erspan3_header(sub=True) + frame),
        "gretap-key-seq": lambda: g(0x6558, frame, flags=0x3000, seq=n),
        "erspan2-key": lambda: g(0x88BE, erspan2_header() + frame, flags=0x2000),
        "erspan2-csum": lambda: g(0x88BE, erspan2_header() + frame, flags=0x8000),
        "vxlan-reserved": lambda: v(vxlan_header(reserved=0x000102) + frame),
        "vxlan-flags": lambda: v(vxlan_header(flags=0x0C) + frame),
        "tzsp": lambda: outer_frame(ipv4(src, PROBE, 17, udp(40000, 37008, tzsp_header() + frame))),
        "erspan2-ipv6": lambda: _ipv6_outer(gre(0x88BE, erspan2_header() + frame), 47),
        "vxlan-vlan-inside": lambda: v(vxlan_header() + add_vlan(frame)),
        "vxlan-in-erspan2": lambda: g(0x88BE, erspan2_header() + outer_frame(ipv4(
            src, PROBE, 17, udp(50000, 4789, vxlan_header() + frame)))),
        "outer-vlan": lambda: add_vlan(g(0x88BE, erspan2_header() + frame)),
        # malformed or odd: counted, never opened wrongly, in C and Python alike
        "gre-routing": lambda: g(0x88BE, erspan2_header() + frame, flags=0x4000),
        "gre-version1": lambda: g(0x88BE, erspan2_header() + frame, flags=0x0001),
        "gre-recursion": lambda: g(0x88BE, erspan2_header() + frame, flags=0x0100),
        "gre-ip": lambda: g(0x0800, frame[14:]),
        "erspan2-version2": lambda: g(0x88BE, erspan2_header(version=2) + frame),
        "erspan3-version1": lambda: g(0x22EB, erspan3_header(version=1) + frame),
        "erspan3-ft-ip": lambda: g(0x22EB, erspan3_header(frame_type=2) + frame[14:]),
        "erspan3-ft-odd": lambda: g(0x22EB, erspan3_header(frame_type=5) + frame),
        "erspan2-cut": lambda: g(0x88BE, erspan2_header()[:5]),
        "erspan2-inner-cut": lambda: g(0x88BE, erspan2_header() + frame[:40]),
        "vxlan-no-i": lambda: v(vxlan_header(flags=0x00) + frame),
        "vxlan-rtp-looking": lambda: v(vxlan_header(flags=0x88) + frame),
        "vxlan-cut": lambda: v(vxlan_header()[:6]),
        "vxlan-udp-short": lambda: v(vxlan_header() + frame, length=8 + 8 + len(frame) - 20),
        "vxlan-udp-long": lambda: v(vxlan_header() + frame, length=8 + 8 + len(frame) + 20),
        "outer-options": lambda: outer_frame(ipv4(src, PROBE, 47, gre(0x88BE, erspan2_header() + frame), ihl=6)),
        "outer-fragment": lambda: outer_frame(ipv4(src, PROBE, 47, gre(0x88BE, erspan2_header() + frame),
                                                   flags_frag=0x2000)),
        "outer-total-long": lambda: outer_frame(ipv4(src, PROBE, 47, gre(0x88BE, erspan2_header() + frame),
                                                     total=20 + 12 + len(frame) + 30)),
        "outer-total-short": lambda: outer_frame(ipv4(src, PROBE, 47, gre(0x88BE, erspan2_header() + frame),
                                                      total=20 + 12 + len(frame) - 30)),
        "outer-padded": lambda: g(0x88BE, erspan2_header() + frame) + bytes(6),
        "plain": lambda: frame,
    }
    return cases[kind]()


C_OPENS = ("erspan2", "erspan2-seq", "erspan3", "erspan3-seq", "gretap", "vxlan")
PYTHON_OPENS = ("erspan1", "erspan3-sub", "gretap-key-seq", "erspan2-key", "erspan2-csum", "vxlan-reserved",
                "vxlan-flags", "tzsp", "erspan2-ipv6", "vxlan-vlan-inside", "vxlan-in-erspan2")
ODD = ("outer-vlan", "gre-routing", "gre-version1", "gre-recursion", "gre-ip", "erspan2-version2",
       "erspan3-version1", "erspan3-ft-ip", "erspan3-ft-odd", "erspan2-cut", "erspan2-inner-cut", "vxlan-no-i",
       "vxlan-rtp-looking", "vxlan-cut", "vxlan-udp-short", "vxlan-udp-long", "outer-options", "outer-fragment",
       "outer-total-long", "outer-total-short", "outer-padded")


def calls(seed: int) -> list[tuple[float, bytes]]:
    """Three overlapping designated calls (one with DTMF, one flooded from an address not in it,
    one whose sender loses, duplicates and reorders packets) and one not designated."""
    from generator import SipCall

    rng = random.Random(seed)
    packets: list[tuple[float, bytes]] = []
    for i in range(4):
        did = "0442003939" if i != 3 else "0443330000"
        call = SipCall(f"encap-{seed}-{i}", f"sip:{did}@192.0.2.10", f"sip:{did}@192.0.2.10", "09011112222",
                       1_790_000_000.0 + i * 0.37, talk=4.0, seed=seed * 10 + i,
                       caller_media=("203.0.113.20", 40000 + 2 * i), pbx_media=("192.0.2.20", 20000 + 2 * i),
                       dtmf=((40, "5"),) if i == 1 else (), flood=60 if i == 2 else 0,
                       lose=(5, 6, 90) if i == 0 else (), duplicate=(10, 11) if i == 0 else (),
                       reorder=((20, 22),) if i == 0 else ())
        packets.extend(call.packets())
    rng.shuffle(packets)  # then a stable sort: equal times in a shuffled order
    packets.sort(key=lambda p: p[0])
    return packets


def write(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    from frames import write_pcap

    write_pcap(str(path), packets)
    return path


def spec(name: str, path: Path, mask: int = ALL, collectors: tuple[str, ...] = ()) -> dict:
    return {"name": name, "pcap": str(path), "mask": mask, "collectors": list(collectors)}


def without_counters(capture: dict, evidence: bool = True) -> dict:
    """What was kept (rows, packets read), without the counters; without the evidence pcaps' hash
    and size when ``evidence`` is false (a VLAN tag inside: the evidence keeps the tagged frames)."""
    kept = {k: v for k, v in capture.items() if k not in ("counters", "c_share")}
    if not evidence:
        kept["recordings"] = [{k: v for k, v in r.items() if k not in ("pcap_sha256", "pcap_size")}
                              for r in kept["recordings"]]
    return kept


# -- the tests ----------------------------------------------------------------------------------------------


def test_each_remote_mirror_is_kept_the_same_by_c_and_python_and_as_the_plain_call(tmp_path: Path) -> None:
    """Every frame of the calls (SIP and RTP) wrapped in one encapsulation: C and Python keep the
    same, and the same as the unwrapped capture, byte for byte (WAVs, evidence pcaps: the inner
    frames); C handles the steady RTP of what it opens, and counts each outer packet once."""
    packets = calls(1)
    items = [spec("plain", write(tmp_path / "plain.pcap", packets))]
    for kind in C_OPENS + PYTHON_OPENS:
        wrapped = [(ts, wrap(kind, frame, n)) for n, (ts, frame) in enumerate(packets)]
        items.append(spec(kind, write(tmp_path / f"{kind}.pcap", wrapped)))
    native = compare(items, tmp_path)
    plain = native["captures"]["plain"]
    assert len(plain["recordings"]) == 3
    for kind in C_OPENS + PYTHON_OPENS:
        got = native["captures"][kind]
        tagged = kind == "vxlan-vlan-inside"
        assert without_counters(got, not tagged) == without_counters(plain, not tagged), kind
        opened = {k: v for k, v in got["counters"].items() if k.startswith("encap_")}
        name = f"encap_{kind.split('-')[0]}"  # erspan1, erspan2, erspan3, gretap, vxlan, tzsp
        if kind == "vxlan-in-erspan2":
            assert opened == {"encap_erspan2": len(packets), "encap_vxlan": len(packets)}, kind
        else:
            assert opened == {name: len(packets)}, kind
        rest = {k: v for k, v in got["counters"].items() if not k.startswith("encap_")}
        assert rest == plain["counters"], kind
        if kind in C_OPENS:
            assert got["c_share"] > 0.8, kind  # the comparison is about C's work, not Python's
        elif kind != "vxlan-in-erspan2":  # (nested: C stops at it; others: the inner frame is not plain)
            assert got["c_share"] == 0, kind


def test_odd_and_malformed_outer_headers_are_counted_the_same_by_c_and_python(tmp_path: Path) -> None:
    """Each odd header alone (every frame so wrapped): C and Python agree on what is counted and
    kept, and C opens none of them (they all need Python's reading) but the padded frame."""
    packets = calls(2)
    items = []
    for kind in ODD:
        wrapped = [(ts, wrap(kind, frame, n)) for n, (ts, frame) in enumerate(packets)]
        items.append(spec(kind, write(tmp_path / f"{kind}.pcap", wrapped)))
    native = compare(items, tmp_path)
    got = native["captures"]
    for kind in ODD:
        if kind == "outer-padded":  # Ethernet padding after the outer IP packet: not the inner frame's
            assert got[kind]["c_share"] > 0.8 and len(got[kind]["recordings"]) == 3
        else:
            assert got[kind]["c_share"] == 0, kind
    for kind in ("gre-routing", "erspan2-version2", "erspan3-version1", "erspan3-ft-odd", "erspan2-cut", "vxlan-no-i",
                 "vxlan-cut"):
        assert got[kind]["recordings"] == [] and got[kind]["counters"]["encap_malformed"] == len(packets), kind
    for kind in ("gre-version1", "gre-ip"):  # GRE of another kind (PPTP, an IP tunnel): no mirror
        assert got[kind]["recordings"] == [] and got[kind]["counters"]["not_udp"] == len(packets), kind
    for kind in ("outer-vlan", "gre-recursion", "erspan3-ft-ip", "outer-options"):  # Python opens them
        assert len(got[kind]["recordings"]) == 3, kind


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_mix_of_mirrors_good_and_bad_is_kept_the_same_by_c_and_python(seed: int, tmp_path: Path) -> None:
    """Each frame in an encapsulation drawn at random (good, odd, malformed, none), frames from a
    non-collector among them; with a collector list and without: the same kept, the same counted."""
    rng = random.Random(seed)
    kinds = C_OPENS * 6 + PYTHON_OPENS + ODD + ("plain",) * 4
    packets = calls(seed)
    wrapped = [(ts, wrap(rng.choice(kinds), frame, n, STRANGER if rng.random() < 0.05 else COLLECTOR))
               for n, (ts, frame) in enumerate(packets)]
    path = write(tmp_path / "mix.pcap", wrapped)
    native = compare([spec("any", path), spec("collector", path, collectors=(COLLECTOR,)),
                      spec("erspan-only", path, mask=ERSPAN)], tmp_path)
    assert native["captures"]["collector"]["counters"]["encap_not_opened"] > 0
    assert native["handled_in_c"] > 0


@pytest.mark.parametrize("seed", [6, 7])
def test_outer_headers_damaged_at_random_are_kept_the_same_by_c_and_python(seed: int, tmp_path: Path) -> None:
    """Good C-opened mirrors with one byte of the outer headers changed at random (or the frame cut)
    in a third of the frames: never a crash, and C opens nothing Python would not."""
    rng = random.Random(seed)
    out = []
    for n, (ts, frame) in enumerate(calls(seed)):
        outer = bytearray(wrap(rng.choice(C_OPENS), frame, n))
        if rng.random() < 0.33:
            if rng.random() < 0.1:
                outer = outer[: rng.randrange(14, 70)]
            else:
                outer[rng.randrange(12, 54)] = rng.randrange(256)
        out.append((ts, bytes(outer)))
    path = write(tmp_path / "damaged.pcap", out)
    native = compare([spec("damaged", path)], tmp_path)
    assert native["handled_in_c"] > 0


def test_disabled_encapsulations_and_strangers_are_not_opened_by_c(tmp_path: Path) -> None:
    """Not enabled, or not from a collector: C opens none of it (Python counts encap_not_opened),
    nothing of the calls is recorded, and C and Python agree."""
    packets = calls(8)
    mirrored = [(ts, wrap(C_OPENS[n % len(C_OPENS)], frame, n)) for n, (ts, frame) in enumerate(packets)]
    path = write(tmp_path / "mirrored.pcap", mirrored)
    native = compare([spec("disabled", path, mask=TZSP), spec("none", path, mask=0),
                      spec("stranger", path, collectors=(STRANGER,))], tmp_path)
    for name in ("disabled", "none", "stranger"):
        got = native["captures"][name]
        assert got["recordings"] == [], name
        assert got["counters"]["encap_not_opened"] == len(packets), name
        assert not {k for k in got["counters"] if k.startswith("encap_") and k != "encap_not_opened"}, name


def test_the_c_table_takes_the_encapsulation_config_and_refuses_nonsense() -> None:
    from capture.fast import fastpath

    if fastpath is None:
        pytest.skip("capture/_fastpath.c is not built")
    table = fastpath.FastPath()
    assert table.take_encap() == (0, 0, 0, 0)
    table.set_encap(ALL, frozenset({socket.inet_aton(COLLECTOR), socket.inet_pton(socket.AF_INET6, "2001:db8::1")}))
    table.set_encap(0, ())
    for bad in ([b"\x01\x02\x03"], [b"x" * 5], ["198.18.0.1"], 7):
        with pytest.raises(TypeError):
            table.set_encap(ALL, bad)


if __name__ == "__main__" and sys.argv[1:2] == ["digest"]:
    print(json.dumps(digest(Path(sys.argv[2]), json.loads(sys.argv[3]))))
