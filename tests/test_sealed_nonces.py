"""RDS1's nonces and its one-pass digest (storage/sealed.py).

A writer's nonces are its own 8 random bytes and the record's seq: never two alike under one key,
however many files the key seals and however often a crash-cut file is resumed (the resumed writer
seals the seqs past the cut again, under a new prefix). ``SealedFile.digest`` is the SHA-256 of the
plaintext as every reader sees it, each record decrypted once and every tag checked (the keep's
read-back)."""
from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import sealed

KEY = bytes(range(32))


def nonces(path: Path) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        found = sealed.scan(fd, "t")
        return [os.pread(fd, sealed.NONCE, pos + sealed.RECORD) for _, _, pos, _ in found.records]
    finally:
        os.close(fd)


def test_a_writers_nonces_are_its_prefix_and_the_seq_and_a_resumed_file_never_reuses_one(tmp_path: Path) -> None:
    aes = AESGCM(KEY)
    paths = [tmp_path / "wav", tmp_path / "pcap", tmp_path / "call"]
    for path, kind in zip(paths, (sealed.WAV, sealed.PCAP, sealed.CALL), strict=True):  # one key, three files
        w = sealed.SealedWriter(str(path), kind, aes, first=b"h" * 44)
        for i in range(40):
            w.data(44 + 100 * i, os.urandom(100))
        if path.name != "wav":
            w.final(w.length)
        w.close()
    for path in paths[1:]:
        got = nonces(path)
        prefix = got[0][:8]
        assert got == [prefix + struct.pack(">I", seq) for seq in range(len(got))]  # prefix, then the seq
    # the WAV cut by a crash inside record 30: records 30..40 were sealed once, and finish() seals
    # seqs 30 and 31 again (the final header, FINAL): under a new prefix, so no nonce comes back
    cut = nonces(paths[0])
    size = paths[0].stat().st_size
    with open(paths[0], "r+b") as f:
        f.truncate(size - 11 * (sealed.RECORD + sealed.NONCE + 100 + sealed.TAG) + 5)
    sealed.finish(str(paths[0]), KEY, "t", wav_header=lambda n, first: (b"H" * 44, n))
    resumed = nonces(paths[0])
    assert resumed[:30] == cut[:30] and len(resumed) == 32
    assert resumed[30][:8] == resumed[31][:8] != cut[0][:8]
    every = [n for p in paths for n in nonces(p)] + cut[30:]  # everything ever sealed under the key
    assert len(set(every)) == len(every) == 32 + 42 + 42 + 11
    with sealed.SealedFile(str(paths[0]), KEY, "t") as f:
        f.verify()
        assert f.read(0, 44) == b"H" * 44


def test_a_writer_that_failed_seals_nothing_more(tmp_path: Path) -> None:
    """After a write the disk refused, the next data() raises before sealing anything under the nonce
    of the record that was not written."""
    w = sealed.SealedWriter(str(tmp_path / "f"), sealed.PCAP, AESGCM(KEY))
    w.error = OSError(28, "No space left on device")
    seq = w.seq
    with pytest.raises(OSError):
        w.data(0, b"x" * 100)
    with pytest.raises(OSError):
        w.final(0)
    assert w.seq == seq and (tmp_path / "f").stat().st_size == sealed.HEADER
    w.close()


def test_a_write_interrupted_after_it_reached_the_file_never_lets_its_nonce_be_sealed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt (Ctrl-C of a technician's ``recorderd replay``) arriving just after a
    record's pwritev reached the file, before the writer counted it: the interrupted write is a
    failed one (the record cut back off the file, the writer seals nothing more: crash recovery
    finishes the file), so its nonce is never sealed again. Was: the seq moved on only after the
    write, so the next record was sealed under the same nonce with other plaintext (two ciphertexts
    under one AES-GCM nonce give away their XOR and the key's authentication). The interruption is
    made at the syscall's return: ``os.pwritev`` writes, then raises."""
    real = os.pwritev
    sent: list[bytes] = []
    interrupt = [True]

    def pwritev(fd: int, buffers: list, offset: int) -> int:
        written = real(fd, buffers, offset)
        sent.append(bytes(buffers[1]))  # the nonce (header, nonce, ciphertext and tag)
        if interrupt[0]:
            interrupt[0] = False
            raise KeyboardInterrupt
        return written

    path = tmp_path / "f"
    w = sealed.SealedWriter(str(path), sealed.PCAP, AESGCM(KEY))
    monkeypatch.setattr(sealed.os, "pwritev", pwritev)
    with pytest.raises(KeyboardInterrupt):
        w.data(0, b"a" * 100)
    assert path.stat().st_size == sealed.HEADER  # the record that reached the file is cut back off it
    with pytest.raises(OSError, match="interrupted"):
        w.data(0, b"b" * 100)  # nothing sealed again by this writer
    with pytest.raises(OSError):
        w.final(0)
    w.close()
    assert len(sent) == 1 and path.stat().st_size == sealed.HEADER
    assert sealed.finish(str(path), KEY, "t") == 0  # crash recovery completes it
    with sealed.SealedFile(str(path), KEY, "t") as f:
        assert f.size == 0


def test_the_digest_is_the_plaintexts_sha256_whatever_the_records_and_checks_every_tag(tmp_path: Path) -> None:
    rnd = random.Random(13)
    for trial in range(200):
        path = tmp_path / f"f{trial}"
        w = sealed.SealedWriter(str(path), sealed.WAV, AESGCM(KEY))
        model = bytearray()
        for _ in range(rnd.randint(0, 25)):
            n = rnd.randint(1, 400)
            offset = rnd.randint(0, len(model) + 60) if rnd.random() < 0.4 else len(model)  # patches, holes
            data = rnd.randbytes(n)
            w.data(offset, data)
            model.extend(bytes(max(0, offset + n - len(model))))
            model[offset : offset + n] = data
        length = rnd.randint(0, len(model)) if rnd.random() < 0.3 else len(model)
        w.final(length)
        w.close()
        with sealed.SealedFile(str(path), KEY, "t") as f:
            assert f.digest() == hashlib.sha256(model[:length]).hexdigest(), trial
            assert f.digest() == hashlib.sha256(b"".join(f.plaintext())).hexdigest()
    # a record all of whose bytes a later one replaced still has its tag checked
    path = tmp_path / "patched"
    w = sealed.SealedWriter(str(path), sealed.WAV, AESGCM(KEY))
    w.data(0, b"a" * 100)
    w.data(0, b"b" * 100)
    w.final(100)
    w.close()
    data = bytearray(path.read_bytes())
    data[sealed.HEADER + sealed.RECORD + sealed.NONCE + 50] ^= 1  # inside the first, replaced, record
    path.write_bytes(data)
    with sealed.SealedFile(str(path), KEY, "t") as f:
        with pytest.raises(sealed.SealedError, match="record 0 fails authentication"):
            f.digest()
