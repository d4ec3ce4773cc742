"""Server-side sessions: a random id in an HttpOnly, Secure, SameSite=Strict cookie, nothing else
in the browser. A session ends after ``idle`` without a request, after ``absolute`` in any case,
and at sign-out (on the server: the id is forgotten, a replayed cookie finds nothing). Sessions
live in the console's memory only: a restart signs everyone out, which is what a locked box wants.
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "recorderd_session"
MAX_SESSIONS = 1000  # a contact centre has tens of staff; more is an attack on memory


@dataclass
class Session:
    id: str
    user: str
    roles: tuple[str, ...]
    ip: str
    created: float
    seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def has(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, idle: float, absolute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle, self.absolute, self.clock = idle, absolute, clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, roles: tuple[str, ...], ip: str) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user, roles, ip, now, now)
        with self._lock:
            self._expire(now)
            if len(self._by_id) >= MAX_SESSIONS:  # the oldest goes first
                oldest = min(self._by_id.values(), key=lambda s: s.seen)
                del self._by_id[oldest.id]
            self._by_id[session.id] = session
        return session

    def get(self, sid: str | None) -> tuple[Session | None, bool]:
        """The live session for the cookie, and whether one existed but has just expired."""
        if not sid or len(sid) > 100:
            return None, False
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None, False
            if now - session.seen > self.idle or now - session.created > self.absolute:
                del self._by_id[sid]
                return None, True
            session.seen = now
            return session, False

    def end(self, sid: str) -> Session | None:
        with self._lock:
            return self._by_id.pop(sid, None)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._by_id.values() if now - s.seen > self.idle or now - s.created > self.absolute]:
            del self._by_id[sid]


class Lockout:
    """Failed sign-ins counted per user name and per client address: ``failures`` within
    ``window`` lock that name (or address) for ``window``. A locked name is refused without asking
    PAM, so guessing cannot go on behind the lock."""

    def __init__(self, failures: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.window, self.clock = failures, window, clock
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked(self, *keys: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.failures for k in keys)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._seen) > 10_000:  # forget the oldest names: a flood of made-up names is bounded
                for k in sorted(self._seen, key=lambda k: self._seen[k][-1] if self._seen[k] else 0)[:5000]:
                    del self._seen[k]
            for k in keys:
                self._recent(k, now).append(now)

    def succeeded(self, user_key: str) -> None:
        with self._lock:
            self._seen.pop(user_key, None)

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._seen.get(key, []) if now - t < self.window]
        self._seen[key] = times
        return times
