"""The audit log: append-only, every row hash-chained to the one before (SHA-256).

Each row records when, who (user name and uid), what action, on which recording, for which purpose,
and whether it was allowed. Caller numbers never go in it: every row's detail (through its dicts
and lists), result and recording id is scrubbed here, on the way in, whoever wrote it
(:mod:`storage.scrub`), so the chain is over what is kept. ``verify`` recomputes the chain and
names every row that does not hold: altered, removed, or moved to another place.

:meth:`AuditLog.protect` adds what the chain alone cannot give: triggers that refuse UPDATE and
DELETE (a careless edit fails loudly; a deliberate one must drop them and still breaks the chain),
and a head record kept by an insert trigger, so that removing the *last* rows is noticed too. Rows
older than the retention period are removed from the start only by :meth:`prune`, which keeps the
last removed row's hash as the anchor the chain now starts from and records that in a chained row.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import database
from .scrub import scrub, scrub_tree

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
PROTECTION = (
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, "
    "hash TEXT NOT NULL, pruned_at REAL NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS audit_head_follows AFTER INSERT ON audit BEGIN "
    "INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, NEW.seq, NEW.hash); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN "
    "SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
NO_DELETE = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN "
    "SELECT RAISE(ABORT, 'the audit log is append-only (old rows leave only through pruning)'); END"
)
PRUNE_ACTION = "audit-prune"
NEAR = 8  # how far away a moved row is looked for


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    user: str
    uid: int
    action: str
    recording_id: str | None
    detail: dict[str, Any]
    result: str  # "allowed" | "denied: <why>" | "failed: <why>"


def _kept(event: AuditEvent) -> AuditEvent:
    """What the log keeps of ``event``: its free text without anything that looks like a phone number."""
    rid = None if event.recording_id is None else scrub(event.recording_id)
    return AuditEvent(event.at, event.user, event.uid, event.action, rid, scrub_tree(event.detail), scrub(event.result))


def _digest(seq: int, event: AuditEvent, prev_hash: str) -> str:
    body = json.dumps(
        [seq, repr(event.at), event.user, event.uid, event.action, event.recording_id,
         event.detail, event.result, prev_hash],
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(body.encode()).hexdigest()


class AuditLog:
    def __init__(self, path: str) -> None:
        self.db = database.connect(path)  # WAL, full sync; read-only on a full disk

    def create(self) -> None:
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def append(self, event: AuditEvent) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._insert(event)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return seq

    def _insert(self, event: AuditEvent) -> int:
        """Chain ``event`` after the last row (inside the caller's transaction)."""
        event = _kept(event)
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            anchor = self.anchor()
            last = (anchor[0], anchor[1]) if anchor else (0, GENESIS)
        seq, prev = last[0] + 1, last[1]
        self.db.execute(
            "INSERT INTO audit (seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, event.at, event.user, event.uid, event.action, event.recording_id,
             json.dumps(event.detail, ensure_ascii=False, sort_keys=True), event.result, prev,
             _digest(seq, event, prev)),
        )  # fmt: skip
        return seq

    # -- protection, head and anchor ------------------------------------------------------------

    def protect(self) -> None:
        """Install the append-only triggers and the head record (idempotent; old logs get a head
        record from their last row)."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_no_delete'").fetchone():
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for statement in (*PROTECTION, NO_DELETE):
                self.db.execute(statement)
            last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if last and not self.db.execute("SELECT 1 FROM audit_head").fetchone():
                self.db.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", last)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _has(self, table: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None

    def head(self) -> tuple[int, str] | None:
        """The last row's (seq, hash) as the insert trigger recorded it."""
        if not self._has("audit_head"):
            return None
        row = self.db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    def anchor(self) -> tuple[int, str, float] | None:
        """(seq, hash, when) of the last row removed by pruning: the chain starts after it."""
        if not self._has("audit_anchor"):
            return None
        row = self.db.execute("SELECT seq, hash, pruned_at FROM audit_anchor WHERE id = 1").fetchone()
        return (row[0], row[1], row[2]) if row else None

    def prune(self, before: float, event: AuditEvent) -> int:
        """Remove the rows older than ``before`` (a prefix of the chain), keep the last one's hash
        as the anchor, and append ``event`` (its detail completed with the anchor). Returns the
        number of rows removed."""
        self.protect()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            through = self.db.execute("SELECT max(seq) FROM audit WHERE at < ?", (before,)).fetchone()[0]
            if through is None:
                self.db.execute("ROLLBACK")
                return 0
            through_hash = self.db.execute("SELECT hash FROM audit WHERE seq = ?", (through,)).fetchone()[0]
            self.db.execute("DROP TRIGGER audit_no_delete")
            removed = self.db.execute("DELETE FROM audit WHERE seq <= ?", (through,)).rowcount
            self.db.execute(NO_DELETE)
            self.db.execute(
                "INSERT OR REPLACE INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, ?, ?, ?)",
                (through, through_hash, event.at),
            )
            detail = {**event.detail, "through_seq": through, "through_hash": through_hash, "rows_removed": removed}
            self._insert(AuditEvent(event.at, event.user, event.uid, PRUNE_ACTION, None, detail, event.result))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return removed

    def rows(self) -> list[tuple[int, AuditEvent, str, str]]:
        cur = self.db.execute(
            "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash FROM audit ORDER BY seq"
        )
        return [
            (r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]), r[8], r[9])
            for r in cur.fetchall()
        ]

    def select(self, start: float | None = None, end: float | None = None, *, user: str | None = None,
               action: str | None = None, recording_id: str | None = None,
               limit: int | None = None) -> list[tuple[int, AuditEvent, str, str]]:  # fmt: skip
        """Rows in ``[start, end)`` matching the filters, oldest first (the last ``limit`` of them)."""
        where, args = [], []  # type: ignore[var-annotated]
        for clause, value in (("at >= ?", start), ("at < ?", end), ("user = ?", user), ("action = ?", action),
                              ("recording_id = ?", recording_id)):  # fmt: skip
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash FROM audit"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cur = self.db.execute(sql, args)
        rows = [(r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]), r[8], r[9]) for r in cur]
        return rows[::-1]

    def verify(self) -> list[str]:
        """Problems found in the chain, each naming its row; empty when the chain holds."""
        rows = self.rows()
        anchor = self.anchor()
        first, prev0 = (anchor[0] + 1, anchor[1]) if anchor else (1, GENESIS)
        # Where each row's content belongs: its own place, another place (moved), or none (altered).
        belongs: dict[int, int | None] = {}
        true_hash: dict[int, str] = {first - 1: prev0}
        for seq, event, prev_hash, digest in rows:
            place = seq if _digest(seq, event, prev_hash) == digest else next(
                (s for s in range(seq - NEAR, seq + NEAR + 1) if s != seq and _digest(s, event, prev_hash) == digest),
                None)  # fmt: skip
            belongs[seq] = place
            if place is not None:
                true_hash.setdefault(place, digest)
        problems = []
        expected = first
        for seq, event, prev_hash, digest in rows:
            if seq < first:
                problems.append(f"row {seq}: is older than the pruning anchor (row {first - 1}): put back after pruning")
                continue
            if seq > expected:
                gap = f"row {expected}" if seq == expected + 1 else f"rows {expected}-{seq - 1}"
                problems.append(f"{gap}: missing (removed) before row {seq}")
            place = belongs[seq]
            if place is None:
                problems.append(f"row {seq}: content does not match its hash (altered)")
            elif place != seq:
                problems.append(f"row {seq}: holds what was row {place} (rows swapped or reordered)")
            elif seq == expected and seq - 1 in true_hash and prev_hash != true_hash[seq - 1]:
                problems.append(f"row {seq}: does not chain to the row before it (row {seq - 1} was replaced)")
            expected = seq + 1
        head = self.head()
        if head is not None and head[0] >= expected:
            gap = f"row {head[0]}" if head[0] == expected else f"rows {expected}-{head[0]}"
            problems.append(f"{gap}: missing at the end (removed; the head record says the log ends at row {head[0]})")
        elif head is not None and rows and head[0] == rows[-1][0] and head[1] != rows[-1][3]:
            problems.append(f"row {head[0]}: differs from the head record (the last row was replaced)")
        if anchor is not None:
            prunes = [r for r in rows if r[1].action == PRUNE_ACTION]
            last = prunes[-1][1].detail if prunes else {}
            if (last.get("through_seq"), last.get("through_hash")) != (anchor[0], anchor[1]):
                problems.append(f"rows 1-{anchor[0]}: removed without a recorded pruning (the anchor matches no audit-prune row)")
        return problems
