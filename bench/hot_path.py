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

``python bench/hot_path.py compare CAPTURE BASE [ROUNDS]``: this tree against another checkout of the
project (``BASE``: e.g. ``git worktree add /tmp/base <commit>``; its C module is built in place
there first), the same script for both (``HOT_PATH_TREE`` says which tree's packages a process
imports), one process per tree and round, interleaved (this, base, base, this, ...): the pipeline's
CPU time with the discarding sink and with the real storage sink; medians, spreads and the ratios.
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

ROOT = Path(os.environ.get("HOT_PATH_TREE") or Path(__file__).resolve().parent.parent).resolve()
sys.path.insert(0, str(ROOT))

from capture.pipeline import CapturePipeline  # noqa: E402
from capture.source import CaptureFile  # noqa: E402
from recorderd.config import load_dids  # noqa: E402

if (ROOT / "storage" / "spool.py").exists():
    from storage.spool import SpoolSink  # noqa: E402
else:  # a tree from before storage/recorder.py was renamed storage/spool.py (BENCH_KERNEL_BASE's)
    from storage.recorder import SpoolSink  # type: ignore[import-not-found, no-redef]  # noqa: E402
from storage.store import Store  # noqa: E402

DIDS_FILE = ROOT / "config" / "dids.yaml"


class DiscardedRecording:
    """A ``RecordingHandle`` that keeps nothing, but takes capture's buffers as storage's recording
    does (G.711: the kernel places into them) and empties them as storage's writer would, by its rule
    (the frontier REORDER_MARGIN behind the slower channel, MAX_LAG behind the faster). It offers the
    same buffers under the names an older tree's C fast path read on a handle (``lanes``,
    ``frontier``, ``lane_limit``, ``silence_byte``, ``flush_lanes``), so ``compare`` measures the
    same work in both trees."""

    __slots__ = ("sink", "figures", "taken", "lanes", "frontier")
    id = "discarded"
    keeps_packets = False
    lane_limit = 8_000  # storage/spool.py FLUSH_AT (G.711)
    silence_byte = 0xFF

    def __init__(self, sink: DiscardSink) -> None:
        self.sink = sink
        self.taken = None
        self.lanes = (bytearray(), bytearray())
        self.frontier = 0

    def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
        lanes.silence, lanes.limit = self.silence_byte, self.lane_limit
        self.taken, self.lanes = lanes, lanes.bufs
        return True

    def flush_buffers(self) -> None:
        a, b = self.lanes
        n = max(min(len(a), len(b)) - 2_000, max(len(a), len(b)) - 6_400)  # REORDER_MARGIN, MAX_LAG
        if n < 1_600:  # MIN_WRITE
            return
        del a[:n]
        del b[:n]
        self.frontier += n
        if self.taken is not None:
            self.taken.frontier = self.frontier

    flush_lanes = flush_buffers

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



def preloaded(capture: str) -> tuple[list, float]:
    """Every batch of ``capture`` in memory and the seconds reading them took; then the collector
    settled and frozen, so that what follows times the pipeline, not a collection of the reader's
    garbage."""
    started = time.perf_counter()
    with CaptureFile(capture) as source:
        batches = list(source.batches())
    read_s = time.perf_counter() - started
    gc.collect()
    gc.freeze()
    return batches, read_s

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
                      key_file=os.path.join(root, "master.key"))
        store.init()
        store.open()
        store.check_key()
        wall, cpu = time.perf_counter(), time.process_time()
        pipeline = CapturePipeline(dids, SpoolSink(store))
        for batch in batches:
            pipeline.feed(batch)
        pipeline.finish("capture-end")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        kept = len(store.reading.recordings())
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return wall, cpu, kept


def main(capture: str, top: int = 15) -> dict:
    dids = load_dids(str(DIDS_FILE))
    batches, read_s = preloaded(capture)
    packets = sum(len(b) for b in batches)

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
    batches, _read_s = preloaded(capture)
    packets = sum(len(b) for b in batches)
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


def foreign_modules() -> list[str]:
    """The project's modules this process imported from another tree than ROOT: the venv's editable
    install finds a module that ROOT lacks in the checkout it was made from, which would mix two
    trees' code into one run (it did: the base's capture with this tree's storage.spool)."""
    return sorted(f"{name} ({mod.__file__})" for name, mod in list(sys.modules.items())
                  if name.split(".")[0] in ("capture", "storage", "recorderd") and getattr(mod, "__file__", None)
                  and not Path(mod.__file__).resolve().is_relative_to(ROOT))


def tree_run(capture: str) -> dict:
    """One round in this process's tree: the pipeline's CPU time with the discarding sink, then with
    the real storage sink (one run each, the batches preloaded)."""
    dids = load_dids(str(DIDS_FILE))
    batches, _read_s = preloaded(capture)
    started = time.process_time()
    pipeline, _sink = feed_all(batches, dids)
    alone = time.process_time() - started
    _wall, with_store, kept = feed_to_store(batches, dids)
    if foreign := foreign_modules():
        raise RuntimeError(f"{ROOT}: modules of another tree were imported: {', '.join(foreign)}")
    table = pipeline.media.table
    return {"tree": str(ROOT), "packets": sum(map(len, batches)), "alone_cpu_s": alone, "store_cpu_s": with_store,
            "kept": kept, "handled_in_c": table.handled if table is not None else 0}


def compare(capture: str, base: str, rounds: int = 5) -> dict:
    """This tree against ``base``, interleaved rounds, one process each (see the module's docstring)."""
    import statistics
    import subprocess

    here = Path(__file__).resolve().parent.parent
    trees = {"this": here, "base": Path(base).resolve()}
    for tree in trees.values():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, capture_output=True,
                       check=True)
    runs: dict[str, list[dict]] = {"this": [], "base": []}
    for r in range(rounds):
        for name in ("this", "base") if r % 2 == 0 else ("base", "this"):
            env = {**os.environ, "HOT_PATH_TREE": str(trees[name]), "PYTHONPATH": str(trees[name])}
            env.pop("RECORDERD_PURE_PYTHON", None)
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "tree", capture], env=env,
                                  capture_output=True, text=True, timeout=3600, cwd=trees[name])
            if done.returncode != 0:
                raise RuntimeError(f"hot_path.py tree ({name}) failed: {done.stderr.strip()[-800:]}")
            runs[name].append(json.loads(done.stdout))
    out: dict = {"method": f"python bench/hot_path.py compare CAPTURE BASE {rounds}: per round one process per tree "
                 "(order alternating), batches preloaded, gc.freeze(); time.process_time() around a fresh "
                 "CapturePipeline over all batches + finish(): with DiscardSink (the kernel places into "
                 "buffers a discarding handle empties) and with SpoolSink of a temporary Store",
                 "base": str(trees["base"]), "rounds": rounds, "runs": runs}
    for key in ("alone_cpu_s", "store_cpu_s"):
        figures = {}
        for name in runs:
            values = [run[key] for run in runs[name]]
            figures[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        figures["ratio"] = figures["this"]["median"] / figures["base"]["median"]  # < 1: this tree is faster
        out[key] = figures
    out["handled_in_c"] = {name: runs[name][0]["handled_in_c"] for name in runs}
    out["kept"] = {name: runs[name][0]["kept"] for name in runs}
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["tree"]:
    print(json.dumps(tree_run(sys.argv[2])))
elif __name__ == "__main__" and sys.argv[1:2] == ["compare"]:
    print(json.dumps(compare(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 5), indent=1))
elif __name__ == "__main__":
    if sys.argv[1:2] == ["pipeline"]:
        print(json.dumps(pipeline_only(sys.argv[2])))
    else:
        print(json.dumps(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15)))
