"""The control socket's wire format, and the file a copy lands in.

A frame is one kind byte, a 4-byte big-endian length and the payload: ``J`` a JSON object, ``D``
bytes of an output file. The client sends one ``J`` request ``{"t": "request", "v": 1, "action",
"args"}`` (at most ``MAX_REQUEST`` bytes, all of it within the server's deadline). The daemon
answers with any number of outputs (``J`` open, ``D`` chunks, ``J`` commit with the SHA-256 of what
was sent, or ``J`` abort) and one final ``J`` ``{"t": "reply", "rc", "text", "data", "error"}``.
To each commit the client answers ``J`` ``{"t": "placed", "path", "ok", "error"}``: whether the copy
is now at its path (the rename can fail: another user's file in a sticky directory, a full disk),
and the daemon registers and audits the copy as made only on ``ok``.

Copies (export, provide, audit export) are written by the *client*, as the calling user, into a
staging name that becomes the file only when the whole copy arrived with the right hash: the daemon
never writes outside its store (it could not anyway: ``ProtectHome``, ``PrivateTmp``), so it cannot
be made to overwrite someone else's file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

VERSION = 1
JSON, DATA = b"J", b"D"
MAX_FRAME = 16 << 20
MAX_REQUEST = 1 << 20  # a request or a client's answer: JSON of a few hundred bytes in practice
MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd


class WireError(Exception):
    pass


class Closed(WireError):
    """The other side closed the connection before the frame was whole."""


class Deadline(WireError):
    """The other side did not send the whole frame in the time it had."""


class NotPlaced(OSError):
    """A copy that could not be put at its path (the staging file is removed); ``why`` says why."""

    why = ""


def not_placed(path: str, why: str) -> NotPlaced:
    err = NotPlaced(f"the copy could not be put at {path}: {why}")
    err.why = why
    return err


def send_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(kind + struct.pack(">I", len(payload)) + payload)


def send_json(sock: socket.socket, obj: dict[str, Any]) -> None:
    send_frame(sock, JSON, json.dumps(obj, ensure_ascii=False).encode())


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    parts, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Deadline(f"{got} of {n} bytes arrived in the time allowed")
            sock.settimeout(left)
        try:
            part = sock.recv(min(n - got, 1 << 20))
        except TimeoutError:
            if deadline is None:
                raise
            raise Deadline(f"{got} of {n} bytes arrived in the time allowed") from None
        if not part:
            raise Closed("the other side closed the connection")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def recv_frame(sock: socket.socket, *, limit: int = MAX_FRAME, deadline: float | None = None) -> tuple[bytes, bytes]:
    """One frame; with ``deadline`` (a ``time.monotonic()`` value) all of it by then, or :class:`Deadline`."""
    head = _recv_exact(sock, 5, deadline)
    kind, size = head[:1], struct.unpack(">I", head[1:])[0]
    if kind not in (JSON, DATA) or size > limit:
        raise WireError(f"bad frame (kind {kind!r}, {size} bytes)")
    return kind, _recv_exact(sock, size, deadline)


def recv_json(sock: socket.socket, *, limit: int = MAX_FRAME, deadline: float | None = None) -> dict[str, Any]:
    kind, payload = recv_frame(sock, limit=limit, deadline=deadline)
    try:
        obj = json.loads(payload) if kind == JSON else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise WireError("expected a JSON object")
    return obj


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """An address for ``path`` that fits sockaddr_un (through the directory's fd when too long)."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


class FileSink:
    """A copy being written: a 0600 staging file beside ``path``, renamed over it on commit."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.staging = f"{self.path}.part-{os.getpid()}"
        fd = os.open(self.staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)

    def commit(self, sha256: str | None = None) -> None:
        """Put the copy at its path, or raise :class:`NotPlaced` saying why (nothing is left behind)."""
        if sha256 is not None and self.digest.hexdigest() != sha256:
            self.abort()
            raise not_placed(self.path, "what was written differs from what was sent (SHA-256 mismatch)")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.staging, self.path)
        except OSError as exc:
            self.abort()
            raise not_placed(self.path, exc.strerror or str(exc)) from None

    def abort(self) -> None:
        if not self.file.closed:
            with contextlib.suppress(OSError):  # a write that failed fails again at close
                self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staging)
