"""Casework: the registers the guideline's operations keep beside the recordings.

``casework.sqlite`` in the store (0600, the service user's, like the index) holds: exported and
provided copies with their expiry (Art. 5(5), 5(6)), provisions with their legal basis, disclosure
requests with their candidates, holds and identity checks (Art. 10), incidents (Art. 7), complaints
(Art. 8), and periodic snapshots of the service's capture counters (for the period report).

It is a file of its own, not tables in the index, because it lives by other rules: the index is
personal metadata that goes with each recording at erasure and entirely at decommission, while
casework must outlast the recordings it mentions (an incident report or a provision record is needed
long after the 14 days) and stays, like the audit log, when the box is decommissioned. It refers to
recordings by id only and holds no caller numbers: a disclosure search uses the number and keeps the
recordings found, not the number. Free text (summaries, notes, reasons, recipients, outcomes) is
kept scrubbed of anything that looks like a phone number (:mod:`storage.scrub`), whatever was typed.
"""
from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from . import database
from .scrub import scrub, scrub_tree

SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    id INTEGER PRIMARY KEY, recording_id TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('export', 'provision')),
    user TEXT NOT NULL, uid INTEGER NOT NULL, purpose TEXT NOT NULL, approved_by TEXT, approval_ref TEXT,
    out TEXT NOT NULL, format TEXT NOT NULL, sha256 TEXT NOT NULL, recording_sha256 TEXT NOT NULL,
    made_at REAL NOT NULL, expires_at REAL NOT NULL, disposed_at REAL, disposed_how TEXT
);
CREATE TABLE IF NOT EXISTS provisions (
    id INTEGER PRIMARY KEY, recording_id TEXT NOT NULL, recipient TEXT NOT NULL, basis TEXT NOT NULL,
    note TEXT NOT NULL, recording_sha256 TEXT NOT NULL, copy_id INTEGER NOT NULL REFERENCES copies (id),
    provided_by TEXT NOT NULL, provided_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS disclosures (
    id INTEGER PRIMARY KEY, requester_type TEXT NOT NULL, ref TEXT NOT NULL, note TEXT NOT NULL,
    opened_by TEXT NOT NULL, opened_at REAL NOT NULL, state TEXT NOT NULL,
    decision TEXT, decision_reason TEXT, decided_by TEXT, decided_at REAL, closed_by TEXT, closed_at REAL
);
CREATE TABLE IF NOT EXISTS disclosure_candidates (
    request_id INTEGER NOT NULL REFERENCES disclosures (id), recording_id TEXT NOT NULL, hold_id INTEGER,
    found_at REAL NOT NULL, released_at REAL, PRIMARY KEY (request_id, recording_id)
);
CREATE TABLE IF NOT EXISTS identity_checks (
    id INTEGER PRIMARY KEY, request_id INTEGER NOT NULL REFERENCES disclosures (id), document TEXT NOT NULL,
    checked_by TEXT NOT NULL, checked_on TEXT NOT NULL, matched_with TEXT NOT NULL,
    recorded_by TEXT NOT NULL, recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, summary TEXT NOT NULL, occurred_at REAL NOT NULL,
    recordings TEXT NOT NULL, opened_by TEXT NOT NULL, opened_at REAL NOT NULL, automatic INTEGER NOT NULL,
    fingerprint TEXT, state TEXT NOT NULL DEFAULT 'open'
);
CREATE TABLE IF NOT EXISTS incident_actions (
    id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL REFERENCES incidents (id), text TEXT NOT NULL,
    by TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS complaints (
    id INTEGER PRIMARY KEY, summary TEXT NOT NULL, channel TEXT NOT NULL, received_at REAL NOT NULL,
    recordings TEXT NOT NULL, opened_by TEXT NOT NULL, opened_at REAL NOT NULL, state TEXT NOT NULL,
    outcome TEXT, closed_by TEXT, closed_at REAL
);
CREATE TABLE IF NOT EXISTS export_requests (
    id INTEGER PRIMARY KEY, recording_id TEXT NOT NULL, purpose TEXT NOT NULL, reason TEXT NOT NULL,
    requested_by TEXT NOT NULL, requested_uid INTEGER NOT NULL, requested_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'refused', 'exporting', 'used')),
    decided_by TEXT, decided_uid INTEGER, decided_at REAL, decision_reason TEXT,
    copy_id INTEGER REFERENCES copies (id), used_at REAL
);
CREATE TABLE IF NOT EXISTS capture_stats (
    run_started REAL NOT NULL, at REAL NOT NULL, counters TEXT NOT NULL, PRIMARY KEY (run_started, at)
);
"""


# Kept as given: hashes, the copy's path (needed to erase it), user names from the system, and the
# recording lists (scrubbed as lists before they are encoded). Every other text value is scrubbed.
VERBATIM = frozenset({"out", "sha256", "recording_sha256", "fingerprint", "recordings", "user", "approved_by",
                      "opened_by", "by", "provided_by", "recorded_by", "decided_by", "closed_by", "requested_by",
                      "recording_id"})


class CaseworkError(Exception):
    pass


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    keys = [c[0] for c in cur.description]
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


class Casework:
    def __init__(self, path: str) -> None:
        """Open (and create, 0600, owned like the store) the casework file at ``path``."""
        fresh = not os.path.exists(path)
        self.path = path
        self.db = database.connect(path, foreign_keys=True)  # read-only on a full disk
        if fresh or not database.is_read_only(self.db):
            self.db.executescript(SCHEMA)
        if fresh:
            os.chmod(path, 0o600)
            st = os.stat(os.path.dirname(path))
            if os.geteuid() == 0 and st.st_uid != 0:  # root working on the service user's store
                os.chown(path, st.st_uid, st.st_gid)

    def close(self) -> None:
        self.db.close()

    def _insert(self, table: str, **values: Any) -> int:
        values = {k: scrub(v) if isinstance(v, str) and k not in VERBATIM else v for k, v in values.items()}
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        cur = self.db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))
        return int(cur.lastrowid or 0)

    def _one(self, table: str, row_id: int, what: str) -> dict[str, Any]:
        rows = _dicts(self.db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)))
        if not rows:
            raise CaseworkError(f"no {what} {row_id}")
        return rows[0]

    # -- copies and provisions (Art. 5(5), 5(6)) ------------------------------------------------

    def add_copy(self, **values: Any) -> int:
        return self._insert("copies", **values)

    def copies(self, *, user: str | None = None, expired_by: float | None = None) -> list[dict[str, Any]]:
        """Copies (of one user), or those past expiry at ``expired_by`` and not disposed of."""
        sql, args = "SELECT * FROM copies WHERE 1 = 1", []  # type: ignore[var-annotated]
        if user is not None:
            sql, args = sql + " AND user = ?", [*args, user]
        if expired_by is not None:
            sql, args = sql + " AND disposed_at IS NULL AND expires_at <= ?", [*args, expired_by]
        return _dicts(self.db.execute(sql + " ORDER BY id", args))

    def copy(self, copy_id: int) -> dict[str, Any]:
        return self._one("copies", copy_id, "exported copy")

    def dispose_copy(self, copy_id: int, at: float, how: str) -> None:
        self.db.execute("UPDATE copies SET disposed_at = ?, disposed_how = ? WHERE id = ? AND disposed_at IS NULL",
                        (at, scrub(how), copy_id))

    def add_provision(self, **values: Any) -> int:
        return self._insert("provisions", **values)

    def provisions(self) -> list[dict[str, Any]]:
        return _dicts(self.db.execute("SELECT * FROM provisions ORDER BY id"))

    # -- disclosure requests (Art. 10) ----------------------------------------------------------

    def open_disclosure(self, requester_type: str, ref: str, note: str, by: str, at: float) -> int:
        return self._insert("disclosures", requester_type=requester_type, ref=ref, note=note, opened_by=by,
                            opened_at=at, state="open")

    def disclosure(self, request_id: int) -> dict[str, Any]:
        request = self._one("disclosures", request_id, "disclosure request")
        request["candidates"] = _dicts(self.db.execute(
            "SELECT recording_id, hold_id, found_at, released_at FROM disclosure_candidates WHERE request_id = ? "
            "ORDER BY recording_id", (request_id,)))
        request["identity_checks"] = _dicts(self.db.execute(
            "SELECT id, document, checked_by, checked_on, matched_with, recorded_by, recorded_at FROM identity_checks "
            "WHERE request_id = ? ORDER BY id", (request_id,)))
        return request

    def disclosures(self) -> list[dict[str, Any]]:
        return _dicts(self.db.execute("SELECT * FROM disclosures ORDER BY id"))

    def add_candidate(self, request_id: int, recording_id: str, hold_id: int | None, at: float) -> bool:
        cur = self.db.execute("INSERT OR IGNORE INTO disclosure_candidates (request_id, recording_id, hold_id, "
                              "found_at) VALUES (?, ?, ?, ?)", (request_id, recording_id, hold_id, at))
        return cur.rowcount == 1

    def release_candidates(self, request_id: int, at: float) -> None:
        self.db.execute("UPDATE disclosure_candidates SET released_at = ? WHERE request_id = ? AND released_at IS NULL",
                        (at, request_id))

    def add_identity_check(self, request_id: int, **values: Any) -> int:
        return self._insert("identity_checks", request_id=request_id, **values)

    def decide_disclosure(self, request_id: int, decision: str, reason: str, by: str, at: float) -> None:
        self.db.execute("UPDATE disclosures SET state = 'decided', decision = ?, decision_reason = ?, decided_by = ?, "
                        "decided_at = ? WHERE id = ?", (decision, scrub(reason), by, at, request_id))

    def close_disclosure(self, request_id: int, by: str, at: float) -> None:
        self.db.execute("UPDATE disclosures SET state = 'closed', closed_by = ?, closed_at = ? WHERE id = ?",
                        (by, at, request_id))

    # -- incidents (Art. 7) and complaints (Art. 8) ---------------------------------------------

    def open_incident(self, kind: str, summary: str, occurred_at: float, recordings: list[str], by: str, at: float,
                      *, automatic: bool = False, fingerprint: str | None = None) -> int:
        return self._insert("incidents", kind=kind, summary=summary, occurred_at=occurred_at,
                            recordings=json.dumps(scrub_tree(recordings)), opened_by=by, opened_at=at,
                            automatic=int(automatic), fingerprint=fingerprint)

    def open_incident_with(self, fingerprint: str) -> int | None:
        row = self.db.execute("SELECT id FROM incidents WHERE fingerprint = ? AND state = 'open'",
                              (fingerprint,)).fetchone()
        return row[0] if row else None

    def incident(self, incident_id: int) -> dict[str, Any]:
        incident = self._one("incidents", incident_id, "incident")
        incident["recordings"] = json.loads(incident["recordings"])
        incident["actions"] = _dicts(self.db.execute(
            "SELECT text, by, at FROM incident_actions WHERE incident_id = ? ORDER BY id", (incident_id,)))
        return incident

    def incidents(self) -> list[dict[str, Any]]:
        return [self.incident(row[0]) for row in self.db.execute("SELECT id FROM incidents ORDER BY id").fetchall()]

    def add_incident_action(self, incident_id: int, text: str, by: str, at: float) -> None:
        self._one("incidents", incident_id, "incident")
        self._insert("incident_actions", incident_id=incident_id, text=text, by=by, at=at)

    def close_incident(self, incident_id: int) -> None:
        self.db.execute("UPDATE incidents SET state = 'closed' WHERE id = ?", (incident_id,))

    def open_complaint(self, summary: str, channel: str, received_at: float, recordings: list[str], by: str,
                       at: float) -> int:
        return self._insert("complaints", summary=summary, channel=channel, received_at=received_at,
                            recordings=json.dumps(scrub_tree(recordings)), opened_by=by, opened_at=at,
                            state="open")

    def complaint(self, complaint_id: int) -> dict[str, Any]:
        row = self._one("complaints", complaint_id, "complaint")
        row["recordings"] = json.loads(row["recordings"])
        return row

    def complaints(self) -> list[dict[str, Any]]:
        rows = _dicts(self.db.execute("SELECT * FROM complaints ORDER BY id"))
        for row in rows:
            row["recordings"] = json.loads(row["recordings"])
        return rows

    def close_complaint(self, complaint_id: int, outcome: str, by: str, at: float) -> None:
        self.db.execute("UPDATE complaints SET state = 'closed', outcome = ?, closed_by = ?, closed_at = ? "
                        "WHERE id = ?", (scrub(outcome), by, at, complaint_id))

    # -- export requests (Art. 5(5): a copy for another purpose, approved by a second person) ----

    def add_export_request(self, recording_id: str, purpose: str, reason: str, by: str, uid: int, at: float) -> int:
        return self._insert("export_requests", recording_id=recording_id, purpose=purpose, reason=reason,
                            requested_by=by, requested_uid=uid, requested_at=at, state="pending")

    def export_request(self, request_id: int) -> dict[str, Any]:
        return self._one("export_requests", request_id, "export request")

    def export_requests(self, *, requested_by: str | None = None) -> list[dict[str, Any]]:
        """All export requests (or one user's), newest first."""
        sql, args = "SELECT * FROM export_requests", []
        if requested_by is not None:
            sql, args = sql + " WHERE requested_by = ?", [requested_by]
        return _dicts(self.db.execute(sql + " ORDER BY id DESC", args))

    def decide_export_request(self, request_id: int, approve: bool, reason: str, by: str, uid: int, at: float) -> bool:
        """Approve or refuse a pending request; False when it was no longer pending."""
        cur = self.db.execute("UPDATE export_requests SET state = ?, decided_by = ?, decided_uid = ?, decided_at = ?, "
                              "decision_reason = ? WHERE id = ? AND state = 'pending'",
                              ("approved" if approve else "refused", by, uid, at, scrub(reason),
                               request_id))
        return cur.rowcount == 1

    def claim_export_request(self, request_id: int) -> bool:
        """Take an approved request for its one download (False: not approved, or taken already)."""
        cur = self.db.execute("UPDATE export_requests SET state = 'exporting' WHERE id = ? AND state = 'approved'",
                              (request_id,))
        return cur.rowcount == 1

    def finish_export_request(self, request_id: int, copy_id: int | None, at: float) -> None:
        """The download made copy ``copy_id`` (the request is used), or failed (None: approved again)."""
        if copy_id is None:
            self.db.execute("UPDATE export_requests SET state = 'approved' WHERE id = ? AND state = 'exporting'",
                            (request_id,))
        else:
            self.db.execute("UPDATE export_requests SET state = 'used', copy_id = ?, used_at = ? WHERE id = ?",
                            (copy_id, at, request_id))

    # -- capture counters (for the period report) -----------------------------------------------

    def snapshot_counters(self, run_started: float, at: float, counters: dict[str, int]) -> None:
        self.db.execute("INSERT OR REPLACE INTO capture_stats (run_started, at, counters) VALUES (?, ?, ?)",
                        (run_started, at, json.dumps(counters, sort_keys=True)))

    def counter_snapshots(self) -> list[tuple[float, float, dict[str, int]]]:
        cur = self.db.execute("SELECT run_started, at, counters FROM capture_stats ORDER BY run_started, at")
        return [(r[0], r[1], json.loads(r[2])) for r in cur.fetchall()]

    def prune_snapshots(self, before: float) -> None:
        self.db.execute("DELETE FROM capture_stats WHERE at < ?", (before,))
