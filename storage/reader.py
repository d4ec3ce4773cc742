"""Random access into a stored recording's file: decrypt only what a byte range needs.

:func:`open_reader` dispatches on the file's magic: RDS1 (``storage/sealed.py``: the spool's sealed
files renamed into the store; an extent map from the clear record headers, built once per open) or
RDV1 (recordings kept by older code, read by :class:`VaultReader` below). Both give ``size``,
``chunks``/``chunk(i)`` and ``read(offset, length)``, and open the file once (``O_NOFOLLOW``).

RDV1:

A vault file (:mod:`storage.vault`) is a 16-byte header, then chunks of ``chunk size`` plaintext
bytes each with a 16-byte GCM tag; chunk ``i`` starts at ``HEADER + i * (chunk size + TAG)`` and
only the final one is marked ``last`` in its associated data. So a reader that knows the file's size
knows how many chunks there are and which one is last, seeks to chunk ``i`` and authenticates it on
its own: a one-hour recording can be played from its 59th minute after decrypting 64 KiB, and a
truncated, reordered or altered chunk still fails exactly as a whole read would (a file cut at a
chunk boundary: its new final chunk was not sealed as last).

The file is opened once (``O_NOFOLLOW``) and read with ``pread``; the chunk read last is kept, so
consecutive small ranges cost one decryption.
"""
from __future__ import annotations

import os
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import sealed
from .sealed import SealedFile
from .vault import CHUNK, HEADER, MAGIC, TAG, VaultError, _aad, _nonce


def open_reader(path: str, data_key: bytes, name: str) -> VaultReader | SealedFile:
    """The reader for the file at ``path``, by its magic (``FileNotFoundError`` if it is gone)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        magic = os.pread(fd, 4, 0)
        if magic == sealed.MAGIC:
            return SealedFile(path, data_key, name, fd=fd)
        return VaultReader(path, data_key, name, fd=fd)
    except BaseException:
        os.close(fd)
        raise


class VaultReader:
    def __init__(self, path: str, data_key: bytes, name: str, *, fd: int | None = None) -> None:
        self.name = name
        self.fd = fd if fd is not None else os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self.header = os.pread(self.fd, HEADER, 0)
            if len(self.header) != HEADER or self.header[:4] != MAGIC:
                raise VaultError(f"{name}: not a vault file (bad header)")
            self.chunk_size = struct.unpack(">I", self.header[4:8])[0]
            if not 0 < self.chunk_size <= 16 * CHUNK:
                raise VaultError(f"{name}: bad chunk size {self.chunk_size}")
            body = os.fstat(self.fd).st_size - HEADER
            block = self.chunk_size + TAG
            self.chunks = max(1, -(-body // block))  # an empty plaintext is still one (tag-only) chunk
            tail = body - (self.chunks - 1) * block
            if tail < TAG:
                raise VaultError(f"{name}: truncated at chunk {self.chunks - 1}")
            self.size = (self.chunks - 1) * self.chunk_size + tail - TAG  # plaintext bytes
        except BaseException:
            if fd is None:
                os.close(self.fd)
            raise
        self.aes = AESGCM(data_key)
        self._lock = threading.Lock()
        self._cached: tuple[int, bytes] | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> VaultReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunk(self, index: int) -> bytes:
        """Plaintext of chunk ``index``, authenticated (:class:`VaultError` if it does not hold)."""
        if not 0 <= index < self.chunks:
            raise VaultError(f"{self.name}: no chunk {index} (it has {self.chunks})")
        with self._lock:
            if self._cached is not None and self._cached[0] == index:
                return self._cached[1]
        block = self.chunk_size + TAG
        data = os.pread(self.fd, block, HEADER + index * block)
        last = index == self.chunks - 1
        if len(data) < TAG or (not last and len(data) != block):
            raise VaultError(f"{self.name}: truncated at chunk {index}")
        try:
            plain = self.aes.decrypt(_nonce(self.header, index), data, _aad(self.header, index, last))
        except InvalidTag:
            what = "truncated, or altered" if last else "altered, reordered or missing"
            raise VaultError(f"{self.name}: chunk {index} fails authentication ({what})") from None
        with self._lock:
            self._cached = (index, plain)
        return plain

    def read(self, offset: int, length: int) -> bytes:
        """Plaintext bytes ``[offset, offset + length)`` (shorter at the end of the file)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        parts = []
        first, final = offset // self.chunk_size, (end - 1) // self.chunk_size
        for i in range(first, final + 1):
            plain = self.chunk(i)
            base = i * self.chunk_size
            parts.append(plain[max(0, offset - base) : end - base])
        return b"".join(parts)
