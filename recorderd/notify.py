"""sd_notify(3): tell systemd we are ready, alive, what we do, and that we stop.

Sends datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). Without
the variable (not run by systemd) every call does nothing. Failures are ignored: the service must
not die, nor wait, because its supervisor is gone or slow.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)  # a supervisor that does not read must never stall recording

    def send(self, **fields: object) -> bool:
        if self.sock is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self.sock.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def reloading(self) -> None:
        self.send(RELOADING=1)

    def stopping(self) -> None:
        self.send(STOPPING=1)

    @contextlib.contextmanager
    def extending(self, status: str, step: float = 20.0) -> Iterator[None]:
        """A long step of the start (an index migration: ~40 s per 100,000 recordings): systemd's
        start timeout is pushed on by ``EXTEND_TIMEOUT_USEC`` every ``step`` s while it runs, so a
        big store is not killed half-way and a hang still ends (no extension comes then)."""
        if self.sock is None:
            yield
            return
        done = threading.Event()

        def extend() -> None:
            while True:
                self.send(EXTEND_TIMEOUT_USEC=int(step * 3 * 1e6), STATUS=status)
                if done.wait(step):
                    return

        thread = threading.Thread(target=extend, name="start-extend", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=1)

    @property
    def watchdog_interval(self) -> float | None:
        """Half the WatchdogSec systemd set for us, in seconds (None when unset)."""
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 2e6 if usec and usec.isdigit() else None
