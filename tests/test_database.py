"""storage/database.py's transaction(): all or nothing on real SQLite files, and the index's and the
audit log's writes that go through it (a failure half-way leaves no row, no key gone, no trigger
dropped)."""
from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from storage import database, vault
from storage.audit import AuditEvent, AuditFormatError, AuditLog
from storage.index import DuplicateRecording, Index, RecordingRow


def _db(path: Path) -> sqlite3.Connection:
    db = database.connect(str(path), foreign_keys=True)
    db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")
    return db


def _count(path: Path, table: str = "t") -> int:
    other = sqlite3.connect(path)  # another connection: what is on the disk, not in a transaction
    try:
        return int(other.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        other.close()


def test_the_block_is_committed_at_its_end(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    with database.transaction(db):
        db.executemany("INSERT INTO t (n) VALUES (?)", [(1,), (2,), (3,)])
        assert _count(tmp_path / "x.sqlite") == 0  # not before the end
    assert _count(tmp_path / "x.sqlite") == 3 and not db.in_transaction


def test_a_failure_inside_rolls_back_everything(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    db.execute("INSERT INTO t (n) VALUES (1)")
    with pytest.raises(ZeroDivisionError), database.transaction(db):
        db.execute("INSERT INTO t (n) VALUES (2)")
        db.execute("DELETE FROM t WHERE n = 1")
        1 / 0  # noqa: B018
    assert not db.in_transaction
    assert [r[0] for r in db.execute("SELECT n FROM t")] == [1]
    with pytest.raises(sqlite3.IntegrityError), database.transaction(db):  # SQLite's own error, too
        db.execute("INSERT INTO t (n) VALUES (5)")
        db.execute("INSERT INTO t (n) VALUES (1)")
    assert [r[0] for r in db.execute("SELECT n FROM t")] == [1]
    with database.transaction(db):  # and the connection goes on
        db.execute("INSERT INTO t (n) VALUES (7)")
    assert _count(tmp_path / "x.sqlite") == 2


def test_the_write_lock_is_taken_at_begin(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    other = sqlite3.connect(tmp_path / "x.sqlite", timeout=0, isolation_level=None)
    with database.transaction(db):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO t (n) VALUES (9)")
    other.execute("INSERT INTO t (n) VALUES (9)")
    other.close()


def test_a_commit_that_fails_is_rolled_back(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    db.execute("CREATE TABLE child (parent INTEGER REFERENCES t (n) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), database.transaction(db):
        db.execute("INSERT INTO t (n) VALUES (1)")
        db.execute("INSERT INTO child (parent) VALUES (42)")  # checked only at COMMIT
    assert not db.in_transaction
    assert _count(tmp_path / "x.sqlite") == 0 and _count(tmp_path / "x.sqlite", "child") == 0


def test_the_error_is_the_one_raised_when_sqlite_has_rolled_back_already(tmp_path: Path) -> None:
    db = _db(tmp_path / "x.sqlite")
    with pytest.raises(KeyError, match="the real cause"), database.transaction(db):
        db.execute("INSERT INTO t (n) VALUES (1)")
        db.execute("ROLLBACK")  # as SQLite does itself on some errors (a full disk at COMMIT)
        raise KeyError("the real cause")  # not 'cannot rollback - no transaction is active'
    assert _count(tmp_path / "x.sqlite") == 0


# -- the index and the audit log through it ----------------------------------------------------


def _row(rid: str, master: bytes, data_key: bytes) -> RecordingRow:
    return RecordingRow(id=rid, call_id=f"{rid}@pbx", did="0442003999", did_label="soudan", caller="09012345678",
                        started_at=1_790_000_000.0, ended_at=1_790_000_060.0, codec="PCMU", channels=2, frames=480_000,
                        size=960_044, sha256="ab" * 32, retain_until=1_791_300_000.0, state="complete",
                        end_reason="bye", path=f"2026/09/21/{rid}.rdv", streams=[], created_at=1_790_000_061.0,
                        wrapped_key=vault.wrap(master, data_key, rid))


def _index(tmp_path: Path) -> tuple[Index, bytes]:
    master = os.urandom(32)
    index = Index(str(tmp_path / "index.sqlite"))
    index.create()
    index.master = lambda: master
    return index, master


def _tables(index: Index) -> dict[str, int]:
    names = ("recordings", "caller_digests", "linked_legs", "holds", "erasures")
    return {t: index.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in names}


def test_an_erasure_that_fails_half_way_leaves_the_recording_whole(tmp_path: Path) -> None:
    index, master = _index(tmp_path)
    key = vault.new_data_key()
    row = _row("r1", master, key)
    index.add(row, key, [("leg-2@pbx", "refer")])
    index.add_hold("r1", 1_795_000_000.0, "request 12", "KC-12", "manager", 1_790_000_100.0)
    before = _tables(index)
    assert before == {"recordings": 1, "caller_digests": before["caller_digests"], "linked_legs": 1, "holds": 1,
                      "erasures": 0} and before["caller_digests"] > 0
    index.db.execute("CREATE TRIGGER refuse BEFORE DELETE ON recordings BEGIN SELECT RAISE(ABORT, 'disk gone'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk gone"):
        index.finish_erasure(row, "2026-09-21", 1_791_400_000.0, "test")
    assert _tables(index) == before  # no erasure record, the hold, digests and legs still there
    index.db.execute("DROP TRIGGER refuse")
    index.finish_erasure(row, "2026-09-21", 1_791_400_000.0, "test")
    assert _tables(index) == {"recordings": 0, "caller_digests": 0, "linked_legs": 0, "holds": 0, "erasures": 1}


def test_a_recording_indexed_twice_adds_nothing_the_second_time(tmp_path: Path) -> None:
    index, master = _index(tmp_path)
    key = vault.new_data_key()
    index.add(_row("r1", master, key), key)
    before = _tables(index)
    with pytest.raises(DuplicateRecording):
        index.add(_row("r1", master, key), key, [("leg-2@pbx", "refer")])
    assert _tables(index) == before and not index.db.in_transaction


def test_a_batch_of_keeps_is_indexed_in_one_commit_and_a_duplicate_in_it_fails_alone(tmp_path: Path) -> None:
    """Index.add_many (the store worker's batch of keeps): one COMMIT (one sync of the index's
    journal) for all the rows; the one whose id is indexed already fails with DuplicateRecording and
    leaves nothing of itself (no digest of its other caller, no linked leg), one without a data key
    fails with its ValueError, the others are whole."""
    index, master = _index(tmp_path)
    key = vault.new_data_key()
    index.add(_row("r2", master, key), key)
    before = _tables(index)
    statements: list[str] = []
    index.db.set_trace_callback(statements.append)
    items = []
    for rid in ("r1", "r2", "r3", "r4"):
        row = _row(rid, master, key)
        if rid == "r2":  # the duplicate carries another caller and a leg: none of it may stay
            row = dataclasses.replace(row, caller="08011112222")
        if rid == "r4":
            row = dataclasses.replace(row, wrapped_key=None)
        items.append((row, key, [(f"leg-{rid}@pbx", "refer")]))
    failed = index.add_many(items)
    index.db.set_trace_callback(None)
    assert [type(e).__name__ if e else None for e in failed] == [None, "DuplicateRecording", None, "ValueError"]
    assert sum(1 for s in statements if s.strip().upper() == "COMMIT") == 1
    after = _tables(index)
    assert after["recordings"] == 3 and after["linked_legs"] == 2  # r1's and r3's legs, none of r2's
    assert after["caller_digests"] - before["caller_digests"] == 2 * before["caller_digests"]  # r1's and r3's
    assert index.get("r2").caller == "09012345678" and not index.db.in_transaction  # the first r2 untouched


def test_a_batch_that_sqlite_rolls_back_whole_fails_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose statement makes SQLite roll the whole transaction back (it may on a full disk or
    an I/O error; the rollback done here stands in for it): add_many raises that cause, not a
    savepoint error, and nothing of the batch is in the index (found by review)."""
    index, master = _index(tmp_path)
    key = vault.new_data_key()
    real = index._insert
    calls: list[str] = []

    def insert(row: RecordingRow, data_key: bytes | None, legs: object) -> None:
        calls.append(row.id)
        if len(calls) == 2:
            index.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        real(row, data_key, legs)  # type: ignore[arg-type]

    monkeypatch.setattr(index, "_insert", insert)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        index.add_many([(_row(rid, master, key), key, []) for rid in ("r1", "r2", "r3")])
    assert _tables(index)["recordings"] == 0 and not index.db.in_transaction


def test_a_prune_that_fails_half_way_removes_no_audit_row(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit.sqlite"))
    log.create()
    log.use_key(os.urandom(32), at=1_790_000_000.0)
    for i in range(5):
        log.append(AuditEvent(1_790_000_000.0 + i, "manager", 1001, "list", None, {}, "allowed"))
    rows = log.rows()
    log.key = None  # the prune's own row cannot be sealed: it fails after its DELETE
    with pytest.raises(AuditFormatError):
        log.prune(1_790_000_003.5, AuditEvent(1_790_000_010.0, "root", 0, "audit-prune", None, {}, "allowed"))
    assert log.rows() == rows and not log.db.in_transaction
    assert log.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_no_delete'").fetchone()  # trigger back
    with pytest.raises(sqlite3.IntegrityError):
        log.db.execute("DELETE FROM audit")
