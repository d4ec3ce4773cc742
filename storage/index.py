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

from . import database

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
    created_at REAL NOT NULL,
    wrapped_key BLOB,                -- NULL once crypto-erased
    erasing_at REAL,                 -- set when erasure began (an interrupted one is finished next run)
    audio TEXT NOT NULL DEFAULT 'exact',   -- exact (G.711 bytes) | transcoded | not-decoded
    rate INTEGER NOT NULL DEFAULT 8000,
    pcap_path TEXT NOT NULL DEFAULT '',    -- the evidence pcap ('' when not kept)
    pcap_sha256 TEXT NOT NULL DEFAULT '',
    pcap_size INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS erasures (       -- the minimal record left of an erased recording
    id TEXT PRIMARY KEY,
    did_label TEXT NOT NULL,
    call_date TEXT NOT NULL,                -- local date of the call, no time, no caller
    retain_until REAL NOT NULL,
    erased_at REAL NOT NULL,
    method TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
"""
COLUMNS = (
    "id", "call_id", "did", "did_label", "caller", "started_at", "ended_at", "codec", "channels",
    "frames", "size", "sha256", "retain_until", "state", "end_reason", "path", "streams", "created_at",
    "wrapped_key", "erasing_at", "audio", "rate", "pcap_path", "pcap_sha256", "pcap_size",
)  # fmt: skip
# Columns added after the first stores were made: (name, declaration) for ALTER TABLE.
ADDED_COLUMNS = (
    ("audio", "TEXT NOT NULL DEFAULT 'exact'"), ("rate", "INTEGER NOT NULL DEFAULT 8000"),
    ("pcap_path", "TEXT NOT NULL DEFAULT ''"), ("pcap_sha256", "TEXT NOT NULL DEFAULT ''"),
    ("pcap_size", "INTEGER NOT NULL DEFAULT 0"),
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
    wrapped_key: bytes | None = None
    erasing_at: float | None = None
    audio: str = "exact"
    rate: int = 8000
    pcap_path: str = ""
    pcap_sha256: str = ""
    pcap_size: int = 0


class DuplicateRecording(Exception):
    pass


class Index:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = database.connect(path, foreign_keys=True, secure_delete=True)  # read-only on a full disk

    def close(self) -> None:
        self.db.close()

    def create(self) -> None:
        self.db.executescript(SCHEMA)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(recordings)")}
        for name, declaration in ADDED_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE recordings ADD COLUMN {name} {declaration}")
        self.db.execute(
            "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def initialised(self) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
        ).fetchone()
        return row is not None

    # -- store_meta: small named values of the store (key check value, clock reference) ----------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM store_meta WHERE key = ?", (key,))

    def wrapped_key_sample(self) -> tuple[str, bytes] | None:
        """One recording's id and wrapped data key (None: no recording holds a key)."""
        row = self.db.execute("SELECT id, wrapped_key FROM recordings WHERE wrapped_key IS NOT NULL LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def wrapped_keys(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM recordings WHERE wrapped_key IS NOT NULL").fetchone()[0])

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

    def holds(self, recording_id: str, now: float | None = None) -> list[dict[str, Any]]:
        """Holds not released (and, given ``now``, not yet past their end)."""
        cur = self.db.execute(
            "SELECT id, until, reason, ref, created_by, created_at FROM holds "
            "WHERE recording_id = ? AND released_at IS NULL AND (? IS NULL OR until > ?) ORDER BY id",
            (recording_id, now, now),
        )
        keys = ("hold_id", "until", "reason", "ref", "created_by", "created_at")
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    def add_hold(self, recording_id: str, until: float, reason: str, ref: str, by: str, at: float) -> int:
        cur = self.db.execute(
            "INSERT INTO holds (recording_id, until, reason, ref, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (recording_id, until, reason, ref, by, at),
        )
        return int(cur.lastrowid or 0)

    def release_hold(self, recording_id: str, hold_id: int, at: float) -> bool:
        cur = self.db.execute(
            "UPDATE holds SET released_at = ? WHERE id = ? AND recording_id = ? AND released_at IS NULL",
            (at, hold_id, recording_id),
        )
        return cur.rowcount == 1

    def due(self, now: float) -> list[RecordingRow]:
        """Recordings past their deadline with no hold in force (or already being erased)."""
        cur = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM recordings r WHERE erasing_at IS NOT NULL OR (retain_until <= ? "
            "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = r.id AND h.released_at IS NULL "
            "AND h.until > ?)) ORDER BY retain_until, id",
            (now, now),
        )
        return [_row(r) for r in cur.fetchall()]

    def paths(self) -> set[str]:
        """Every file the index knows (WAVs and evidence pcaps), relative to the recordings tree."""
        return {p for (a, b) in self.db.execute("SELECT path, pcap_path FROM recordings") for p in (a, b) if p}

    def newest_start(self) -> float | None:
        row = self.db.execute("SELECT max(started_at) FROM recordings").fetchone()
        return row[0] if row else None

    def next_deadline(self) -> float | None:
        row = self.db.execute("SELECT min(retain_until) FROM recordings").fetchone()
        return row[0] if row else None

    def begin_erasure(self, recording_id: str, at: float) -> None:
        """Mark the erasure begun and destroy the wrapped data key (secure_delete zeroes it)."""
        self.db.execute(
            "UPDATE recordings SET erasing_at = coalesce(erasing_at, ?), wrapped_key = NULL WHERE id = ?",
            (at, recording_id),
        )

    def finish_erasure(self, row: RecordingRow, call_date: str, erased_at: float, method: str) -> None:
        """Replace the recording's row (caller, Call-ID, ...) by the minimal deletion record."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO erasures (id, did_label, call_date, retain_until, erased_at, method, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.did_label, call_date, row.retain_until, erased_at, method, row.sha256),
            )
            self.db.execute("DELETE FROM holds WHERE recording_id = ?", (row.id,))
            self.db.execute("DELETE FROM recordings WHERE id = ?", (row.id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so no erased row lingers in the WAL."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def erasures(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT id, did_label, call_date, retain_until, erased_at, method, sha256 FROM erasures ORDER BY erased_at, id"
        )
        keys = ("id", "did_label", "call_date", "retain_until", "erased_at", "method", "sha256")
        return [dict(zip(keys, r)) for r in cur.fetchall()]


def _row(values: tuple[Any, ...]) -> RecordingRow:
    data = dict(zip(COLUMNS, values))
    data["streams"] = json.loads(data["streams"])
    return RecordingRow(**data)
