"""sd_notify against a real datagram socket: the messages, the abstract namespace, and that a
supervisor that stops reading never blocks the recorder."""
from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

from recorderd.notify import Notifier


def test_messages_arrive(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier(path)
        n.ready("starting")
        n.watchdog()
        n.status("3 active calls")
        n.stopping()
        got = [sock.recv(1024).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=starting", "WATCHDOG=1", "STATUS=3 active calls", "STOPPING=1"]


def test_abstract_namespace() -> None:
    name = f"recorderd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier("@" + name).send(READY=1)
        assert sock.recv(64) == b"READY=1"


def test_unread_socket_never_blocks(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier(path)
        start = time.monotonic()
        results = [n.watchdog() for _ in range(5000)]
        assert time.monotonic() - start < 2.0
    assert results  # some were dropped, none waited


def test_without_systemd_nothing_is_sent(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().send(READY=1) is False


def test_a_long_start_step_extends_the_start_timeout_until_it_ends(tmp_path: Path) -> None:
    """An index migration at start: EXTEND_TIMEOUT_USEC every step while it runs, none after."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.5)
        n = Notifier(path)
        with n.extending("migrating", step=0.1):
            time.sleep(0.35)
        got = []
        try:
            while True:
                got.append(sock.recv(1024).decode())
        except TimeoutError:
            pass
    assert 3 <= len(got) <= 5
    assert all(m == "EXTEND_TIMEOUT_USEC=300000\nSTATUS=migrating" for m in got)
