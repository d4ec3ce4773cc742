"""The control socket's limits and the client's side of them, with one user (the one running the
tests) on real sockets against a real ControlServer; the cases needing several Unix users are in
tests/integration/test_control_abuse.py."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from recorderd import ctl, wire
from recorderd.client import BUSY, CONNECT_WAIT, _conversation
from recorderd.config import load
from recorderd.control import MAX_PER_UID, ControlServer
from storage.audit import AuditLog
from storage.casework import Casework


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Site, ControlServer, str]]:
    site = Site(tmp_path).init()
    assert site.replay(FIXTURES / "inbound-alaw.pcap") == 0
    store = site.open_store()
    try:
        [row] = store.reading.recordings()
        store.holding.hold(row.id, until=4_102_444_800.0, reason="limits tests", ref="T-A", by="tests")
    finally:
        store.close()
    server = ControlServer(load(str(site.config)))
    assert server.start()
    try:
        yield site, server, row.id
    finally:
        server.stop()


def _export_rows(site: Site) -> list:
    log = AuditLog(str(site.store / "audit.sqlite"))
    try:
        return [r[1] for r in log.rows() if r[1].action == "export"]
    finally:
        log.close()


def _copies(site: Site) -> list[dict]:
    casework = Casework(str(site.store / "casework.sqlite"))
    try:
        return casework.copies()
    finally:
        casework.close()


@pytest.mark.parametrize("way", ["socket", "direct"])
def test_a_copy_that_cannot_be_put_at_its_path_is_reported_and_not_registered(
    served: tuple[Site, ControlServer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], way: str
) -> None:
    site, server, rid = served
    if way == "direct":
        server.stop()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep").write_text("not to be replaced")  # a non-empty folder: the rename cannot land there
    capsys.readouterr()
    assert site.ctl("export", rid, "--out", str(taken), "--purpose", "quality") == 1
    err = capsys.readouterr().err
    assert f"the copy could not be put at {taken}: Is a directory" in err, err
    assert (taken / "keep").read_text() == "not to be replaced"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("taken")) == ["taken"]  # no staging file
    [row] = _export_rows(site)
    assert row.result == f"failed: the copy could not be put at {taken}: Is a directory" and row.detail["via"] == way
    assert _copies(site) == []


def test_every_slot_of_a_user_taken_answers_busy(served: tuple[Site, ControlServer, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    site, server, _ = served
    idle = []
    try:
        for _ in range(MAX_PER_UID):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(site.root / "control.sock"))
            idle.append(s)
        time.sleep(0.2)
        capsys.readouterr()
        assert site.ctl("status") == ctl.BUSY
        assert f"recorderd is busy: you have {MAX_PER_UID} requests in progress already" in capsys.readouterr().err
    finally:
        for s in idle:
            s.close()
    assert server.counters["control_refused_uid_limit"] == 1
    for _ in range(50):  # the idle connections' slots come back once the server sees them closed
        if not server.slots.held:
            break
        time.sleep(0.1)
    assert site.ctl("status") == 0


def test_a_listen_queue_that_stays_full_is_busy_not_a_hang(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    path = str(tmp_path / "control.sock")
    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # listens, never accepts
    wedged.bind(path)
    wedged.listen(0)
    queued = []
    try:
        for _ in range(2):  # fill the queue
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
        began = time.monotonic()
        capsys.readouterr()
        assert site.ctl("status") == ctl.BUSY
        assert CONNECT_WAIT - 1 < time.monotonic() - began < CONNECT_WAIT + 3
        assert "recorderd is busy: try again in a moment (nothing was done)" in capsys.readouterr().err
    finally:
        for s in queued:
            s.close()
        wedged.close()


def test_a_busy_answer_after_a_broken_pipe_is_read(tmp_path: Path) -> None:
    """The service answered busy and closed before the client sent: the send fails with EPIPE, and
    the client still reads the answer that is waiting."""
    path = str(tmp_path / "control.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    conn, _ = listener.accept()
    wire.send_json(conn, {"t": "reply", "rc": BUSY, "text": "", "data": None, "error": "recorderd is busy (x)"})
    conn.close()
    listener.close()
    with pytest.raises(BrokenPipeError):
        client.send(b"x" * 10)  # what call() meets: the pipe is broken ...
    reply = _conversation(client, {})  # ... and the answer is there to read
    client.close()
    assert (reply.rc, reply.error) == (BUSY, "recorderd is busy (x)")


def test_request_frames_are_bounded(served: tuple[Site, ControlServer, str]) -> None:
    site, _, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(site.root / "control.sock"))
        s.sendall(b"J" + (wire.MAX_REQUEST + 1).to_bytes(4, "big"))  # a 1 MiB + 1 request: not read
        s.settimeout(5)
        answer = wire.recv_json(s, limit=wire.MAX_REQUEST)  # said, not a silence the client takes for "busy"
        assert answer["t"] == "reply" and answer["rc"] == 2 and "not understood" in answer["error"]
    assert site.ctl("notice") == 0  # and the server carries on
    assert os.path.exists(site.root / "control.sock")
