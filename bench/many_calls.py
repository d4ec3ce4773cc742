"""The per-packet cost with thousands of calls in progress, without a network or a sender.

``bench/live.py`` measures the live service on a veth link, but its sender (tcpreplay) shares the
2-core machine with the service and the kernel's copy into the ring, so its figures scatter by a
third from run to run. This section feeds the very same capture (live.py's: 3,000 calls in
progress, every other one to a designated number, so 1,500 recordings written at once) through
capture's pipeline into a real store (``SpoolSink`` of a temporary ``Store``, as the service wires
it), in a fresh process per run: first its set-up part (every INVITE to ACK and the first media;
not timed: creating 4,500 spool files costs what the file system's inode allocator makes it cost,
which varies by a factor of ten on this disk from run to run), then its media part (3.2 M packets),
timed by the thread's CPU clock (``time.thread_time()``: user and sys of the capture thread, which
is what drops packets live when it cannot keep up). That counts capture's per-packet work and the
1,500 recordings' flushes (their audio and evidence pcap sealed and written about once a second
each); not the ring walk and the socket (live.py has them) nor the keeping at the end (the calls are
left in progress, as in live.py's runs).

    python bench/many_calls.py [--calls 3000] [--seconds 10] [--rounds 3] [--base TREE]   -> JSON
    python bench/many_calls.py child SETUP.pcap MEDIA.pcap DIR                          (one run)

``--base TREE`` runs another checkout (a ``git worktree``, its C module built in place) the same
way, interleaved round by round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def child(setup: str, media: str, work: str) -> dict:
    """One run in this process (the tree on sys.path: ``PYTHONPATH`` set by the parent)."""
    import gc
    from zoneinfo import ZoneInfo

    from capture.fast import MODE
    from capture.pipeline import CapturePipeline
    from capture.source import CaptureFile
    from recorderd.config import load_dids
    from storage.spool import SpoolSink
    from storage.store import Store

    store = Store(os.path.join(work, "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                  key_file=os.path.join(work, "master.key"))
    store.init()
    store.open()
    store.check_key()
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store))
    with CaptureFile(setup) as f:
        for batch in f.batches():
            pipeline.feed(batch)
    in_progress = len(pipeline.tracker.calls)
    gc.collect()
    packets = 0
    with CaptureFile(media) as f:
        cpu, wall = time.thread_time(), time.perf_counter()
        for batch in f.batches():
            pipeline.feed(batch)
            packets += len(batch)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return {"packets": packets, "cpu_s": cpu, "wall_s": wall, "us_per_packet": cpu / packets * 1e6,
            "handled_in_c": pipeline.media.table.handled if pipeline.media.table is not None else 0,
            "calls_in_progress": in_progress, "fastpath": MODE}


def _run(tree: Path, setup: Path, media: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(prefix="recorderd-bench-many-") as work:
        out = subprocess.run([sys.executable, str(tree / "bench" / "many_calls.py"), "child", str(setup), str(media), work],
                             check=True, capture_output=True, text=True, env=env, timeout=900)
    return json.loads(out.stdout)


def run(calls: int = 3000, seconds: float = 10.0, rounds: int = 3, base: Path | None = None) -> dict:
    sys.path[:0] = [str(ROOT), str(BENCH)]
    from live import TARGET_RATE, live_capture, live_plan

    cap = live_capture(live_plan(calls, seconds))
    trees = {"this": ROOT} if base is None else {"this": ROOT, "base": base.resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):  # interleaved: a busy moment of the machine falls on every tree
        for name, tree in trees.items():
            runs[name].append(_run(tree, cap["setup"], cap["media"]))
    figures = {}
    for name, got in runs.items():
        values = [r["us_per_packet"] for r in got]
        figures[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    this = figures["this"]
    return {
        "calls": calls,
        "media_packets": runs["this"][0]["packets"],
        "rounds": rounds,
        "capture_loop_us_per_media_packet": this,
        "capture_loop_capacity_pkt_s": 1e6 / this["median"],
        "base": {"tree": str(base), **figures["base"]} if base is not None else None,
        "runs": runs,
        "target_rate": TARGET_RATE,
        "method": (f"bench/many_calls.py: live.py's capture ({calls:,} calls in progress, every other one designated) "
                   "fed to CapturePipeline(dids, SpoolSink(Store)) of a temporary store in a fresh process per run: "
                   f"the set-up part untimed, then the media part ({runs['this'][0]['packets']:,} packets) timed by "
                   f"time.thread_time() (the capture thread's user + sys); {rounds} round(s), median (min-max)"
                   + (f"; interleaved with {base}" if base is not None else "")),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(child(*argv[1:4])))
        return 0
    parser = argparse.ArgumentParser(description="per-packet CPU with thousands of calls in progress (bench/README.md)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="media of 300 k x SECONDS packets (live.py's capture)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", type=Path, help="another checkout, run the same way, interleaved")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.calls, args.seconds, args.rounds, args.base), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
