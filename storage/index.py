"""The SQLite index of kept recordings (and their holds).

One row per kept recording. ``secure_delete`` is on so that erased rows do not linger in free pages.
The index holds the caller's number (personal data): it lives in the locked store, readable by the
service user alone, and goes with the recording when it is erased.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    did TEXT NOT NULL,
    did_label TEXT NOT NULL,
    caller TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    codec TEXT NOT NULL,
    channels INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    retain_until REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('complete', 'incomplete')),
    end_reason TEXT NOT NULL,
    path TEXT NOT NULL,
    streams TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_started ON recordings (started_at);
CREATE INDEX IF NOT EXISTS recordings_retain ON recordings (retain_until);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL REFERENCES recordings (id),
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    released_at REAL
);
CREATE INDEX IF NOT EXISTS holds_recording ON holds (recording_id);
"""
COLUMNS = (
    "id", "call_id", "did", "did_label", "caller", "started_at", "ended_at", "codec", "channels",
    "frames", "size", "sha256", "retain_until", "state", "end_reason", "path", "streams", "created_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RecordingRow:
    id: str
    call_id: str
    did: str
    did_label: str
    caller: str
    started_at: float
    ended_at: float
    codec: str
    channels: int
    frames: int
    size: int
    sha256: str
    retain_until: float
    state: str
    end_reason: str
    path: str  # relative to the store's recordings directory
    streams: list[dict[str, Any]]
    created_at: float


class DuplicateRecording(Exception):
    pass


class Index:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.db.execute("PRAGMA secure_delete = ON")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self.db.close()

    def create(self) -> None:
        self.db.executescript(SCHEMA)
        self.db.execute(
            "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def initialised(self) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
        ).fetchone()
        return row is not None

    def add(self, row: RecordingRow) -> None:
        values = [getattr(row, c) for c in COLUMNS]
        values[COLUMNS.index("streams")] = json.dumps(row.streams, separators=(",", ":"))
        try:
            self.db.execute(
                f"INSERT INTO recordings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRecording(row.id) from exc

    def get(self, recording_id: str) -> RecordingRow | None:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings WHERE id = ?", (recording_id,))
        found = cur.fetchone()
        return _row(found) if found else None

    def all(self) -> list[RecordingRow]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings ORDER BY started_at, id")
        return [_row(r) for r in cur.fetchall()]

    def holds(self, recording_id: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT id, until, reason, ref, created_by, created_at FROM holds "
            "WHERE recording_id = ? AND released_at IS NULL ORDER BY id",
            (recording_id,),
        )
        keys = ("hold_id", "until", "reason", "ref", "created_by", "created_at")
        return [dict(zip(keys, r)) for r in cur.fetchall()]


def _row(values: tuple[Any, ...]) -> RecordingRow:
    data = dict(zip(COLUMNS, values))
    data["streams"] = json.loads(data["streams"])
    return RecordingRow(**data)
