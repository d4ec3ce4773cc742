"""The store worker: finished calls are kept, and retention runs, in the store's own thread.

A full store (a real tmpfs filled to the brim under ``recordings/``) must lose nothing: the keep
fails loudly, the call's spool files stay, no half-written twin is left, and once there is room
again the next retention run keeps it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import ROOT, resize_tmpfs, small_tmpfs
from generator import SipCall

from capture.pipeline import CapturePipeline
from recorderd.config import load_dids
from storage.keeping import Keeper
from storage.spool import SpoolSink
from storage.store import Store
from storage.worker import StoreWorker

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))
T0 = 1_790_000_000.0


def make_store(root: Path) -> Store:
    store = Store(str(root / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(root / "key"))
    store.init()
    return store.open()


def opener(root: Path):  # type: ignore[no-untyped-def]
    def open_store() -> Store:
        return make_store(root)

    return open_store


def record(store: Store, worker: StoreWorker, calls: int, talk: float = 2.0) -> None:
    pipeline = CapturePipeline(DIDS, SpoolSink(store, worker.keep))
    packets = []
    for i in range(calls):
        call = SipCall(f"worker-{i}", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                       T0 + i, talk=talk, seed=i + 1, caller_media=("203.0.113.20", 40000 + 2 * i),
                       pbx_media=("192.0.2.20", 20000 + 2 * i))
        packets.extend(call.packets())
    pipeline.feed([(t, 1, f) for t, f in sorted(packets, key=lambda p: p[0])])
    pipeline.finish("capture-end")


def test_calls_are_kept_by_the_worker_thread_and_all_are_in_before_close_returns(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    kept_in: set[str] = set()
    keep = Keeper.keep_many

    def spy(self: Keeper, *args: object, **kw: object) -> object:
        kept_in.add(threading.current_thread().name)
        return keep(self, *args, **kw)  # type: ignore[arg-type]

    Keeper.keep_many = spy  # type: ignore[method-assign]
    try:
        worker = StoreWorker(opener(tmp_path))
        worker.start()
        record(store, worker, calls=5)
        worker.stop()
    finally:
        Keeper.keep_many = keep  # type: ignore[method-assign]
    assert kept_in == {"store-worker"}
    assert len(store.reading.recordings()) == 5 and worker.kept == 5 and worker.failed == 0
    assert os.listdir(store.spool_dir) == []


def test_a_full_store_loses_nothing_and_keeps_the_call_once_there_is_room(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(tmp_path)
    with small_tmpfs(Path(store.recordings_dir), "16k") as recordings:
        worker = StoreWorker(opener(tmp_path))
        worker.start()
        with caplog.at_level(logging.CRITICAL):
            record(store, worker, calls=1, talk=3.0)  # ~100 KB of WAV and pcap for 16 KiB of room
            worker.retention()  # still full: the retry fails quietly, nothing is lost
            worker.drain()
        assert worker.failed == 1 and worker.kept == 0
        assert "could not be kept" in caplog.text and "09011112222" not in caplog.text
        spool = sorted(os.listdir(store.spool_dir))
        assert [n.split(".", 1)[1] for n in spool] == ["call.json", "pcap", "wav"]  # all of it, in the spool
        assert not list(recordings.rglob("*.part")) and store.reading.recordings() == []

        resize_tmpfs(recordings, "64m")  # room again
        worker.retention()
        worker.stop()
        [row] = store.reading.recordings()
        assert worker.kept == 1 and row.frames > 3 * 8000 * 0.9 and os.listdir(store.spool_dir) == []
        assert store.integrity.verify() == []  # decrypts, and its SHA-256 matches


def test_the_service_worker_erases_nothing_when_the_wall_clock_is_stepped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The running service's retention (its store thread, each minute) with a clock pair injected:
    the wall clock stepped 20 days ahead erased recordings seconds old; now it stops, CRITICAL."""
    wall = [T0 + 10.0]  # the calls ended seconds ago
    steady = [500.0]

    def open_store() -> Store:
        store = make_store(tmp_path)
        store.clock, store.steady = (lambda: wall[0]), (lambda: steady[0])
        return store

    store = make_store(tmp_path)
    worker = StoreWorker(open_store)
    worker.start()
    try:
        record(store, worker, calls=3)
        worker.retention()
        worker.drain()
        assert len(store.reading.recordings()) == 3
        wall[0] += 20 * 86400 + 1  # the clock set 20 days ahead; one second passed
        steady[0] += 1
        with caplog.at_level(logging.INFO):
            worker.retention()
            worker.drain()
        assert worker.erased == 0 and len(store.reading.recordings()) == 3
        jumps = [r for r in caplog.records if getattr(r, "EVENT", "") == "clock-jump"]
        assert [r.levelname for r in jumps] == ["CRITICAL"]
        assert not [r for r in caplog.records if getattr(r, "EVENT", "") == "recording-erased"]
    finally:
        worker.stop()
