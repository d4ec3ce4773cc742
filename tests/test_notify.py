"""sd_notify(3) as systemd gets it: real datagrams on a real socket named by ``NOTIFY_SOCKET`` (a
path or ``@name`` in the abstract namespace), one message per datagram, the exact lines systemd
parses (READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1, EXTEND_TIMEOUT_USEC=); nothing sent
without the variable; and a supervisor that stops reading, or is gone, never blocks the recorder."""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorderd.notify import Notifier


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's end: a datagram socket bound at the path NOTIFY_SOCKET names."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


def datagrams(sock: socket.socket, wait: float = 0.0) -> list[bytes]:
    """Every datagram queued on ``sock`` (waiting up to ``wait`` s for each next one)."""
    out = []
    if wait:
        sock.settimeout(wait)
    else:
        sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except (BlockingIOError, TimeoutError):
        return out


def test_each_call_is_one_datagram_with_the_exact_lines(supervisor: socket.socket) -> None:
    n = Notifier()  # the address from NOTIFY_SOCKET, as under systemd
    n.ready("recording 2 DIDs")
    n.watchdog()
    n.status("3 active calls")
    n.reloading()
    assert n.send(READY=1) is True
    n.stopping()
    assert datagrams(supervisor) == [
        b"READY=1\nSTATUS=recording 2 DIDs",
        b"WATCHDOG=1",
        b"STATUS=3 active calls",
        b"RELOADING=1",
        b"READY=1",
        b"STOPPING=1",
    ]


def test_japanese_status_is_sent_as_utf8(supervisor: socket.socket) -> None:
    Notifier().status("通話 3 件 (3 active calls)")
    assert datagrams(supervisor) == ["STATUS=通話 3 件 (3 active calls)".encode()]


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"recorderd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().send(READY=1, STATUS="up") is True
        assert datagrams(sock) == [b"READY=1\nSTATUS=up"]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert n.sock is None and n.send(READY=1) is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert Notifier().send(READY=1) is False
    with Notifier().extending("migrating", step=0.01):  # the step still runs, with nobody told
        ran = True
    assert ran


def test_a_supervisor_that_is_gone_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # bound once, now closed: nobody listens
    n = Notifier()
    assert n.send(WATCHDOG=1) is False
    n.watchdog()
    n.ready("up")  # no exception
    os.unlink(path)
    assert n.send(WATCHDOG=1) is False


def test_a_supervisor_that_stops_reading_never_blocks_the_recorder(supervisor: socket.socket) -> None:
    """Its queue fills (a few datagrams): the rest are refused at once, counted as not sent, and
    sending works again as soon as it reads. Run in a thread so a blocking send fails the test
    instead of hanging it."""
    n = Notifier()
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(n.send(WATCHDOG=1) for _ in range(2000)), daemon=True)
    start = time.monotonic()
    sender.start()
    sender.join(timeout=5)
    blocked = sender.is_alive()
    queued = datagrams(supervisor)  # (frees a blocked sender, so the thread ends either way)
    sender.join(timeout=5)
    assert not blocked, "sd_notify blocked on a supervisor that does not read"
    assert time.monotonic() - start < 2.0
    assert len(results) == 2000
    sent = results.count(True)
    assert 0 < sent < 2000, f"{sent} of 2000 sent: the queue never filled, or nothing was sent"
    assert results == [True] * sent + [False] * (2000 - sent)  # all refused once the queue is full
    assert queued == [b"WATCHDOG=1"] * sent
    assert n.send(WATCHDOG=1) is True  # read again: sending works again
    assert datagrams(supervisor) == [b"WATCHDOG=1"]


def test_a_long_start_step_extends_the_start_timeout_until_it_ends(supervisor: socket.socket) -> None:
    """An index migration at start: EXTEND_TIMEOUT_USEC (three steps ahead) at once and then every
    step while it runs; none after it ends, so a hang still meets systemd's timeout."""
    n = Notifier()
    supervisor.settimeout(0.05)
    with n.extending("migrating", step=0.1):
        first = supervisor.recv(4096)  # at once, not a step later
        time.sleep(0.33)
    ended = time.monotonic()
    during = datagrams(supervisor, wait=0.05)
    time.sleep(0.35)
    after = datagrams(supervisor)
    assert first == b"EXTEND_TIMEOUT_USEC=300000\nSTATUS=migrating"
    assert during and set(during) == {first}
    assert 3 <= 1 + len(during) <= 5  # at 0, ~0.1, ~0.2, ~0.3 s
    assert after == [], f"{len(after)} extensions after the step ended"
    assert time.monotonic() - ended >= 0.35


def test_the_extension_is_three_steps(supervisor: socket.socket) -> None:
    with Notifier().extending("opening the store", step=20.0):
        pass
    assert datagrams(supervisor, wait=0.5) == [b"EXTEND_TIMEOUT_USEC=60000000\nSTATUS=opening the store"]


@pytest.mark.parametrize("value,interval", [("2000000", 1.0), ("30000000", 15.0), (None, None), ("", None), ("2e6", None), ("-1", None)])
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch, value: str | None, interval: float | None) -> None:
    if value is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", value)
    assert Notifier("").watchdog_interval == interval
