"""What a recording's writes cost the capture thread: storage's write path per flush.

    python bench/spool_flush.py [--calls 1500] [--seconds 4] [--repeat 3] [--base WORKTREE] [--json]

``--calls`` recordings are opened in a real store (a temporary directory on the disk's file system,
master key made as ``recorderctl init`` makes it), each taking capture's buffers (``use_buffers``:
G.711, evidence pcap on) as the live service's do. Then ``--seconds`` of audio are fed the way
capture's kernel fills those buffers: per 20 ms packet and direction, 160 payload bytes onto the
channel's buffer and one pcap record (16 + 214 bytes) onto the evidence buffer, and, whenever a
buffer reaches its ``limit``, the recording's ``flush_buffers()`` is called, as capture calls it.
Only those calls are timed, in CPU time of the thread (the filling stands for the C kernel and is not counted), after 2 s of
audio fed untimed (the sidecar's first figures, saved after 1 s, then every 30 s as in live).

Printed: microseconds per flush (one WAV record, ~1 s of stereo G.711, or one 16 KiB evidence
record, ~0.7 s of a call's packets), and per packet-equivalent (the time of all flushes divided by
the packets fed: 100 a second per call), the figure to set beside issue 13's 0.8 us per packet.
With ``--base DIR`` (a ``git worktree`` of another commit, e.g. ``git worktree add /tmp/base
HEAD``) the same bench runs against DIR's ``storage/`` too, the two interleaved ``--repeat``
times, each in a fresh process; medians and spreads of both. Not part of ``make test``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PAYLOAD = 160  # bytes of G.711 per 20 ms packet
FRAME = 14 + 20 + 8 + 12 + PAYLOAD  # Ethernet, IPv4, UDP, RTP, payload
WARM = 2.0  # s of audio fed first, untimed: past the sidecar's first figures (then every 30 s, as live)


def run(calls: int, seconds: float, root: Path) -> dict:
    """One measurement in this process, with ``root``'s storage/ and capture/sink.py."""
    sys.path.insert(0, str(root))
    from zoneinfo import ZoneInfo

    from capture.lanes import PyLanes, PyRecords  # the Python twins: filled here as the C kernel fills them
    from capture.sink import CallInfo, StreamStats
    from storage.spool import SpoolSink
    from storage.store import Store

    with tempfile.TemporaryDirectory(prefix="spool-flush-", dir=os.environ.get("SPOOL_FLUSH_DIR", "/var/tmp")) as tmp:
        store = Store(os.path.join(tmp, "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                      key_file=os.path.join(tmp, "master.key"))
        store.init()
        store.open()
        try:
            sink = SpoolSink(store, keep=lambda *a, **k: None)
            recs = []
            noise = os.urandom(1 << 16)
            stats = tuple(StreamStats(ch, (ch,), 50, 50, 0, 0, 0, ((ch, 0, 0),), 0.0) for ch in (1, 2))
            for i in range(calls):
                info = CallInfo(call_id=f"bench-{i}@example.invalid", did="+81442003939", did_label="bench",
                                caller="0000", started_at=1790000000.0 + i, codec="PCMU")
                rec = sink.call_started(info)
                lanes, records = PyLanes(), PyRecords()
                if not rec.use_buffers(lanes, records):
                    raise SystemExit("the recording did not take capture's buffers")
                rec.figures = lambda: stats  # the sidecar's progress, as capture sets it
                rec.packet(1790000000.0 + i, 1, noise[:FRAME])  # the first frame: the file's link type
                records.linktype = 1
                recs.append((rec, lanes, records, (i * 37) % 1024))
            warm = int(WARM * 50)  # per direction: the first figures saved (FIRST_PROGRESS), untimed
            packets = warm + int(seconds * 50)
            header = b"\x00" * 16
            flush_time = [0.0, 0.0]  # WAV, evidence
            flushes = [0, 0]
            fed = 0
            clock = time.thread_time  # CPU time of this thread: another process on the machine does not count
            gc.collect()
            gc.freeze()
            for p in range(packets):
                for rec, lanes, records, shift in recs:
                    a, b = lanes.bufs
                    o = (shift + p * 7) % 60000
                    a += noise[o : o + PAYLOAD]
                    b += noise[o + 1 : o + 1 + PAYLOAD]
                    buf = records.buf
                    buf += header
                    buf += noise[o : o + FRAME]
                    buf += header
                    buf += noise[o + 3 : o + 3 + FRAME]
                    wav_due = len(a) >= lanes.limit or len(b) >= lanes.limit
                    pcap_due = len(buf) >= records.limit
                    if p < warm:
                        if wav_due or pcap_due:
                            rec.flush_buffers()
                        continue
                    fed += 2
                    if wav_due or pcap_due:
                        t = clock()
                        rec.flush_buffers()
                        dt = clock() - t
                        if wav_due and pcap_due:
                            flush_time[0] += dt / 2
                            flush_time[1] += dt / 2
                            flushes[0] += 1
                            flushes[1] += 1
                        else:
                            k = 0 if wav_due else 1
                            flush_time[k] += dt
                            flushes[k] += 1
            total = flush_time[0] + flush_time[1]
            return {
                "calls": calls, "seconds": seconds, "packets": fed,
                "wav_flushes": flushes[0], "pcap_flushes": flushes[1],
                "us_per_wav_flush": 1e6 * flush_time[0] / max(1, flushes[0]),
                "us_per_pcap_flush": 1e6 * flush_time[1] / max(1, flushes[1]),
                "us_per_flush": 1e6 * total / max(1, flushes[0] + flushes[1]),
                "us_per_packet": 1e6 * total / max(1, fed),
                "root": str(root),
            }
        finally:
            store.close()


def child(root: Path, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, "-B", __file__, "--calls", str(args.calls), "--seconds", str(args.seconds),
                          "--root", str(root), "--json", "--repeat", "1"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(name: str, runs: list[dict]) -> str:
    def med(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
    return (f"{name:6} us/flush {med('us_per_flush')}  wav {med('us_per_wav_flush')}  pcap {med('us_per_pcap_flush')}"
            f"  us/packet {med('us_per_packet')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--base", type=Path, help="a worktree of another commit: its storage/ measured too, interleaved")
    parser.add_argument("--root", type=Path, default=HERE, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.repeat == 1 and args.base is None:
        result = run(args.calls, args.seconds, args.root)
        print(json.dumps(result) if args.json else summary("this", [result]))
        return
    mine: list[dict] = []
    base: list[dict] = []
    for _ in range(args.repeat):
        if args.base is not None:
            base.append(child(args.base.resolve(), args))
        mine.append(child(args.root, args))
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"this": mine, "base": base, "load": load}))
        return
    print(f"{args.calls} calls, {args.seconds:g} s of audio each, {args.repeat} runs interleaved; "
          f"medians (min-max); load {load[0]:.2f} {load[1]:.2f}")
    if base:
        print(summary("base", base))
    print(summary("this", mine))


if __name__ == "__main__":
    main()
