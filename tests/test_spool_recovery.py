"""The spool's call sidecar and recovery after kill -9 (issue 16, items 19 and 18): a recording
recovered after the service died keeps its quality figures and DTMF events up to their last save
and says what may be missing; a full disk leaves no empty or partial sidecar."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from conftest import ROOT, small_tmpfs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import sealed, vault
from storage.recovery import REASON, recover_spool
from storage.sidecar import SIDECAR, STAGING, CallSidecar, read_sidecar
from storage.store import Store

T0 = 1_790_000_000.0

# A real process records a call (the caller keys 7 at 1 s, 3 at 7 s; 72 s of audio) and is killed
# with SIGKILL in the middle of it: nothing of it runs after, as with kill -9 on the service.
KILLED_MID_CALL = """
import os, signal, sys
from zoneinfo import ZoneInfo
sys.path[:0] = [{root!r}, {fixtures!r}]
from generator import SipCall
from capture.pipeline import CapturePipeline
from recorderd.config import load_dids
from storage.spool import SpoolSink
from storage.store import Store

store = Store({store!r}, tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file={key!r})
store.open()
pipeline = CapturePipeline(load_dids({dids!r}), SpoolSink(store))
call = SipCall("killed-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", {t0!r},
               talk=72.0, seed=5, dtmf=((50, "7"), (350, "3")))
bye = call.end_time
pipeline.feed([(t, 1, f) for t, f in sorted(call.packets(), key=lambda p: p[0]) if t < bye])
os.kill(os.getpid(), signal.SIGKILL)
"""


def fill(path: Path) -> None:
    """Fill a file system to its last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def store_at(root: Path) -> Store:
    store = Store(str(root / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(root / "key"))
    store.init()
    return store


def test_a_recording_recovered_after_kill_9_keeps_its_figures_and_dtmf_and_says_what_may_be_missing(
        tmp_path: Path) -> None:
    store = store_at(tmp_path)
    script = KILLED_MID_CALL.format(root=str(ROOT), fixtures=str(ROOT / "pcap_fixtures"), store=store.root,
                                    key=store.key_file, dids=str(ROOT / "config" / "dids.yaml"), t0=T0)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert any(n.endswith(SIDECAR) for n in os.listdir(store.spool_dir))
    store.open()
    try:
        [recording_id] = recover_spool(store)
        row = store.reading.get(recording_id)
    finally:
        store.close()
    assert row.state == "incomplete"
    assert row.end_reason.startswith(REASON) and "quality figures and DTMF events up to the last save" in row.end_reason
    streams = {s["channel"]: s for s in row.streams}
    assert set(streams) == {1, 2}
    # 72 s of audio reached the spool; the figures were saved at 1 s, then every 30 s of it (50
    # packets a second): at least 42 s' worth, never more than was written
    assert 2100 <= streams[1]["packets"] <= 3600 and 2100 <= streams[2]["packets"] <= 3600
    assert streams[1]["lost"] == 0 and streams[1]["ssrcs"] == [0x1005]
    assert [e[1] for e in streams[1]["dtmf"]] == ["7", "3"]
    assert streams[1]["dtmf"][0][0] == pytest.approx(1.05, abs=0.01)  # s into the recording
    assert streams[2]["dtmf"] == []


MASTER = bytes(range(32))


def new_sidecar(base: str, call: object) -> CallSidecar:
    """A sidecar as a recording opens it: its own data key, wrapped by the master key."""
    data_key = vault.new_data_key()
    return CallSidecar(base, call, recording_id="r", aes=AESGCM(data_key), wrapped=vault.wrap(MASTER, data_key, "r"))


def test_a_cut_last_line_leaves_the_figures_of_the_line_before(tmp_path: Path) -> None:
    """A crash in the middle of a save: the sidecar's last record is cut; recovery reads the one
    before it, DTMF events merged from every line (the last one may have grown longer). Nothing of
    the call is in the file in the clear."""
    call = SimpleNamespace(call_id="call-id-in-clear?", did="+81442003939", did_label="L", caller="09011112222",
                           started_at=T0, codec="PCMU", clock_rate=8000, channels=1)
    sidecar = new_sidecar(str(tmp_path / "r"), call)
    stream = {"channel": 1, "packets": 10, "dtmf": [[1.0, "5", 40.0]]}
    sidecar.progress([stream, {"channel": 2, "packets": 9, "dtmf": []}])
    sidecar.progress([{**stream, "packets": 20, "dtmf": [[1.0, "5", 120.0], [2.0, "#", 60.0]]},
                      {"channel": 2, "packets": 19, "dtmf": []}])
    sidecar.progress([{**stream, "packets": 30}, {"channel": 2, "packets": 29, "dtmf": []}])
    sidecar.close()
    path = tmp_path / ("r" + SIDECAR)
    whole = path.read_bytes()
    for secret in (b"09011112222", b"call-id-in-clear?", b"packets", b"dtmf"):
        assert secret not in whole
    meta, streams, keys = read_sidecar(str(path), MASTER)
    assert meta["caller"] == "09011112222" and [s["packets"] for s in streams] == [30, 29]  # type: ignore[union-attr]
    assert keys is not None
    path.write_bytes(whole[:-7])  # the last save cut short
    meta, streams, _ = read_sidecar(str(path), MASTER)
    assert [s["packets"] for s in streams] == [20, 19]  # type: ignore[union-attr]
    assert streams[0]["dtmf"] == [[1.0, "5", 120.0], [2.0, "#", 60.0]]  # type: ignore[index]
    fd = os.open(path, os.O_RDONLY)
    first_record_end = sealed.scan(fd, "r", base=whole.index(b"\n") + 1).records[1][2]
    os.close(fd)
    path.write_bytes(whole[:first_record_end])  # no save yet
    assert read_sidecar(str(path), MASTER) == (meta, None, keys)
    path.write_bytes(whole[: first_record_end - 1])  # died in the first write: no recording's
    with pytest.raises(ValueError):
        read_sidecar(str(path), MASTER)


def test_a_full_store_leaves_no_empty_or_partial_sidecar(tmp_path: Path) -> None:
    """The store's disk full (a real 1 MiB tmpfs filled to the last block): the call cannot be
    recorded, and neither a 0-byte sidecar (found by review) nor its staging copy is left."""
    from storage.spool import SpoolSink

    with small_tmpfs(tmp_path / "tiny", "1m") as tiny:
        store = store_at(tiny)
        store.open()
        try:
            fill(tiny / "filler")
            call = SimpleNamespace(call_id="full-1", did="+81442003939", did_label="L", caller="09011112222",
                                   started_at=T0, codec="PCMU", clock_rate=8000, channels=1)
            with pytest.raises(OSError):
                SpoolSink(store).call_started(call)
            assert os.listdir(store.spool_dir) == []
        finally:
            store.close()


def test_a_save_the_disk_cannot_take_is_cut_back(tmp_path: Path) -> None:
    """A save that meets a full disk leaves the sidecar as it was (no partial line), and no
    further saves are tried."""
    with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
        call = SimpleNamespace(call_id="c", did="+81442003939", did_label="L", caller="09011112222", started_at=T0,
                               codec="PCMU", clock_rate=8000, channels=1)
        sidecar = new_sidecar(str(tiny / "r"), call)
        sidecar.progress([{"channel": 1, "packets": 1, "dtmf": []}])
        kept = (tiny / ("r" + SIDECAR)).read_bytes()
        fill(tiny / "filler")
        sidecar.progress([{"channel": 1, "packets": 2, "dtmf": [[0.5, "1", 40.0]] * 500}])  # ~10 KB: does not fit
        assert sidecar.failed
        sidecar.close()
        assert (tiny / ("r" + SIDECAR)).read_bytes() == kept
        assert [s["packets"] for s in read_sidecar(str(tiny / ("r" + SIDECAR)), MASTER)[1]] == [1]  # type: ignore[union-attr]


def test_recovery_erases_a_staging_sidecar(tmp_path: Path) -> None:
    """Death while the first line was written: the staging copy is no call's and goes."""
    store = store_at(tmp_path)
    store.open()
    try:
        staging = Path(store.spool_dir) / ("20260921-231320-0123456789" + STAGING)
        staging.write_text(json.dumps({"call_id": "x"})[:5])
        assert recover_spool(store) == []
        assert os.listdir(store.spool_dir) == []
    finally:
        store.close()
