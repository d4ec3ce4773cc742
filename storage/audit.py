"""The audit log: append-only, every row hash-chained to the one before (SHA-256).

Each row records when, who (user name and uid), what action, on which recording, for which purpose,
and whether it was allowed. Caller numbers never go in it. ``verify`` recomputes the chain and
names the first row that does not hold.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    action TEXT NOT NULL,
    recording_id TEXT,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    user: str
    uid: int
    action: str
    recording_id: str | None
    detail: dict[str, Any]
    result: str  # "allowed" | "denied: <why>" | "failed: <why>"


def _digest(seq: int, event: AuditEvent, prev_hash: str) -> str:
    body = json.dumps(
        [seq, repr(event.at), event.user, event.uid, event.action, event.recording_id,
         event.detail, event.result, prev_hash],
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(body.encode()).hexdigest()


class AuditLog:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")

    def create(self) -> None:
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def append(self, event: AuditEvent) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            self.db.execute(
                "INSERT INTO audit (seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, event.at, event.user, event.uid, event.action, event.recording_id,
                 json.dumps(event.detail, ensure_ascii=False, sort_keys=True), event.result, prev,
                 _digest(seq, event, prev)),
            )  # fmt: skip
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return seq

    def rows(self) -> list[tuple[int, AuditEvent, str, str]]:
        cur = self.db.execute(
            "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash FROM audit ORDER BY seq"
        )
        return [
            (r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]), r[8], r[9])
            for r in cur.fetchall()
        ]

    def verify(self) -> list[str]:
        """Problems found in the chain, each naming its row; empty when the chain holds."""
        problems = []
        prev = GENESIS
        expected_seq = 1
        for seq, event, prev_hash, digest in self.rows():
            if seq != expected_seq:
                problems.append(f"row {seq}: expected row {expected_seq} here (a row was removed or reordered)")
            if prev_hash != prev:
                problems.append(f"row {seq}: does not chain to the row before it")
            if _digest(seq, event, prev_hash) != digest:
                problems.append(f"row {seq}: content does not match its hash (altered)")
            prev = digest
            expected_seq = seq + 1
        return problems
