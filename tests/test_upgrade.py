"""Upgrade in place (issue 13): a store written by the release before the second edition (the code
of commit cf688db, checked out in a git worktree for the test and run as its own processes) is
opened by this code: its index is migrated once (audited), every recording lists and exports
byte-identical to what the old code exported, ``verify`` passes, the caller's number is in no file
of the store any more, caller search still finds it, and ``retention run`` (faketime past the
deadline) erases it. A store of schema 2 (commit 6cdf2e1, before conversations) is migrated to
schema 3 the same way: each recording a conversation of its own, part 1, audited once, listed,
exported byte-identical, erased on time. Needs git (and this checkout's history) and Debian's
faketime."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site

from storage.audit import AuditLog
from storage.index import COLUMNS, SCHEMA_3_COLUMNS

OLD = "cf688db"
SCHEMA_2 = "6cdf2e1"  # the last code of index schema 2 (before conversations, parts and linked legs)
OLD_RELEASE_CAPTURE = "capture: {}\n"  # old releases know no capture.encapsulations (the Site default opens them)
CALLS = ("inbound-mulaw.pcap", "inbound-e164.pcap", "dtmf.pcap", "inbound-alaw.pcap")
NUMBERS = {"09011112222": 2, "+819033334444": 1, "0311112222": 1}  # caller -> recordings made by the old code


def _git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def _worktree(tmp_path_factory: pytest.TempPathFactory, commit: str):  # type: ignore[no-untyped-def]
    """A worktree of ``commit`` (removed afterwards)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed (apt-get install git): the old release is checked out with it")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {commit} is not in this checkout's history (a shallow clone?)")
    tree = tmp_path_factory.mktemp(f"s4-old-{commit}") / "tree"
    made = _git("worktree", "add", "--detach", str(tree), commit)
    assert made.returncode == 0, made.stderr
    try:
        yield tree
    finally:
        _git("worktree", "remove", "--force", str(tree))
        _git("worktree", "prune")


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A worktree of the old release."""
    yield from _worktree(tmp_path_factory, OLD)


@pytest.fixture(scope="module")
def schema_2_code(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A worktree of the code of index schema 2."""
    yield from _worktree(tmp_path_factory, SCHEMA_2)


def old(tree: Path, site: Site, *args: str, module: str = "recorderd.ctl") -> subprocess.CompletedProcess[str]:
    """The old release's recorderctl (or ``recorderd``), on the site's config."""
    # (its own Python loops: the C module built in this checkout is this code's, not the old one's)
    env = {**os.environ, "PYTHONPATH": str(tree), "TZ": "UTC", "RECORDERD_PURE_PYTHON": "1"}
    cmd = [sys.executable, "-m", module, *(["--config", str(site.config)] if module == "recorderd.ctl" else []), *args]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def every_byte(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def audit_rows(site: Site) -> list:
    audit = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [e for _, e, _, _ in audit.rows()]
    finally:
        audit.close()


def test_a_store_of_the_old_release_works_with_this_code(old_code: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("faketime is not installed (apt-get install faketime): retention is run past the deadline with it")
    site = Site(tmp_path, settings=OLD_RELEASE_CAPTURE)
    old(old_code, site, "init")
    old(old_code, site, "replay", *(str(FIXTURES / c) for c in CALLS), "--config", str(site.config), module="recorderd.cli")
    listed = json.loads(old(old_code, site, "list", "--json").stdout)
    assert sorted(r["caller"] for r in listed) == sorted(n for n, k in NUMBERS.items() for _ in range(k))
    exports = tmp_path / "old-exports"
    exports.mkdir()
    for rec in listed:
        old(old_code, site, "export", rec["id"], "--out", str(exports / f"{rec['id']}.wav"), "--purpose", "quality")
        old(old_code, site, "export", rec["id"], "--out", str(exports / f"{rec['id']}.pcap"), "--purpose", "quality",
            "--format", "pcap")
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert db.execute("SELECT count(*) FROM recordings WHERE caller = '09011112222'").fetchone() == (2,)
    before = b"".join(data for _, data in every_byte(site.store))
    assert b"09011112222" in before  # the old release kept it in the clear

    # this code: the index migrated at its first open, once, and audited
    recs = site.list(capsys)
    assert [(r["id"], r["caller"], r["call_id"], r["sha256"]) for r in recs] == \
        [(r["id"], r["caller"], r["call_id"], r["sha256"]) for r in listed]
    [dtmf] = [r for r in recs if r["call_id"].startswith("call-dtmf")]
    assert [e[1] for s in dtmf["streams"] for e in s["dtmf"]] == ["1", "#"]
    site.list(capsys)
    [migrated] = [e for e in audit_rows(site) if e.action == "index-migrated"]
    assert migrated.detail == {"from_version": 1, "to_version": 3, "recordings": len(listed)} and migrated.result == "allowed"
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == ("3",)
        assert not {r[1] for r in db.execute("PRAGMA table_info(recordings)")} & {"caller", "call_id"}

    for path, data in every_byte(site.store):  # index, its WAL, audit log, casework, spool
        for number in NUMBERS:
            assert number.encode() not in data and number[-8:].encode() not in data, (path.name, number)
        assert b"call-mulaw-1" not in data, path.name

    for rec in recs:  # exports byte-identical to the old release's
        for fmt in ("wav", "pcap"):
            out = tmp_path / f"new-{rec['id']}.{fmt}"
            capsys.readouterr()
            assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality", "--format", fmt) == 0, \
                capsys.readouterr().err
            assert out.read_bytes() == (exports / f"{rec['id']}.{fmt}").read_bytes(), (rec["id"], fmt)
    capsys.readouterr()
    assert site.ctl("verify") == 0, capsys.readouterr()

    for number, count in NUMBERS.items():  # caller search through the digests made by the migration
        capsys.readouterr()
        assert site.ctl("search", "--caller", number, "--json") == 0
        assert len(json.loads(capsys.readouterr().out)) == count
    capsys.readouterr()
    assert site.ctl("search", "--caller-ends", "1112222", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 3  # 09011112222 twice, 0311112222

    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "retention", "run"]
    env = {**os.environ, "TZ": "UTC"}
    run = subprocess.run([faketime, "2026-10-06 15:00:00", *ctl], capture_output=True, text=True, env=env)  # 10-07 00:00 JST
    assert run.returncode == 0 and f"{len(recs)} recording(s) erased" in run.stdout, run.stdout + run.stderr
    assert site.list(capsys) == [] and site.stored_files() == [] and site.evidence_files() == []
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM recordings").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM caller_digests").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM erasures").fetchone() == (len(recs),)
    for path, data in every_byte(site.store):
        for number in NUMBERS:
            assert number.encode() not in data and number[-8:].encode() not in data, (path.name, number)


def test_this_code_refuses_an_index_it_cannot_migrate_without_the_key(old_code: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The migration needs the master key (to open each recording's data key): without it the old
    index is left as it was and the message says what to restore."""
    site = Site(tmp_path, settings=OLD_RELEASE_CAPTURE)
    old(old_code, site, "init")
    old(old_code, site, "replay", str(FIXTURES / "inbound-mulaw.pcap"), "--config", str(site.config), module="recorderd.cli")
    key = site.root / "master.key"
    kept = key.read_bytes()
    key.unlink()
    before = (site.store / "index.sqlite").read_bytes()
    capsys.readouterr()
    assert site.ctl("list") != 0
    assert "restore that key from its backup" in capsys.readouterr().err
    assert (site.store / "index.sqlite").read_bytes() == before
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    os.write(fd, kept)
    os.close(fd)
    assert [r["caller"] for r in site.list(capsys)] == ["09011112222"]


def test_a_row_whose_erasure_had_begun_keeps_nothing_after_the_migration(old_code: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An erasure the old release began (wrapped key destroyed) and did not finish: the migration
    seals nothing for it and makes no digest (the number goes from the file), and the next
    retention run finishes it."""
    site = Site(tmp_path, settings=OLD_RELEASE_CAPTURE)
    old(old_code, site, "init")
    old(old_code, site, "replay", str(FIXTURES / "inbound-mulaw.pcap"), "--config", str(site.config), module="recorderd.cli")
    with sqlite3.connect(site.store / "index.sqlite") as db:
        db.execute("UPDATE recordings SET erasing_at = 1790000000, wrapped_key = NULL")
    [rec] = site.list(capsys)
    assert (rec["caller"], rec["call_id"]) == ("", "")
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT sealed FROM recordings").fetchall() == [(b"",)]
        assert db.execute("SELECT count(*) FROM caller_digests").fetchone() == (0,)
    for path, data in every_byte(site.store):
        assert b"09011112222" not in data and b"call-mulaw-1" not in data, path.name
    capsys.readouterr()
    assert site.ctl("search", "--caller", "09011112222", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    capsys.readouterr()
    assert site.ctl("retention", "run") == 0, capsys.readouterr()
    assert site.list(capsys) == [] and site.stored_files() == []


CRASH_AFTER_COMMIT = """
import os, sys
from storage import index
index.Index.compact = lambda self: os._exit(9)  # the process dies between the migration's COMMIT and its VACUUM
from recorderd.ctl import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crash_between_the_migration_and_its_compaction_is_compacted_at_the_next_open(
        old_code: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The migration commits, then the process is killed before VACUUM: the old pages (the caller's
    number in the clear) are still in the file; the next open compacts them away (the migration's
    own transaction said a compaction is pending)."""
    site = Site(tmp_path, settings=OLD_RELEASE_CAPTURE)
    old(old_code, site, "init")
    old(old_code, site, "replay", str(FIXTURES / "inbound-mulaw.pcap"), "--config", str(site.config), module="recorderd.cli")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_COMMIT, "--config", str(site.config), "list"],
                             cwd=ROOT, capture_output=True, text=True, env=env)
    assert crashed.returncode == 9, crashed.stdout + crashed.stderr
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == ("3",)  # committed
    assert any(b"09011112222" in data for _, data in every_byte(site.store))  # not compacted: still in the file

    [rec] = site.list(capsys)  # the next open
    assert rec["caller"] == "09011112222"
    for path, data in every_byte(site.store):
        assert b"09011112222" not in data and b"11112222" not in data, path.name
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'compact_pending'").fetchone() is None


def test_a_store_of_schema_2_gets_conversations_and_works_with_this_code(schema_2_code: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """2 -> 3: each recording kept before is a conversation of its own (a token of its own, part 1 of
    1, no linked legs), the migration audited once; lists, exports byte-identical, erases on time."""
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("faketime is not installed (apt-get install faketime): retention is run past the deadline with it")
    site = Site(tmp_path, settings=OLD_RELEASE_CAPTURE)
    old(schema_2_code, site, "init")
    old(schema_2_code, site, "replay", *(str(FIXTURES / c) for c in CALLS), "--config", str(site.config),
        module="recorderd.cli")
    listed = json.loads(old(schema_2_code, site, "list", "--json").stdout)
    exports = tmp_path / "old-exports"
    exports.mkdir()
    for rec in listed:
        old(schema_2_code, site, "export", rec["id"], "--out", str(exports / f"{rec['id']}.wav"), "--purpose", "quality")
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == ("2",)

    recs = site.list(capsys)  # this code: migrated at its first open
    assert [(r["id"], r["caller"], r["call_id"], r["sha256"]) for r in recs] == \
        [(r["id"], r["caller"], r["call_id"], r["sha256"]) for r in listed]
    assert all((r["part"], r["parts"], r["part_reason"], r["linked_legs"]) == (1, 1, "", 0) for r in recs)
    assert len({r["conversation"] for r in recs}) == len(recs)  # each a conversation of its own
    site.list(capsys)
    [migrated] = [e for e in audit_rows(site) if e.action == "index-migrated"]
    assert migrated.detail == {"from_version": 2, "to_version": 3, "recordings": len(listed)} and migrated.result == "allowed"
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone() == ("3",)
        assert db.execute("SELECT count(*) FROM linked_legs").fetchone() == (0,)
    for rec in recs:
        got = tmp_path / f"new-{rec['id']}.wav"
        capsys.readouterr()
        assert site.ctl("export", rec["id"], "--out", str(got), "--purpose", "quality") == 0, capsys.readouterr().err
        assert got.read_bytes() == (exports / f"{rec['id']}.wav").read_bytes(), rec["id"]
        capsys.readouterr()
        assert site.ctl("find", "--conversation", rec["conversation"], "--json") == 0
        assert [r["id"] for r in json.loads(capsys.readouterr().out)["rows"]] == [rec["id"]]
    capsys.readouterr()
    assert site.ctl("verify") == 0, capsys.readouterr()

    ctl = [sys.executable, "-m", "recorderd.ctl", "--config", str(site.config), "retention", "run"]
    run = subprocess.run([faketime, "2026-10-06 15:00:00", *ctl], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
    assert run.returncode == 0 and f"{len(recs)} recording(s) erased" in run.stdout, run.stdout + run.stderr
    assert site.list(capsys) == [] and site.stored_files() == []



SCHEMA_2_COLUMNS = [c for c in COLUMNS if c not in {name for name, _ in SCHEMA_3_COLUMNS}]


@pytest.mark.parametrize("change, layout", [
    (("DROP TABLE linked_legs", "DROP TABLE recordings",
      f"CREATE TABLE recordings ({', '.join(SCHEMA_2_COLUMNS)})"), "schema 2's"),
    (("DROP TABLE linked_legs",), "of no schema a recorderd made"),
], ids=["a schema-2 layout", "schema 3's partly"])
def test_a_version_that_does_not_match_the_layout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             change: tuple[str, ...], layout: str) -> None:
    """The other way round: an index saying 3 whose layout is not schema 3's (a 2 -> 3 migration
    that is due, skipped by a number set forward; or a layout no release made) is refused, naming
    both, and not touched."""
    site = Site(tmp_path).init()
    index = site.store / "index.sqlite"
    db = sqlite3.connect(index)
    with db:
        for statement in change:
            db.execute(statement)
    db.close()
    before = index.read_bytes()
    capsys.readouterr()
    assert site.ctl("list") != 0
    err = capsys.readouterr().err
    assert f"the index {index} says schema_version 3, but its layout is {layout}: the version does not match" in err, err
    assert index.read_bytes() == before
