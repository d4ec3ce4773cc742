"""Reading kept recordings back: their rows, and their files opened for random access (RDS1 or RDV1,
by the magic) or decrypted chunk by chunk (each chunk authenticated)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import vault
from .errors import StoreError
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
