"""The locked store: layout, initialisation, keeping finalised recordings, export.

Layout below ``store.path``::

    index.sqlite        recordings and holds (personal metadata: caller numbers)
    audit.sqlite        the hash-chained audit log
    spool/              WAVs of calls in progress
    recordings/YYYY/MM/DD/<id>.wav   finalised recordings (local date of the call)

Directories are 0700 and files 0600, created under umask 077: only the service user reads them.
A finalised file is moved from the spool with a rename, its directory fsynced, and only then
indexed; a stored recording is never rewritten.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from . import recorder
from .audit import AuditEvent, AuditLog
from .index import Index, RecordingRow
from .retention import retain_until

log = logging.getLogger(__name__)

DIR_MODE = 0o700
COPY_CHUNK = 1 << 20


class StoreError(Exception):
    pass


class StoreNotInitialised(StoreError):
    pass


class IntegrityError(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for an operation (a Unix user)."""

    user: str
    uid: int


class Store:
    def __init__(
        self, root: str, *, tz: ZoneInfo, retention_days: int, anchor: str = "start", clock: Any = time.time
    ) -> None:
        self.root = os.path.abspath(root)
        self.tz = tz
        self.retention_days = retention_days
        self.anchor = anchor  # "start" | "end": which moment of the call dates it for retention
        self.clock = clock
        self.spool_dir = os.path.join(self.root, "spool")
        self.recordings_dir = os.path.join(self.root, "recordings")
        self.index_path = os.path.join(self.root, "index.sqlite")
        self.audit_path = os.path.join(self.root, "audit.sqlite")
        self.index: Index | None = None
        self.audit: AuditLog | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def init(self) -> bool:
        """Create the store (idempotent). Returns True when it was created now."""
        created = not os.path.exists(self.index_path)
        for path in (self.root, self.spool_dir, self.recordings_dir):
            os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            os.chmod(path, DIR_MODE)
        index = Index(self.index_path)
        index.create()
        index.close()
        audit = AuditLog(self.audit_path)
        audit.create()
        audit.close()
        for path in (self.index_path, self.audit_path):
            os.chmod(path, 0o600)
        return created

    def open(self) -> Store:
        if not os.path.exists(self.index_path):
            raise StoreNotInitialised(
                f"the store at {self.root} was never initialised: run 'recorderctl --config PATH init' first"
            )
        self.index = Index(self.index_path)
        if not self.index.initialised():
            raise StoreNotInitialised(f"{self.index_path} is not a recorderd index: run 'recorderctl init'")
        self.audit = AuditLog(self.audit_path)
        return self

    def close(self) -> None:
        for part in (self.index, self.audit):
            if part is not None:
                part.close()
        self.index = self.audit = None

    def _index(self) -> Index:
        if self.index is None:
            raise StoreError("store is not open")
        return self.index

    # -- recording ----------------------------------------------------------------------------

    def sink(self) -> recorder.SpoolSink:
        return recorder.SpoolSink(self)

    def new_recording_id(self, call_id: str, did: str, started_at: float) -> str:
        base = recorder.recording_id(call_id, did, started_at, self.tz)
        rid, n = base, 1
        while os.path.exists(os.path.join(self.spool_dir, rid + ".wav")):
            n += 1
            rid = f"{base}-{n}"
        return rid

    def relative_path(self, recording_id: str, started_at: float) -> str:
        from datetime import datetime

        day = datetime.fromtimestamp(started_at, self.tz)
        return os.path.join(f"{day:%Y}", f"{day:%m}", f"{day:%d}", recording_id + ".wav")

    def keep(self, recording_id: str, spool_path: str, call: Any, **final: Any) -> RecordingRow | None:
        """Move a finalised spool file into the store and index it."""
        index = self._index()
        if index.get(recording_id) is not None:
            log.warning(
                "recording %s is already in the store (same capture replayed?): the new copy is discarded",
                recording_id, extra={"EVENT": "duplicate-recording", "RECORDING_ID": recording_id},
            )  # fmt: skip
            os.unlink(spool_path)
            return None
        rel = self.relative_path(recording_id, call.started_at)
        dest = os.path.join(self.recordings_dir, rel)
        os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
        os.replace(spool_path, dest)
        _fsync_dir(os.path.dirname(dest))
        _fsync_dir(self.spool_dir)
        row = RecordingRow(
            id=recording_id,
            call_id=call.call_id,
            did=call.did,
            did_label=call.did_label,
            caller=call.caller,
            started_at=call.started_at,
            ended_at=max(final["ended_at"], call.started_at),
            codec=call.codec,
            channels=2,
            frames=final["frames"],
            size=final["size"],
            sha256=final["sha256"],
            retain_until=retain_until(
                call.started_at if self.anchor == "start" else final["ended_at"], self.retention_days, self.tz
            ),
            state="complete" if final["complete"] else "incomplete",
            end_reason=final["end_reason"],
            path=rel,
            streams=final["streams"],
            created_at=self.clock(),
        )
        index.add(row)
        log.info(
            "recorded call %s to %s (%s, %.1f s, %s)", recording_id, call.did_label, call.codec,
            row.ended_at - row.started_at, row.state,
            extra={"EVENT": "call-recorded", "RECORDING_ID": recording_id, "DID_LABEL": call.did_label},
        )  # fmt: skip
        return row

    # -- reading ------------------------------------------------------------------------------

    def recordings(self) -> list[RecordingRow]:
        return self._index().all()

    def get(self, recording_id: str) -> RecordingRow:
        row = self._index().get(recording_id)
        if row is None:
            raise StoreError(f"no recording {recording_id!r} in the store")
        return row

    def holds(self, recording_id: str) -> list[dict[str, Any]]:
        return self._index().holds(recording_id)

    def file_path(self, row: RecordingRow) -> str:
        return os.path.join(self.recordings_dir, row.path)

    def export(self, recording_id: str, out: str, *, purpose: str, actor: Actor) -> RecordingRow:
        """Write the recording's WAV to ``out`` after checking its SHA-256; audited either way."""
        audit = self.audit
        assert audit is not None
        detail = {"purpose": purpose, "out": os.path.abspath(out)}
        try:
            row = self.get(recording_id)
            sha, _ = recorder.file_digest(self.file_path(row))
            if sha != row.sha256:
                raise IntegrityError(
                    f"recording {recording_id} fails its integrity check (SHA-256 {sha[:16]}… "
                    f"differs from {row.sha256[:16]}… recorded at finalisation): not exported"
                )
            _copy_exact(self.file_path(row), out, row.sha256)
        except (StoreError, OSError) as exc:
            audit.append(AuditEvent(self.clock(), actor.user, actor.uid, "export", recording_id, detail,
                                    f"failed: {exc}"))  # fmt: skip
            raise
        detail["sha256"] = row.sha256
        audit.append(AuditEvent(self.clock(), actor.user, actor.uid, "export", recording_id, detail, "allowed"))
        log.info("recording %s exported (purpose %s)", recording_id, purpose,
                 extra={"EVENT": "export", "RECORDING_ID": recording_id, "DID_LABEL": row.did_label})
        return row


def _copy_exact(src: str, out: str, sha256: str) -> None:
    """Copy to a staging name beside ``out``, check the copy's hash, fsync, rename."""
    staging = f"{out}.part-{os.getpid()}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as dst, open(src, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if recorder.file_digest(staging)[0] != sha256:
            raise IntegrityError("the exported copy does not match the recording's SHA-256")
        os.replace(staging, out)
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
