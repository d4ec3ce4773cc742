"""The hot path alone: parse + track + assemble, no disk.

Run as its own process (``python bench/hot_path.py CAPTURE``; prints JSON; ``python bench/hot_path.py
pipeline CAPTURE``: the pipeline's CPU time alone) so the preloaded
packets do not weigh on the benchmark's other measurements. All batches are read into memory first
(``CaptureFile(path).batches()``, timed on its own as the source's rate), then frozen out of the
garbage collector's sight (``gc.freeze()``: the real pipeline never holds a whole capture), then
fed to ``CapturePipeline(dids, DiscardSink()).feed(batch)``; the sink starts a handle per recorded
call whose ``audio()`` discards the bytes. Then the same batches go through a pipeline whose sink is
the real ``SpoolSink(store)`` of a temporary store (the storage cost, without process start-up or file
reading), and a last, fresh pipeline runs them under cProfile for the table of functions by own time.
"""
from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.pipeline import CapturePipeline  # noqa: E402
from capture.source import CaptureFile  # noqa: E402
from recorderd.config import load_dids  # noqa: E402
from storage.recorder import SpoolSink  # noqa: E402
from storage.store import Store  # noqa: E402

DIDS_FILE = ROOT / "config" / "dids.yaml"


class DiscardedRecording:
    """A ``RecordingHandle`` that keeps nothing."""

    __slots__ = ("sink", "figures")
    id = "discarded"
    keeps_packets = False

    def __init__(self, sink: DiscardSink) -> None:
        self.sink = sink

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        pass

    def end(self, result: object) -> None:
        self.sink.ended += 1


class DiscardSink:
    """A ``RecordingSink`` with no disk behind it."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def call_started(self, call: object) -> DiscardedRecording:
        self.started += 1
        return DiscardedRecording(self)


def feed_all(batches: list, dids) -> tuple[CapturePipeline, DiscardSink]:  # type: ignore[no-untyped-def]
    sink = DiscardSink()
    pipeline = CapturePipeline(dids, sink)
    feed = pipeline.feed
    for batch in batches:
        feed(batch)
    pipeline.finish("capture-end")
    return pipeline, sink


def top_functions(profile: cProfile.Profile, count: int) -> list[dict]:
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, func), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = file
        try:
            where = str(Path(file).resolve().relative_to(ROOT))
        except ValueError:
            pass
        rows.append({"function": f"{where}:{line}({func})", "calls": calls, "tottime_s": own, "cumtime_s": cumulative})
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:count]


def feed_to_store(batches: list, dids) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """The same batches through the real storage sink of a temporary store: (wall s, CPU s, kept)."""
    root = tempfile.mkdtemp(prefix="recorderd-bench-hot-")
    try:
        store = Store(os.path.join(root, "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                      key_file=os.path.join(root, "master.key"))  # fmt: skip
        store.init()
        store.open()
        store.check_key()
        wall, cpu = time.perf_counter(), time.process_time()
        pipeline = CapturePipeline(dids, SpoolSink(store))
        for batch in batches:
            pipeline.feed(batch)
        pipeline.finish("capture-end")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        kept = len(store.recordings())
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return wall, cpu, kept


def main(capture: str, top: int = 15) -> dict:
    dids = load_dids(str(DIDS_FILE))
    started = time.perf_counter()
    with CaptureFile(capture) as source:
        batches = list(source.batches())
    read_s = time.perf_counter() - started
    packets = sum(len(b) for b in batches)
    gc.collect()
    gc.freeze()

    started = time.perf_counter()
    pipeline, sink = feed_all(batches, dids)
    feed_s = time.perf_counter() - started

    store_s, store_cpu_s, kept = feed_to_store(batches, dids)

    profile = cProfile.Profile()
    profile.enable()
    feed_all(batches, dids)
    profile.disable()
    c = pipeline.counters
    return {
        "method": "python bench/hot_path.py CAPTURE: batches = list(CaptureFile(path).batches()); gc.freeze(); "
        "time.perf_counter() around CapturePipeline(dids, DiscardSink()).feed(b) for b in batches + finish()",
        "packets": packets,
        "source_s": read_s,
        "source_pkt_per_s": packets / read_s,
        "feed_s": feed_s,
        "pkt_per_s": packets / feed_s,
        "us_per_packet": feed_s / packets * 1e6,
        "with_store_s": store_s,
        "with_store_cpu_s": store_cpu_s,
        "with_store_pkt_per_s": packets / store_s,
        "with_store_kept": kept,
        "with_store_method": "the same batches through CapturePipeline(dids, SpoolSink(store)) of a temporary Store "
        "(spool WAVs, encryption, index: the replay minus process start-up and file reading)",
        "calls_recorded": c["calls_recorded"],
        "calls_not_designated": c["calls_not_designated"],
        "rtp_not_recorded": c["rtp_not_recorded"],
        "handles_started": sink.started,
        "handles_ended": sink.ended,
        "profile_method": "cProfile.Profile() around a second, fresh pipeline over the same batches; "
        "pstats sorted by tottime (profiling itself slows the run)",
        "profile_top": top_functions(profile, top),
    }


def pipeline_only(capture: str, runs: int = 3) -> dict:
    """The pipeline alone, CPU time: the best of ``runs`` fresh pipelines over the same preloaded
    batches (what bench/run.py's erspan section compares between the plain and the wrapped capture:
    without the store's work, which is the same for both, the difference is the capture's)."""
    dids = load_dids(str(DIDS_FILE))
    with CaptureFile(capture) as source:
        batches = list(source.batches())
    packets = sum(len(b) for b in batches)
    gc.collect()
    gc.freeze()
    best = None
    for _ in range(runs):
        started = time.process_time()
        pipeline, _sink = feed_all(batches, dids)
        cpu = time.process_time() - started
        best = cpu if best is None else min(best, cpu)
    table = pipeline.media.table
    return {
        "method": f"python bench/hot_path.py pipeline CAPTURE: batches preloaded, gc.freeze(); time.process_time() "
        f"around CapturePipeline(dids, DiscardSink()).feed(b) for b in batches + finish(), best of {runs}",
        "packets": packets,
        "cpu_s": best,
        "pkt_per_cpu_s": packets / best,
        "handled_in_c": table.handled if table is not None else 0,
        "counters": {k: v for k, v in pipeline.counters.items() if k.startswith("encap_") or k == "rtp_not_recorded"},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["pipeline"]:
        print(json.dumps(pipeline_only(sys.argv[2])))
    else:
        print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15)))
