"""Erasure: how fast the retention worker erases a day of recordings, and what an idle run costs.

Run as its own process (``python bench/erasure.py day N SECONDS`` / ``idle ROWS``; JSON out),
each in a temporary store made with the ``Store`` API (as tests/test_retention.py does).

- ``day``: N recordings of SECONDS each, all started on one local date, are kept through
  ``store.keeper.keep`` (a real spool WAV, encrypted, fsynced, indexed, spool copy erased), so they share
  one deadline, as a real day does. ``RetentionWorker(store, clock).run()`` is then timed with a
  clock that reads the deadline when the run starts and moves on with the wall clock, so each
  erasure's ``late_s`` is how long after the deadline it happened. A second, small batch of 1 s
  recordings (next day) gives the fixed cost per recording; the day of the target (1,000 calls of
  3 minutes) is extrapolated as ``calls * (fixed + bytes * seconds-per-byte)``.
- ``idle``: ROWS index rows inserted straight into the SQLite index (one transaction), with an
  empty file at each row's path so the orphan sweep walks a tree of that size, none of them due;
  ``RetentionWorker.run()`` is timed, and its parts: ``Index.due()`` (run() calls it twice),
  ``store.reading.recordings()`` (the orphan sweep loads every row), and the walk + stat of the tree.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.sink import CallInfo  # noqa: E402
from storage import vault, wav  # noqa: E402
from storage.index import COLUMNS, own_conversation  # noqa: E402
from storage.policy import retain_until  # noqa: E402
from storage.retention import PERIOD, RetentionWorker  # noqa: E402
from storage.store import Store  # noqa: E402

TZ = ZoneInfo("Asia/Tokyo")
DAY = datetime(2026, 9, 21, tzinfo=TZ).timestamp()
TARGET_DAY_CALLS = 1000
TARGET_CALL_SECONDS = 180
STREAMS = [
    {"channel": ch, "ssrcs": [0x1000 + ch], "packets": 9000, "expected": 9000, "lost": 0, "duplicates": 0,
     "late_samples": 0, "other_payload": 0, "anchors": [[0x1000 + ch, 12345, 3600]], "jitter_ms": 0.0}
    for ch in (1, 2)
]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class RunningClock:
    """Reads ``start`` when started, then moves with the wall clock."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.origin = time.perf_counter()

    def __call__(self) -> float:
        return self.start + (time.perf_counter() - self.origin)


def new_store(root: str, clock: Clock) -> Store:
    store = Store(os.path.join(root, "store"), tz=TZ, retention_days=14, key_file=os.path.join(root, "master.key"),
                  clock=clock)
    store.init()
    store.open()
    return store


def stored_size(seconds: float) -> int:
    """Bytes of the encrypted file of a recording this long."""
    plain = wav.HEADER_SIZE + 2 * round(seconds * 8000)
    return vault.HEADER + plain + vault.TAG * max(1, math.ceil(plain / vault.CHUNK))


def keep_recordings(store: Store, count: int, seconds: float, day: float, tag: str) -> float:
    """``count`` recordings of ``seconds`` started during office hours of the local date ``day``,
    kept through store.keeper.keep; returns the seconds it took."""
    frames = round(seconds * 8000)
    audio = random.Random(count).randbytes(2 * frames)
    header = wav.header("PCMU", frames)
    started_all = time.perf_counter()
    for i in range(count):
        started = day + 9 * 3600 + i * (9 * 3600 / count)
        call = CallInfo(f"{tag}-{i}@bench", "+81442003939", "bench", "09000000000", started, "PCMU")
        rid = store.layout.new_recording_id(call.call_id, call.did, started)
        spool = os.path.join(store.spool_dir, rid + ".wav")
        with open(spool, "xb") as f:
            f.write(header)
            f.write(audio)
        store.keeper.keep(rid, spool, call, ended_at=started + seconds, frames=frames, complete=True, end_reason="bye",
                          streams=STREAMS)
    return time.perf_counter() - started_all


def walk_tree(top: str) -> tuple[int, float]:
    """Files under ``top`` and the seconds an os.walk + stat of each took (as the orphan sweep does)."""
    started = time.perf_counter()
    n = 0
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n, time.perf_counter() - started


def erase_run(store: Store, deadline: float) -> dict:
    # the boot clock moves with the simulated one: retention's clock check sees days pass, not a jump
    worker = RetentionWorker(store, clock=RunningClock(deadline), steady=RunningClock(deadline))
    started = time.perf_counter()
    report = worker.run()
    seconds = time.perf_counter() - started
    if report.failures:
        raise RuntimeError(f"erasure failed: {report.failures[:3]}")
    overwritten = sum(e.bytes_overwritten for e in report.erased)
    return {
        "erased": len(report.erased),
        "run_s": seconds,
        "bytes_overwritten": overwritten,
        "mb_per_s": overwritten / seconds / 1e6,
        "s_per_recording": seconds / max(1, len(report.erased)),
        "last_erased_late_s": max((e.late_s for e in report.erased), default=0.0),
    }


def day(count: int, seconds: float) -> dict:
    root = tempfile.mkdtemp(prefix="recorderd-bench-erase-")
    try:
        store = new_store(root, Clock(DAY + 86400))
        keep_s = keep_recordings(store, count, seconds, DAY, "day")
        small = max(20, count // 10)
        keep_recordings(store, small, 1.0, DAY + 86400, "small")
        files, walk_s = walk_tree(store.recordings_dir)
        deadline = retain_until(DAY + 12 * 3600, store.retention_days, TZ)
        batch = erase_run(store, deadline)
        fixed = erase_run(store, deadline + 86400)
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if batch["erased"] != count or fixed["erased"] != small:
        raise RuntimeError(f"expected {count} + {small} erasures, got {batch['erased']} + {fixed['erased']}")
    size = batch["bytes_overwritten"] / count
    fixed_s = fixed["s_per_recording"]
    per_byte = max(0.0, (batch["s_per_recording"] - fixed_s) / size)
    target_size = stored_size(TARGET_CALL_SECONDS)
    day_s = TARGET_DAY_CALLS * (fixed_s + per_byte * target_size)
    return {
        "method": f"python bench/erasure.py day {count} {seconds:g}: {count} recordings of {seconds:g} s kept through "
        f"store.keeper.keep on one local date (+ {small} of 1 s on the next), then RetentionWorker(store, clock).run() "
        "timed with time.perf_counter(), the clock reading the deadline when the run starts",
        "recordings": count,
        "seconds_each": seconds,
        "stored_bytes_each": size,
        "keep_s_per_recording": keep_s / count,
        "tree_files": files,
        "tree_walk_s": walk_s,
        "batch": batch,
        "fixed": {**fixed, "recordings": small, "seconds_each": 1.0},
        "fixed_s_per_recording": fixed_s,
        "s_per_mb": per_byte * 1e6,
        "model": f"day = {TARGET_DAY_CALLS} x ({fixed_s * 1000:.1f} ms + {target_size / 1e6:.2f} MB x "
        f"{per_byte * 1e9:.2f} ms/MB)",
        "day_calls": TARGET_DAY_CALLS,
        "day_call_seconds": TARGET_CALL_SECONDS,
        "day_erase_s": day_s,
        "worker_period_s": PERIOD,
    }


def idle(rows: int) -> dict:
    root = tempfile.mkdtemp(prefix="recorderd-bench-idle-")
    try:
        now = DAY + 20 * 3600  # after the day's last call (retention's clock check refuses a clock before it)
        store = new_store(root, Clock(now))
        days = 15  # what 14 days of retention hold
        streams = json.dumps(STREAMS, separators=(",", ":"))
        values = []
        for i in range(rows):
            started = DAY - (i % days) * 86400 + 9 * 3600 + (i // days) * (9 * 3600 / (rows / days + 1))
            rid = f"{datetime.fromtimestamp(started, TZ):%Y%m%d-%H%M%S}-{i:010x}"
            row = {
                "id": rid, "call_id": f"idle-{i}@bench", "did": "+81442003939", "did_label": "bench",
                "caller": "09000000000", "started_at": started, "ended_at": started + 180.0, "codec": "PCMU",
                "channels": 2, "frames": 1_440_000, "size": 2_880_058, "sha256": "0" * 64,
                "retain_until": retain_until(started, 14, TZ), "state": "complete", "end_reason": "bye",
                "path": store.layout.relative_path(rid, started), "streams": streams, "created_at": started + 181.0,
                "wrapped_key": os.urandom(60), "erasing_at": None, "audio": "exact", "rate": 8000,
                "pcap_path": "", "pcap_sha256": "", "pcap_size": 0, "sealed": b"",  # no personal fields
                "conversation": own_conversation(rid), "part": 1, "part_reason": "",  # each call a conversation
                "conversation_start": started, "conversation_first": rid,
            }
            values.append([row[c] for c in COLUMNS])
        db = store.db().db
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO recordings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       values)
        db.execute("COMMIT")
        insert_s = time.perf_counter() - started
        made = set()
        for v in values:
            path = os.path.join(store.recordings_dir, v[COLUMNS.index("path")])
            folder = os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                made.add(folder)
            open(path, "xb").close()
        del values
        worker = RetentionWorker(store)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            report = worker.run()
            runs.append(time.perf_counter() - t)
            if report.erased or report.orphans:
                raise RuntimeError("the idle store had something to erase")
            if report.clock_jump is not None:  # a stopped run is no measure of an idle one
                raise RuntimeError(f"retention stopped: {report.clock_jump}")
        index = store.db()
        parts: dict[str, list[float]] = {"due_s": [], "recordings_s": [], "walk_s": []}
        for _ in range(3):
            t = time.perf_counter()
            index.due(now)
            parts["due_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            store.reading.recordings()
            parts["recordings_s"].append(time.perf_counter() - t)
            files, walk_s = walk_tree(store.recordings_dir)
            parts["walk_s"].append(walk_s)
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run_s = statistics.median(runs)
    return {
        "method": f"python bench/erasure.py idle {rows}: {rows} rows inserted into index.sqlite in one transaction "
        f"({insert_s:.1f} s) + an empty file at each path, none due; median of 3 RetentionWorker.run() "
        "(time.perf_counter()); parts timed alone, median of 3",
        "rows": rows,
        "tree_files": files,
        "run_s": run_s,
        "runs_s": runs,
        "due_s": statistics.median(parts["due_s"]),
        "recordings_s": statistics.median(parts["recordings_s"]),
        "walk_s": statistics.median(parts["walk_s"]),
        "share_of_a_core_at_period": run_s / PERIOD,
        "worker_period_s": PERIOD,
    }


def run_child(*args: object) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "day":
        print(json.dumps(day(int(sys.argv[2]), float(sys.argv[3]))))
    elif sys.argv[1] == "idle":
        print(json.dumps(idle(int(sys.argv[2]))))
    else:
        sys.exit(f"usage: {sys.argv[0]} day N SECONDS | idle ROWS")
