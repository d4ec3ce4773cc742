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
PER_USER = 10  # one person's browsers and tabs; an 11th sign-in ends that person's oldest session


class SessionsFull(Exception):
    """Every session slot is taken by live sessions: a new sign-in is refused (503), nobody's
    session is ended to make room (that let any signed-in person sign everyone else out)."""


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
            mine = [s for s in self._by_id.values() if s.user.lower() == user.lower()]
            if len(mine) >= PER_USER:  # the same person's oldest goes, never another's
                del self._by_id[min(mine, key=lambda s: s.seen).id]
            elif len(self._by_id) >= MAX_SESSIONS:
                raise SessionsFull
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
    """Sign-in attempts counted per user name and per client address: ``failures`` within
    ``window`` lock that name (or address) for ``window``. A locked name is refused without asking
    PAM, so guessing cannot go on behind the lock.

    :meth:`begin` checks and counts an attempt in one step under the lock, before PAM is asked: of
    any number of simultaneous attempts at most ``failures`` reach PAM. A good sign-in gives its
    attempt back (:meth:`succeeded`). Refusals are audited sparingly: the first refusal of a locked
    key in its window is audited, the rest are counted and handed back once (``summaries``) at the
    first attempt after the window; so is an address's traffic past ``per_minute`` attempts a minute
    (refused at once, neither PAM nor the audit asked). A good sign-in does not count there either.
    """

    MAX_KEYS = 10_000  # names and addresses remembered: a flood of made-up names is bounded
    SUMMARIES_AT_ONCE = 20

    def __init__(self, failures: int, window: float, clock: Callable[[], float] = time.monotonic,
                 per_minute: int = 10) -> None:
        self.failures, self.window, self.clock, self.per_minute = failures, window, clock, per_minute
        self._seen: dict[str, list[float]] = {}
        self._rate: dict[str, list[float]] = {}  # address key -> its attempts of the last minute
        self._quiet: dict[str, list[float]] = {}  # "locked:"/"limited:" + key -> [refusals not audited, since]
        self._lock = threading.Lock()

    def begin(self, *keys: str) -> Attempt:
        """May this attempt ask PAM? ``keys``: the user key first, then the address key."""
        now = self.clock()
        with self._lock:
            self._bound(now)
            summaries = self._due(now)
            address = keys[-1]
            rate = [t for t in self._rate.get(address, []) if now - t < 60.0]
            self._rate[address] = rate
            if len(rate) >= self.per_minute:
                return Attempt("limited", now, summaries, self._refusal("limited:" + address, now, 60.0))
            rate.append(now)
            locked = [k for k in keys if len(self._recent(k, now)) >= self.failures]
            if locked:
                first = [k for k in locked if "locked:" + k not in self._quiet]
                for k in first:
                    self._quiet["locked:" + k] = [0, now]
                if not first:
                    self._quiet["locked:" + locked[0]][0] += 1
                return Attempt("locked", now, summaries, bool(first))
            for k in keys:
                self._recent(k, now).append(now)
            return Attempt("go", now, summaries, True)

    def succeeded(self, user_key: str, *others: str, at: float | None = None) -> None:
        """A good sign-in: the name's count is cleared, the attempt ``at`` is given back to the others."""
        with self._lock:
            self._seen.pop(user_key, None)
            for k in others:
                for table in (self._seen, self._rate):
                    if at is not None and at in table.get(k, ()):
                        table[k].remove(at)

    def locked(self, *keys: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(len(self._recent(k, now)) >= self.failures for k in keys)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            self._bound(now)
            for k in keys:
                self._recent(k, now).append(now)

    def _refusal(self, quiet_key: str, now: float, span: float) -> bool:
        """Count a refusal under ``quiet_key``; True for the first of its span (to be audited)."""
        entry = self._quiet.get(quiet_key)
        if entry is None:
            self._quiet[quiet_key] = [0, now]
            return True
        entry[0] += 1
        return False

    def _due(self, now: float) -> list[tuple[str, str, int]]:
        """(kind, key, count) of the refusals not audited one by one, for spans that have ended (at
        most ``SUMMARIES_AT_ONCE`` rows: one attempt writes no more, the next ones write the rest)."""
        out: list[tuple[str, str, int]] = []
        for qk, (count, since) in list(self._quiet.items()):
            kind, key = qk.split(":", 1)
            span = 60.0 if kind == "limited" else self.window
            if now - since >= span:
                if count and len(out) >= self.SUMMARIES_AT_ONCE:
                    break
                del self._quiet[qk]
                if count:
                    out.append((kind, key, int(count)))
        return out

    def _bound(self, now: float) -> None:
        for table in (self._seen, self._rate):
            if len(table) > self.MAX_KEYS:  # forget the oldest
                for k in sorted(table, key=lambda k: table[k][-1] if table[k] else 0)[: self.MAX_KEYS // 2]:
                    del table[k]
        if len(self._quiet) > self.MAX_KEYS:  # keep the counts: a summary row for the oldest ones now
            for qk in sorted(self._quiet, key=lambda k: self._quiet[k][1])[: self.MAX_KEYS // 2]:
                self._quiet[qk][1] = now - 86400.0

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._seen.get(key, []) if now - t < self.window]
        self._seen[key] = times
        return times


@dataclass(frozen=True)
class Attempt:
    """What :meth:`Lockout.begin` decided: ``go`` (ask PAM), ``locked`` or ``limited`` (refuse now);
    ``audit``: whether this refusal gets its own audit row; ``summaries``: (kind, key, count) rows due."""

    verdict: str
    at: float
    summaries: list[tuple[str, str, int]]
    audit: bool
