"""recorderctl's entries for the ops the console uses: ``find``, ``show``, ``export-request``,
``export-requests``, ``export-decide`` and ``export --request N``, run as the real CLI
(``python -m recorderd.ctl`` in a subprocess), directly on the store and through the control socket.

The four-eyes flow to its end needs a second person: with root, the test makes real Unix users and
groups (prefix ``f``), one asks, another (a manager) decides, the first downloads the copy once."""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, USER_TOOLS, Site, needs_root, python_for

from recorderd.config import load
from recorderd.control import ControlServer
from storage.audit import AuditLog


def _cli(site: Site, *args: str, user: str | None = None, python: list[str] | None = None) -> tuple[int, str, str]:
    cmd = [*(python or [sys.executable]), "-m", "recorderd.ctl", "--config", str(site.config), *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT if user is None else "/", timeout=120)
    return done.returncode, done.stdout, done.stderr


def _rows(site: Site, action: str) -> list:
    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows() if r[1].action == action]
    finally:
        log.close()


@pytest.fixture(params=["direct", "socket"])
def mode_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Site]]:
    site = Site(tmp_path).init()
    assert site.replay(FIXTURES / "dtmf.pcap", FIXTURES / "overlapping.pcap") == 0
    if request.param == "direct":
        yield "direct", site
        return
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield "socket", site
    finally:
        server.stop()


def test_find_show_and_export_requests_from_the_cli(mode_site: tuple[str, Site], tmp_path: Path) -> None:
    mode, site = mode_site
    rc, out, err = _cli(site, "list", "--json")
    assert rc == 0, err
    listed = json.loads(out)
    assert len(listed) == 3
    newest_first = [r["id"] for r in sorted(listed, key=lambda r: r["started_at"], reverse=True)]

    # find: one page at a time, newest first, with the total.
    pages = []
    for page in (1, 2, 3):
        rc, out, err = _cli(site, "find", "--page-size", "1", "--page", str(page), "--json")
        assert rc == 0, err
        found = json.loads(out)
        assert (found["total"], found["page"], found["page_size"], len(found["rows"])) == (3, page, 1, 1)
        pages.append(found["rows"][0])
    assert sorted(r["id"] for r in pages) == sorted(newest_first)  # each once, newest first
    assert [r["started_at"] for r in pages] == sorted((r["started_at"] for r in pages), reverse=True)
    rc, out, _ = _cli(site, "find", "--page-size", "2", "--page", "2")
    assert rc == 0 and "page 2 of 2 (3 recordings in all)" in out and pages[2]["id"] in out
    long = [r["id"] for r in listed if r["duration_s"] >= 4]
    assert len(long) == 1
    rc, out, _ = _cli(site, "find", "--min-duration", "4", "--json")
    assert rc == 0 and [r["id"] for r in json.loads(out)["rows"]] == long
    rc, out, _ = _cli(site, "find", "--max-duration", "3.5", "--json")
    assert rc == 0 and json.loads(out)["total"] == 2
    rc, out, _ = _cli(site, "find", "--state", "incomplete", "--json")
    assert rc == 0 and json.loads(out)["total"] == 0
    rc, _, err = _cli(site, "find", "--page-size", "201")
    assert rc == 2 and "page_size is 1 to 200" in err
    rid = next(r["id"] for r in listed if any(s.get("dtmf") for s in r["streams"]))
    assert _cli(site, "hold", rid, "--until", "2099-12-31", "--reason", "complaint", "--ref", "H-9")[0] == 0
    rc, out, _ = _cli(site, "find", "--on-hold", "yes", "--json")
    assert rc == 0 and [r["id"] for r in json.loads(out)["rows"]] == [rid]
    rc, out, _ = _cli(site, "find", "--on-hold", "no", "--did", "幸区役所", "--json")
    assert rc == 0 and json.loads(out)["total"] == 1 and json.loads(out)["rows"][0]["did_label"] == "幸区役所"
    finds = _rows(site, "find")
    assert finds and all(e.detail["via"] == mode for e in finds)

    # show: the details, quality, DTMF, holds and the access history.
    rc, out, err = _cli(site, "show", rid)
    assert rc == 0, err
    assert out.startswith(f"{rid}  サンキューコールかわさき (+81442003939)  complete")
    assert "DTMF      2 event(s): 1 at 1.05 s (channel 1), # at 1.85 s (channel 1)" in out
    assert "  hold 1 until 2100-01-01T00:00:00+09:00 by " in out and "complaint (ref H-9)" in out
    assert "  channel 1 144 packets, lost 0 (0.0%)" in out
    assert "access history (1, newest first):" in out and f"via {mode})  hold  allowed" in out
    rc, out, _ = _cli(site, "show", rid, "--json")
    shown = json.loads(out)
    assert rc == 0 and shown["recording"]["id"] == rid and len(shown["dtmf"]) == 2
    assert [h["action"] for h in shown["history"]] == ["show", "hold"]
    rc, _, err = _cli(site, "show", "no-such-recording")
    assert rc != 0 and "no-such-recording" in err

    # export requests: asked for, listed, never decided by the one who asked.
    rc, out, err = _cli(site, "export-request", rid, "--purpose", "training", "--reason", "new staff")
    assert rc == 0 and f"export request 1 for {rid} (training)" in out, err
    rc, _, err = _cli(site, "export-request", rid, "--purpose", "quality", "--reason", "x")
    assert rc == 2 and "needs no request" in err
    rc, out, _ = _cli(site, "export-requests", "--json")
    [req] = json.loads(out)["requests"]
    assert rc == 0 and (req["id"], req["state"], req["mine"], req["recording_id"]) == (1, "pending", True, rid)
    rc, out, _ = _cli(site, "export-requests")
    assert rc == 0 and f"    1  pending   {rid}  training  by " in out
    rc, out, _ = _cli(site, "export-requests", "--state", "approved")
    assert rc == 0 and out.strip() == "no export requests"
    rc, _, err = _cli(site, "export-decide", "--request", "1", "--approve", "--reason", "fine")
    assert rc == 3 and "is your own: another manager must decide it" in err
    rc, _, err = _cli(site, "export-decide", "--request", "1", "--reason", "fine")
    assert rc == 2 and "one of the arguments --approve --refuse is required" in err
    copy = tmp_path / "copy.wav"
    rc, _, err = _cli(site, "export", "--out", str(copy))
    assert rc == 2 and "needs the recording's id and --purpose" in err
    rc, _, err = _cli(site, "export", "--request", "1", "--out", str(copy))
    assert rc == 3 and "export request 1 is waiting for a manager's decision" in err
    assert not copy.exists() and not Path(f"{copy}.manifest.json").exists()
    decided = _rows(site, "export-decide")
    assert decided[-1].result.startswith("denied: ") and decided[-1].detail["via"] == mode


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def people(tmp_path: Path) -> Iterator[tuple[Site, dict[str, str], Path, list[str], str]]:
    needs_root("the four-eyes flow needs two real people: the test makes Unix users and groups", *USER_TOOLS,
               "runuser", "gpasswd")
    tag = f"f{uuid.uuid4().hex[:5]}"
    base = Path(tempfile.mkdtemp(prefix="rdfour-", dir="/tmp"))
    os.chmod(base, 0o755)
    groups = [f"{tag}-man", f"{tag}-sta", f"{tag}-oth"]
    users = {"manager": f"{tag}m", "staff": f"{tag}s"}
    try:
        for group in groups:
            _sh("groupadd", group)
        _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", groups[0], users["manager"])
        _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", groups[1], users["staff"])
        _sh("gpasswd", "-a", "root", groups[1])  # root is staff too, for the direct runs (only in this test's group)
        site = Site(base, None, f"roles: {{manager_group: {groups[0]}, staff_group: {groups[1]}, "
                                f"technician_group: {groups[2]}, auditor_group: {groups[2]}}}\n")
        for name in ("recorderd.yaml", "dids.yaml"):
            os.chmod(base / name, 0o644)
        site.init()
        assert site.replay(FIXTURES / "dtmf.pcap") == 0
        outbox = base / "out"
        outbox.mkdir(mode=0o700)
        pw = pwd.getpwnam(users["staff"])
        os.chown(outbox, pw.pw_uid, pw.pw_gid)
        store = site.open_store()
        try:
            [row] = store.reading.recordings()
            sha256 = row.sha256
        finally:
            store.close()
        yield site, users, outbox, python_for(users["staff"]), sha256
    finally:
        subprocess.run(["gpasswd", "-d", "root", groups[1]], capture_output=True)
        for user in users.values():
            subprocess.run(["userdel", user], capture_output=True)
        for group in groups:
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_an_export_request_asked_decided_by_another_manager_and_downloaded_once(  # type: ignore[no-untyped-def]
    people
) -> None:
    site, users, outbox, python, sha256 = people
    staff, manager = users["staff"], users["manager"]
    rid = json.loads(_cli(site, "list", "--json")[1])[0]["id"]
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        # Through the socket: staff asks, the manager decides, staff downloads once.
        rc, out, err = _cli(site, "export-request", rid, "--purpose", "training", "--reason", "induction",
                            user=staff, python=python)
        assert rc == 0 and "export request 1" in out, err
        rc, out, err = _cli(site, "export-requests", user=manager, python=python)
        assert rc == 0 and f"pending   {rid}  training  by {staff}" in out, err
        rc, out, err = _cli(site, "export-decide", "--request", "1", "--approve", "--reason", "ok for training",
                            user=manager, python=python)
        assert rc == 0 and f"export request 1 approved: {staff} may now download the copy once" in out, err
        theirs = site.root / "out-manager"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, pwd.getpwnam(manager).pw_uid, -1)
        rc, _, err = _cli(site, "export", "--request", "1", "--out", str(theirs / "mine.wav"), user=manager,
                          python=python)
        assert rc == 3 and f"export request 1 is {staff}'s" in err and not (theirs / "mine.wav").exists()
        copy = outbox / "req1.wav"
        rc, out, err = _cli(site, "export", "--request", "1", "--out", str(copy), user=staff, python=python)
        assert rc == 0, err
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == sha256
        assert copy.stat().st_uid == pwd.getpwnam(staff).pw_uid
        rc, out, err = _cli(site, "verify-export", str(copy), user=staff, python=python)
        assert rc == 0 and out.startswith("OK "), out + err
        rc, _, err = _cli(site, "export", "--request", "1", "--out", str(outbox / "again.wav"), user=staff,
                          python=python)
        assert rc == 3 and "export request 1 was used already" in err and not (outbox / "again.wav").exists()
        rc, out, _ = _cli(site, "export-requests", "--json", user=staff, python=python)
        [req] = json.loads(out)["requests"]
        assert (req["state"], req["decided_by"], req["can_download"]) == ("used", manager, False)
        made = [e for e in _rows(site, "export") if e.result == "allowed"]
        assert made[-1].user == staff and made[-1].detail["via"] == "socket"
        assert made[-1].detail.get("request") == 1 and made[-1].detail.get("purpose") == "training"
        rc, out, _ = _cli(site, "show", rid, user=staff, python=python)
        assert rc == 0 and f"{staff} (staff, via socket)  export  allowed purpose=training" in out
    finally:
        server.stop()

    # Directly (no service): root asks as staff; the manager decides through the socket; root downloads.
    rc, out, err = _cli(site, "export-request", rid, "--purpose", "training", "--reason", "second group")
    assert rc == 0 and "export request 2" in out, err
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        rc, _, err = _cli(site, "export-decide", "--request", "2", "--refuse", "--reason", "one copy is enough",
                          user=manager, python=python)
        assert rc == 0, err
    finally:
        server.stop()
    target = site.root / "req2.wav"
    rc, _, err = _cli(site, "export", "--request", "2", "--out", str(target))
    assert rc == 3 and "export request 2 was refused" in err and not target.exists()
    rc, out, err = _cli(site, "export-request", rid, "--purpose", "training", "--reason", "third try")
    assert rc == 0 and "export request 3" in out, err
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        assert _cli(site, "export-decide", "--request", "3", "--approve", "--reason", "ok", user=manager,
                    python=python)[0] == 0
    finally:
        server.stop()
    rc, out, err = _cli(site, "export", "--request", "3", "--out", str(target), "--json")
    assert rc == 0, err
    assert json.loads(out)["request"] == 3 and hashlib.sha256(target.read_bytes()).hexdigest() == sha256
    assert Path(f"{target}.manifest.json").is_file() and Path(f"{target}.manifest.sig").is_file()
    made = [e for e in _rows(site, "export") if e.result == "allowed"]
    assert made[-1].user == "root" and made[-1].detail["via"] == "direct" and made[-1].detail.get("request") == 3
