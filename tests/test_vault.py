"""The vault's file format: round trip, and every kind of damage fails with a clear error."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
import yaml

from storage import vault
from storage.store import StoreError
from storage.vault import CHUNK, HEADER, TAG, VaultError

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "pcap_fixtures"

KEY = bytes(range(32))


def encrypt(data: bytes) -> bytes:
    out = io.BytesIO()
    digest, size = vault.encrypt_file(io.BytesIO(data), out, KEY)
    assert size == len(data)
    return out.getvalue()


def decrypt(blob: bytes, key: bytes = KEY) -> bytes:
    return b"".join(vault.decrypt_chunks(io.BytesIO(blob), key, "test"))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data)
    assert decrypt(blob) == data
    assert len(blob) == HEADER + max(1, -(-size // CHUNK)) * TAG + size


def test_reordered_chunks_fail() -> None:
    blob = encrypt(os.urandom(3 * CHUNK))
    c = CHUNK + TAG
    chunks = [blob[HEADER + i * c : HEADER + (i + 1) * c] for i in range(3)]
    with pytest.raises(VaultError, match="chunk 0 fails authentication"):
        decrypt(blob[:HEADER] + chunks[1] + chunks[0] + chunks[2])


def test_every_truncation_fails() -> None:
    blob = encrypt(os.urandom(2 * CHUNK + 100))
    for cut in list(range(40)) + [HEADER + CHUNK + TAG, len(blob) - 1]:
        with pytest.raises(VaultError):
            decrypt(blob[:cut])


def test_wrong_key_and_bad_header() -> None:
    blob = encrypt(b"audio")
    with pytest.raises(VaultError, match="fails authentication"):
        decrypt(blob, bytes(32))
    with pytest.raises(VaultError, match="not a vault file"):
        decrypt(b"RIFF" + blob[4:])


def test_wrapped_key_is_bound_to_its_recording() -> None:
    master = os.urandom(32)
    wrapped = vault.wrap(master, KEY, "rec-1")
    assert vault.unwrap(master, wrapped, "rec-1") == KEY
    with pytest.raises(VaultError, match="does not open"):
        vault.unwrap(master, wrapped, "rec-2")
    with pytest.raises(VaultError, match="was erased"):
        vault.unwrap(master, None, "rec-1")


def test_key_file_created_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "k" / "master.key"
    assert vault.create_key_file(str(path)) and not vault.create_key_file(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert len(vault.load_master_key(str(path))) == 32
    os.chmod(path, 0o440)
    with pytest.raises(VaultError, match="readable by others"):
        vault.load_master_key(str(path))
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "master-key").write_bytes(b"\x01" * 32)
    assert vault.load_master_key(str(path), str(cred)) == b"\x01" * 32  # the systemd credential wins


# -- the store's own master key (issue 16, item 6) -------------------------------------------------


def _recorded_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    from conftest import FIXTURES, Site

    site = Site(tmp_path).init()
    assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 0
    [rec] = site.list(capsys)
    return site, rec, site.root / "master.key"


def _swap_key(key_file: Path, key: bytes) -> None:
    os.chmod(key_file, 0o600)
    key_file.write_bytes(key)
    os.chmod(key_file, 0o400)


def test_init_refuses_a_new_key_for_a_store_with_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the key file gone, the advice is to restore it, and init does not make a new one (which
    would have opened none of the recordings from then on)."""
    site, rec, key_file = _recorded_site(tmp_path, capsys)
    original = key_file.read_bytes()
    key_file.unlink()
    capsys.readouterr()
    assert site.ctl("export", rec["id"], "--out", str(tmp_path / "a.wav"), "--purpose", "quality") == 1
    err = capsys.readouterr().err
    assert "restore that key from its backup" in err and "do not run init" in err and "run 'recorderctl" not in err
    assert site.ctl("init") == 1
    err = capsys.readouterr().err
    assert "init does not make a new key for a store that holds recordings" in err and "1 recording(s)" in err
    assert not key_file.exists()
    key_file.write_bytes(original)  # the backup, restored
    os.chmod(key_file, 0o400)
    assert site.ctl("export", rec["id"], "--out", str(tmp_path / "a.wav"), "--purpose", "quality") == 0
    assert site.wav_bytes(rec) == (tmp_path / "a.wav").read_bytes()


def test_start_refuses_a_key_that_is_not_the_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another key (a new one from an init elsewhere, a wrong backup) is refused at start, by the
    check value recorded at init, before a single recording is written with it."""
    from recorderd.daemon import Daemon

    site, rec, key_file = _recorded_site(tmp_path, capsys)
    original = key_file.read_bytes()
    _swap_key(key_file, os.urandom(32))
    daemon_config = tmp_path / "daemon.yaml"  # the service needs the trunk side told (it never gets to capture here)
    config = yaml.safe_load(site.config.read_text(encoding="utf-8"))
    config.setdefault("capture", {})["trunk_networks"] = ["192.0.2.0/24"]
    daemon_config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    capsys.readouterr()
    assert Daemon(str(daemon_config)).run() == 2
    err = capsys.readouterr().err
    assert "is not this store's (its check value differs" in err and "restore that key from its backup" in err
    assert site.replay(FIXTURES_DIR / "inbound-alaw.pcap") == 2  # nothing is recorded with the wrong key
    assert site.ctl("init") == 1 and "is not this store's" in capsys.readouterr().err
    _swap_key(key_file, original)
    assert site.ctl("verify") == 0


def test_a_store_from_before_gets_its_check_value_from_a_key_that_opens_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    site, rec, key_file = _recorded_site(tmp_path, capsys)
    original = key_file.read_bytes()
    with sqlite3.connect(site.store / "index.sqlite") as db:
        db.execute("DELETE FROM store_meta WHERE key = 'master_key_check'")  # as a store made before there was one
    _swap_key(key_file, os.urandom(32))
    store = site.open_store()
    with pytest.raises(StoreError, match=f"does not open recording {rec['id']}"):
        store.check_key()
    store.close()
    _swap_key(key_file, original)
    store = site.open_store()
    store.check_key()
    assert store.db().meta("master_key_check") == vault.key_check(original)
    store.close()


def test_a_store_without_recordings_may_get_a_new_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import Site

    site = Site(tmp_path).init()
    (site.root / "master.key").unlink()
    assert site.ctl("init") == 0  # nothing is wrapped by the lost key: a new one is harmless
    assert site.replay(FIXTURES_DIR / "inbound-mulaw.pcap") == 0
    assert site.ctl("verify") == 0


def test_a_new_master_key_gets_a_new_signing_key_that_signs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """init making a new master key (the old one lost, no recording wrapped by it) also replaces the
    signing key wrapped by the lost one, which could sign nothing: the next copy is signed and checks."""
    from conftest import Site

    from storage import signing

    site = Site(tmp_path).init()
    before = signing.read_public(str(site.store))
    (site.root / "master.key").unlink()
    assert site.ctl("init") == 0
    after = signing.read_public(str(site.store))
    assert before is not None and after is not None and after.key_id != before.key_id
    assert site.replay(FIXTURES_DIR / "inbound-mulaw.pcap") == 0
    [rec] = site.list(capsys)
    out = tmp_path / "copy.wav"
    assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality") == 0
    assert site.ctl("verify-export", str(out)) == 0
