"""The vault's file format: round trip, and every kind of damage fails with a clear error."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from storage import vault
from storage.vault import CHUNK, HEADER, TAG, VaultError

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
    for cut in list(range(0, 40)) + [HEADER + CHUNK + TAG, len(blob) - 1]:
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
