"""The control socket: how ``recorderctl`` reaches the running service.

The service listens on ``control.socket`` (``/run/recorderd/control.sock``; mode 0666, since anyone
may ask and be refused on the record: who asks is the kernel's SO_PEERCRED, never what the client
says). Each connection is one request, served in a thread of its own with its *own* store and
casework connections (SQLite connections are not shared across threads, and the capture loop's are
never touched). The operations are those of direct mode (:mod:`recorderd.ops`), so the role checks
and the audit are the same either way.

Any local user may connect, so a connection is given little: the whole request must arrive within
``REQUEST_DEADLINE`` however it trickles, and the caller's roles are read from the group database
only once it has (a user removed from a group is refused, whenever they connected). At most
``MAX_CLIENTS`` requests are served at once and at most ``MAX_PER_UID`` for one uid, so one user
cannot take every slot from a manager. A connection refused for want of a slot gets a "busy" answer
(``BUSY``, recorderctl's exit status for it); refusals and cut-off requests are counted
(``control_*`` in the service's counters: ``status`` and the metrics show them) and logged with the
uid, at most one line a minute for each kind.

The web console (its own Unix user, config ``console.user``) sends requests *for* the person
signed in to it: ``"for": {"user", "ip"}`` in the request. That is accepted only from the console's
uid (SO_PEERCRED); from any other uid it is refused (rc 3) and audited as a denied attempt. The
caller is then the named user with the roles their groups give them now, ``via`` "console", and the
browser's address in every audit row of the request; an unknown user, one in no role, or an address
that is not an IP literal is refused. The console's uid carries every signed-in person's requests, so
it may hold ``CONSOLE_SLOTS`` of the slots instead of ``MAX_PER_UID``.

The books the period report needs (counter snapshots, the audit log's pruning, the journal's
checkpoints) are kept by a thread of their own (:mod:`recorderd.books`), not by this one. The
client side (``recorderctl``, the console) is :mod:`recorderd.client`. Stop order: stop accepting,
remove the socket, wait a moment for requests in progress (their threads do not hold the process up).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pwd
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from storage.store import Store, StoreError
from storage.worker import Worker

from . import ops, roles, service, wire
from .client import BUSY, socket_path
from .config import Config
from .counters import CONTROL

log = logging.getLogger(__name__)

REQUEST_DEADLINE = 5.0  # the whole request, from accept to its last byte
ANSWER_TIMEOUT = 60.0  # each send of the answer, and the client's word that a copy is in place
MAX_CLIENTS = 16  # requests served at once
MAX_PER_UID = 4  # of which one uid may hold this many
RATE_MIN_INTERVAL = 1.0  # s between the samples packets/s is computed from
WARNINGS_WINDOW = 86400.0  # s of warnings status counts ("recent")
WARNINGS_KEPT = 2000
CONSOLE_SLOTS = 12  # ... and the console's uid (all its signed-in people) this many
CONSOLE_UID_TTL = 60.0  # s the console's uid is trusted before the user database is read again
REFUSAL_LOG_PERIOD = 60.0
COUNTERS = CONTROL  # the control socket's own counts (recorderd/counters.py)
PEERCRED = struct.Struct("3i")  # pid, uid, gid


class WarningTally(logging.Handler):
    """The service's recent warnings for the technician's page: per kind (the log record's EVENT,
    else its logger's name) how many in the last ``WARNINGS_WINDOW`` and when the last was. Only
    the kind and the time are kept, never the message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: deque[tuple[float, str]] = deque(maxlen=WARNINGS_KEPT)
        self.tally_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.tally_lock:
            self.seen.append((record.created, str(getattr(record, "EVENT", None) or record.name)[:60]))

    def recent(self, now: float | None = None) -> list[dict[str, Any]]:
        since = (time.time() if now is None else now) - WARNINGS_WINDOW
        by_kind: dict[str, list[float]] = {}
        with self.tally_lock:
            for at, kind in self.seen:
                if at >= since:
                    by_kind.setdefault(kind, []).append(at)
        rows = [{"kind": k, "count": len(v), "last": v[-1]} for k, v in by_kind.items()]
        return sorted(rows, key=lambda r: -r["last"])


class ServiceView:
    """What the running service can tell a request (read from the capture thread's objects)."""

    def __init__(self, pipeline: Any, health: Any, started: float, alerts: Mapping[str, str] | None = None,
                 warnings: WarningTally | None = None) -> None:
        self.pipeline, self.health, self.started = pipeline, health, started
        self.alerts = alerts if alerts is not None else {}  # the service's standing conditions, by kind
        self.warnings = warnings
        self._rate_lock = threading.Lock()
        self._sample: tuple[float, int] = (time.monotonic(), 0)  # (when, kernel packets) for packets/s
        self._rate: float | None = None

    def packets_per_s(self, counters: Mapping[str, int]) -> float | None:
        """Captured packets per second since the previous look (at least ``RATE_MIN_INTERVAL`` ago)."""
        now, packets = time.monotonic(), int(counters.get("packets", 0) or 0)  # captured (what the pipeline read)
        with self._rate_lock:
            then, before = self._sample
            if now - then >= RATE_MIN_INTERVAL:
                self._rate = round(max(0, packets - before) / (now - then), 1)
                self._sample = (now, packets)
            return self._rate

    def counters(self) -> dict[str, int]:
        for _ in range(5):  # the capture thread may add a key while we copy
            try:
                return dict(self.pipeline.counters)
            except RuntimeError:
                continue
        return {}

    def status(self) -> dict[str, Any]:
        counters = self.counters()
        return {"running": True, "pid": os.getpid(), "uptime_s": int(time.time() - self.started),
                "active_calls": len(self.pipeline.tracker.calls), "counters": counters,
                "store_level": getattr(self.health, "level", None), "alerts": sorted(self.alerts),
                "unrecognised": getattr(getattr(self.pipeline, "unrecognised", None), "standing", None),
                "packets_per_s": self.packets_per_s(counters),
                "recent_warnings": self.warnings.recent() if self.warnings is not None else []}

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
        """Ask the client to put the copy in place; returns only once it says it is there."""
        wire.send_json(self.conn, {"t": "commit", "path": self.path, "sha256": sha256})
        try:
            answer = wire.recv_json(self.conn, limit=wire.MAX_REQUEST, deadline=time.monotonic() + ANSWER_TIMEOUT)
        except (wire.WireError, OSError) as exc:
            raise ops.OpError(f"recorderctl did not confirm that the copy is at {self.path} ({exc})") from None
        if answer.get("t") != "placed" or answer.get("path") != self.path:
            raise ops.OpError(f"recorderctl did not confirm that the copy is at {self.path}")
        if answer.get("ok") is not True:
            raise ops.OpError(f"the copy could not be put at {self.path}: {str(answer.get('error'))[:300]}")

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            wire.send_json(self.conn, {"t": "abort", "path": self.path})


class Slots:
    """The request slots: ``total`` at once, ``per_uid`` of them for any one uid."""

    def __init__(self, total: int, per_uid: int) -> None:
        self.total, self.per_uid = total, per_uid
        self.held: Counter[int] = Counter()
        self.cond = threading.Condition()

    def take(self, uid: int, per_uid: int | None = None) -> str | None:
        """None: taken (give it back with :meth:`give`); else why not: ``busy`` or ``uid-limit``."""
        with self.cond:
            if sum(self.held.values()) >= self.total:
                return "busy"
            if self.held[uid] >= (per_uid or self.per_uid):
                return "uid-limit"
            self.held[uid] += 1
            return None

    def give(self, uid: int) -> None:
        with self.cond:
            self.held[uid] -= 1
            if self.held[uid] <= 0:
                del self.held[uid]
            self.cond.notify_all()

    def drain(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.held, timeout)


class RefusalLog:
    """A warning per kind of refusal at most once a ``period``, saying how many went unsaid since:
    a flood of connections must not flood the journal."""

    def __init__(self, period: float = REFUSAL_LOG_PERIOD) -> None:
        self.period = period
        self.quiet_until: dict[str, float] = {}
        self.unsaid: Counter[str] = Counter()
        self.lock = threading.Lock()

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if now < self.quiet_until.get(kind, 0.0):
                self.unsaid[kind] += 1
                return
            self.quiet_until[kind] = now + self.period
            unsaid = self.unsaid.pop(kind, 0)
        if unsaid:
            message += f" ({unsaid} more since the last such line)"
        log.warning(message, *args, extra={"EVENT": "control-refused"})


class ControlServer(Worker):
    name = "control"

    def __init__(self, config: Config, *, pipeline: Any = None, health: Any = None,
                 alerts: Mapping[str, str] | None = None,
                 open_store: Callable[[Config], Store] = service.open_store) -> None:
        super().__init__()
        self.config = config
        self.path = socket_path(config)
        self.warnings = WarningTally() if pipeline is not None else None
        self.view = ServiceView(pipeline, health, time.time(), alerts, self.warnings) if pipeline is not None else None
        self.open_store = open_store
        self.slots = Slots(MAX_CLIENTS, MAX_PER_UID)
        self.refusals = RefusalLog()
        # The counts go with the capture counters when there are any (status and metrics show them).
        self.counters: MutableMapping[str, int] = pipeline.counters if pipeline is not None else Counter()
        for key in COUNTERS:
            self.counters.setdefault(key, 0)  # set now: the capture thread may be copying the dict
        self._count_lock = threading.Lock()
        self.sock: socket.socket | None = None
        self._inode: int | None = None
        self._stopped = False
        self._console: tuple[float, int | None] = (-CONSOLE_UID_TTL, None)  # (when read, uid)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen and serve in a thread (once); a failure is logged, False, and leaves the recorder running."""
        if self.sock is None and not self.stopping.is_set():
            try:
                self.sock = self._listen()
            except OSError as exc:
                log.error("control socket %s unavailable (%s): recorderctl cannot reach the service; it works "
                          "directly only when the service is stopped", self.path, exc, extra={"EVENT": "control-failed"})
                return False
            if self.warnings is not None:
                logging.getLogger().addHandler(self.warnings)
            log.info("control socket listening at %s", self.path, extra={"EVENT": "control-listening"})
        return self.sock is not None and super().start()

    def wake(self) -> None:
        if self.sock is not None:  # the accept returns at once (else within its 1 s timeout)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Idempotent. Stop accepting, remove the socket, let requests end."""
        super().stop()
        if self._stopped:
            return
        self._stopped = True
        if self.warnings is not None:
            logging.getLogger().removeHandler(self.warnings)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        self.slots.drain(timeout=5.0)  # requests in progress get a moment to finish

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
            sock.listen(64)
            sock.settimeout(1.0)
        except OSError:
            sock.close()
            raise
        return sock

    def run(self) -> None:
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

    def _dispatch(self, conn: socket.socket) -> None:
        """In the accept loop: never wait on the client here."""
        try:
            pid, uid, _gid = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        except OSError:
            conn.close()
            return
        refused = self.slots.take(uid, CONSOLE_SLOTS if uid == self.console_uid(cached=True) else None)
        if refused is None:
            try:
                threading.Thread(target=self._handle, args=(conn, pid, uid), name="control-request", daemon=True).start()
                return
            except RuntimeError:  # no thread to be had: as busy as it gets
                self.slots.give(uid)
                refused = "busy"
        if refused == "busy":
            self._count("control_refused_busy")
            self.refusals.warn("busy", "control socket: refused a connection from uid %d: %d requests in progress",
                               uid, MAX_CLIENTS)
            error = f"recorderd is busy ({MAX_CLIENTS} requests in progress): try again in a moment"
        else:
            self._count("control_refused_uid_limit")
            self.refusals.warn("uid-limit", "control socket: refused a connection from uid %d: it has %d requests "
                               "in progress already", uid, MAX_PER_UID)
            error = (f"recorderd is busy: you have {MAX_PER_UID} requests in progress already; try again when "
                     "one has ended")
        with conn, contextlib.suppress(OSError):
            conn.settimeout(0.5)
            wire.send_json(conn, ops.Reply(BUSY, error=error).wire())

    def console_uid(self, *, cached: bool = False) -> int | None:
        """The uid of ``console.user`` (None: no such user, so nobody may act for anyone). The accept
        loop uses a copy at most ``CONSOLE_UID_TTL`` old; the check of a request reads it anew."""
        read_at, uid = self._console
        now = time.monotonic()
        if cached and now - read_at < CONSOLE_UID_TTL:
            return uid
        try:
            uid = pwd.getpwnam(str(self.config["console.user"])).pw_uid
        except KeyError:
            uid = None
        self._console = (now, uid)
        return uid

    def _acting_for(self, caller: roles.Caller, uid: int, acting: Any,
                    action: str = "") -> tuple[roles.Caller, str | None, dict[str, Any]]:
        """The caller a request with ``"for"`` is made for, or the reason it is refused (and what the
        denied row says of whom it asked for). The console's sign-in accounting is let through for
        an unknown user (as ``(unknown user)``) or one in no role: the operation records it."""
        name = acting.get("user") if isinstance(acting, dict) else None
        shown = {"acting_for": name[:64]} if isinstance(name, str) else {}
        console = str(self.config["console.user"])
        if uid != self.console_uid():
            return caller, (f"only the console (user {console}) may act for another user; "
                            f"{caller.user} asked to act for {shown.get('acting_for', '?')!s}"), shown
        ip = roles.client_address(acting.get("ip")) if isinstance(acting, dict) else None
        if ip is None:
            return caller, "the console sent no valid client address (an IPv4 or IPv6 literal)", shown
        caller = dataclasses.replace(caller, via="console", client_ip=ip, login_uid=None)
        person = roles.resolve_name(name, self.config, client_ip=ip) if isinstance(name, str) else None
        if person is None and action in ops.SIGN_IN_ACTIONS:
            return roles.Caller(ops.UNKNOWN_USER, -1, (), "console", None, None, ip), None, {}
        if person is None:
            return caller, "the console asked to act for a user this box does not know", shown
        if not person.roles and action not in ops.SIGN_IN_ACTIONS:
            groups = ", ".join(str(self.config[roles.GROUP_KEYS[r]]) for r in roles.ROLES)
            return person, (f"{person.user} is in none of the recorderd role groups ({groups}): "
                            "ask the manager to add you to the group of your role"), {}
        return person, None, {}

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counters[key] = self.counters.get(key, 0) + 1

    # -- one request ----------------------------------------------------------------------------

    def _handle(self, conn: socket.socket, pid: int, uid: int) -> None:
        try:
            with conn:
                reply = self._answer(conn, pid, uid)
                if reply is not None:
                    with contextlib.suppress(OSError):
                        wire.send_json(conn, reply.wire())
        finally:
            self.slots.give(uid)

    def _answer(self, conn: socket.socket, pid: int, uid: int) -> ops.Reply | None:
        try:
            request = wire.recv_json(conn, limit=wire.MAX_REQUEST, deadline=time.monotonic() + REQUEST_DEADLINE)
        except wire.Deadline:
            self._count("control_request_timeouts")
            self.refusals.warn("deadline", "control socket: a request from uid %d did not arrive in full within "
                               "%.0f s: cut off", uid, REQUEST_DEADLINE)
            conn.settimeout(0.5)
            return ops.Reply(1, error=f"the request did not arrive in full within {REQUEST_DEADLINE:.0f} s")
        except wire.Closed:
            return None
        except wire.WireError as exc:  # too large, or not a frame: say so (the client would call silence "busy")
            log.debug("control request refused: %s", exc)
            conn.settimeout(0.5)
            return ops.Reply(2, error=f"the request was not understood ({exc})")
        except OSError as exc:
            log.debug("control request not read: %s", exc)
            return None
        conn.settimeout(ANSWER_TIMEOUT)
        caller = roles.resolve(uid, self.config, via="socket", pid=pid)  # now, with the whole request here
        if request.get("t") != "request" or request.get("v") != wire.VERSION:
            return ops.Reply(2, error="unsupported request: recorderctl and recorderd are different versions")
        action = str(request.get("action"))[:50]
        refusal: str | None = None
        shown: dict[str, Any] = {}
        if "for" in request:
            caller, refusal, shown = self._acting_for(caller, uid, request["for"], action)
        try:
            with ops.session(self.config, caller, lambda path: RemoteOutput(conn, path), self.view,
                             store=self.open_store(self.config)) as ctx:
                if refusal is not None:
                    reply = ops.deny(ctx, action, request.get("args"), refusal, **shown)
                else:
                    reply = ops.run(ctx, action, request.get("args"))
        except StoreError as exc:
            return ops.Reply(1, error=str(exc))
        except Exception:
            log.exception("control request %s by %s failed", action, caller.user, extra={"EVENT": "control-error"})
            return ops.Reply(1, error="internal error in recorderd (the technician finds it in its journal)")
        log.debug("control: %s by %s -> %d", action, caller.user, reply.rc)
        return reply


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"
