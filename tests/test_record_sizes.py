"""How much of a recording waits in memory before it is written (storage/spool.py ``RecordSizes``):
the service writes ~1 s records (``LIVE``: what a crash may lose), ``recorderd replay`` ~4 s ones
(``IMPORT``: a quarter of the records). What must hold: the same bytes either way, every one as it
crossed the wire (reordered, late, duplicated, lost packets and a DTMF event included), and the
import's files really made of fewer, larger records."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from conftest import Site

from storage import sealed, spool, wav

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "pcap_fixtures"))
from frames import write_pcap  # noqa: E402
from generator import SipCall  # noqa: E402

T0 = 1_780_000_000.0


def calls() -> list[SipCall]:
    """Two 25 s calls to a designated number: one with packets reordered a little and a lot (one
    arrives 0.9 s late: past the service's reorder margin, a late patch of frames it has written),
    lost, duplicated and a DTMF event; one clean, overlapping it."""
    messy = SipCall("sizes-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222", T0,
                    talk=25.0, seed=3, reorder=((40, 41), (300, 345), (700, 703)), lose=(90, 91, 1000),
                    duplicate=(120, 121, 800), dtmf=((600, "5"),))
    clean = SipCall("sizes-2", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09033334444", T0 + 3,
                    talk=25.0, seed=4, caller_media=("203.0.113.21", 40002), pbx_media=("192.0.2.21", 20002))
    return [messy, clean]


def replayed(root: Path, pcap: Path, sizes: spool.RecordSizes, monkeypatch: pytest.MonkeyPatch) -> Site:
    root.mkdir()
    site = Site(root).init()
    with monkeypatch.context() as m:
        m.setattr(spool, "IMPORT", sizes)  # what recorderd replay hands its pipeline
        assert site.replay(pcap) == 0
    return site


def kept(site: Site) -> dict[str, tuple[bytes, bytes, str, Path, Path, int]]:
    """Each recording's WAV and evidence pcap (decrypted by the store), its WAV's digest in the
    index, its two files in the store and the samples it placed late (patched over frames written)."""
    store = site.open_store()
    try:
        out = {}
        for row in store.reading.recordings():
            assert row.state == "complete"
            out[row.id] = (b"".join(store.reading.plaintext(row)), b"".join(store.reading.plaintext(row, pcap=True)),
                           row.sha256, Path(store.layout.file_path(row)), Path(store.layout.file_path(row, True)),
                           sum(s["late_samples"] for s in row.streams))
        return out
    finally:
        store.close()


def record_lengths(path: Path) -> list[int]:
    """The plaintext length of each DATA record of a sealed file (from its clear headers)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        found = sealed.scan(fd, path.name)
    finally:
        os.close(fd)
    return [n for _, n, _, kind in found.records if kind == sealed.DATA]


def test_a_replay_writes_fewer_larger_records_of_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = calls()
    pcap = tmp_path / "calls.pcap"
    write_pcap(str(pcap), sorted((p for c in made for p in c.packets()), key=lambda p: p[0]))
    live = kept(replayed(tmp_path / "live", pcap, spool.LIVE, monkeypatch))
    imported = kept(replayed(tmp_path / "import", pcap, spool.IMPORT, monkeypatch))
    assert len(imported) == 2 and imported.keys() == live.keys()  # (the ids are the calls')
    expected = {tuple(c.expected_channels()) for c in made}
    assert sorted(v[5] > 0 for v in live.values()) == [False, True]  # the service's records: the messy call patched
    for rid, (audio, packets, digest, wav_file, pcap_file, _) in imported.items():
        live_audio, live_packets, live_digest, live_wav, live_pcap, _ = live[rid]
        assert audio == live_audio and packets == live_packets  # the same bytes, in both files
        assert digest == live_digest == hashlib.sha256(audio).hexdigest()
        assert (wav.channel_bytes(audio, 1), wav.channel_bytes(audio, 2)) in expected  # every byte as it crossed the wire
        for ours, theirs in ((wav_file, live_wav), (pcap_file, live_pcap)):
            mine, before = record_lengths(ours), record_lengths(theirs)
            assert 3 * len(mine) <= len(before), (ours.name, len(mine), len(before))
            assert max(mine) > 48 * 1024 and max(before) <= 20 * 1024, (ours.name, max(mine), max(before))

