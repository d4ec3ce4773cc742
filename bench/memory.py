"""RSS per concurrent call, and RSS over many calls handled one after another.

Each run is its own process (``python bench/memory.py concurrent|sequential CAPTURE ...``, JSON
out) feeding ``CaptureFile(path).batches()`` to a ``CapturePipeline`` whose sink is the real
``SpoolSink(store)`` of a temporary store, so the spool files, buffers and encryption are real. RSS is
read from ``/proc/self/statm``: ``resident`` and ``resident - shared``. The second ("private RSS")
is what the figures use: the capture file is read through ``mmap``, and its pages, once touched,
count as resident-shared; they are page cache, not memory held per call (a live capture has no file).

- ``concurrent``: sampled every 0.5 s of packet time while every call of the capture has media
  flowing (after each call's first buffer flush); the largest sample is taken, then the run stops.
- ``sequential``: sampled every 5 % of the calls recorded (100 %: after the end of the capture has
  finalised the last call), with ``sys.getallocatedblocks()`` (Python objects alive) beside it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from capture.pipeline import CapturePipeline  # noqa: E402
from capture.source import CaptureFile  # noqa: E402
from recorderd.config import load_dids  # noqa: E402
from storage.spool import SpoolSink  # noqa: E402
from storage.store import Store  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
DIDS_FILE = ROOT / "config" / "dids.yaml"
SAMPLE_EVERY = 0.5  # s of packet time


def statm() -> dict[str, int]:
    """Resident and private (resident - shared) memory of this process, KiB."""
    with open("/proc/self/statm") as f:
        _size, resident, shared = (int(x) for x in f.read().split()[:3])
    return {"rss_kib": resident * PAGE // 1024, "private_kib": (resident - shared) * PAGE // 1024}


def open_store(root: str) -> Store:
    store = Store(os.path.join(root, "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                  key_file=os.path.join(root, "master.key"))
    store.init()
    store.open()
    store.check_key()
    return store


def concurrent(capture: str, sample_from: float, sample_to: float) -> dict:
    root = tempfile.mkdtemp(prefix="recorderd-bench-mem-")
    try:
        store = open_store(root)
        sink = SpoolSink(store)
        pipeline = CapturePipeline(load_dids(str(DIDS_FILE)), sink)
        base = statm()
        samples = []
        next_at = sample_from
        with CaptureFile(capture) as source:
            for batch in source.batches():
                pipeline.feed(batch)
                if pipeline.now >= next_at:
                    samples.append({"packet_time": pipeline.now, **statm(), "calls": len(pipeline.tracker.calls),
                                    "open_recordings": len(sink.open_recordings)})
                    next_at += SAMPLE_EVERY
                    if next_at > sample_to:
                        break
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not samples:
        raise RuntimeError("the capture ended before the sampling window")
    peak = max(samples, key=lambda s: s["private_kib"])
    return {"baseline": base, "peak": peak, "samples": samples}


def sequential(capture: str, calls: int) -> dict:
    root = tempfile.mkdtemp(prefix="recorderd-bench-mem-")
    try:
        store = open_store(root)
        sink = SpoolSink(store)
        pipeline = CapturePipeline(load_dids(str(DIDS_FILE)), sink)
        counters = pipeline.counters
        tracker = pipeline.tracker
        marks = [calls * q // 20 for q in range(1, 20)]  # every 5 %
        samples = [{"recorded": 0, **statm(), "python_blocks": sys.getallocatedblocks()}]

        db = store.db().db

        def sample() -> None:
            pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
            samples.append({"recorded": counters["calls_recorded"], **statm(), "python_blocks": sys.getallocatedblocks(),
                            "index_file_kib": pages // 1024,
                            "calls": len(tracker.calls),
                            "closing": len(tracker.closing), "ended": len(tracker.ended),
                            "ignored": len(tracker.ignored), "media_map": len(pipeline.media)})

        with CaptureFile(capture) as source:
            for batch in source.batches():
                pipeline.feed(batch)
                while marks and counters["calls_recorded"] >= marks[0]:
                    marks.pop(0)
                    sample()
        pipeline.finish("capture-end")
        sample()
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"samples": samples}


# -- the parent side: one process per run ------------------------------------------------------------


def _child(*args: object) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def rss_per_call(sizes: tuple[int, int], talk: float) -> dict:
    """Private RSS at peak concurrency for two numbers of concurrent (all designated) calls, and the
    slope between them (KiB per call)."""
    from span_capture import SpanPlan, span_capture

    runs = []
    for calls in sizes:
        plan = SpanPlan.concurrent(calls, talk, designated_share=1.0)
        path, meta = span_capture(plan)
        last_media, first_end = plan.peak_window()
        start = last_media + 2.0  # every call past its first buffer flush (FLUSH_AT = 1.5 s)
        stop = min(start + 6.0, first_end - 0.5)
        result = _child("concurrent", path, start, stop)
        peak, base = result["peak"], result["baseline"]
        runs.append({
            "calls": calls, "talk_s": talk, "capture": path.name, "capture_meta": meta,
            "concurrent_at_peak": peak["calls"], "open_recordings_at_peak": peak["open_recordings"],
            "baseline_private_kib": base["private_kib"], "peak_private_kib": peak["private_kib"],
            "peak_rss_kib": peak["rss_kib"], "baseline_rss_kib": base["rss_kib"],
            "private_kib_per_call_incl_fixed": (peak["private_kib"] - base["private_kib"]) / calls,
            "samples": result["samples"],
        })
    low, high = runs
    calls = high["calls"] - low["calls"]
    return {
        "method": "python bench/memory.py concurrent CAPTURE FROM TO, once per size: SpoolSink(store) of a temp store, "
        "CapturePipeline.feed(batch) over CaptureFile(path).batches(); /proc/self/statm (resident - shared) "
        f"every {SAMPLE_EVERY} s of packet time while all calls carry media, largest sample; "
        "slope = (peak_high - peak_low) / (calls_high - calls_low)",
        "runs": runs,
        "slope_private_kib_per_call": (high["peak_private_kib"] - low["peak_private_kib"]) / calls,
        "slope_rss_kib_per_call": (high["peak_rss_kib"] - low["peak_rss_kib"]) / calls,
    }


def rss_over_calls(calls: int, talk: float, concurrency: int) -> dict:
    """Private RSS while ``calls`` short calls are handled, at most ~``concurrency`` at once."""
    from span_capture import SpanPlan, span_capture

    probe = SpanPlan(1, talk, 1.0)
    spacing = (probe.call_span() + 1.0) / concurrency  # + the 1 s an ended recording lingers
    plan = SpanPlan(calls, talk, round(spacing, 6), designated_share=1.0)
    path, meta = span_capture(plan)
    result = _child("sequential", path, calls)
    samples = result["samples"]

    def at(share: float) -> dict:
        return next(s for s in samples if s["recorded"] >= calls * share)

    half, last = at(0.5), samples[-1]
    handled = (last["recorded"] - half["recorded"]) / 1000
    return {
        "method": f"python bench/memory.py sequential CAPTURE {calls}: {calls} calls of {talk:g} s, one starting every "
        f"{plan.spacing:g} s (<= {concurrency} open at once), SpoolSink(store) of a temp store; /proc/self/statm "
        "(resident - shared) and sys.getallocatedblocks() every 5 % of calls recorded; growth judged from 50 % to "
        "100 % (the first half warms up: the SQLite page cache, up to 2 MiB, fills as the index grows; the heap "
        "reaches its working size; the tracker's 64 s memory of ended Call-IDs fills)",
        "calls": calls, "talk_s": talk, "spacing_s": plan.spacing, "capture": path.name, "capture_meta": meta,
        "samples": samples,
        "private_kib_at": {q: at(q / 100)["private_kib"] for q in (25, 50, 75)} | {100: last["private_kib"]},
        "growth_50_to_100_kib": last["private_kib"] - half["private_kib"],
        "growth_per_1000_calls_kib": (last["private_kib"] - half["private_kib"]) / handled,
        "python_blocks_growth_per_1000_calls": (last["python_blocks"] - half["python_blocks"]) / handled,
        "growth_0_to_50_kib": half["private_kib"] - samples[0]["private_kib"],
    }


if __name__ == "__main__":
    mode, capture = sys.argv[1], sys.argv[2]
    if mode == "concurrent":
        print(json.dumps(concurrent(capture, float(sys.argv[3]), float(sys.argv[4]))))
    elif mode == "sequential":
        print(json.dumps(sequential(capture, int(sys.argv[3]))))
    else:
        sys.exit(f"usage: {sys.argv[0]} concurrent CAPTURE FROM TO | sequential CAPTURE CALLS")
