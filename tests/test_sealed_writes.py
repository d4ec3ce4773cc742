"""The write path per record (storage/sealed.py's SealedWriter.data, storage/spool.py's _flush):
sealed into each thread's one scratch buffer and written by one pwritev, with no byte of the RDS1
format changed. The scratch is shared by every writer of a thread: one recording's bytes must
never reach another's file, and a write the disk refuses must still be cut back."""
from __future__ import annotations

import os
import random
import resource
import signal
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import sealed, wav
from storage.spool import SpoolSink
from storage.store import Store


def expected_file(path: Path, key: bytes, pieces: list[tuple[int, bytes]]) -> bytes:
    """The file RDS1 says a writer of ``pieces`` makes, built here from the format's description
    alone (the file header and the nonce prefix taken from the file: they are random)."""
    raw = path.read_bytes()
    header, prefix = raw[: sealed.HEADER], raw[sealed.HEADER + sealed.RECORD : sealed.HEADER + sealed.RECORD + 8]
    out = [header]
    aes = AESGCM(key)
    for seq, (offset, plain) in enumerate(pieces):
        head = struct.pack(">BIQI", 1, seq, offset, len(plain))
        nonce = prefix + struct.pack(">I", seq)
        out.append(head + nonce + aes.encrypt(nonce, plain, header + head))
    return b"".join(out)


def test_writers_sharing_the_scratch_buffer_write_exactly_their_own_records(tmp_path: Path) -> None:
    """Two files under two keys written in turn from one thread, records large then small (the
    scratch holds the other's longer ciphertext when a short record is sealed), while a second
    thread writes a third file: each file is byte for byte what the format makes of its own data."""
    rnd = random.Random(3)
    keys = [bytes([i]) * 32 for i in (1, 2, 3)]
    paths = [tmp_path / f"f{i}" for i in range(3)]
    writers = [sealed.SealedWriter(str(p), sealed.PCAP, AESGCM(k)) for p, k in zip(paths, keys, strict=True)]
    pieces: list[list[tuple[int, bytes]]] = [[], [], []]

    def write(i: int, rounds: int) -> None:
        for r in range(rounds):
            plain = bytes([0x40 + i]) * rnd.choice((1, 7, 16384, 70_000, 200)) if i < 2 else os.urandom(16_000 + r)
            pieces[i].append((writers[i].length, plain))
            writers[i].append(plain)

    other = threading.Thread(target=write, args=(2, 600))
    other.start()
    for _ in range(400):
        write(0, 1)
        write(1, 1)
    other.join()
    for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
        writers[i].close()
        assert path.read_bytes() == expected_file(path, key, pieces[i])
        found, plains = sealed.valid_prefix(os.open(path, os.O_RDONLY), AESGCM(key), "t", plain=True)
        assert not found.problem and b"".join(plains) == b"".join(p for _, p in pieces[i])


def test_a_write_the_disk_refuses_is_cut_back_and_the_next_writer_is_whole(tmp_path: Path) -> None:
    """The file size limit (RLIMIT_FSIZE) cuts a record short, as a full disk does: the file ends
    at its last whole record, the writer seals nothing more, and the next file written through the
    same scratch buffer is exact."""
    key = bytes(32)
    path, after = tmp_path / "full", tmp_path / "after"
    w = sealed.SealedWriter(str(path), sealed.PCAP, AESGCM(key))
    w.append(b"a" * 1000)
    whole = path.stat().st_size
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, or a short write, instead of a signal
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (whole + 5000, old_limit[1]))
        try:
            w.append(b"b" * 20_000)
        except OSError:
            pass
        else:
            raise AssertionError("a write past the file size limit was taken")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == whole  # cut back to the last whole record
    try:
        w.append(b"c" * 10)  # nothing sealed again once a write failed
    except OSError:
        pass
    else:
        raise AssertionError("a writer sealed again after a refused write")
    # the refused record's seq (1) is spent: it moved on before the write, and nothing is sealed after
    assert path.stat().st_size == whole and w.seq == 2
    w.close()
    v = sealed.SealedWriter(str(after), sealed.PCAP, AESGCM(key))
    v.append(b"d" * 300)
    v.close()
    assert after.read_bytes() == expected_file(after, key, [(0, b"d" * 300)])


def test_g711_channels_interleave_exactly_for_every_byte_value(tmp_path: Path) -> None:
    """The stereo frames of a G.711 call are channel 1's byte then channel 2's, for all 256 values
    in both channels (the interleave goes through Latin-1 and UTF-16-LE)."""
    store = Store(str(tmp_path / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14,
                  key_file=str(tmp_path / "master.key"))
    store.init()
    store.open()
    try:
        info = SimpleNamespace(call_id="interleave@example.invalid", did="+81442003939", did_label="t",
                               caller="0000", started_at=1_790_000_000.0, codec="PCMA", conversation="", part=1,
                               part_reason="")
        rec = SpoolSink(store).call_started(info)
        rec.figures = None
        rnd = random.Random(11)
        chans = [bytes(range(256)) * 125 + rnd.randbytes(8000), bytes(range(255, -1, -1)) * 125 + rnd.randbytes(8000)]
        for i in range(0, len(chans[0]), 160):
            rec.audio(1, i, chans[0][i : i + 160])
            rec.audio(2, i, chans[1][i : i + 160])
        rec.end(SimpleNamespace(complete=True, reason="bye", ended_at=1_790_000_006.0, streams=[]))
        [row] = store.reading.recordings()
        data = b"".join(store.reading.plaintext(row))
        frames = bytearray(2 * len(chans[0]))
        frames[0::2], frames[1::2] = chans[0], chans[1]
        assert data[wav.HEADER_SIZE :] == frames
    finally:
        store.close()


def test_with_writeback_on_the_disk_is_asked_to_start_and_the_bytes_are_the_same(tmp_path: Path) -> None:
    """``recorderd replay`` turns writeback on: every 256 KiB written the disk is asked to start on
    them (sync_file_range), and the file is what the format makes of its records."""
    key = bytes(range(32))
    path = tmp_path / "wb"
    w = sealed.SealedWriter(str(path), sealed.PCAP, AESGCM(key))
    w.writeback = sealed.WRITEBACK
    pieces = [(16_000 * i, bytes([i]) * 16_000) for i in range(40)]
    asked = []
    for _, plain in pieces:
        w.append(plain)
        asked.append(w.flushed)
    w.close()
    record = sealed.RECORD + sealed.NONCE + 16_000 + sealed.TAG
    starts = sorted(set(asked))  # where the written part ended each time the disk was asked (~640 KB: twice)
    assert starts == [0, sealed.HEADER + 17 * record, sealed.HEADER + 34 * record]
    assert path.read_bytes() == expected_file(path, key, pieces)


def test_a_record_longer_than_the_kept_scratch_is_written_whole_and_the_scratch_stays_small(tmp_path: Path) -> None:
    key = bytes(range(1, 33))
    path = tmp_path / "long"
    w = sealed.SealedWriter(str(path), sealed.PCAP, AESGCM(key))
    pieces = [(0, b"x" * 100), (100, os.urandom(sealed._SCRATCH_KEPT + 5)), (100 + sealed._SCRATCH_KEPT + 5, b"y" * 50)]
    for _, plain in pieces:
        w.append(plain)
    w.close()
    assert path.read_bytes() == expected_file(path, key, pieces)
    assert len(sealed._scratch.buf) <= sealed._SCRATCH_KEPT
