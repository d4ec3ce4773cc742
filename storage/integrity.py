"""Checking what the store keeps: each recording (and its evidence pcap) decrypted, every record's
tag checked, and hashed against the SHA-256 recorded at finalisation; and the audit log's chain.
``recorderctl verify`` and retention (before an erasure) use it."""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from . import sealed, vault
from .audit import AuditLog
from .index import RecordingRow
from .reading import Reading


class Integrity:
    """The checks over ``reading``'s recordings and the store's ``audit_log()``."""

    def __init__(self, reading: Reading, *, audit_log: Callable[[], AuditLog]) -> None:
        self.reading = reading
        self.audit_log = audit_log

    def check(self, row: RecordingRow) -> str | None:
        """None when the recording (and its pcap) decrypts and matches its SHA-256; else what is wrong."""
        parts = [(False, row.sha256)] + ([(True, row.pcap_sha256)] if row.pcap_path and row.pcap_path != row.path else [])
        for pcap, expected in parts:
            digest = hashlib.sha256()
            try:
                with self.reading.reader(row, pcap) as f:
                    for i in range(f.chunks):
                        digest.update(f.chunk(i))
                    if isinstance(f, sealed.SealedFile):
                        f.verify()  # the records a later one replaced too
            except (vault.VaultError, sealed.SealedError, OSError) as exc:
                return str(exc)
            if digest.hexdigest() != expected:
                what = "evidence pcap" if pcap else "recording"
                return f"recording {row.id}: {what} SHA-256 {digest.hexdigest()[:16]}… differs from {expected[:16]}… recorded at finalisation"
        return None

    def verify(self) -> list[str]:
        """Every recording decrypted and hashed, and the audit chain: the problems found."""
        problems = [p for p in (self.check(row) for row in self.reading.recordings()) if p]
        problems += [f"audit log: {p}" for p in self.audit_log().verify()]
        return problems
