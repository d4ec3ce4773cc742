"""The store worker keeps the calls queued together (storage/keeping.py ``Keeper.keep_many``): their
files fsynced together, each store folder and the spool folder fsynced once for the batch instead of
four folder fsyncs per call, and a call that fails in a batch fails alone (its spool files stay,
it is tried again) while the others are kept."""
from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from generator import SipCall
from test_store_worker import DIDS, T0, make_store, opener

from capture.pipeline import CapturePipeline
from storage.spool import SpoolSink
from storage.store import Store
from storage.worker import StoreWorker


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """What each real fsync(2) of the process was of: "dir" or "file" (the call still runs)."""
    seen: Counter[str] = Counter()
    real = os.fsync

    def counting(fd: int) -> None:
        seen["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    yield seen


def queue_calls(store: Store, worker: StoreWorker, calls: int) -> None:
    pipeline = CapturePipeline(DIDS, SpoolSink(store, worker.keep))
    packets = []
    for i in range(calls):
        call = SipCall(f"batch-{i}", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                       T0 + i, talk=1.0, seed=i + 1, caller_media=("203.0.113.20", 40000 + 2 * i),
                       pbx_media=("192.0.2.20", 20000 + 2 * i))
        packets.extend(call.packets())
    pipeline.feed([(t, 1, f) for t, f in sorted(packets, key=lambda p: p[0])])
    pipeline.finish("capture-end")


def test_calls_queued_together_fsync_each_folder_once(tmp_path: Path, fsyncs: Counter[str]) -> None:
    store = make_store(tmp_path)
    worker = StoreWorker(opener(tmp_path))
    queue_calls(store, worker, 6)  # all six queued before the worker takes the first
    fsyncs.clear()
    worker.start()
    worker.stop()
    rows = store.reading.recordings()
    assert len(rows) == 6 and worker.kept == 6 and os.listdir(store.spool_dir) == []
    assert store.integrity.verify() == []  # the SHA-256s taken in the batch are the files'
    assert fsyncs["file"] == 12  # each WAV and pcap before its rename
    # one store folder (the calls' day) and the spool once; was 4 a call (24): the folder per file
    # renamed, the spool after the renames and again after the spool files were removed
    assert fsyncs["dir"] == 2


def test_a_call_that_fails_in_a_batch_fails_alone(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    worker = StoreWorker(opener(tmp_path))
    queue_calls(store, worker, 4)
    spool = Path(store.spool_dir)
    [victim] = sorted(spool.glob("*.wav"))[1:2]
    data = bytearray(victim.read_bytes())
    data[200] ^= 1  # a record of its WAV altered on disk: that keep fails authentication
    victim.write_bytes(data)
    worker.start()
    worker.stop()
    rid = victim.name[: -len(".wav")]
    kept = {row.id for row in store.reading.recordings()}
    assert len(kept) == 3 and rid not in kept and worker.kept == 3 and worker.failed == 1
    assert sorted(p.name for p in spool.iterdir()) == sorted(rid + s for s in (".call.json", ".pcap", ".wav"))
    assert store.integrity.verify() == []


def test_a_file_whose_fsync_fails_fails_its_call_alone_while_the_others_hash_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fsyncs of a batch run on threads while the store's thread hashes the files: a disk error
    on one call's WAV (EIO from its fsync) fails that call alone (its spool files stay, for the next
    try), whatever the order the fsyncs end in, and the others are kept with their digests."""
    store = make_store(tmp_path)
    worker = StoreWorker(opener(tmp_path))
    queue_calls(store, worker, 5)
    spool = Path(store.spool_dir)
    [victim] = sorted(spool.glob("*.wav"))[2:3]
    bad = os.stat(victim).st_ino
    real = os.fsync

    def failing(fd: int) -> None:
        if os.fstat(fd).st_ino == bad:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    worker.start()
    worker.stop()
    rid = victim.name[: -len(".wav")]
    kept = {row.id for row in store.reading.recordings()}
    assert len(kept) == 4 and rid not in kept and worker.kept == 4 and worker.failed >= 1
    assert (spool / (rid + ".wav")).exists() and (spool / (rid + ".pcap")).exists()
    monkeypatch.undo()
    assert store.integrity.verify() == []  # every digest kept is the file's
