"""The evidence pcap's SHA-256 taken as it is written (issue 13: keeping reads nothing back): the
file is only appended to, so its writer hashes each record's plaintext as it seals it and the keep
indexes that digest; a file its writer could not finish is read back as before."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from conftest import small_tmpfs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_sealed import new_store, record

from capture.source import CaptureFile
from storage import sealed
from storage.evidence import EvidencePcap

T0 = 1_790_000_000.0


def test_keeping_a_call_reads_nothing_of_its_evidence_pcap_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call recorded through SpoolSink into a real store: while it is kept, none of its pcap's
    DATA records is read and decrypted, only the FINAL that gives its length (the WAV's all are: its
    header is written last), and the indexed pcap digest is that of the pcap as exported, as the
    WAV's is."""
    store = new_store(tmp_path)
    opened: list[tuple[str, int]] = []  # (file, kind of the record decrypted)
    real = sealed.open_record

    def spy(fd: int, aes: AESGCM, found: sealed.Scan, seq: int, name: str) -> bytes:
        opened.append((name, found.records[seq][3]))
        return real(fd, aes, found, seq, name)

    monkeypatch.setattr(sealed, "open_record", spy)
    try:
        record(store, 12)
        [row] = store.reading.recordings()
        pcap_reads = [kind for name, kind in opened if name.endswith(".pcap")]
        assert pcap_reads == [sealed.FINAL], pcap_reads  # only its FINAL (the length it vouches for)
        wav_reads = [kind for name, kind in opened if name.endswith(".wav")]
        assert wav_reads.count(sealed.DATA) >= 12  # the WAV read back whole: its header is written last
        pcap = b"".join(store.reading.plaintext(row, pcap=True))
        assert hashlib.sha256(pcap).hexdigest() == row.pcap_sha256 and len(pcap) == row.pcap_size
        data = b"".join(store.reading.plaintext(row))
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert store.integrity.check(row) is None  # verify reads both and agrees
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(4))
def test_the_writers_digest_is_the_files_whatever_the_flushes(tmp_path: Path, seed: int) -> None:
    """Frames of random sizes, flushed when the buffer fills and at random moments: the digest the
    writer gives on close is the SHA-256 and the size of the plaintext read back from the file."""
    rnd = random.Random(seed)
    key = AESGCM.generate_key(bit_length=256)
    pcap = EvidencePcap(str(tmp_path / "call.pcap"), AESGCM(key))
    for i in range(rnd.randrange(1, 600)):
        pcap.add(T0 + i * 0.02, 1, rnd.randbytes(rnd.randrange(42, 1500)))
        if rnd.random() < 0.05:
            pcap.flush()
    assert pcap.close() == str(tmp_path / "call.pcap")
    assert pcap.digest is not None
    with sealed.SealedFile(str(tmp_path / "call.pcap"), key, "call.pcap") as f:  # as the store reads it
        blob = b"".join(f.plaintext())
    assert pcap.digest == (hashlib.sha256(blob).hexdigest(), len(blob))
    with CaptureFile(_write(tmp_path / "plain.pcap", blob)) as capture:  # and it is a valid capture
        assert sum(len(b) for b in capture.batches()) > 0


def test_a_pcap_whose_write_failed_gives_no_digest_and_the_keep_hashes_the_file(tmp_path: Path) -> None:
    """A real full file system (64 KiB tmpfs): the writer seals nothing after the refused write, so
    a digest of what it was given would not be the file's; it gives none, and the keep hashes the
    file as it stands (its whole records). The keep's FINAL needs room: the writes end on a page,
    so a file system full to its last page has none for it until something is freed (the test
    frees a file of its own, as an erasure would; the keep of a full store is retried)."""
    key = AESGCM.generate_key(bit_length=256)
    store = new_store(tmp_path)
    try:
        with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
            filler = tiny / "filler"
            filler.write_bytes(bytes(8192))
            errors: list[OSError] = []
            path = str(tiny / "call.pcap")
            pcap = EvidencePcap(path, AESGCM(key), errors.append)
            frame = bytes(42) + random.Random(1).randbytes(172)
            for i in range(2000):
                pcap.add(T0 + i * 0.02, 1, frame)
            pcap.close()
            assert errors and pcap.digest is None
            filler.unlink()
            placed = store.keeper._open_sealed(path, "2026/01/01/x.pcap.rdv", key, pcap.digest)
            try:
                with sealed.SealedFile(path, key, "call.pcap") as f:
                    blob = b"".join(f.plaintext())
                assert 0 < len(blob) < 2000 * len(frame)
                assert placed.digest() == (hashlib.sha256(blob).hexdigest(), len(blob))
            finally:
                placed.close()
    finally:
        store.close()


def test_a_known_digest_of_another_length_than_the_file_is_not_trusted(tmp_path: Path) -> None:
    """The keep takes the writer's digest only for a file as long as the writer said: given one for
    a file of another length (not the file its writer finished), it reads the file instead."""
    store = new_store(tmp_path)
    try:
        aes_key = bytes(range(32))
        path = str(Path(store.spool_dir) / "x.pcap")
        pcap = EvidencePcap(path, AESGCM(aes_key))
        for i in range(300):
            pcap.add(T0 + i * 0.02, 1, bytes(42) + bytes([i % 256]) * 172)
        pcap.close()
        assert pcap.digest is not None
        right = pcap.digest
        wrong = ("0" * 64, right[1] + 1)
        placed = store.keeper._open_sealed(path, "2026/01/01/x.pcap.rdv", aes_key, wrong)
        try:
            assert placed.digest() == right  # read from the file, not the wrong one given
        finally:
            placed.close()
        placed = store.keeper._open_sealed(path, "2026/01/01/x.pcap.rdv", aes_key, right)
        try:
            assert placed.digest() == right
        finally:
            placed.close()
    finally:
        store.close()


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


class _InterruptedOnce:
    """hashlib's sha256, whose first update is interrupted (Ctrl-C of a replay landing after the
    record reached the file, before it was hashed)."""

    def __init__(self) -> None:
        self.sha, self.armed = hashlib.sha256(), True

    def update(self, data: bytes) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.sha.update(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def test_a_flush_interrupted_after_its_write_gives_no_digest_and_writes_nothing_twice(tmp_path: Path) -> None:
    """The interrupted record is on the file once (the buffer is not written again at close), and
    the writer, whose hash lacks it, gives no digest: the keep reads the file (found by review)."""
    key = AESGCM.generate_key(bit_length=256)
    path = str(tmp_path / "call.pcap")
    pcap = EvidencePcap(path, AESGCM(key))
    pcap._sha = _InterruptedOnce()
    frames = [bytes(42) + bytes([i % 256]) * 172 for i in range(200)]
    with pytest.raises(KeyboardInterrupt):
        for i, frame in enumerate(frames):
            pcap.add(T0 + i * 0.02, 1, frame)
    sent = i + 1
    for j in range(sent, 200):  # the call goes on after the interruption (the service's shutdown path)
        pcap.add(T0 + j * 0.02, 1, frames[j])
    pcap.close()
    assert pcap.digest is None
    with sealed.SealedFile(path, key, "call.pcap") as f:
        blob = b"".join(f.plaintext())
    with CaptureFile(_write(tmp_path / "plain.pcap", blob)) as capture:
        kept = [bytes(fr) for b in capture.batches() for _, _, fr in b]
    assert kept == frames  # every frame once, in order


def test_a_renamed_pcap_damaged_before_its_index_row_stops_neither_recovery_nor_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A keep that died between renaming a call's files into the store and its index row, and the
    renamed pcap damaged since (the keep no longer reads it back): recovery at the next start
    leaves that recording for a technician, said, and still keeps the other call left in the
    spool; it raised out of recover_spool before (the daemon could not start; found by review)."""
    from storage.keeping import Keeper
    from storage.recovery import recover_spool

    store = new_store(tmp_path)
    try:
        def died(self: Keeper, ready: object, results: object) -> None:
            raise RuntimeError("killed between the rename and the index row")

        with monkeypatch.context() as m:
            m.setattr(Keeper, "_index_all", died)
            with pytest.raises(RuntimeError):
                record(store, 6)
        [pcap] = Path(store.layout.recordings_dir).rglob("*.pcap.rdv")
        fd = os.open(pcap, os.O_RDWR)
        try:  # one bit of the second record's ciphertext flipped
            found = sealed.scan(fd, "pcap")
            _, n, pos, _ = found.records[1]
            at = pos + sealed.RECORD + sealed.NONCE + n // 2
            os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 1]), at)
        finally:
            os.close(fd)
        record(store, 4, end=False, started=T0 + 100)  # another call, in the spool at the "crash"
        recovered = recover_spool(store)
        rows = store.reading.recordings()
        assert len(recovered) == 1 and [r.id for r in rows] == recovered  # the other call kept
        left = sorted(p.name for p in Path(store.spool_dir).iterdir())
        assert left and all(name.startswith(pcap.name[: -len(".pcap.rdv")]) for name in left)  # the damaged one waits
    finally:
        store.close()
