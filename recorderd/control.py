"""The control socket: how ``recorderctl`` reaches the running service.

The service listens on ``control.socket`` (``/run/recorderd/control.sock``; mode 0666, since anyone
may ask and be refused on the record: who asks is the kernel's SO_PEERCRED, never what the client
says). Each connection is one request, served in a thread of its own with its *own* store and
casework connections (SQLite connections are not shared across threads, and the capture loop's are
never touched). The operations are those of direct mode (:mod:`recorderd.ops`), so the role checks
and the audit are the same either way.

The server thread also keeps the books the period report needs: a snapshot of the capture counters
every ``SNAPSHOT_PERIOD`` when they changed, and the audit log's pruning (``audit.retention_days``)
every ``PRUNE_PERIOD``. Stop order: stop accepting, remove the socket, last snapshot, wait a moment
for requests in progress (their threads do not hold the process up).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from storage.store import Store, StoreError

from . import ops, roles, service, wire
from .config import Config
from .ops import upkeep

log = logging.getLogger(__name__)

IO_TIMEOUT = 60.0
MAX_CLIENTS = 8
SNAPSHOT_PERIOD = 600.0
PRUNE_PERIOD = 3600.0
SNAPSHOT_KEYS = ("calls_recorded", "calls_not_designated", "calls_not_inbound", "calls_second_leg", "calls_unanswered",
                 "calls_codec_unsupported", "calls_lost_store_full", "calls_over_capacity", "kernel_packets",
                 "kernel_drops", "sip_malformed", "rtp_malformed")  # fmt: skip
PEERCRED = struct.Struct("3i")  # pid, uid, gid


def socket_path(config: Config) -> str:
    """``control.socket``, relative to the config file's folder unless absolute."""
    return os.path.join(os.path.dirname(config.file), config["control.socket"])


class ServiceView:
    """What the running service can tell a request (read from the capture thread's objects)."""

    def __init__(self, pipeline: Any, health: Any, started: float) -> None:
        self.pipeline, self.health, self.started = pipeline, health, started

    def counters(self) -> dict[str, int]:
        for _ in range(5):  # the capture thread may add a key while we copy
            try:
                return dict(self.pipeline.counters)
            except RuntimeError:
                continue
        return {}

    def status(self) -> dict[str, Any]:
        return {"running": True, "pid": os.getpid(), "uptime_s": int(time.time() - self.started),
                "active_calls": len(self.pipeline.tracker.calls), "counters": self.counters(),
                "store_level": getattr(self.health, "level", None)}  # fmt: skip

    def dids(self) -> Any:
        return self.pipeline.tracker.dids


class RemoteOutput:
    """A copy sent to the client, which writes it as the calling user (see :mod:`recorderd.wire`)."""

    def __init__(self, conn: socket.socket, path: str) -> None:
        self.conn, self.path = conn, path
        wire.send_json(conn, {"t": "open", "path": path})

    def write(self, chunk: bytes) -> None:
        for off in range(0, len(chunk), 1 << 20):
            wire.send_frame(self.conn, wire.DATA, chunk[off : off + (1 << 20)])

    def commit(self, sha256: str) -> None:
        wire.send_json(self.conn, {"t": "commit", "path": self.path, "sha256": sha256})

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            wire.send_json(self.conn, {"t": "abort", "path": self.path})


class ControlServer:
    def __init__(self, config: Config, *, pipeline: Any = None, health: Any = None,
                 open_store: Callable[[Config], Store] = service.open_store) -> None:  # fmt: skip
        self.config = config
        self.path = socket_path(config)
        self.view = ServiceView(pipeline, health, time.time()) if pipeline is not None else None
        self.open_store = open_store
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self._inode: int | None = None
        self._last_counters: dict[str, int] | None = None
        self._stopped = False
        self.service_caller = roles.Caller(_user_name(os.getuid()), os.getuid(), (), "service", os.getpid())

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen and serve in a thread; a failure is logged and leaves the recorder running."""
        try:
            self.sock = self._listen()
        except OSError as exc:
            log.error("control socket %s unavailable (%s): recorderctl cannot reach the service; it works "
                      "directly only when the service is stopped", self.path, exc, extra={"EVENT": "control-failed"})  # fmt: skip
            return False
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self.thread.start()
        log.info("control socket listening at %s", self.path, extra={"EVENT": "control-listening"})
        return True

    def stop(self) -> None:
        """Idempotent. Stop accepting, remove the socket, keep the last counters, let requests end."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
            self.thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            self._housekeeping(final=True)
        for _ in range(MAX_CLIENTS):  # requests in progress get a moment to finish
            if not self.slots.acquire(timeout=2.0):
                break

    def _listen(self) -> socket.socket:
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with wire.unix_address(self.path) as address:
                    probe.connect(address)
                raise OSError(f"another recorderd answers on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)  # left by a service that died
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with wire.unix_address(self.path) as address:
                sock.bind(address)
            os.chmod(self.path, 0o666)
            self._inode = os.stat(self.path).st_ino
            sock.listen(16)
            sock.settimeout(1.0)
        except OSError:
            sock.close()
            raise
        return sock

    def _serve(self) -> None:
        next_snapshot = time.monotonic()
        next_prune = time.monotonic() + 60.0
        while not self.stopping.is_set() and self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                conn = None
            except OSError:
                if self.stopping.is_set():
                    return
                log.exception("control socket accept failed")
                time.sleep(1.0)
                continue
            if conn is not None:
                self._dispatch(conn)
            now = time.monotonic()
            if now >= next_snapshot or now >= next_prune:
                prune = now >= next_prune
                next_snapshot = now + SNAPSHOT_PERIOD
                next_prune = now + PRUNE_PERIOD if prune else next_prune
                self._housekeeping(prune=prune)

    def _dispatch(self, conn: socket.socket) -> None:
        if not self.slots.acquire(blocking=False):
            with conn, contextlib.suppress(OSError):
                wire.send_json(conn, ops.Reply(1, error=f"recorderd is busy ({MAX_CLIENTS} requests in progress): "
                                                        "try again in a moment").wire())  # fmt: skip
            return
        threading.Thread(target=self._handle, args=(conn,), name="control-request", daemon=True).start()

    # -- one request ----------------------------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(IO_TIMEOUT)
                reply = self._answer(conn)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        wire.send_json(conn, reply.wire())
        finally:
            self.slots.release()

    def _answer(self, conn: socket.socket) -> ops.Reply | None:
        try:
            pid, uid, _gid = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
            caller = roles.resolve(uid, self.config, via="socket", pid=pid)
            request = wire.recv_json(conn)
        except (wire.WireError, OSError) as exc:
            log.debug("control request not read: %s", exc)
            return None
        if request.get("t") != "request" or request.get("v") != wire.VERSION:
            return ops.Reply(2, error="unsupported request: recorderctl and recorderd are different versions")
        action = str(request.get("action"))[:50]
        try:
            with ops.session(self.config, caller, lambda path: RemoteOutput(conn, path), self.view,
                             store=self.open_store(self.config)) as ctx:  # fmt: skip
                reply = ops.run(ctx, action, request.get("args"))
        except StoreError as exc:
            return ops.Reply(1, error=str(exc))
        except Exception:
            log.exception("control request %s by %s failed", action, caller.user, extra={"EVENT": "control-error"})
            return ops.Reply(1, error="internal error in recorderd (the technician finds it in its journal)")
        log.debug("control: %s by %s -> %d", action, caller.user, reply.rc)
        return reply

    # -- the books ------------------------------------------------------------------------------

    def _housekeeping(self, *, prune: bool = False, final: bool = False) -> None:
        counters = None
        if self.view is not None:
            current = self.view.counters()
            counters = {k: int(current.get(k, 0)) for k in SNAPSHOT_KEYS}
            if counters == self._last_counters and not final:
                counters = None
        if counters is None and not prune:
            return
        try:
            with ops.session(self.config, self.service_caller, _no_output, self.view,
                             store=self.open_store(self.config)) as ctx:  # fmt: skip
                if counters is not None and self.view is not None:
                    ctx.casework.snapshot_counters(self.view.started, time.time(), counters)
                    self._last_counters = counters
                if prune:
                    ctx.role = "service"
                    upkeep.prune_audit(ctx)
        except Exception:
            log.exception("control housekeeping failed", extra={"EVENT": "control-error"})


def _no_output(path: str) -> ops.Output:
    raise ops.OpError("no output here")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"


# -- the client side ------------------------------------------------------------------------------


class Unreachable(Exception):
    """Nothing answers on the control socket (the service is not running)."""


def call(path: str, action: str, args: dict[str, Any], sinks: dict[str, wire.FileSink]) -> ops.Reply:
    """Send one request and take the answer; copies go to ``sinks`` (made beforehand, by path)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            with wire.unix_address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(f"nothing answers on {path} ({exc.strerror})") from None
        wire.send_json(sock, {"t": "request", "v": wire.VERSION, "action": action, "args": args})
        current: wire.FileSink | None = None
        while True:
            kind, payload = wire.recv_frame(sock)
            if kind == wire.DATA:
                if current is None:
                    raise wire.WireError("data for no open copy")
                current.write(payload)
                continue
            msg = json.loads(payload)
            if msg.get("t") == "reply":
                return ops.Reply(int(msg.get("rc", 1)), msg.get("text") or "", msg.get("data"), msg.get("error") or "")
            sink = sinks.get(str(msg.get("path")))
            if sink is None:
                raise wire.WireError(f"the service named a copy this request did not ask for: {msg.get('path')!r}")
            if msg.get("t") == "open":
                current = sink
            elif msg.get("t") == "commit":
                sink.commit(str(msg.get("sha256")))
                current = None
            elif msg.get("t") == "abort":
                sink.abort()
                current = None
    finally:
        sock.close()
