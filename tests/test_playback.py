"""Playback for the console: ``show``, ``play`` / ``play-audio`` / ``play-check`` / ``waveform`` by
ticket, on a real ControlServer over its real socket (the test process is the console, acting for
itself or for a user it makes), and the random-access vault reader underneath."""
from __future__ import annotations

import getpass
import grp
import io
import os
import random
import struct
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, USER_TOOLS, Site, needs_root

from capture.sink import CallInfo
from recorderd import client, control
from recorderd.config import load
from recorderd.control import ControlServer
from recorderd.ops import playback
from storage import vault, wav
from storage.audit import AuditLog
from storage.codecs import g711
from storage.reader import VaultReader

ME = getpass.getuser()
IP = "192.0.2.7"
STREAMS = [{"channel": ch, "ssrcs": [0x1000 + ch], "packets": 1000, "expected": 1010, "lost": 10, "duplicates": 0,
            "late_samples": 0, "other_payload": 0, "anchors": [], "jitter_ms": 1.5, "max_gap_ms": 60.0,
            "dtmf": [{"digit": "5", "at_s": 1.0, "duration_ms": 120}] if ch == 1 else []}
           for ch in (1, 2)]


def keep_recording(site: Site, seconds: float, codec: str = "PCMU", seed: int = 1) -> str:
    """A recording of ``seconds`` of random G.711 stereo kept through Store.keep (as the recorder
    keeps one): encrypted in 64 KiB vault chunks, indexed."""
    store = site.open_store()
    try:
        frames = round(seconds * 8000)
        started = store.clock() - 3600
        call = CallInfo(f"k-{seed}@test", "+81442003939", "テスト", "09011112222", started, codec)
        rid = store.layout.new_recording_id(call.call_id, call.did, started)
        spool = os.path.join(store.spool_dir, rid + ".wav")
        with open(spool, "xb") as f:
            f.write(wav.header(codec, frames))
            f.write(random.Random(seed).randbytes(2 * frames))
        store.keeper.keep(rid, spool, call, ended_at=started + seconds, frames=frames, complete=True, end_reason="bye",
                          streams=STREAMS)
        return rid
    finally:
        store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Site, str, str]]:
    site = Site(tmp_path, None, f"console: {{user: {ME}}}\n").init()
    rid = keep_recording(site, 20.0)  # 320 KB of samples: 5 vault chunks
    config = load(str(site.config))
    server = ControlServer(config)
    assert server.start()
    try:
        yield site, control.socket_path(config), rid
    finally:
        server.stop()


def call(sock: str, action: str, args: dict, sinks: dict | None = None, user: str = ME):  # type: ignore[no-untyped-def]
    return client.call(sock, action, args, sinks or {}, acting_for={"user": user, "ip": IP})


def audio(sock: str, ticket: str, offset: int, length: int, user: str = ME) -> tuple[object, bytes]:
    got = bytearray()
    reply = call(sock, "play-audio", {"ticket": ticket, "offset": offset, "length": length},
                 {"audio": client.CallbackSink("audio", got.extend)}, user)
    return reply, bytes(got)


def rows(site: Site) -> list:
    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows()]
    finally:
        log.close()


def pcm_export(site: Site, rid: str, tmp_path: Path) -> bytes:
    out = tmp_path / "ref-pcm.wav"
    assert site.ctl("export", rid, "--out", str(out), "--purpose", "quality", "--format", "pcm") == 0
    return out.read_bytes()


# -- G.711 and the reader ------------------------------------------------------------------------------


def test_g711_expansion_is_the_itu_tables_audioop_gives() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    codes = bytes(range(256))
    assert g711.decode("PCMU", codes) == audioop.ulaw2lin(codes, 2)
    assert g711.decode("PCMA", codes) == audioop.alaw2lin(codes, 2)


def _vault_file(tmp_path: Path, size: int) -> tuple[Path, bytes, bytes]:
    plain = random.Random(size).randbytes(size)
    key = vault.new_data_key()
    path = tmp_path / "f.rdv"
    with open(path, "wb") as dst:
        vault.encrypt_file(io.BytesIO(plain), dst, key)
    return path, plain, key


@pytest.mark.parametrize("size", [0, 1, vault.CHUNK - 1, vault.CHUNK, vault.CHUNK + 1, 5 * vault.CHUNK + 777])
def test_the_reader_gives_every_range_as_a_whole_decryption_does(tmp_path: Path, size: int) -> None:
    path, plain, key = _vault_file(tmp_path, size)
    with VaultReader(str(path), key, "f") as reader:
        assert reader.size == size
        assert reader.read(0, size + 10) == plain
        rng = random.Random(7)
        for _ in range(200):
            off, n = rng.randrange(0, size + 2), rng.randrange(0, 3 * vault.CHUNK)
            assert reader.read(off, n) == plain[off : off + n]


def test_the_reader_authenticates_each_chunk_it_reads_and_only_those(tmp_path: Path) -> None:
    path, plain, key = _vault_file(tmp_path, 5 * vault.CHUNK + 100)
    data = bytearray(path.read_bytes())
    data[vault.HEADER + 2 * (vault.CHUNK + vault.TAG) + 10] ^= 1  # a byte of chunk 2
    path.write_bytes(data)
    with VaultReader(str(path), key, "f") as reader:
        assert reader.read(0, vault.CHUNK) == plain[: vault.CHUNK]  # chunk 0 is good
        assert reader.read(4 * vault.CHUNK, 50) == plain[4 * vault.CHUNK : 4 * vault.CHUNK + 50]
        with pytest.raises(vault.VaultError, match="chunk 2 fails authentication"):
            reader.read(2 * vault.CHUNK + 5, 10)


def test_a_file_cut_at_a_chunk_boundary_fails_at_its_new_last_chunk(tmp_path: Path) -> None:
    path, plain, key = _vault_file(tmp_path, 5 * vault.CHUNK + 100)
    with open(path, "r+b") as f:
        f.truncate(vault.HEADER + 3 * (vault.CHUNK + vault.TAG))
    with VaultReader(str(path), key, "f") as reader:
        assert reader.read(0, 10) == plain[:10]
        with pytest.raises(vault.VaultError, match="chunk 2 fails authentication .truncated"):
            reader.read(2 * vault.CHUNK, 10)


def test_the_reader_does_not_follow_a_symlink(tmp_path: Path) -> None:
    path, _plain, key = _vault_file(tmp_path, 100)
    link = tmp_path / "link.rdv"
    link.symlink_to(path)
    with pytest.raises(OSError):
        VaultReader(str(link), key, "f")


# -- show ------------------------------------------------------------------------------------------------


def test_show_gives_quality_dtmf_holds_and_the_access_history_newest_first(served: tuple[Site, str, str]) -> None:
    site, sock, rid = served
    assert call(sock, "hold", {"id": rid, "until": "2030-01-31", "reason": "苦情対応", "ref": "K-2026-0001"}).rc == 0
    assert call(sock, "play", {"id": rid, "purpose": "suspicious_call"}).rc == 0
    reply = call(sock, "show", {"id": rid})
    assert reply.rc == 0, reply.error
    data = reply.data
    assert data["recording"]["id"] == rid and data["recording"]["caller"] == "09011112222"
    assert [(q["channel"], q["lost"], q["loss_pct"], q["jitter_ms"], q["max_gap_ms"]) for q in data["quality"]] == [
        (1, 10, 0.99, 1.5, 60.0), (2, 10, 0.99, 1.5, 60.0)]
    assert data["dtmf"] == [{"channel": 1, "digit": "5", "at_s": 1.0, "duration_ms": 120}]
    assert len(data["holds"]) == 1 and data["one_way_audio"] is False
    history = data["history"]
    assert [h["action"] for h in history[:2]] == ["play", "hold"]
    assert history[0]["purpose"] == "suspicious_call" and history[0]["via"] == "console" and history[0]["user"] == ME
    [row] = [r for r in rows(site) if r.action == "show"]
    assert row.recording_id == rid and row.result == "allowed" and "09011112222" not in str(row.detail)


def test_show_keeps_its_history_bounded(served: tuple[Site, str, str]) -> None:
    _site, sock, rid = served
    for _ in range(playback.HISTORY_ROWS + 5):
        assert call(sock, "play-check", {"ticket": "0" * 32}).rc == 3  # refused: audited, on no recording
        assert call(sock, "show", {"id": rid}).rc == 0
    history = call(sock, "show", {"id": rid}).data["history"]
    assert len(history) == playback.HISTORY_ROWS and all(h["action"] == "show" for h in history)


# -- play ---------------------------------------------------------------------------------------------------


def test_play_then_the_rendition_is_the_pcm_export_byte_for_byte_and_only_the_play_is_audited(
        served: tuple[Site, str, str], tmp_path: Path) -> None:
    site, sock, rid = served
    played = call(sock, "play", {"id": rid, "purpose": "quality"})
    assert played.rc == 0, played.error
    ticket, size = played.data["ticket"], played.data["size"]
    assert len(ticket) == 32 and played.data["duration_s"] == 20.0
    reference = pcm_export(site, rid, tmp_path)
    assert size == len(reference) == 44 + 20 * 8000 * 4
    whole = b"".join(audio(sock, ticket, off, playback.MAX_RANGE)[1] for off in range(0, size, playback.MAX_RANGE))
    assert whole == reference
    rng = random.Random(3)
    for _ in range(40):
        off, n = rng.randrange(0, size), rng.randrange(1, 200_000)
        reply, got = audio(sock, ticket, off, n)
        assert reply.rc == 0 and got == reference[off : off + n], (off, n)
    assert audio(sock, ticket, size - 3, 100)[1] == reference[-3:]
    actions = [r.action for r in rows(site) if r.recording_id == rid]
    assert actions.count("play") == 1 and "play-audio" not in actions
    [row] = [r for r in rows(site) if r.action == "play"]
    assert row.detail["purpose"] == "quality" and row.detail["via"] == "console" and "ticket" not in row.detail
    assert ticket not in str([r.detail for r in rows(site)])


def test_play_audio_and_waveform_answer_only_the_console(served: tuple[Site, str, str]) -> None:
    """recorderctl (the socket without acting_for) would write the rendition to a file: a full copy
    of the call no copy register knows. Refused and audited; the console's player still works."""
    site, sock, rid = served
    played = client.call(sock, "play", {"id": rid, "purpose": "quality"}, {})
    assert played.rc == 0, played.error
    ticket = played.data["ticket"]
    got = bytearray()
    reply = client.call(sock, "play-audio", {"ticket": ticket, "offset": 0, "length": 4096},
                         {"audio": client.CallbackSink("audio", got.extend)})
    assert reply.rc == 3 and "web console's player" in reply.error and got == b""
    wave = client.call(sock, "waveform", {"ticket": ticket, "points": 10}, {})
    assert wave.rc == 3 and wave.data is None
    refused = [(r.action, r.result.split(":")[0], r.detail["via"]) for r in rows(site)
               if r.action in ("play-audio", "waveform")]
    assert refused == [("play-audio", "denied", "socket"), ("waveform", "denied", "socket")]
    ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    assert audio(sock, ticket, 0, 4096)[1][:4] == b"RIFF"


def test_play_needs_a_purpose(served: tuple[Site, str, str]) -> None:
    site, sock, rid = served
    for args in ({"id": rid}, {"id": rid, "purpose": "curiosity"}):
        reply = call(sock, "play", args)
        assert reply.rc in (2, 3) and reply.data is None
    refused = [r for r in rows(site) if r.action == "play"]
    assert [r.result.split(":")[0] for r in refused] == ["failed", "denied"]  # no purpose: a usage error


@pytest.mark.parametrize("ticket", ["0" * 32, "not-hex", "", "A" * 32])
def test_a_range_without_a_live_ticket_is_refused_and_audited(served: tuple[Site, str, str], ticket: str) -> None:
    site, sock, _rid = served
    reply, got = audio(sock, ticket, 0, 100)
    assert reply.rc in (2, 3) and got == b""
    [row] = [r for r in rows(site) if r.action == "play-audio"]
    assert row.result.startswith(("denied: no such ticket", "failed: --ticket"))


def test_a_ticket_expires_after_an_idle_hour(served: tuple[Site, str, str]) -> None:
    _site, sock, rid = served
    ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    assert audio(sock, ticket, 0, 10)[0].rc == 0
    playback.TICKETS.by_token[ticket].last_used -= playback.TICKET_IDLE + 1
    reply, got = audio(sock, ticket, 0, 10)
    assert reply.rc == 3 and "expired" in reply.error and got == b""


def test_play_check_says_checked_or_failed_and_a_bad_chunk_is_never_served(served: tuple[Site, str, str]) -> None:
    site, sock, rid = served
    ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    for _ in range(100):
        state = call(sock, "play-check", {"ticket": ticket}).data["integrity"]
        if state != "checking":
            break
    assert state == "checked"
    [path] = site.stored_files()
    data = bytearray(path.read_bytes())
    data[vault.HEADER + 3 * (vault.CHUNK + vault.TAG) + 100] ^= 0x40  # chunk 3 of the stored WAV
    path.write_bytes(data)
    second = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    assert audio(sock, second, 0, 1000)[0].rc == 0  # chunk 0 is good: the first bytes come at once
    reply, got = audio(sock, second, 44 + 2 * (3 * vault.CHUNK - 58) + 10, 1000)
    assert reply.rc == 1 and "fails its integrity check" in reply.error and got == b""
    for _ in range(100):
        checked = call(sock, "play-check", {"ticket": second}).data
        if checked["integrity"] != "checking":
            break
    assert checked["integrity"] == "failed" and "chunk 3" in checked["error"]


def test_the_waveform_is_the_min_and_max_of_each_bucket_of_each_channel(served: tuple[Site, str, str],
                                                                     tmp_path: Path) -> None:
    site, sock, rid = served
    ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    reply = call(sock, "waveform", {"ticket": ticket, "points": 37})
    assert reply.rc == 0, reply.error
    samples = struct.unpack(f"<{(len(pcm_export(site, rid, tmp_path)) - 44) // 2}h",
                            pcm_export(site, rid, tmp_path)[44:])
    frames = len(samples) // 2
    for ch, channel in enumerate(reply.data["channels"]):
        mine = samples[ch::2]
        want = [mine[b * frames // 37 : (b + 1) * frames // 37] for b in range(37)]
        assert channel["min"] == [min(w) for w in want] and channel["max"] == [max(w) for w in want]
    assert [c["label"] for c in reply.data["channels"]] == ["caller", "contact centre"]
    assert call(sock, "waveform", {"ticket": ticket, "points": 2001}).rc == 2
    assert [r.result for r in rows(site) if r.action == "waveform"] == ["failed: --points must be 1 to 2000"]


def test_a_recording_erased_after_the_play_is_no_longer_served(served: tuple[Site, str, str]) -> None:
    site, sock, rid = served
    ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
    [path] = site.stored_files()
    path.unlink()
    reply, got = audio(sock, ticket, 0, 100)
    assert reply.rc == 1 and got == b""


# -- another user's ticket -------------------------------------------------------------------------------


def test_a_ticket_is_refused_to_another_user(tmp_path: Path) -> None:
    needs_root("a second real user (useradd) asks with the first one's ticket", *USER_TOOLS)
    tag = f"k{uuid.uuid4().hex[:5]}"
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-g", grp.getgrgid(os.getgid()).gr_name,
                    f"{tag}o"], check=True, capture_output=True)
    try:
        site = Site(tmp_path, None, f"console: {{user: {ME}}}\n").init()
        assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
        store = site.open_store()
        try:
            [row] = store.reading.recordings()
        finally:
            store.close()
        rid = row.id
        config = load(str(site.config))
        server = ControlServer(config)
        assert server.start()
        try:
            sock = control.socket_path(config)
            ticket = call(sock, "play", {"id": rid, "purpose": "quality"}).data["ticket"]
            reply, got = audio(sock, ticket, 0, 100, user=f"{tag}o")
            assert reply.rc == 3 and "another user" in reply.error and got == b""
            assert audio(sock, ticket, 0, 100)[0].rc == 0
        finally:
            server.stop()
    finally:
        subprocess.run(["userdel", f"{tag}o"], capture_output=True)
