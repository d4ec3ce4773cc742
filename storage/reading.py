"""Reading kept recordings back: their rows, their files opened for random access (RDS1 or RDV1, by
the magic), decrypted chunk by chunk (each chunk authenticated), or written out in the clear for an
export (staging name, SHA-256 checked against the one recorded at finalisation, fsync, rename)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from . import sealed, vault
from .errors import IntegrityError, StoreError
from .index import Index, RecordingRow
from .layout import Layout


class Reading:
    """The recordings of the store of ``layout``, as ``db()`` indexes them."""

    def __init__(self, layout: Layout, *, db: Callable[[], Index], master_key: Callable[[], bytes]) -> None:
        self.layout = layout
        self.db = db
        self.master_key = master_key

    def recordings(self) -> list[RecordingRow]:
        return self.db().all()

    def get(self, recording_id: str) -> RecordingRow:
        row = self.db().get(recording_id)
        if row is None:
            raise StoreError(f"no recording {recording_id!r} in the store")
        return row

    def reader(self, row: RecordingRow, pcap: bool = False) -> Any:
        """The recording's WAV (or pcap) opened for random access: RDS1 or RDV1, by its magic."""
        from .reader import open_reader

        if pcap and not row.pcap_path:
            raise StoreError(f"recording {row.id} has no evidence pcap (store.keep_pcap was off)")
        data_key = vault.unwrap(self.master_key(), row.wrapped_key, row.id)
        return open_reader(self.layout.file_path(row, pcap), data_key, f"recording {row.id}" + (" (pcap)" if pcap else ""))

    def plaintext(self, row: RecordingRow, pcap: bool = False) -> Iterator[bytes]:
        """The recording's WAV (or its evidence pcap), decrypted chunk by chunk (each authenticated)."""
        with self.reader(row, pcap) as f:
            for i in range(f.chunks):
                yield f.chunk(i)

    def write_plaintext(self, row: RecordingRow, out: str, pcap: bool = False) -> None:
        """Decrypt to ``out`` (staging name, hash checked, fsync, rename); nothing is left on failure."""
        if not pcap and row.audio == "not-decoded":
            raise StoreError(f"recording {row.id} has no WAV: its codec {row.codec} is not decoded here; "
                             "its audio is the original RTP in the evidence pcap (export it as pcap)")  # fmt: skip
        expected = row.pcap_sha256 if pcap else row.sha256
        staging = f"{out}.part-{os.getpid()}"
        digest = hashlib.sha256()
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as dst:
                for chunk in self.plaintext(row, pcap):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != expected:
                raise IntegrityError(
                    f"recording {row.id} fails its integrity check (SHA-256 differs from the one recorded at finalisation)"
                )
            os.replace(staging, out)
        except (vault.VaultError, sealed.SealedError) as exc:
            raise IntegrityError(f"recording {row.id} fails its integrity check: {exc}") from None
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
