"""The evidence pcap's SHA-256 taken as it is written (issue 13: keeping reads nothing back): the
file is only appended to, so its writer hashes each record's plaintext as it seals it and the keep
indexes that digest; a file its writer could not finish is read back as before."""
from __future__ import annotations

import hashlib
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
    file as it stands (its whole records)."""
    key = AESGCM.generate_key(bit_length=256)
    store = new_store(tmp_path)
    try:
        with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
            errors: list[OSError] = []
            path = str(tiny / "call.pcap")
            pcap = EvidencePcap(path, AESGCM(key), errors.append)
            frame = bytes(42) + random.Random(1).randbytes(172)
            for i in range(2000):
                pcap.add(T0 + i * 0.02, 1, frame)
            pcap.close()
            assert errors and pcap.digest is None
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
