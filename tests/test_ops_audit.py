"""The audit log is tamper-evident: editing, deleting or swapping a row in the SQLite file makes
``recorderctl audit verify`` (and ``verify``) fail naming the row, and opens an incident; removing
the last rows is caught by the head record; careless edits are refused by the file itself; old rows
leave only through pruning, which keeps the chain verifiable."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, needs_tool

from storage.audit import NO_DELETE, PROTECTION


@pytest.fixture
def busy(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    """A store with a few audited actions (init, list, exports, a hold)."""
    site.replay(FIXTURES / "overlapping.pcap")
    recs = site.list(capsys)
    for i, rec in enumerate(recs):
        assert site.ctl("export", rec["id"], "--out", str(tmp_path / f"{i}.wav"), "--purpose", "quality") == 0
    assert site.ctl("hold", recs[0]["id"], "--until", "2099-01-01", "--reason", "complaint", "--ref", "K-1") == 0
    capsys.readouterr()
    assert site.ctl("audit", "verify") == 0
    assert "the chain holds" in capsys.readouterr().out
    return site


def tamper(site: Site, *statements: str) -> None:
    """What someone with the file in hand does: drop the guards, change rows, put the guards back
    (a sealed log without them fails verify for that alone: test_audit_seal.py)."""
    with sqlite3.connect(site.store / "audit.sqlite") as db:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            db.execute(statement)
        for statement in (*PROTECTION, NO_DELETE):
            db.execute(statement)


def audit_verify(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = site.ctl("audit", "verify")
    out = capsys.readouterr().out
    return rc, [line[5:] for line in out.splitlines() if line.startswith("FAIL ")], out


def test_edited_row_is_named(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(busy, "UPDATE audit SET detail = replace(detail, 'quality', 'training') WHERE seq = 3")
    rc, problems, out = audit_verify(busy, capsys)
    assert rc == 1 and problems == ["row 3: content does not match its hash (altered)"]
    assert "incident 1 opened" in out
    assert busy.ctl("verify") == 1
    assert "FAIL audit log: row 3: content does not match its hash (altered)" in capsys.readouterr().out


def _seal_key(site: Site) -> bytes:
    """The audit-seal key, from the master key file (what only the service and root can read)."""
    from storage.keys import derive

    return derive((site.root / "master.key").read_bytes(), "audit-seal")


def test_edited_and_resealed_row_breaks_the_chain_after_it(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """Even with the seal key, a row changed and sealed again no longer chains to the next one.
    (Without the key, recomputing a row's hash is caught at that row: tests/test_audit_seal.py.)"""
    from storage.audit import AuditEvent, seal

    with sqlite3.connect(busy.store / "audit.sqlite") as db:
        seq, at, user, uid, action, rid, detail, result, prev = db.execute(
            "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash FROM audit WHERE seq = 3").fetchone()
    forged = AuditEvent(at, "someone-else", uid, action, rid, json.loads(detail), result)
    tamper(busy, f"UPDATE audit SET user = 'someone-else', hash = '{seal(_seal_key(busy), seq, forged, prev)}' WHERE seq = 3")
    rc, problems, _ = audit_verify(busy, capsys)
    assert rc == 1 and problems == ["row 4: does not chain to the row before it (row 3 was replaced)"]


def test_deleted_row_is_named(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(busy, "DELETE FROM audit WHERE seq = 4")
    rc, problems, _ = audit_verify(busy, capsys)
    assert rc == 1 and problems == ["row 4: missing (removed) before row 5"]


def test_swapped_rows_are_named(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(busy, "UPDATE audit SET seq = -1 WHERE seq = 3", "UPDATE audit SET seq = 3 WHERE seq = 4",
           "UPDATE audit SET seq = 4 WHERE seq = -1")
    rc, problems, _ = audit_verify(busy, capsys)
    assert rc == 1 and problems == ["row 3: holds what was row 4 (rows swapped or reordered)",
                                    "row 4: holds what was row 3 (rows swapped or reordered)"]


def test_removing_the_last_rows_is_caught_by_the_head_record(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(busy.store / "audit.sqlite") as db:
        [(last,)] = db.execute("SELECT max(seq) FROM audit").fetchall()
    tamper(busy, f"DELETE FROM audit WHERE seq >= {last - 1}")
    rc, problems, _ = audit_verify(busy, capsys)
    assert rc == 1 and problems == [f"rows {last - 1}-{last}: missing at the end (removed; the head record says the log ends at row {last})"]


def test_the_file_refuses_careless_edits(busy: Site) -> None:
    with sqlite3.connect(busy.store / "audit.sqlite") as db:
        for statement in ("UPDATE audit SET user = 'x' WHERE seq = 1", "DELETE FROM audit WHERE seq = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)


def test_one_incident_for_the_same_problems(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(busy, "DELETE FROM audit WHERE seq = 2")
    assert audit_verify(busy, capsys)[0] == 1
    _, _, out = audit_verify(busy, capsys)
    assert "incident 1 already open" in out
    capsys.readouterr()
    assert busy.ctl("incident", "list", "--json") == 0
    [incident] = json.loads(capsys.readouterr().out)
    assert incident["automatic"] and "row 2: missing (removed)" in incident["summary"]


def test_old_rows_are_pruned_and_the_chain_still_holds(busy: Site, capsys: pytest.CaptureFixture[str]) -> None:
    faketime = needs_tool("faketime")
    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(busy.config)]
    env = {**os.environ, "TZ": "UTC"}
    later = subprocess.run([faketime, "+366 days", *ctl, "retention", "run"], capture_output=True, text=True, env=env)
    assert later.returncode == 0, later.stderr
    assert "audit row(s) older than 365 days" in later.stdout
    capsys.readouterr()
    assert busy.ctl("audit", "show", "--json", "--limit", "1000") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["action"] == "audit-prune" and shown[0]["detail"]["rows_removed"] == shown[0]["seq"] - 1
    rc, problems, out = audit_verify(busy, capsys)
    assert rc == 0 and problems == [] and f"from row {shown[0]['seq']} (older rows pruned)" in out
    # Removing more rows at the start and pretending they were pruned does not hold up.
    tamper(busy, f"DELETE FROM audit WHERE seq <= {shown[0]['seq'] + 1}",
           f"UPDATE audit_anchor SET seq = {shown[0]['seq'] + 1}, hash = (SELECT prev_hash FROM audit WHERE seq = {shown[0]['seq'] + 2})")
    rc, problems, _ = audit_verify(busy, capsys)
    assert rc == 1 and problems == [f"rows 1-{shown[0]['seq'] + 1}: removed without a recorded pruning "
                                    "(the anchor matches no audit-prune row)"]


def test_audit_export_carries_what_recomputes_the_chain(busy: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from storage.audit import GENESIS, AuditEvent, seal

    out = tmp_path / "audit.jsonl"
    assert busy.ctl("audit", "export", "--out", str(out)) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    header, body = lines[0], lines[1:]
    assert header["anchor"] is None and header["head"]["seq"] == body[-1]["seq"]
    prev = GENESIS
    for r in body:
        event = AuditEvent(r["at"], r["user"], r["uid"], r["action"], r["recording_id"], r["detail"], r["result"])
        assert r["prev_hash"] == prev and seal(_seal_key(busy), r["seq"], event, prev) == r["hash"]
        prev = r["hash"]


def test_a_number_searched_through_the_service_is_not_in_the_audit_file(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """recorderctl search --did/--caller through the control socket: the rows say a number was
    searched, and the raw bytes of audit.sqlite (and its WAL) hold none of its digits."""
    from recorderd.config import load
    from recorderd.control import ControlServer
    from recorderd.service import build_pipeline

    config = load(str(site.config))
    store = site.open_store()
    server = ControlServer(config, pipeline=build_pipeline(config, store))
    assert server.start()
    forms = ("090 8765 4321", "090.8765.4321", "(090)8765-4321", "090\u20108765\u20104321", "090ー8765ー4321",
             "+81 90 8765 4321", "０９０－８７６５－４３２１")
    try:
        for form in forms:
            assert site.ctl("search", "--did", form) == 0
            assert site.ctl("search", "--caller", form, "--from", "2026-12-01") == 0
    finally:
        server.stop()
        store.close()
    capsys.readouterr()
    with sqlite3.connect(site.store / "audit.sqlite") as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'search'").fetchall()
    searches = [json.loads(detail) for (detail,) in rows]
    assert [s["via"] for s in searches] == ["socket"] * 2 * len(forms)
    assert [s["filters"] for s in searches] == [{"did": "[number removed]"}, {"caller": "exact", "from": "2026-12-01"}] * len(forms)
    raw = b"".join(p.read_bytes() for p in site.store.glob("audit.sqlite*"))
    for needle in {*(form[-9:] for form in forms), "8765-4321", "87654321"}:  # 9 characters: not there by chance
        assert needle.encode() not in raw and json.dumps(needle)[1:-1].encode() not in raw, needle
