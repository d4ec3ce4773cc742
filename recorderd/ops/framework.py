"""The framework of ``recorderctl``'s operations: the request's arguments (:class:`Args`), the
:class:`Context` an operation runs in, the registry (:data:`ACTIONS`, filled by :func:`action`) and
:func:`run`, which checks the caller's role against the action's, runs it, and writes exactly one
*outcome* row to the audit log (time, user, uid, role, action, recording ids, purpose or basis,
result: ``allowed``, ``denied: why`` or ``failed: why``); an operation may add rows of its own (one
per hold it places, say). A refusal is audited before anything is read. The control server (socket,
caller from SO_PEERCRED) and direct mode (caller = the process's uid) both build a :class:`Context`
with :func:`session` and call :func:`run`.

Arguments come from the client and are not trusted: every operation reads them through
:class:`Args`, which checks types and lengths, and does its own validation (purposes, bases, roles
of an approver). Caller numbers never reach the audit log: a caller filter is recorded only as its
kind, and the log scrubs every row of anything that looks like a phone number (``storage.scrub``).

The operations themselves are the other modules of this package, each importing this one; the
package (``recorderd/ops/__init__.py``) imports every one of them, so whoever imports any part of
``recorderd.ops`` finds the registry full.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

from storage import database, policy
from storage.audit import AuditEvent
from storage.casework import Casework, CaseworkError
from storage.scrub import MASK, MIN_DIGITS
from storage.store import Store, StoreError

from .. import service
from ..config import Config
from ..roles import GROUP_KEYS, ROLES, Caller

log = logging.getLogger(__name__)

CASEWORK_FILE = "casework.sqlite"
SAFE_KEYS = ("id", "purpose", "basis", "format", "kind", "request", "incident", "complaint", "copy", "hold", "decision")
ID_KEYS = frozenset({"request", "incident", "complaint", "copy", "hold", "hold_id", "provision"})  # numbers a user types


class OpError(Exception):
    rc = 1


class UsageError(OpError):
    rc = 2


class NotAllowed(OpError):
    rc = 3


@dataclass
class Reply:
    rc: int = 0
    text: str = ""
    data: Any = None
    error: str = ""

    def wire(self) -> dict[str, Any]:
        return {"t": "reply", "rc": self.rc, "text": self.text, "data": self.data, "error": self.error}


class Output(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self, sha256: str) -> None: ...
    def abort(self) -> None: ...


class LiveView(Protocol):
    """What the running service can tell (absent in direct mode)."""

    def status(self) -> dict[str, Any]: ...
    def dids(self) -> Any: ...


class Args:
    """The request's arguments, read with their types checked (they come from the client)."""

    def __init__(self, raw: Any) -> None:
        self.raw: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def opt(self, key: str, limit: int = 1000) -> str | None:
        value = self.raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise UsageError(f"--{key.replace('_', '-')}: expected text of at most {limit} characters")
        return value.strip() or None

    def text(self, key: str, limit: int = 1000) -> str:
        value = self.opt(key, limit)
        if value is None:
            raise UsageError(f"--{key.replace('_', '-')} is required")
        return value

    def flag(self, key: str) -> bool:
        return self.raw.get(key) is True

    def int(self, key: str) -> int:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key.replace('_', ' ')}: expected a number")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in options:
            raise UsageError(f"--{key.replace('_', '-')} {value!r} is not one of {', '.join(options)}")
        return value

    def ids(self, key: str) -> list[str]:
        value = self.raw.get(key) or []
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and len(i) < 100 for i in items):
            raise UsageError(f"--{key}: expected recording ids separated by commas")
        return [i.strip() for i in items if i.strip()]


@dataclass
class Context:
    caller: Caller
    config: Config
    store: Store
    casework: Casework
    outputs: Callable[[str], Output]  # path -> where the copy goes
    live: LiveView | None = None
    role: str | None = None
    recording_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    result: str = "allowed"

    @property
    def now(self) -> float:
        return self.store.clock()

    def note(self, recording_id: str | None = None, **detail: Any) -> None:
        """What the outcome row will carry (set before anything can fail, so refusals carry it too)."""
        if recording_id is not None:
            self.recording_id = recording_id
        self.detail.update(detail)

    def audit(self, action: str, recording_id: str | None, detail: dict[str, Any], result: str = "allowed") -> None:
        """An audit row of the operation's own (beside the outcome row)."""
        row = {**self._who(), **{k: _as_noted(v) if k in ID_KEYS else v for k, v in detail.items()}}  # text: scrubbed by the log
        self.store.audit_log().append(_event(self, action, recording_id, row, result))

    def _who(self) -> dict[str, Any]:
        who: dict[str, Any] = {"role": self.role or "none", "via": self.caller.via}
        if self.role is None:
            who["roles"] = list(self.caller.roles)
        if self.caller.login_uid is not None:
            who["login_uid"] = self.caller.login_uid
        if self.caller.client_ip is not None:
            who["client_ip"] = self.caller.client_ip
        return who

    def group(self, role: str) -> str:
        return str(self.config[GROUP_KEYS[role]])


def _event(ctx: Context, action: str, recording_id: str | None, detail: dict[str, Any], result: str) -> AuditEvent:
    return AuditEvent(ctx.now, ctx.caller.user, ctx.caller.uid, action, recording_id, detail, result)


def _as_noted(value: Any) -> Any:
    """An id as an audit row may carry it: a number of phone-number length (a request id that was
    really a caller's number) is not kept."""
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= MIN_DIGITS:
        return MASK
    return value


# -- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    name: str
    fn: Callable[[Context, Args], Reply]
    roles: tuple[str, ...] | None  # None: no role needed (init: whoever can open the store)
    direct_only: bool = False


ACTIONS: dict[str, Action] = {}


def action(name: str, *roles: str, direct_only: bool = False, no_role: bool = False) -> Callable[..., Any]:
    def register(fn: Callable[[Context, Args], Reply]) -> Callable[[Context, Args], Reply]:
        ACTIONS[name] = Action(name, fn, None if no_role else tuple(roles), direct_only)
        return fn

    return register


def _role_names(roles: tuple[str, ...]) -> str:
    names = {"manager": "managers", "staff": "staff", "technician": "technicians", "auditor": "auditors"}
    parts = [names[r] for r in ROLES if r in roles]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _refusal(ctx: Context, spec: Action) -> str | None:
    if spec.direct_only and ctx.caller.via != "direct":
        return (f"{spec.name} works on the store directly, not through the running service: stop it first "
                "(systemctl stop recorderd) and run recorderctl as root")
    if spec.roles is None:
        return None
    if not ctx.caller.roles:
        groups = ", ".join(ctx.group(r) for r in ROLES)
        return (f"{ctx.caller.user} is in none of the recorderd role groups ({groups}): "
                "ask the manager to add you to the group of your role")
    if ctx.caller.role_for(spec.roles) is None:
        return f"{spec.name} is for {_role_names(spec.roles)} ({ctx.caller.user}: {', '.join(ctx.caller.roles)})"
    return None


def _note_request(ctx: Context, args: Args) -> None:
    rid = args.raw.get("id")
    ctx.note(rid if isinstance(rid, str) and len(rid) < 100 else None,
             **{k: args.raw[k] for k in SAFE_KEYS if k != "id" and isinstance(args.raw.get(k), (str, int))})


def deny(ctx: Context, name: str, raw: Any, why: str, **detail: Any) -> Reply:
    """Refuse a request before anything is run (the way it came in was not allowed), on the record."""
    _note_request(ctx, Args(raw))
    ctx.note(**detail)
    return _outcome(ctx, str(name)[:50], Reply(NotAllowed.rc, error=why), f"denied: {why}")


def run(ctx: Context, name: str, raw: Any) -> Reply:
    """Check, run and audit one request."""
    args = Args(raw)
    spec = ACTIONS.get(name)
    _note_request(ctx, args)
    if spec is None:
        return _outcome(ctx, str(name)[:50], Reply(2, error=f"unknown command {str(name)[:50]!r}"), "denied: unknown command")
    why = _refusal(ctx, spec)
    if why is not None:
        return _outcome(ctx, name, Reply(NotAllowed.rc, error=why), f"denied: {why}")
    ctx.role = ctx.caller.role_for(spec.roles) if spec.roles is not None else (ctx.caller.roles or (None,))[0]
    try:
        reply = spec.fn(ctx, args)
    except OpError as exc:
        return _outcome(ctx, name, Reply(exc.rc, error=str(exc)), f"{'denied' if exc.rc == NotAllowed.rc else 'failed'}: {exc}")
    except (StoreError, CaseworkError, OSError, ValueError) as exc:
        return _outcome(ctx, name, Reply(1, error=str(exc)), f"failed: {exc}")
    except BaseException as exc:
        _outcome(ctx, name, Reply(1), f"failed: internal error ({type(exc).__name__})")
        raise
    return _outcome(ctx, name, reply, ctx.result)


ANSWERED_UNAUDITED = ("status",)  # nothing personal in it: answered (and said so) when the audit log is full
# The console's sign-in accounting: run for an unknown user or one in no role too (recorderd.control).
SIGN_IN_ACTIONS = frozenset({"console-signin", "console-signout"})
UNKNOWN_USER = "(unknown user)"
# Parts of an audited play (by its ticket): their success is not a row of its own; a refusal is.
QUIET_WHEN_ALLOWED = frozenset({"play-audio", "play-check", "waveform"})


def _outcome(ctx: Context, name: str, reply: Reply, result: str) -> Reply:
    if name in QUIET_WHEN_ALLOWED and reply.rc == 0:
        return reply
    try:
        ctx.audit(name, ctx.recording_id, ctx.detail, result)
    except Exception:
        full = _store_full(ctx)
        if full:
            log.error("could not write the audit row for %s by %s: the store's disk is full", name, ctx.caller.user,
                      extra={"EVENT": "audit-failed"})
        else:
            log.exception("could not write the audit row for %s by %s", name, ctx.caller.user)
        if name in ANSWERED_UNAUDITED and reply.rc == 0:
            reply.text += "\n(this request is not in the audit log: " + ("the store's disk is full)" if full else "it cannot be written)")
            return reply
        if full:
            return Reply(1, error="the store's disk is full, so the audit log cannot be written: nothing is shown or done "
                                  "without a record of it; free space on the store ('recorderctl status' shows it)")
        return Reply(1, error="the audit log cannot be written: nothing was done without a record of it"
                     if reply.rc != 0 else "the action was done but its audit row could not be written")
    return reply


def _store_full(ctx: Context) -> bool:
    try:
        return database.free_bytes(ctx.store.audit_path) < database.FULL_BELOW
    except OSError:
        return False


@contextlib.contextmanager
def session(config: Config, caller: Caller, outputs: Callable[[str], Output], live: LiveView | None = None,
            *, store: Store | None = None) -> Iterator[Context]:
    """Open the store (own connections: one session per thread) and the casework file."""
    store = store or service.open_store(config)
    store.open()
    try:
        store.audit_log().protect()
        casework = Casework(f"{store.root}/{CASEWORK_FILE}")
        try:
            yield Context(caller, config, store, casework, outputs, live)
        finally:
            casework.close()
    finally:
        store.close()


# -- dates ------------------------------------------------------------------------------------------


def parse_when(text: str, ctx: Context, *, end: bool = False, what: str = "date") -> float:
    """``YYYY-MM-DD`` (its local midnight; with ``end`` the next one, so the day is included) or an
    ISO date-time (local time unless it has an offset)."""
    tz = ctx.store.tz
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(0), tzinfo=tz).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a date (YYYY-MM-DD) or an ISO date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def iso(ts: float | None, ctx: Context) -> str | None:
    """In the store's time zone, to the second (None stays None)."""
    return None if ts is None else policy.iso(ts, ctx.store.tz, "seconds")

