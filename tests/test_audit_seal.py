"""The sealed audit chain (issue 13): each row's hash is an HMAC under a key derived from the master
key, so a rewrite that recomputes plain SHA-256 hashes (all the previous code checked) fails
``audit verify``; the chain's head goes to the journal (``EVENT=audit-checkpoint``) at the start,
at least every 10 minutes and at a clean stop, and ``audit verify --against-journal`` catches a log
cut short (or rewritten) since; a log written by the previous code is migrated once, audited, and
keeps verifying; a log of a newer format is refused."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site

from storage.audit import GENESIS, NO_DELETE, PROTECTION, AuditEvent, _digest

OLD_COMMIT = "cf688db"  # the code before the seals (its audit log: plain SHA-256 hashes)


@pytest.fixture
def busy(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    """A store with a few audited actions (init, list, exports, a hold)."""
    site.replay(FIXTURES / "overlapping.pcap")
    recs = site.list(capsys)
    for i, rec in enumerate(recs):
        assert site.ctl("export", rec["id"], "--out", str(tmp_path / f"{i}.wav"), "--purpose", "quality") == 0
    assert site.ctl("hold", recs[0]["id"], "--until", "2099-01-01", "--reason", "complaint", "--ref", "K-1") == 0
    capsys.readouterr()
    return site


def rows(site: Site) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db:
        return db.execute("SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash "
                          "FROM audit ORDER BY seq").fetchall()


def tamper(site: Site, *statements: str, params: list[tuple] | None = None, guards_back: bool = True) -> None:
    """What someone with the file in hand (but not the key) does: drop the guards, change rows, and
    (``guards_back``) put the guards back, leaving no trace of that."""
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db, db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            db.execute(statement)
        for sql, *args in params or []:
            db.execute(sql, args)
        if guards_back:
            for statement in (*PROTECTION, NO_DELETE):
                db.execute(statement)


def rewrite_with_sha256(site: Site, *, change: int | None = None, through: int | None = None) -> None:
    """Rewrite the rows (up to ``through``) with plain SHA-256 hashes, each chained to the one
    before, the head record set to the new last row: self-consistent for the previous code's ``verify``."""
    statements, prev = [], GENESIS
    for seq, at, user, uid, action, rid, detail, result, _prev, _hash in rows(site):
        if through is not None and seq > through:
            break
        if seq == change:
            user = "someone-else"
        digest = _digest(seq, AuditEvent(at, user, uid, action, rid, json.loads(detail), result), prev)
        statements.append(("UPDATE audit SET user = ?, prev_hash = ?, hash = ? WHERE seq = ?", user, prev, digest, seq))
        prev = digest
    if through is None:
        statements.append(("UPDATE audit_head SET seq = (SELECT max(seq) FROM audit), hash = ?", prev))
    tamper(site, params=statements)


def rebuild_as_old(site: Site, kept: list[tuple]) -> None:
    """A log of the previous code made of ``kept`` rows: audit_meta dropped, the rows put back
    renumbered, each hashed with plain SHA-256 from GENESIS, the head record set."""
    statements, prev = [("DROP TABLE audit_meta",), ("DELETE FROM audit",)], GENESIS
    for seq, (_, at, user, uid, action, rid, detail, result, _p, _h) in enumerate(kept, start=1):
        digest = _digest(seq, AuditEvent(at, user, uid, action, rid, json.loads(detail), result), prev)
        statements.append(("INSERT INTO audit (seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", seq, at, user, uid, action, rid, detail, result, prev, digest))
        prev = digest
    statements.append(("UPDATE audit_head SET seq = ?, hash = ?", len(kept), prev))
    tamper(site, params=statements)


def verify(site: Site, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = site.ctl("audit", "verify", *flags)
    out = capsys.readouterr()
    return rc, [line[5:] for line in out.out.splitlines() if line.startswith("FAIL ")], out.out + out.err


# -- the journal, as the service writes it and journalctl -o json prints it -------------------------------


class Checkpoints(logging.Handler):
    """The checkpoint records, taken where they are logged (recorderctl's own logging set-up
    replaces the root logger's handlers, pytest's too)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "EVENT", None) == "audit-checkpoint":
            self.records.append(record)


@contextlib.contextmanager
def service(site: Site) -> Iterator[list[logging.LogRecord]]:
    """The control server as the daemon runs it; yields the checkpoint records logged so far (the
    one at its start is there when the block begins; the one at its stop when it ends)."""
    from recorderd.books import Books
    from recorderd.config import load
    from recorderd.control import ControlServer
    from recorderd.service import build_pipeline

    logger = logging.getLogger("recorderd.journal")
    taken, level = Checkpoints(), logger.level
    logger.addHandler(taken)
    logger.setLevel(logging.INFO)
    config = load(str(site.config))
    store = site.open_store()
    server = ControlServer(config, pipeline=build_pipeline(config, store))
    books = Books(config, server.view)  # the counter snapshots and the checkpoints (recorderd/books.py)
    assert server.start() and books.start()
    try:
        deadline = time.monotonic() + 10
        while not taken.records and time.monotonic() < deadline:
            time.sleep(0.1)
        assert taken.records, "no checkpoint at the start"
        yield taken.records
    finally:
        books.stop()
        server.stop()
        store.close()
        logger.removeHandler(taken)
        logger.setLevel(level)


def journal_json(records: list[logging.LogRecord], uid: int | None = None, unit: str = "recorderd.service") -> str:
    """The records as ``journalctl -o json`` prints what systemd.journal.JournalHandler sent
    (every field a string; _UID and _SYSTEMD_UNIT added by journald: the service's unit, or
    ``unit``, the sender's, e.g. a login session's)."""
    lines = []
    for r in records:
        lines.append(json.dumps({
            "__REALTIME_TIMESTAMP": str(int(r.created * 1e6)), "_UID": str(os.getuid() if uid is None else uid),
            "_SYSTEMD_UNIT": unit,
            "SYSLOG_IDENTIFIER": "recorderd", "MESSAGE": r.getMessage(), "PRIORITY": "6", "EVENT": r.EVENT,
            "AUDIT_SEQ": str(r.AUDIT_SEQ), "AUDIT_HEAD": r.AUDIT_HEAD, "AUDIT_KEY_ID": r.AUDIT_KEY_ID,
        }))
    return "\n".join(lines) + "\n"


def when(record: logging.LogRecord, site: Site) -> str:
    from recorderd.config import load

    return datetime.fromtimestamp(record.created, load(str(site.config)).tz).isoformat(timespec="seconds")


# -- (a) a rewrite with recomputed hashes ---------------------------------------------------------------


def test_a_log_rewritten_with_recomputed_sha256_hashes_fails_verify(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row rewritten (row 3's user changed) with SHA-256 hashes chained from the start and the
    head record fixed: the previous code's verify found nothing; the seals name row 1."""
    assert verify(busy, capsys)[0] == 0
    rewrite_with_sha256(busy, change=3)
    assert rows(busy)[2][2] == "someone-else"
    rc, problems, out = verify(busy, capsys)
    assert rc == 1 and problems[0] == "row 1: content does not match its hash (altered)"
    assert "row 3: content does not match its hash (altered)" in problems
    assert "incident 1 opened" in out
    assert busy.ctl("verify") == 1  # and the whole-store verify says so too
    assert "FAIL audit log: row 1: content does not match its hash (altered)" in capsys.readouterr().out


def test_a_log_rebuilt_as_one_of_the_previous_code_is_not_migrated_over(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """The hostile review's rewrite: guards dropped, audit_meta dropped, every row deleted and all
    but one put back renumbered, each hashed with plain SHA-256 from GENESIS, the head record set.
    The file now looks like a log of the previous code; the index's seal marker says the store was
    sealed, so the next open does not "migrate" (seal over) it and verify says what happened."""
    before = rows(busy)
    kept = [r for r in before if r[0] != 3]  # row 3 (an export) is gone
    rebuild_as_old(busy, kept)
    rc, problems, out = verify(busy, capsys)
    assert rc == 1, out
    assert problems[0].startswith("audit_meta removed or rewritten: the store's index says its audit log is sealed"), out
    assert "row 1: content does not match its hash (altered)" in problems
    assert "the chain holds" not in out and "NOTE" not in out
    after = rows(busy)
    assert not [r for r in after if r[4] in ("audit-migrated", "audit-rekeyed")]  # nothing sealed over it
    with contextlib.closing(sqlite3.connect(busy.store / "audit.sqlite")) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_meta'").fetchone()
    rc, problems, _ = verify(busy, capsys)  # and so at every open after
    assert rc == 1 and problems[0].startswith("audit_meta removed or rewritten")


@pytest.mark.parametrize("version", ["0", "1"])
def test_a_rebuilt_log_with_the_index_marker_and_version_removed_is_not_migrated_over(
        busy: Site, capsys: pytest.CaptureFixture[str], version: str) -> None:
    """The second hostile review's rewrite: the one above, and in the index the keyed seal marker
    deleted and the schema version set back (to 0, which no release wrote, or to 1, the first
    edition's). Was: the next open took the store for one from before the seals and "migrated" the
    forged log, sealing over it, and verify said the chain holds. Only an index still of the first
    edition's shape (its caller numbers in a plain column) predates the seals: this one is not."""
    before = rows(busy)
    kept = [r for r in before if r[0] != 3][:-1]  # row 3 and the last row gone
    rebuild_as_old(busy, kept)
    with contextlib.closing(sqlite3.connect(busy.store / "index.sqlite")) as db, db:
        db.execute("DELETE FROM store_meta WHERE key = 'audit_sealed'")
        db.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (version,))
    rc, problems, out = verify(busy, capsys)
    assert rc != 0 and "the chain holds" not in out, out
    assert not [r for r in rows(busy) if r[4] in ("audit-migrated", "audit-rekeyed")], out  # nothing sealed over it
    assert verify(busy, capsys)[0] != 0  # and so at every open after


def test_one_row_changed_and_rehashed_is_named_at_that_row(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    [row3] = [r for r in rows(busy) if r[0] == 3]
    seq, at, user, uid, action, rid, detail, result, prev, _ = row3
    forged = _digest(seq, AuditEvent(at, "someone-else", uid, action, rid, json.loads(detail), result), prev)
    tamper(busy, params=[("UPDATE audit SET user = 'someone-else', hash = ? WHERE seq = 3", forged),
                         ("UPDATE audit SET prev_hash = ? WHERE seq = 4", forged)])
    rc, problems, _ = verify(busy, capsys)
    assert rc == 1 and problems[0] == "row 3: content does not match its hash (altered)"


def test_moving_the_start_of_the_seals_does_not_turn_rows_into_unchecked_ones(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """audit_meta says from which row the seals start; pointing it past rows rewritten with plain
    hashes is caught: the row there is no sealed migration (or re-key) row."""
    last = rows(busy)[-1][0]
    rewrite_with_sha256(busy, change=3)
    tamper(busy, f"UPDATE audit_meta SET value = '{last}' WHERE key = 'sealed_from'",
           f"UPDATE audit_meta SET value = '{last - 1}' WHERE key = 'legacy_through'")
    rc, problems, _ = verify(busy, capsys)
    assert rc == 1 and problems[0] == (f"row {last}: the log says its seals start there, but it is no sealed "
                                       "audit-migrated or audit-rekeyed row (the start of the seals was moved)")


def test_what_the_file_says_never_starts_the_seals_again(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """A re-key (rows before it checked for their order only) comes only from init making a new
    key, never from audit_meta: a log told it is format 1 and sealed under another key is not
    "migrated" or "re-keyed" over its rewritten rows."""
    rewrite_with_sha256(busy, change=3)
    tamper(busy, "UPDATE audit_meta SET value = '1' WHERE key = 'format'",
           "UPDATE audit_meta SET value = 'x' WHERE key = 'seal_check'")
    rc, problems, _ = verify(busy, capsys)
    assert rc == 1 and problems[:3] == [
        "audit_meta says the log is format '1', which no recorderd writes (altered)",
        "the log is sealed under another master key than the store's (its key check differs)",
        "row 1: content does not match its hash (altered)"]
    assert not [r for r in rows(busy) if r[4] in ("audit-migrated", "audit-rekeyed")]


# -- (b), (c) the journal's checkpoints ----------------------------------------------------------------


def test_checkpoints_go_to_the_journal_at_start_and_stop_without_personal_data(
        busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    from recorderd import books

    assert books.SNAPSHOT_PERIOD < 600  # the periodic one: at least every 10 minutes
    with service(busy) as records:
        assert len(records) == 1
        assert busy.ctl("list") == 0  # through the socket: one more row
    assert len(records) == 2  # and one at the clean stop, with that row
    first, last = records
    tip = rows(busy)[-1]
    assert (last.AUDIT_SEQ, last.AUDIT_HEAD) == (tip[0], tip[9])
    assert first.AUDIT_SEQ == tip[0] - 1
    assert re.fullmatch(r"[0-9a-f]{32}", last.AUDIT_KEY_ID)
    assert last.getMessage() == f"audit log checkpoint: row {tip[0]}, seal {tip[9]}"


def test_an_untouched_log_passes_verify_and_against_the_journal(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with service(busy) as records:
        assert busy.ctl("list") == 0
    journal = tmp_path / "journal.json"
    journal.write_text(journal_json(records))
    assert verify(busy, capsys)[0] == 0
    rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 0 and problems == [], out
    assert f"against the journal file {journal}: 2 checkpoint(s) checked: each is a row of the chain, with its seal" in out


def test_a_log_cut_short_passes_verify_but_fails_against_the_journal(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with service(busy) as records:
        for _ in range(3):
            assert busy.ctl("list") == 0
    journal = tmp_path / "journal.json"
    journal.write_text(journal_json(records))
    last = records[-1]
    keep = last.AUDIT_SEQ - 3
    [(head,)] = [(r[9],) for r in rows(busy) if r[0] == keep]
    tamper(busy, f"DELETE FROM audit WHERE seq > {keep}", f"UPDATE audit_head SET seq = {keep}, hash = '{head}'")
    rc, problems, _ = verify(busy, capsys)
    assert rc == 0 and problems == []  # what is left is a sound chain: only the journal knows it went further
    rc, problems, out = verify(busy, capsys, "--against-journal", "--journal-file", str(journal))
    assert rc == 1, out
    # (the plain verify above wrote its own row: the log now ends one row after the cut)
    assert problems == [f"checkpoint of {when(last, busy)} (row {last.AUDIT_SEQ}, seal {last.AUDIT_HEAD[:16]}…): the log "
                        f"now ends at row {keep + 1}: rows {keep + 2}-{last.AUDIT_SEQ} at least were removed (cut short)"], out
    assert "incident" in out


class Events(logging.Handler):
    """The records of one logger that carry an EVENT (recorderctl's logging set-up replaces the root
    logger's handlers, pytest's too)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "EVENT", ""))

    def __enter__(self) -> Events:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def guards(site: Site) -> set[str]:
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db:
        return {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' OR name = 'audit_head'")}


@pytest.mark.parametrize("cut, missing", [
    ((), "audit_no_update, audit_no_delete"),
    (("DROP TRIGGER audit_head_follows", "DROP TABLE audit_head"),
     "audit_head_follows, audit_no_update, audit_no_delete, the head record (table audit_head)"),
], ids=["head record set back", "head record dropped"])
def test_a_log_cut_short_with_its_guards_left_out_fails_plain_verify(
        busy: Site, capsys: pytest.CaptureFixture[str], cut: tuple[str, ...], missing: str) -> None:
    """The hostile review's cut: the last rows deleted, the append-only triggers dropped, the head
    record set back (or dropped). Was: the next open put the guards back silently and plain verify
    passed. Now they are not put back: verify fails saying they are gone, at every open after; the
    store's open (the service's) logs it; the log is not pruned meanwhile."""
    keep = rows(busy)[-1][0] - 2
    [head] = [r[9] for r in rows(busy) if r[0] == keep]
    tamper(busy, f"DELETE FROM audit WHERE seq > {keep}", f"UPDATE audit_head SET seq = {keep}, hash = '{head}'", *cut,
           guards_back=False)
    expected = (f"the log is sealed but its guards are gone ({missing}): they were removed, so rows may have been "
                "cut from its end and its head record set back without a trace here (check it --against-journal, "
                "restore audit.sqlite from its backup)")
    for _ in range(2):  # and so at every open after
        rc, problems, out = verify(busy, capsys)
        assert rc == 1 and problems == [expected], out
        assert "incident" in out
    assert not {"audit_no_update", "audit_no_delete"} & guards(busy)  # not put back
    with Events("storage.audit") as taken:
        store = busy.open_store()
        try:
            store.check_key()  # what the service does at its start
            before = rows(busy)
            audit = store.audit_log()
            assert audit.prune(time.time() + 10**9, AuditEvent(time.time(), "root", 0, "audit-prune", None, {},
                                                               "allowed")) == 0
            assert rows(busy) == before
        finally:
            store.close()
    assert taken.events.count("audit-guards-missing") == 2  # the open, and the prune not done


def test_a_new_log_has_its_guards_from_its_seals(tmp_path: Path) -> None:
    """A new store's log gets its guards with its seals (was: only at the first session after), so
    that a sealed log without them is one they were removed from."""
    from recorderd.config import load
    from recorderd.service import open_store

    site = Site(tmp_path)
    open_store(load(str(site.config))).init()
    assert guards(site) == {"audit_head", "audit_head_follows", "audit_no_update", "audit_no_delete"}
    store = site.open_store()
    try:
        assert store.audit_log().verify() == []
    finally:
        store.close()


def test_a_rewrite_that_also_removes_the_seals_is_caught_by_the_journal(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row rehashed with SHA-256 and audit_meta dropped, so the log looks like one of the
    previous code: the index's seal marker says it is not (so it is not "migrated"), and the
    journal's checkpoints still name the seals the rows had."""
    with service(busy) as records:
        assert busy.ctl("list") == 0
    journal = tmp_path / "journal.json"
    journal.write_text(journal_json(records))
    rewrite_with_sha256(busy, change=3)
    tamper(busy, "DROP TABLE audit_meta")
    rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 1, out
    assert problems[0].startswith("audit_meta removed or rewritten")
    against = [p for p in problems if p.startswith("checkpoint of ")]
    assert against and all("has another seal than the journal recorded (the log was rewritten)" in p for p in against)


def test_checkpoints_sent_by_another_user_or_another_store_are_not_taken(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Anyone may send a journal line that says recorderd: only those journald says came from the
    service's user count; and a checkpoint of another store's log (another key) is not this one's."""
    with service(busy) as records:
        pass
    forged = logging.makeLogRecord({**records[-1].__dict__, "AUDIT_HEAD": "f" * 64})
    other = logging.makeLogRecord({**records[-1].__dict__, "AUDIT_KEY_ID": "0" * 32, "AUDIT_HEAD": "e" * 64})
    journal = tmp_path / "journal.json"
    journal.write_text(journal_json(records) + journal_json([forged], uid=os.getuid() + 4242) + journal_json([other])
                       + "not json\n" + json.dumps({"EVENT": "audit-checkpoint", "SYSLOG_IDENTIFIER": "recorderd"}) + "\n")
    rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 0 and problems == [], out
    assert "NOTE 1 checkpoint(s) of another audit log" in out
    # an entry without journald's _UID (a hand-made export) vouches for nothing: was taken as the service's
    unsigned = json.loads(journal_json([forged]))
    del unsigned["_UID"]
    journal.write_text(journal_json(records) + json.dumps(unsigned) + "\n")
    rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 0 and problems == [], out


def test_a_manager_who_may_not_look_into_the_store_still_knows_the_service_s_user(
        busy: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the appliance /var/lib/recorderd is 0700: a manager's or an auditor's recorderctl cannot
    stat the store (the appliance test found --against-journal refused there for that). Then the
    service's user is the package's (``recorderd``); a box without that user says why it cannot check."""
    from recorderd import ctl
    from recorderd.config import load

    config = load(str(busy.config))
    assert ctl.service_user(config) == os.stat(busy.store).st_uid  # root here: it may look
    real_stat = os.stat

    def refused(path: object, *a: object, **k: object) -> os.stat_result:
        if str(path) == str(config.store_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ctl.os, "stat", refused)
    users = {"recorderd": types.SimpleNamespace(pw_uid=993)}
    monkeypatch.setattr(ctl.pwd, "getpwnam", lambda name: users[name])
    assert ctl.service_user(config) == 993
    users.clear()
    why = ctl.service_user(config)
    assert isinstance(why, str) and "Permission denied" in why and "no user recorderd" in why


def test_the_highest_checkpoints_go_through_the_service_and_the_failures_are_counted(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """More checkpoints of one log than are sent: recorderctl sends the 1,000 of its highest rows
    (the chain that holds the highest holds every row before it); each one not in the chain is
    counted, the oldest ten are named."""
    with service(busy) as records:
        last = records[-1]
        ahead = [logging.makeLogRecord({**last.__dict__, "AUDIT_SEQ": last.AUDIT_SEQ + 1 + i, "AUDIT_HEAD": f"{i:064x}",
                                        "created": last.created + 1 + i}) for i in range(7000)]
        journal = tmp_path / "journal.json"
        journal.write_text(journal_json(records + ahead))
        rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 1, out
    assert len(problems) == 11 and problems[-1] == "990 more checkpoint(s) after these are not in the chain either"
    assert problems[0].startswith(f"checkpoint of {when(ahead[6000], busy)} (row {ahead[6000].AUDIT_SEQ}, ")
    assert "1000 checkpoint(s) checked: the log no longer holds what they say" in out
    [row] = [r for r in rows(busy) if r[4] == "audit-verify"][-1:]
    assert json.loads(row[6])["via"] == "socket" and json.loads(row[6])["checkpoints"]["checked"] == 1000


def test_a_flood_of_checkpoints_does_not_push_the_service_s_out(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The hostile review's flood: the log cut short, then newer checkpoints than the service's
    written by the service's user from outside its unit: true ones of the rows left (each under the
    log's key, passing), repeated, and ones under made-up key ids; and lines claiming the service's
    unit as another user. Was: the newest distinct ones (by time, all key ids together) were sent,
    the service's dropped out, and the cut log passed. Now, per key id the highest rows, the unit's
    key ids first: the service's last checkpoint is checked and names the cut."""
    from recorderd import ctl

    monkeypatch.setattr(ctl, "JOURNAL_CHECKPOINTS", 8)  # as 6,000 are against a log of more rows than these
    with service(busy) as records:
        assert busy.ctl("list") == 0
    last = records[-1]
    keep = last.AUDIT_SEQ - 2
    kept = [r for r in rows(busy) if r[0] <= keep]
    tamper(busy, f"DELETE FROM audit WHERE seq > {keep}", f"UPDATE audit_head SET seq = {keep}, hash = '{kept[-1][9]}'")
    made_up = [logging.makeLogRecord({**last.__dict__, "AUDIT_KEY_ID": f"{i:032x}", "AUDIT_SEQ": 10**6,
                                      "created": last.created + 10 + i}) for i in range(20)]
    true_ones = [logging.makeLogRecord({**last.__dict__, "AUDIT_SEQ": r[0], "AUDIT_HEAD": r[9],
                                        "created": last.created + 100 + i}) for i, r in enumerate(kept)]
    claimed = [logging.makeLogRecord({**last.__dict__, "AUDIT_SEQ": 1, "AUDIT_HEAD": kept[0][9],
                                      "created": last.created + 200 + i}) for i in range(20)]
    journal = tmp_path / "journal.json"
    journal.write_text(journal_json(records) + journal_json(made_up + true_ones * 3, unit="session-4.scope")
                       + journal_json(claimed, uid=os.getuid() + 4242))
    rc, problems, out = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 1, out
    assert problems == [f"checkpoint of {when(r, busy)} (row {r.AUDIT_SEQ}, seal {r.AUDIT_HEAD[:16]}…): the log now ends "
                        f"at row {keep}: rows {keep + 1}-{r.AUDIT_SEQ} at least were removed (cut short)"
                        for r in records], out
    assert f"{len(kept) + len(records)} checkpoint(s) checked" in out and "NOTE 2 checkpoint(s) of another audit log" in out


def test_checkpoints_of_recorderctl_are_taken_from_root_and_the_service_user_only(tmp_path: Path) -> None:
    """Outside the service's unit (recorderctl in direct mode) only root and the store's owner can
    open the store: only their checkpoints are taken (journald's _UID), and none claiming the
    service's unit as another user. The unit named is the one shipped."""
    from recorderd import journal

    assert (ROOT / "systemd" / journal.UNIT).is_file()
    owner = 4321

    def entry(seq: int, uid: str | None, unit: str | None, ident: str = "recorderctl") -> str:
        fields = {"EVENT": "audit-checkpoint", "SYSLOG_IDENTIFIER": ident, "AUDIT_SEQ": str(seq), "AUDIT_HEAD": f"{seq:064x}",
                  "AUDIT_KEY_ID": "a" * 32, "__REALTIME_TIMESTAMP": str(1_790_000_000_000_000 + seq),
                  "_UID": uid, "_SYSTEMD_UNIT": unit}
        return json.dumps({k: v for k, v in fields.items() if v is not None})

    lines = [entry(1, "0", "session-2.scope"), entry(2, str(owner), None), entry(3, "1000", "session-2.scope"),
             entry(4, "1000", journal.UNIT, "recorderd"), entry(5, None, journal.UNIT, "recorderd"),
             entry(6, str(owner), journal.UNIT, "recorderd"), entry(7, "0", None, "sshd")]
    found, left = journal.read_checkpoints(lines, owner)
    assert [c.seq for c in found] == [1, 2, 6]
    assert left == {"unreadable": 0, "other": 1, "untrusted": 3}


def test_journalctl_is_asked_only_for_the_unit_s_root_s_and_the_owner_s_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """journald's index does the first sorting (trusted fields), so a flood from other users never
    reaches recorderctl."""
    from recorderd import journal

    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert list(journal.journal_lines(4321)) == []
    args = (tmp_path / "journalctl.args").read_text().splitlines()
    assert args[args.index("-q") + 1:-1] == ["EVENT=audit-checkpoint", "_SYSTEMD_UNIT=recorderd.service", "+",
                                             "EVENT=audit-checkpoint", "_UID=0", "+",
                                             "EVENT=audit-checkpoint", "_UID=4321"]
    assert "_SYSTEMD_UNIT" in args[-1].split("=", 1)[1].split(",")


def test_the_selection_keeps_each_key_s_highest_rows_the_unit_s_keys_first() -> None:
    from recorderd.journal import Checkpoint, CheckpointSelection

    pick = CheckpointSelection(per_key_id=3, total=5)
    for i in range(10):  # the service's log, rows 1-10, each logged twice
        pick.add(Checkpoint(i + 1, f"{i + 1:064x}", 100.0 + i, "a" * 32), from_unit=True)
        pick.add(Checkpoint(i + 1, f"{i + 1:064x}", 500.0 + i, "a" * 32), from_unit=True)
    for i in range(40):  # newer, under 40 other key ids, not from the unit
        pick.add(Checkpoint(10**6, "f" * 64, 1000.0 + i, f"{i:032x}"), from_unit=False)
    chosen = pick.chosen()
    assert [(c.key_id[:1], c.seq, c.when) for c in chosen if c.key_id == "a" * 32] == [
        ("a", 8, 107.0), ("a", 9, 108.0), ("a", 10, 109.0)]  # its highest rows, once each, their first time
    assert sorted(c.key_id for c in chosen if c.key_id != "a" * 32) == [f"{38:032x}", f"{39:032x}"]  # then the newest
    assert len(pick._top) <= 1 + 16  # bounded while reading


@pytest.fixture
def journald(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str]]]:
    """A journald for recorderctl's own checkpoints: its socket there, systemd.journal.send taking
    what is sent (message, fields)."""
    from recorderd import journal

    sent: list[tuple[str, dict[str, str]]] = []
    fake = types.ModuleType("systemd.journal")
    fake.send = lambda message, **fields: sent.append((message, fields))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd.journal", fake)
    socket = tmp_path / "journal.socket"
    socket.touch()
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(socket), raising=False)
    return sent


def sent_json(sent: list[tuple[str, dict[str, str]]], uid: int | None = None, at: float | None = None) -> str:
    """What was sent to journald as ``journalctl -o json`` prints it (_UID added by journald; no
    _SYSTEMD_UNIT: recorderctl runs in a technician's session, not in the service's unit)."""
    at = time.time() if at is None else at
    return "".join(json.dumps({**fields, "MESSAGE": message, "__REALTIME_TIMESTAMP": str(int((at + i) * 1e6)),
                               "_UID": str(os.getuid() if uid is None else uid)}) + "\n"
                   for i, (message, fields) in enumerate(sent))


def test_direct_mode_sends_a_checkpoint_to_the_journal_and_not_to_the_terminal(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        journald: list[tuple[str, dict[str, str]]]) -> None:
    """With the service stopped recorderctl appends the rows itself: when it closes the log it sends
    the head to journald, with the fields of the service's checkpoints (was: none, so those rows were
    vouched for only by the service's next start). Such a checkpoint then catches a cut of the rows
    it covers."""
    capsys.readouterr()
    assert busy.ctl("list") == 0
    out = capsys.readouterr()
    seq, *_, head = rows(busy)[-1]
    [(message, fields)] = journald
    key_id = fields.get("AUDIT_KEY_ID")
    assert message == f"audit log checkpoint: row {seq}, seal {head}"
    assert {k: v for k, v in fields.items() if not k.startswith("CODE_")} == {
        "SYSLOG_IDENTIFIER": "recorderctl", "PRIORITY": "6", "EVENT": "audit-checkpoint",
        "AUDIT_SEQ": str(seq), "AUDIT_HEAD": head, "AUDIT_KEY_ID": key_id}
    assert re.fullmatch(r"[0-9a-f]{32}", key_id or "")
    assert "checkpoint" not in out.out + out.err and head not in out.out + out.err  # nothing on the terminal
    assert busy.ctl("status") == 0 and len(journald) == 2  # each run's own: the head it left
    assert journald[1][1]["AUDIT_SEQ"] == str(rows(busy)[-1][0]) == str(seq + 1)
    journal = tmp_path / "journal.json"
    journal.write_text(sent_json(journald))
    tamper(busy, f"DELETE FROM audit WHERE seq >= {seq}", f"UPDATE audit_head SET seq = {seq - 1}, "
           f"hash = (SELECT hash FROM audit WHERE seq = {seq - 1})")
    rc, problems, out_text = verify(busy, capsys, "--journal-file", str(journal))
    assert rc == 1 and [p for p in problems if f"(row {seq}, seal {head[:16]}…)" in p], out_text


def test_direct_mode_sends_nothing_where_there_is_no_journald(
        busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        journald: list[tuple[str, dict[str, str]]]) -> None:
    from recorderd import journal

    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "no-socket"))
    capsys.readouterr()
    assert busy.ctl("list") == 0
    assert journald == [] and "Traceback" not in capsys.readouterr().err
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "journal.socket"))
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # systemd-python not installed
    assert busy.ctl("list") == 0
    out = capsys.readouterr()
    assert journald == [] and not out.err, out.err


def test_without_a_journal_it_says_so(busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    rc, _, out = verify(busy, capsys, "--journal-file", str(empty))
    assert rc == 1 and f"the journal file {empty} holds no audit checkpoint of recorderd" in out
    rc, _, out = verify(busy, capsys, "--journal-file", str(tmp_path / "absent.json"))
    assert rc == 1 and f"cannot read the journal file {tmp_path / 'absent.json'}: No such file or directory" in out
    monkeypatch.setenv("PATH", str(tmp_path))  # no journalctl
    rc, _, out = verify(busy, capsys, "--against-journal")
    assert rc == 1 and "journalctl is not installed: there is no journal to check against" in out
    assert "the audit log was not checked against the journal" in out


def test_against_the_real_journal(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """The checkpoints as journald keeps them, read back with journalctl (needs a running journald)."""
    if not shutil.which("journalctl"):
        pytest.skip("journalctl is not installed")
    if not os.path.exists("/run/systemd/journal/socket"):
        pytest.skip("no journald here (/run/systemd/journal/socket is missing): the journal cannot be written")
    systemd_journal = pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    store = busy.open_store()
    try:
        audit = store.audit_log()
        (seq, head), key_id = audit.tip(), audit.key_id()
    finally:
        store.close()
    systemd_journal.send(f"audit log checkpoint: row {seq}, seal {head}", SYSLOG_IDENTIFIER="recorderd",
                         EVENT="audit-checkpoint", AUDIT_SEQ=str(seq), AUDIT_HEAD=head, AUDIT_KEY_ID=key_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = subprocess.run(["journalctl", "-o", "json", "-q", f"AUDIT_HEAD={head}"], capture_output=True, text=True)
        if found.stdout.strip():
            break
        time.sleep(0.2)
    else:
        pytest.skip("journald did not keep the line (a volatile or rate-limited journal)")
    rc, problems, out = verify(busy, capsys, "--against-journal")
    assert rc == 0 and problems == [], out
    tamper(busy, f"DELETE FROM audit WHERE seq >= {seq - 1}")
    rc, problems, out = verify(busy, capsys, "--against-journal")
    assert rc == 1 and any(f"(row {seq}, seal {head[:16]}…)" in p for p in problems), out


# -- (d) a log of the previous code, migrated once; a newer one refused ------------------------------------


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree of the commit before the seals, from git (pure Python: its C module is not built)."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("git and the project's repository are needed to get the previous code")
    tree = tmp_path_factory.mktemp("old-code")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", OLD_COMMIT], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in the repository: {archive.stderr.decode().strip()}")
    tar = tree / "old.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(tree, filter="data")
    return tree


def run_old(old: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    env |= {"PYTHONPATH": str(old), "RECORDERD_PURE_PYTHON": "1"}
    done = subprocess.run([sys.executable, *args], cwd=old, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def old_site(tmp_path: Path, old: Path) -> Site:
    site = Site(tmp_path, settings="capture: {}\n")  # the old code knows no capture.encapsulations
    ctl = ("-m", "recorderd.ctl", "--config", str(site.config))
    run_old(old, *ctl, "init")
    run_old(old, "-m", "recorderd.cli", "replay", str(FIXTURES / "inbound-mulaw.pcap"), "--config", str(site.config))
    recs = json.loads(run_old(old, *ctl, "list", "--json").stdout)
    run_old(old, *ctl, "export", recs[0]["id"], "--out", str(tmp_path / "old.wav"), "--purpose", "quality")
    assert "the chain holds" in run_old(old, *ctl, "audit", "verify").stdout
    return site


def test_a_log_of_the_previous_code_is_migrated_once_and_verifies(
        tmp_path: Path, old_code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = old_site(tmp_path, old_code)
    before = rows(site)
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_meta'").fetchone()
    for r in before:  # the previous code's hashes: plain SHA-256
        assert _digest(r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]), r[8]) == r[9]
    rc, problems, out = verify(site, capsys)
    assert rc == 0 and problems == [], out
    rc, problems, out = verify(site, capsys)
    assert rc == 0 and problems == [], out
    assert re.search(rf"^NOTE rows 1-{len(before)}: plain SHA-256, from before the seals, migrated at "
                     rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00 \(row {len(before) + 1}\)", out, re.M), out
    after = rows(site)
    assert after[: len(before)] == before  # the old rows keep their hashes
    migrated = [r for r in after if r[4] == "audit-migrated"]
    assert len(migrated) == 1 and migrated[0][0] == len(before) + 1  # once, right after the old head
    detail = json.loads(migrated[0][6])
    assert detail == {"from_format": 1, "to_format": 2, "legacy_through": len(before), "through_seq": len(before),
                      "through_hash": before[-1][9]}
    assert migrated[0][8] == before[-1][9] and migrated[0][9] != _digest(
        migrated[0][0], AuditEvent(*migrated[0][1:6], detail, migrated[0][7]), migrated[0][8])  # sealed, not hashed
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db:
        meta = dict(db.execute("SELECT key, value FROM audit_meta"))
    assert (meta["format"], meta["sealed_from"], meta["legacy_through"]) == ("2", str(len(before) + 1), str(len(before)))


def test_the_migration_seal_binds_the_old_rows(tmp_path: Path, old_code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After the migration, the old rows rewritten with recomputed SHA-256 hashes (their own chain
    consistent) no longer lead to the head the sealed migration row names."""
    site = old_site(tmp_path, old_code)
    assert verify(site, capsys)[0] == 0
    migrated = next(r[0] for r in rows(site) if r[4] == "audit-migrated")
    rewrite_with_sha256(site, change=1, through=migrated - 1)  # the sealed rows left as they were
    rc, problems, _ = verify(site, capsys)
    assert rc == 1 and problems[0] == f"row {migrated}: does not chain to the row before it (row {migrated - 1} was replaced)"


def test_a_log_newer_than_the_code_is_refused(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(busy, "UPDATE audit_meta SET value = '3' WHERE key = 'format'")
    capsys.readouterr()
    assert busy.ctl("audit", "verify") == 1
    err = capsys.readouterr().err
    assert f"the audit log {busy.store / 'audit.sqlite'} is format 3, newer than this recorderd knows (format 2)" in err
    assert busy.ctl("list") == 1  # nothing is done, nothing appended
    assert rows(busy)[-1][4] == "hold"


def test_a_new_master_key_made_by_init_starts_the_seals_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store without recordings whose key was lost gets a new one from init: the rows sealed under
    the lost key are checked for their order only (and say so); the rows after, with the new key."""
    site = Site(tmp_path).init()
    assert site.ctl("status") == 0
    old_key_id = json.loads((site.store / "signing.key").read_bytes())["key_id"]
    (site.root / "master.key").unlink()  # signing.key is left: wrapped by the lost key, init erases it
    assert site.ctl("init") == 0
    new_key_id = json.loads((site.store / "signing.key").read_bytes())["key_id"]  # a new key is right here
    assert new_key_id != old_key_id
    [rekeyed] = [r for r in rows(site) if r[4] == "audit-rekeyed"]
    rc, problems, out = verify(site, capsys)
    assert rc == 0 and problems == [], out
    assert (f"NOTE rows 1-{rekeyed[0] - 1}: sealed under the master key that init replaced at row {rekeyed[0]}: "
            "only their order is checked") in out
    tamper(site, f"DELETE FROM audit WHERE seq = {rekeyed[0] - 1}")
    rc, problems, _ = verify(site, capsys)
    assert rc == 1 and problems[0] == f"row {rekeyed[0] - 1}: missing (removed) before row {rekeyed[0]}"


@pytest.mark.parametrize("change", [
    ("UPDATE audit SET user = x'00ff' WHERE seq = 2",),
    ("UPDATE audit SET detail = 'not json' WHERE seq = 2",),
    ("UPDATE audit SET detail = '{\"x\":\"\\ud800\"}' WHERE seq = 2",),
], ids=["a BLOB", "not JSON", "a lone surrogate"])
def test_a_value_no_writer_stores_is_named_as_an_altered_row(busy: Site, capsys: pytest.CaptureFixture[str],
                                                             change: tuple[str]) -> None:
    """A row's column turned into what no writer stores: verify names that row as altered. Was: an
    internal error (TypeError, a codec's error, a JSON error) that named no row."""
    tamper(busy, *change)
    rc, problems, out = verify(busy, capsys)
    assert rc == 1 and "row 2: content does not match its hash (altered)" in problems, out
    assert "internal error" not in out and "Traceback" not in out, out
