"""Vault: every kept file encrypted at rest with its own data key, AES-256-GCM in chunks.

File layout::

    header   "RDV1" | chunk size (u32 BE) | nonce prefix (8 random bytes)             16 bytes
    chunk i  AES-GCM(data key, nonce = prefix | i (u32 BE), aad = header | i | last)
             over up to ``chunk size`` plaintext bytes; 16-byte tag appended

The chunk index in the nonce makes a reordered chunk fail, the ``last`` flag in the associated data
makes a truncated file fail (its final chunk is not marked last), and the tag makes any altered byte
fail: each with a clear :class:`VaultError`. Data keys are wrapped (AES-GCM) by a master key that the
daemon loads from the systemd credential ``master-key`` or from a root-only key file. Destroying the
wrapped key is the crypto-erase (NIST SP 800-88 "purge").
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"RDV1"
CHUNK = 64 * 1024
TAG = 16
HEADER = 16
KEY_BYTES = 32
CREDENTIAL = "master-key"
_WRAP_AAD = b"recorderd data key v1"
_CHECK_INFO = b"recorderd key check v1"


class VaultError(Exception):
    pass


class MissingKey(VaultError):
    """No master key where it should be (the store says what to do about it)."""


# -- master key ---------------------------------------------------------------------------------


def create_key_file(path: str) -> bool:
    """Write a new random master key to ``path`` (mode 0400) unless it exists. True if created."""
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def load_master_key(key_file: str, credentials_dir: str | None = None) -> bytes:
    """The master key: the systemd credential when one is passed, else the key file, which must be
    readable by its owner alone."""
    if credentials_dir:
        cred = os.path.join(credentials_dir, CREDENTIAL)
        if os.path.exists(cred):
            return _read_key(cred)
    try:
        st = os.stat(key_file)
    except FileNotFoundError:
        raise MissingKey(f"master key file {key_file} does not exist") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise VaultError(
            f"master key file {key_file} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "refusing to use it; chmod 0400 it and make the service user its owner"
        )
    return _read_key(key_file)


def key_check(master: bytes) -> str:
    """A value that tells whether a key is the store's, and says nothing about the key:
    HMAC-SHA256(master, "recorderd key check v1"), first 16 bytes, hex."""
    return hmac.new(master, _CHECK_INFO, hashlib.sha256).hexdigest()[:32]


def same_check(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        key = f.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise VaultError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


# -- data keys ----------------------------------------------------------------------------------


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def wrap(master: bytes, data_key: bytes, recording_id: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master).encrypt(nonce, data_key, _WRAP_AAD + recording_id.encode())


def unwrap(master: bytes, wrapped: bytes | None, recording_id: str) -> bytes:
    if not wrapped:
        raise VaultError(f"recording {recording_id} has no key: it was erased")
    try:
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD + recording_id.encode())
    except InvalidTag:
        raise VaultError(f"the key of recording {recording_id} does not open with this master key") from None


# -- files ----------------------------------------------------------------------------------------


def encrypt_file(src: BinaryIO, dst: BinaryIO, data_key: bytes) -> tuple[str, int]:
    """Encrypt ``src`` into ``dst``; returns the plaintext's SHA-256 and size."""
    header = MAGIC + struct.pack(">I", CHUNK) + os.urandom(8)
    dst.write(header)
    aes = AESGCM(data_key)
    digest = hashlib.sha256()
    size = 0
    index = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK) if chunk else b""
        last = not following
        digest.update(chunk)
        size += len(chunk)
        dst.write(aes.encrypt(_nonce(header, index), chunk, _aad(header, index, last)))
        if last:
            return digest.hexdigest(), size
        chunk = following
        index += 1


def decrypt_chunks(src: BinaryIO, data_key: bytes, name: str) -> Iterator[bytes]:
    """Plaintext chunks of an encrypted file, each authenticated before it is given out."""
    header = src.read(HEADER)
    if len(header) != HEADER or header[:4] != MAGIC:
        raise VaultError(f"{name}: not a vault file (bad header)")
    chunk_size = struct.unpack(">I", header[4:8])[0]
    if not 0 < chunk_size <= 16 * CHUNK:
        raise VaultError(f"{name}: bad chunk size {chunk_size}")
    aes = AESGCM(data_key)
    index = 0
    block = src.read(chunk_size + TAG)
    while True:
        following = src.read(chunk_size + TAG)
        last = not following
        if len(block) < TAG:
            raise VaultError(f"{name}: truncated at chunk {index}")
        try:
            yield aes.decrypt(_nonce(header, index), block, _aad(header, index, last))
        except InvalidTag:
            what = "truncated, or altered" if last else "altered, reordered or missing"
            raise VaultError(f"{name}: chunk {index} fails authentication ({what})") from None
        if last:
            return
        block = following
        index += 1


def _nonce(header: bytes, index: int) -> bytes:
    return header[8:16] + struct.pack(">I", index)


def _aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">IB", index, 1 if last else 0)
