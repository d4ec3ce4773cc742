"""The spool sealed as written and keeping as a rename (issue 13): the RDS1 record format
(storage/sealed.py) on its own, then real recordings made through SpoolSink into a real store:
nothing of the call in the clear in any file at any moment, and keeping writes each byte once."""
from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import sealed, wav
from storage.recovery import recover_spool
from storage.spool import SpoolSink
from storage.store import Store

KEY = bytes(range(32))
T0 = 1_790_000_000.0
CALLER = "09087654321"
CALL_ID = "a84b4c76e66710@pc33.example.jp"


def make(path: Path, pieces: list[tuple[int, bytes]], *, final: bool = True, kind: int = sealed.WAV) -> None:
    w = sealed.SealedWriter(str(path), kind, AESGCM(KEY))
    for offset, data in pieces:
        w.data(offset, data)
    if final:
        w.final(w.length)
    w.close()


def records(path: Path) -> list[tuple[int, int]]:
    """(file position, end) of each record."""
    fd = os.open(path, os.O_RDONLY)
    try:
        found = sealed.scan(fd, "t")
    finally:
        os.close(fd)
    return [(pos, pos + sealed.RECORD + sealed.NONCE + n + sealed.TAG) for _, n, pos, _ in found.records]


def read_all(path: Path, key: bytes = KEY) -> bytes:
    with sealed.SealedFile(str(path), key, "t") as f:
        f.verify()
        return b"".join(f.plaintext())


# -- the format ------------------------------------------------------------------------------------


def test_round_trip_whole_and_by_range(tmp_path: Path) -> None:
    rnd = random.Random(1)
    data = rnd.randbytes(300_000)
    pieces = [(i, data[i : i + 16_000]) for i in range(0, len(data), 16_000)]
    make(tmp_path / "f", pieces)
    assert read_all(tmp_path / "f") == data
    with sealed.SealedFile(str(tmp_path / "f"), KEY, "t") as f:
        assert f.size == len(data)
        for _ in range(200):
            a = rnd.randrange(len(data))
            n = rnd.randrange(40_000)
            assert f.read(a, n) == data[a : a + n]
        assert f.read(len(data), 10) == b""


def test_a_late_patch_wins_and_nothing_is_rewritten(tmp_path: Path) -> None:
    w = sealed.SealedWriter(str(tmp_path / "f"), sealed.WAV, AESGCM(KEY), readable=True)
    w.data(0, b"A" * 100)
    before = (tmp_path / "f").read_bytes()
    w.data(50, b"B" * 10)  # a late payload: a new version of bytes 50..59
    w.data(55, b"C" * 2)  # and a later one over part of it
    assert w.read(45, 20) == b"A" * 5 + b"B" * 5 + b"CC" + b"B" * 3 + b"A" * 5
    w.final(w.length)
    w.close()
    assert (tmp_path / "f").read_bytes().startswith(before)  # appended only
    assert read_all(tmp_path / "f") == b"A" * 50 + b"B" * 5 + b"CC" + b"B" * 3 + b"A" * 40


def test_a_removed_reordered_altered_or_truncated_record_fails_clearly(tmp_path: Path) -> None:
    make(tmp_path / "f", [(i * 1000, bytes([i]) * 1000) for i in range(5)])
    whole = (tmp_path / "f").read_bytes()
    recs = records(tmp_path / "f")
    cases: dict[str, bytes] = {}
    (a, b), (c, d) = recs[1], recs[2]
    cases["removed"] = whole[:a] + whole[b:]
    cases["reordered"] = whole[:a] + whole[c:d] + whole[a:b] + whole[d:]
    flip = bytearray(whole)
    flip[c + 40] ^= 0x01
    cases["altered ciphertext"] = bytes(flip)
    moved = bytearray(whole)
    moved[c + 5 : c + 13] = struct.pack(">Q", 0)  # the clear offset of record 2 changed: bytes moved
    cases["altered header"] = bytes(moved)
    cases["truncated"] = whole[: recs[-1][0]]  # the FINAL gone
    cases["cut"] = whole[:-1]
    cases["appended"] = whole + whole[a:b]
    make(tmp_path / "other", [(i * 1000, bytes([i]) * 1000) for i in range(5)])
    other = (tmp_path / "other").read_bytes()
    cases["record of another file"] = whole[:a] + other[a:b] + whole[b:]  # same key, same seq: its file id differs
    expect = {"removed": "out of sequence", "reordered": "out of sequence",
              "altered ciphertext": "fails authentication", "altered header": "fails authentication",
              "truncated": "incomplete", "cut": "record 5 cut",
              "appended": "after the final record", "record of another file": "fails authentication"}
    for name, blob in cases.items():
        (tmp_path / "bad").write_bytes(blob)
        with pytest.raises(sealed.SealedError) as err:
            read_all(tmp_path / "bad")
        assert expect[name] in str(err.value), (name, str(err.value))
    with pytest.raises(sealed.SealedError, match="fails authentication"):
        read_all(tmp_path / "f", key=bytes(32))  # another recording's key


def test_recovery_of_a_file_cut_at_every_byte_of_its_last_record(tmp_path: Path) -> None:
    head = wav.header("PCMU", 0)
    body = [random.Random(i).randbytes(1600) for i in range(3)]
    pieces = [(0, head)] + [(wav.HEADER_SIZE + 1600 * i, b) for i, b in enumerate(body)]
    make(tmp_path / "crashed", pieces, final=False)  # the process died: no final header, no FINAL
    whole = (tmp_path / "crashed").read_bytes()
    last_start, last_end = records(tmp_path / "crashed")[-1]
    assert last_end == len(whole)
    for cut in range(last_start, last_end + 1):
        f = tmp_path / f"cut-{cut}"
        f.write_bytes(whole[:cut])
        length = sealed.finish(str(f), KEY, "t", wav_header=sealed.wav_header)
        kept = body if cut == last_end else body[:2]
        data = read_all(f)
        assert length == len(data) == wav.HEADER_SIZE + 1600 * len(kept)
        info = wav.read_info(data)
        assert info.frames == 800 * len(kept) and data[wav.HEADER_SIZE :] == b"".join(kept)
        f.unlink()
    (tmp_path / "crashed").write_bytes(whole[: last_start + 20])
    sealed.finish(str(tmp_path / "crashed"), KEY, "t", wav_header=sealed.wav_header)
    assert sealed.finish(str(tmp_path / "crashed"), KEY, "t") == wav.HEADER_SIZE + 3200  # complete: left as it is


# -- recordings through the spool ------------------------------------------------------------------


def new_store(root: Path) -> Store:
    store = Store(str(root / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(root / "key"))
    store.init()
    return store.open()


def sip_frame(n: int) -> bytes:
    text = (f"INVITE sip:0442003939@192.0.2.10 SIP/2.0\r\nFrom: <sip:{CALLER}@203.0.113.5>;tag={n}\r\n"
            f"Call-ID: {CALL_ID}\r\nCSeq: {n} INVITE\r\n\r\n").encode()
    return bytes(14) + bytes(28) + text


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def find_clear(files: dict[str, bytes], audio: list[bytes]) -> list[str]:
    """Where the caller, the Call-ID or any 32 consecutive bytes of a channel's audio appear."""
    found = []
    needles = [CALLER.encode(), CALL_ID.encode()]
    for path, blob in files.items():
        for needle in needles:
            if needle in blob:
                found.append(f"{path}: {needle!r}")
        for chan in audio:
            for i in range(0, len(chan) - 32, 16):
                if chan[i : i + 32] in blob:
                    found.append(f"{path}: audio at {i}")
                    break
    return found


def call_info(call_id: str = CALL_ID, started: float = T0) -> SimpleNamespace:
    return SimpleNamespace(call_id=call_id, did="+81442003939", did_label="テスト", caller=CALLER, started_at=started,
                           codec="PCMU", clock_rate=8000, channels=1, conversation="c0ffee", part=1,
                           part_reason="")


def record(store: Store, seconds: int, *, check: object = None, end: bool = True,
           started: float = T0) -> tuple[object, list[bytes]]:
    """``seconds`` of random audio in both channels (20 ms packets), a SIP frame every second into
    the evidence pcap, and a late payload after a stall; ``check`` runs every 5 s of audio."""
    rec = SpoolSink(store).call_started(call_info(started=started))
    rnd = random.Random(7)
    chans = [bytearray(rnd.randbytes(8000 * seconds)) for _ in (1, 2)]
    late = None
    for i in range(50 * seconds):
        for ch in (1, 2):
            if ch == 2 and i == 100:
                late = (i, bytes(chans[1][i * 160 : (i + 1) * 160]))  # held up: it comes 3 s late
                continue
            rec.audio(ch, i * 160, bytes(chans[ch - 1][i * 160 : (i + 1) * 160]))
        rec.packet(T0 + i * 0.02, 1, sip_frame(i) if i % 50 == 0 else bytes(42) + b"\x80" + rnd.randbytes(171))
        if late and i == 250:
            rec.audio(2, late[0] * 160, late[1])
        if check is not None and i % 250 == 0:
            check()  # type: ignore[operator]
    if end:
        rec.end(SimpleNamespace(complete=True, reason="bye", ended_at=started + seconds, streams=[]))
    return rec, [bytes(c) for c in chans]


def test_nothing_of_the_call_is_ever_in_the_clear_and_the_kept_audio_is_exact(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    root = Path(store.root)
    seen: list[str] = []
    audio: list[bytes] = []

    def check() -> None:
        if audio:
            seen.extend(find_clear(every_file(root), audio))

    rnd = random.Random(7)  # the same audio record() will make, known before the call to scan while it goes
    audio[:] = [rnd.randbytes(8000 * 20) for _ in (1, 2)]
    try:
        _, chans = record(store, 20, check=check)
        assert chans == audio
        [row] = store.reading.recordings()
        assert not seen, seen  # while in progress
        assert not find_clear(every_file(root), audio)  # after keep
        assert os.listdir(store.spool_dir) == []
        data = b"".join(store.reading.plaintext(row))
        assert hashlib.sha256(data).hexdigest() == row.sha256 and store.integrity.check(row) is None
        # the late one in place
        assert wav.channel_bytes(data, 1) == chans[0] and wav.channel_bytes(data, 2) == chans[1]
        with open(store.layout.file_path(row), "rb") as f:
            assert f.read(4) == sealed.MAGIC
        pcap = b"".join(store.reading.plaintext(row, pcap=True))
        assert pcap.count(CALL_ID.encode()) == 20 and hashlib.sha256(pcap).hexdigest() == row.pcap_sha256
        with store.reading.reader(row) as r:  # random access (play, waveform) decrypts only what it needs
            assert r.read(wav.HEADER_SIZE + 2 * 8000 * 19, 64) == data[wav.HEADER_SIZE + 2 * 8000 * 19 :][:64]
    finally:
        store.close()


def test_every_nonce_is_distinct(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    try:
        record(store, 12)
        [row] = store.reading.recordings()
        nonces = []
        for path in store.layout.files(row):
            fd = os.open(path, os.O_RDONLY)
            found = sealed.scan(fd, "t")
            nonces += [os.pread(fd, sealed.NONCE, pos + sealed.RECORD) for _, _, pos, _ in found.records]
            os.close(fd)
        assert len(nonces) > 20 and len(set(nonces)) == len(nonces)
    finally:
        store.close()


def io_counts() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def test_keeping_writes_each_byte_once(tmp_path: Path) -> None:
    """A 3-minute call recorded and kept: the bytes the process wrote (to write(2), and to the disk)
    are at most 1.1 times what the store keeps (the previous spool wrote the plaintext, encrypted it
    into a second file and overwrote the first with zeros: about 3 times)."""
    store = new_store(tmp_path)
    try:
        before = io_counts()
        record(store, 180)
        os.sync()
        after = io_counts()
        kept = sum(os.path.getsize(p) for row in store.reading.recordings() for p in store.layout.files(row))
        assert kept > 4_500_000
        assert after["wchar"] - before["wchar"] <= 1.1 * kept
        assert after["write_bytes"] - before["write_bytes"] <= 1.1 * kept
        # keep reads the renamed files once for their SHA-256 (rchar ~1x), from the page cache: not the disk
        assert after["read_bytes"] - before["read_bytes"] <= 0.1 * kept
    finally:
        store.close()


def test_recovery_after_a_crash_keeps_the_sealed_audio_up_to_the_last_whole_record(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    try:
        rec, chans = record(store, 10, end=False)  # the process dies: no end()
        rec.file.close()  # type: ignore[attr-defined]
        rec.sidecar.close()  # type: ignore[attr-defined]
        rec.evidence.file.close()  # type: ignore[attr-defined]  (no FINAL either)
        wav_path = Path(store.spool_dir) / (rec.id + ".wav")  # type: ignore[attr-defined]
        with open(wav_path, "ab") as f:
            f.write(os.urandom(500))  # and a half-written record after the last whole one
        assert not find_clear(every_file(Path(store.root)), chans)
        [rid] = recover_spool(store)
        row = store.reading.get(rid)
        assert row.state == "incomplete" and store.integrity.check(row) is None
        data = b"".join(store.reading.plaintext(row))
        got = wav.channel_bytes(data, 1)
        assert 9 * 8000 <= len(got) <= 10 * 8000 and got == chans[0][: len(got)]  # at most ~1 s lost
        assert os.listdir(store.spool_dir) == []
    finally:
        store.close()


def test_a_keep_that_died_after_its_rename_is_kept_at_the_next_start(tmp_path: Path) -> None:
    """The service dies between renaming a call's sealed files into the store and writing its index
    row: the spool has only the sidecar left; recovery finds the files in place and keeps them (was:
    the sidecar was erased as a call with nothing written, and the files swept later as orphans)."""
    store = new_store(tmp_path)
    try:
        rec, chans = record(store, 4, end=False)
        rec._flush(final=True)  # type: ignore[attr-defined]
        rec.file.close()  # type: ignore[attr-defined]
        rec.evidence.flush()  # type: ignore[attr-defined]
        rec.evidence.file.close()  # type: ignore[attr-defined]
        rec.sidecar.close()  # type: ignore[attr-defined]
        rid = rec.id  # type: ignore[attr-defined]
        rel = store.layout.relative_path(rid, T0)
        store.keeper._rename(os.path.join(store.spool_dir, rid + ".wav"), rel, rec.data_key)  # type: ignore[attr-defined]
        store.keeper._rename(os.path.join(store.spool_dir, rid + ".pcap"), rel[:-4] + ".pcap.rdv", rec.data_key)  # type: ignore[attr-defined]
        assert sorted(os.listdir(store.spool_dir)) == [rid + ".call.json"]  # then the process died
        assert recover_spool(store) == [rid]
        row = store.reading.get(rid)
        data = b"".join(store.reading.plaintext(row))
        assert wav.channel_bytes(data, 1) == chans[0] and store.integrity.check(row) is None
        assert row.frames == 4 * 8000 and row.pcap_path
        assert os.listdir(store.spool_dir) == []
    finally:
        store.close()


def test_a_sealed_recording_plays_and_checks_through_the_console_socket(tmp_path: Path) -> None:
    """play / play-audio / play-check on a recording kept from the sealed spool (RDS1), through a
    real ControlServer: every range is the PCM export's bytes; a record altered on disk makes
    play-check fail and its range is refused, while a good range is still served."""
    from conftest import Site
    from test_playback import ME, audio, call, pcm_export

    from recorderd import control
    from recorderd.config import load
    from recorderd.control import ControlServer

    site = Site(tmp_path, None, f"console: {{user: {ME}}}\n").init()
    store = site.open_store()
    try:
        record(store, 20, started=store.clock() - 3600)
        [row] = store.reading.recordings()
    finally:
        store.close()
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        sock = control.socket_path(load(str(site.config)))
        played = call(sock, "play", {"id": row.id, "purpose": "quality"})
        assert played.rc == 0, played.error
        ticket, size = played.data["ticket"], played.data["size"]
        reference = pcm_export(site, row.id, tmp_path)
        assert size == len(reference) == 44 + 20 * 8000 * 4
        rng = random.Random(5)
        for _ in range(30):
            off, n = rng.randrange(0, size), rng.randrange(1, 200_000)
            reply, got = audio(sock, ticket, off, n)
            assert reply.rc == 0 and got == reference[off : off + n], (off, n)
        for _ in range(200):
            state = call(sock, "play-check", {"ticket": ticket}).data["integrity"]
            if state != "checking":
                break
        assert state == "checked"
        path = Path(store.layout.file_path(row))
        fd = os.open(path, os.O_RDONLY)
        offset, length, pos, _ = sealed.scan(fd, "t").records[10]
        os.close(fd)
        data = bytearray(path.read_bytes())
        data[pos + sealed.RECORD + sealed.NONCE + 100] ^= 0x40  # inside record 10's ciphertext
        path.write_bytes(bytes(data))
        second = call(sock, "play", {"id": row.id, "purpose": "quality"}).data["ticket"]
        assert audio(sock, second, 0, 1000)[0].rc == 0  # the first records are good
        frame = (offset + length // 2 - wav.HEADER_SIZE) // 2  # a stereo G.711 frame in record 10
        reply, got = audio(sock, second, 44 + 4 * frame, 1000)
        assert reply.rc == 1 and "fails its integrity check" in reply.error and got == b""
        for _ in range(200):
            checked = call(sock, "play-check", {"ticket": second}).data
            if checked["integrity"] != "checking":
                break
        assert checked["integrity"] == "failed" and "record 10 fails authentication" in checked["error"]
    finally:
        server.stop()


def test_late_payloads_anywhere_in_the_call_land_in_place(tmp_path: Path) -> None:
    """300 packets of one direction held back and delivered, shuffled, long after their place was
    sealed (a burst after stalls): each is sealed again with its frames and the WAV is exactly the
    call's audio; the spool file was only ever appended to."""
    store = new_store(tmp_path)
    try:
        rec = SpoolSink(store).call_started(call_info())
        rnd = random.Random(11)
        chans = [rnd.randbytes(8000 * 30) for _ in (1, 2)]
        held = set(rnd.sample(range(50 * 28), 300))
        path = Path(store.spool_dir) / (rec.id + ".wav")
        for i in range(50 * 30):
            rec.audio(1, i * 160, chans[0][i * 160 : (i + 1) * 160])
            if i not in held:
                rec.audio(2, i * 160, chans[1][i * 160 : (i + 1) * 160])
            if i == 50 * 29:
                before = path.read_bytes()
                late = sorted(held)
                rnd.shuffle(late)
                for j in late:
                    rec.audio(2, j * 160, chans[1][j * 160 : (j + 1) * 160])
        assert path.read_bytes().startswith(before)
        rec.end(SimpleNamespace(complete=True, reason="bye", ended_at=T0 + 30, streams=[]))
        [row] = store.reading.recordings()
        data = b"".join(store.reading.plaintext(row))
        assert wav.channel_bytes(data, 1) == chans[0] and wav.channel_bytes(data, 2) == chans[1]
        assert store.integrity.check(row) is None
    finally:
        store.close()


def test_a_call_whose_key_cannot_be_wrapped_is_refused_as_capture_expects(tmp_path: Path) -> None:
    """The master key gone (a file readable by others, or removed) while the service runs: a new
    call's data key cannot be wrapped; call_started raises the OSError capture reports as a call not
    recorded (not another exception, which would stop the pipeline), and leaves nothing in the spool."""
    store = new_store(tmp_path)
    try:
        store.master.forget()  # as a process that has not loaded it yet
        os.chmod(store.key_file, 0o644)
        with pytest.raises(OSError, match="the master key cannot be loaded"):
            SpoolSink(store).call_started(call_info())
        assert os.listdir(store.spool_dir) == []
    finally:
        store.close()


def test_a_plaintext_spool_left_by_the_previous_edition_is_still_recovered(tmp_path: Path) -> None:
    """A crash of the older code before an upgrade leaves a clear sidecar and a plaintext WAV: the
    new code recovers them as that code did (encrypted into RDV1, the spool copies overwritten and
    removed)."""
    import json

    from storage import vault
    from storage.sidecar import FIELDS

    store = new_store(tmp_path)
    try:
        rid = "20260921-231320-0123456789"
        base = Path(store.spool_dir) / rid
        meta = {k: getattr(call_info(), k, None) for k in FIELDS}
        base.with_name(rid + ".call.json").write_text(json.dumps(meta) + "\n")
        audio = random.Random(3).randbytes(2 * 8000 * 3)
        base.with_name(rid + ".wav").write_bytes(wav.header("PCMU", 0) + audio + b"\x01")  # a half frame at the end
        assert recover_spool(store) == [rid]
        row = store.reading.get(rid)
        with open(store.layout.file_path(row), "rb") as f:
            assert f.read(4) == vault.MAGIC
        data = b"".join(store.reading.plaintext(row))
        assert data[wav.HEADER_SIZE :] == audio and row.frames == 3 * 8000 and row.caller == CALLER
        assert os.listdir(store.spool_dir) == []
    finally:
        store.close()
