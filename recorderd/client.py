"""The client side of the control socket: how ``recorderctl`` and the web console reach the running
service (the server is :mod:`recorderd.control`; the frames are :mod:`recorderd.wire`).

:func:`call` sends one request and takes the answer; the copies the service sends are written by
the sinks the caller made beforehand (``wire.FileSink``: a file, as the calling user; or
:class:`CallbackSink`: streamed on, nothing kept on disk). Nothing answering is
:class:`Unreachable`; a service with every slot taken is :class:`Busy` or its busy reply
(rc ``BUSY``), never a broken pipe.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import ops, wire
from .config import Config

BUSY = 5  # the rc of a refusal for want of a slot (and recorderctl's exit status for it)
CONNECT_WAIT = 5  # s the client waits in a full listen queue before it says "busy"


def socket_path(config: Config) -> str:
    """``control.socket``, relative to the config file's folder unless absolute."""
    return os.path.join(os.path.dirname(config.file), config["control.socket"])


class Unreachable(Exception):
    """Nothing answers on the control socket (the service is not running)."""


class Busy(Exception):
    """The service took no request from us: every slot was taken, and it closed before reading."""


class CallbackSink:
    """An output handed chunk by chunk to ``deliver`` instead of a file (the console streams a
    download or audio to the browser and keeps nothing on disk). At the commit, ``delivered(sha256)``
    must return only once the consumer has passed every byte on (raise to say it could not): the
    daemon hears "placed" ok only then, and registers a copy only on ok. A ``deliver`` that raises
    (the browser went away) makes the commit fail; the daemon is told, nothing more is handed on."""

    def __init__(self, path: str, deliver: Callable[[bytes], None],
                 delivered: Callable[[str], None] | None = None, aborted: Callable[[], None] | None = None) -> None:
        self.path = path  # the name the request gave the output (its "out"), not a file
        self.deliver, self.delivered, self.aborted = deliver, delivered, aborted
        self.digest = hashlib.sha256()
        self.size = 0
        self.failed: str | None = None

    def write(self, chunk: bytes) -> None:
        if self.failed is not None:
            raise OSError(self.failed)
        self.digest.update(chunk)
        self.size += len(chunk)
        try:
            self.deliver(chunk)
        except Exception as exc:  # noqa: BLE001  (whatever the consumer raises: an OSError the daemon is told of)
            self.failed = f"the consumer did not take the bytes ({type(exc).__name__}: {exc})"[:300]
            raise OSError(self.failed) from None

    def commit(self, sha256: str | None = None) -> None:
        if self.failed is not None:
            raise wire.not_placed(self.path, self.failed)
        if sha256 is not None and self.digest.hexdigest() != sha256:
            self.abort()
            raise wire.not_placed(self.path, "what arrived differs from what was sent (SHA-256 mismatch)")
        try:
            if self.delivered is not None:
                self.delivered(self.digest.hexdigest())
        except Exception as exc:  # noqa: BLE001  (whatever the consumer raises: not placed)
            raise wire.not_placed(self.path, f"the consumer did not confirm delivery ({type(exc).__name__}: {exc})"[:300]) from None

    def abort(self) -> None:
        if self.aborted is not None:
            with contextlib.suppress(Exception):
                self.aborted()


def call(path: str, action: str, args: dict[str, Any], sinks: dict[str, Any],
         acting_for: dict[str, str] | None = None) -> ops.Reply:
    """Send one request and take the answer; copies go to ``sinks`` (made beforehand, by path).
    ``acting_for`` ({"user", "ip"}): the console's request for a signed-in person.

    A service with every slot taken answers "busy" and closes without reading the request: the send
    then fails (EPIPE, ECONNRESET) with that answer waiting to be read, and a listen queue that stays
    full refuses the connect after ``CONNECT_WAIT`` s. Either way, :class:`Busy` or the busy reply,
    never a broken pipe."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", CONNECT_WAIT, 0))
        try:
            with wire.unix_address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(f"nothing answers on {path} ({exc.strerror})") from None
        except BlockingIOError:
            raise Busy(f"the queue of {path} stayed full for {CONNECT_WAIT} s") from None
        try:
            request: dict[str, Any] = {"t": "request", "v": wire.VERSION, "action": action, "args": args}
            if acting_for is not None:
                request["for"] = acting_for
            wire.send_json(sock, request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before it read us: its answer, if it sent one, is waiting below
        except BlockingIOError:
            raise Busy("the service did not take the request") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
        return _conversation(sock, sinks)
    finally:
        sock.close()


def _conversation(sock: socket.socket, sinks: dict[str, wire.FileSink]) -> ops.Reply:
    current: wire.FileSink | None = None
    failed: dict[str, str] = {}  # path -> why its copy cannot be put in place
    heard = False
    while True:
        try:
            kind, payload = wire.recv_frame(sock)
        except (ConnectionResetError, BrokenPipeError, wire.Closed):
            if heard:
                raise
            raise Busy("the service closed the connection without an answer") from None
        heard = True
        if kind == wire.DATA:
            if current is None:
                raise wire.WireError("data for no open copy")
            if current.path not in failed:
                try:
                    current.write(payload)
                except OSError as exc:  # a full disk, say: the service is told at the commit
                    failed[current.path] = exc.strerror or str(exc)
                    current.abort()
            continue
        msg = json.loads(payload)
        if msg.get("t") == "reply":
            return ops.Reply(int(msg.get("rc", 1)), msg.get("text") or "", msg.get("data"), msg.get("error") or "")
        target = str(msg.get("path"))
        sink = sinks.get(target)
        if sink is None:
            raise wire.WireError(f"the service named a copy this request did not ask for: {msg.get('path')!r}")
        if msg.get("t") == "open":
            current = sink
        elif msg.get("t") == "commit":
            why = failed.pop(sink.path, None)
            if why is None:
                try:
                    sink.commit(str(msg.get("sha256")))
                except wire.NotPlaced as exc:
                    why = exc.why
            wire.send_json(sock, {"t": "placed", "path": target, "ok": why is None, "error": why})
            current = None
        elif msg.get("t") == "abort":
            sink.abort()
            current = None
