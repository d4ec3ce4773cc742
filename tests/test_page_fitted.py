"""The spool's records fitted to end on a page (storage/spool.py ``_on_a_page``, storage/evidence.py
``flush``, storage/sealed.py ``past_page``). The daemon syncs its file system every second; a
spool file whose last page was written back half full had that page written again once the next
record filled it (the live bench: 1.23 bytes written per byte stored). Now each write of a call's
WAV and evidence pcap ends on a page boundary of the file and nothing sealed is held back: the
pcap seals its buffer up to the boundary (a packet may be cut there) and keeps the rest, the WAV
writes its frames up to the nearest boundary. What must hold: every byte as captured, each write
but the call's last ending on a page, a crash losing no more than the spool's ~1 s bound, crash
recovery cutting the pcap at its last whole packet."""
from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_sealed import new_store, record

from capture.source import CaptureFile
from storage import sealed, wav
from storage.evidence import EvidencePcap, whole_packets
from storage.recovery import recover_spool
from storage.spool import FLUSH_AT

KEY = bytes(range(32))
T0 = 1_780_000_000.0


def writes_of(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[tuple[int, int]]:
    """(file position, bytes) of every write the sealed writers make to ``path`` from here on."""
    seen: list[tuple[int, int]] = []
    real_pwrite, real_pwritev = os.pwrite, os.pwritev

    def mine(fd: int) -> bool:
        return os.path.realpath(f"/proc/self/fd/{fd}") == str(path)

    def pwrite(fd: int, data: bytes, pos: int) -> int:
        if mine(fd):
            seen.append((pos, len(data)))
        return real_pwrite(fd, data, pos)

    def pwritev(fd: int, buffers: list, pos: int) -> int:
        if mine(fd):
            seen.append((pos, sum(len(b) for b in buffers)))
        return real_pwritev(fd, buffers, pos)

    monkeypatch.setattr(sealed.os, "pwrite", pwrite)
    monkeypatch.setattr(sealed.os, "pwritev", pwritev)
    return seen


def frames_of(blob: bytes, tmp_path: Path) -> list[bytes]:
    path = tmp_path / "plain.pcap"
    path.write_bytes(blob)
    with CaptureFile(path) as capture:
        return [bytes(f) for b in capture.batches() for _, _, f in b]


def test_the_evidence_pcap_writes_end_on_a_page_and_keep_every_packet_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "call.pcap"
    rnd = random.Random(5)
    frames = [bytes(42) + rnd.randbytes(rnd.choice((172, 172, 172, 60, 900))) for _ in range(3000)]
    seen = writes_of(monkeypatch, path)
    pcap = EvidencePcap(str(path), AESGCM(KEY))
    for i, frame in enumerate(frames):
        pcap.add(T0 + i * 0.02, 1, frame)
        if seen and len(pcap.buf) < 16:  # a write just happened
            assert os.fstat(pcap.fd).st_size % sealed.PAGE == 0 and len(pcap.buf) < sealed.PAGE + 16 + 900
    writes = list(seen)
    pcap.close()
    assert len(writes) > 30 and all((pos + n) % sealed.PAGE == 0 for pos, n in writes)  # the call's last is after
    with sealed.SealedFile(str(path), KEY, "call.pcap") as f:
        blob = b"".join(f.plaintext())
    assert frames_of(blob, tmp_path) == frames  # every packet once, in order, though records cut packets
    assert pcap.digest == (hashlib.sha256(blob).hexdigest(), len(blob))  # still taken as written


def test_a_crashed_evidence_pcap_is_recovered_up_to_its_last_whole_packet(tmp_path: Path) -> None:
    """The writer dies (its descriptor closed by the kernel: no FINAL): the file's last record
    ends on a page, most likely inside a packet; crash recovery's FINAL cuts the pcap there, and
    what is kept is a valid capture of the first packets, every one whole."""
    path = tmp_path / "call.pcap"
    frames = [bytes(42) + bytes([i % 251]) * 172 for i in range(1500)]
    pcap = EvidencePcap(str(path), AESGCM(KEY))
    for i, frame in enumerate(frames):
        pcap.add(T0 + i * 0.02, 1, frame)
    os.close(pcap.fd)
    length = sealed.finish(str(path), KEY, "call.pcap", pcap_whole=whole_packets)
    with sealed.SealedFile(str(path), KEY, "call.pcap") as f:
        blob = b"".join(f.plaintext())
    kept = frames_of(blob, tmp_path)
    assert len(blob) == length == 24 + len(kept) * (16 + 214)
    assert kept == frames[: len(kept)] and len(frames) - len(kept) <= (18 * 1024) // 230 + 1  # ~0.85 s lost at most


def test_whole_packets_finds_the_end_of_the_last_whole_record_however_the_stream_is_cut() -> None:
    rnd = random.Random(9)
    header = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)
    records, ends = [header], [24]
    for _ in range(200):
        n = rnd.randint(1, 1500)
        records.append(struct.pack("<IIII", 1, 2, n, n) + rnd.randbytes(n))
        ends.append(ends[-1] + 16 + n)
    stream = b"".join(records)
    for _ in range(300):
        cut = rnd.randint(0, len(stream))
        data = stream[:cut]
        pieces, i = [], 0
        while i < len(data):  # cut into pieces anywhere, record headers included
            step = rnd.randint(1, 5000)
            pieces.append(data[i : i + step])
            i += step
        expected = max([e for e in ends if e <= cut], default=0)
        assert whole_packets(pieces) == expected, cut
    damaged = header + struct.pack("<IIII", 1, 2, 10**9, 10**9) + bytes(100)
    assert whole_packets([damaged]) == 24  # a length no record has: nothing after it kept


def test_the_wav_writes_end_on_a_page_and_its_audio_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A minute of a call through the spool (with a late payload after a stall): nearly every one
    of the WAV's writes during the call ends on a page (the first, its header, and the last are
    the call's), and the kept audio is byte for byte what was sent."""
    store = new_store(tmp_path)
    try:
        spool = Path(store.spool_dir)
        seen: list[tuple[int, int]] = []
        real = os.pwritev

        def pwritev(fd: int, buffers: list, pos: int) -> int:
            if os.path.realpath(f"/proc/self/fd/{fd}").endswith(".wav"):
                seen.append((pos, sum(len(b) for b in buffers)))
            return real(fd, buffers, pos)

        monkeypatch.setattr(sealed.os, "pwritev", pwritev)
        rec, chans = record(store, 60)
        monkeypatch.undo()
        data_writes = seen[:-1]  # the last: the call's end (its final frames, then the final header)
        on_page = [w for w in data_writes if sum(w) % sealed.PAGE == 0]
        assert len(data_writes) > 40 and len(on_page) >= len(data_writes) - 3, data_writes
        [row] = store.reading.recordings()
        audio = b"".join(store.reading.plaintext(row))
        assert wav.channel_bytes(audio, 1) == chans[0] and wav.channel_bytes(audio, 2) == chans[1]
        assert not list(spool.iterdir())
    finally:
        store.close()


def test_a_crash_mid_call_loses_at_most_the_buffers_second(tmp_path: Path) -> None:
    """The process dies mid-call (descriptors closed by the kernel): the recovered WAV is the call's
    audio, exact, short of no more than the buffers held (FLUSH_AT, 1 s): nothing sealed is held
    back in memory, the frames past a page wait in the buffers, which are written at FLUSH_AT."""
    store = new_store(tmp_path)
    try:
        seconds = 12
        rec, chans = record(store, seconds, end=False)
        for fd in (rec.file.fd, rec.sidecar.fd, rec.evidence.fd):  # type: ignore[attr-defined]
            os.close(fd)
        [rid] = recover_spool(store)
        got = wav.channel_bytes(b"".join(store.reading.plaintext(store.reading.get(rid))), 1)
        assert got == chans[0][: len(got)]
        assert 8000 * seconds - len(got) <= FLUSH_AT
    finally:
        store.close()
