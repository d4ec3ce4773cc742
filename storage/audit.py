"""The audit log: append-only, every row sealed and chained to the one before (HMAC-SHA256).

Each row records when, who (user name and uid), what action, on which recording, for which purpose,
and whether it was allowed. Caller numbers never go in it: every row's detail (through its dicts
and lists), result and recording id is scrubbed here, on the way in, whoever wrote it
(:mod:`storage.scrub`), so the chain is over what is kept. ``verify`` recomputes the chain and
names every row that does not hold: altered, removed, or moved to another place.

The guards add what the chain alone cannot give: triggers that refuse UPDATE and DELETE (a careless
edit fails loudly; a deliberate one must drop them and still breaks the chain), and a head record
kept by an insert trigger, so that removing the *last* rows by a careless edit is noticed too. A
log gets them when its seals start (a new log, a migrated one); :meth:`AuditLog.protect` gives them
only to a log not sealed yet. Whoever drops the triggers can also cut the last rows and set the
head record back: a sealed log without its guards is therefore not given them again (as it was,
silently, at the next session), and ``verify`` fails saying they are gone (the service logs
``EVENT=audit-guards-missing`` at each open). A log cut short whose guards were put back by hand
still verifies as a chain: only ``verify --against-journal`` finds it, by the checkpoints of its
head written to the journal (the service's every 10 minutes, at start and at a clean stop;
recorderctl's after it worked on the store directly). Rows older than the retention period are
removed from the start only by :meth:`prune`, which keeps the last removed row's hash as the
anchor the chain now starts from and records that in a chained row.

**Seals** (format 2). A row's ``hash`` is HMAC-SHA256, under the ``audit-seal`` key derived from the
master key (:func:`storage.keys.derive`), of its canonical content and the previous row's seal: who
can write the file but not read the key cannot rewrite it consistently. ``audit_meta`` keeps the
format, the first sealed row (``sealed_from``) and a check value of the key. A log of the previous
code (format 1: plain SHA-256 hashes, no ``audit_meta``) keeps its rows as they are; the first open
with the key appends one sealed ``audit-migrated`` row that chains to the old head, so the old rows
are bound too (rewriting them changes the head the sealed row names). That migration happens only
when the store says it predates the seals (``legacy``: its index is of the first edition, by its
version and by its shape: the caller numbers still in a plain column, none sealed; and it holds no
seal marker, :func:`marker`); a log without ``audit_meta`` in a store that was sealed is a rewrite:
it is not sealed over, ``verify`` says ``audit_meta`` was removed, and the rows it claims are plain
SHA-256 fail as altered. When ``init`` makes a new
master key (a store without recordings whose key was lost), an ``audit-rekeyed`` row starts the
seals under the new key; the rows sealed under the lost one can be checked only for their order.
A log of a format newer than this code is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import database
from .policy import iso
from .scrub import scrub, scrub_tree

log = logging.getLogger(__name__)

GENESIS = "0" * 64
FORMAT = 2  # 1: SHA-256 chain (no audit_meta); 2: HMAC-SHA256 seals under the audit-seal key
META = "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    action TEXT NOT NULL,
    recording_id TEXT,
    detail TEXT NOT NULL,
    result TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""
PROTECTION = (
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, "
    "hash TEXT NOT NULL, pruned_at REAL NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS audit_head_follows AFTER INSERT ON audit BEGIN "
    "INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, NEW.seq, NEW.hash); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN "
    "SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
NO_DELETE = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN "
    "SELECT RAISE(ABORT, 'the audit log is append-only (old rows leave only through pruning)'); END"
)
GUARDS = ("audit_head_follows", "audit_no_update", "audit_no_delete")  # the triggers a sealed log keeps
PRUNE_ACTION = "audit-prune"
MIGRATED_ACTION = "audit-migrated"
REKEYED_ACTION = "audit-rekeyed"
NEAR = 8  # how far away a moved row is looked for
SHOWN_CHECKPOINTS = 10  # checkpoints not in the chain named one by one (the oldest); the others counted


class AuditFormatError(Exception):
    """The log is of a format this code does not know (newer), or cannot be sealed."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    user: str
    uid: int
    action: str
    recording_id: str | None
    detail: dict[str, Any]
    result: str  # "allowed" | "denied: <why>" | "failed: <why>"


def _kept(event: AuditEvent) -> AuditEvent:
    """What the log keeps of ``event``: its free text without anything that looks like a phone number."""
    rid = None if event.recording_id is None else scrub(event.recording_id)
    return AuditEvent(event.at, event.user, event.uid, event.action, rid, scrub_tree(event.detail), scrub(event.result))


def _detail(text: Any) -> Any:
    """A row's detail as stored: its JSON, or, for what is not JSON (the file altered), a value no
    writer makes, so that the row fails its seal as altered instead of stopping ``verify``."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {"(not JSON)": repr(text)[:200]}


def _body(seq: int, event: AuditEvent, prev_hash: str) -> bytes:
    """A row's canonical content, with the previous row's seal."""
    return json.dumps(
        [seq, repr(event.at), event.user, event.uid, event.action, event.recording_id,
         event.detail, event.result, prev_hash],
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    ).encode()


def _digest(seq: int, event: AuditEvent, prev_hash: str) -> str:
    """Format 1 (the rows written before the seals): plain SHA-256, which anyone can recompute."""
    return hashlib.sha256(_body(seq, event, prev_hash)).hexdigest()


def seal(key: bytes, seq: int, event: AuditEvent, prev_hash: str) -> str:
    """Format 2: HMAC-SHA256 under the audit-seal key."""
    return hmac.new(key, _body(seq, event, prev_hash), hashlib.sha256).hexdigest()


def key_check(key: bytes) -> str:
    """A value that tells which key sealed the log, and nothing of the key."""
    return hmac.new(key, b"recorderd audit seal check", hashlib.sha256).hexdigest()[:32]


def marker(key: bytes) -> str:
    """What the store's index keeps once the audit log is sealed under ``key``: from then on a log
    claiming the format before the seals is a rewrite, not an old log (a writer of the audit file
    cannot make it: it is keyed)."""
    return hmac.new(key, b"audit format 2", hashlib.sha256).hexdigest()


def _process_user() -> tuple[str, int]:
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


class AuditLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = database.connect(path)  # WAL, full sync; read-only on a full disk
        self.key: bytes | None = None  # the audit-seal key, once :meth:`use_key` has it
        self._sealing = False  # the log is format 2 under ``key``: rows may be appended
        self.notes: list[str] = []  # what the last :meth:`verify` could only partly check
        self.meta_removed = False  # the store is sealed but the log claims it is not: rewritten
        self.tz: Any = None  # the store's time zone, for the times the notes name

    def create(self) -> None:
        self.db.executescript(SCHEMA + META + ";")

    def close(self) -> None:
        self.db.close()

    # -- format and key -------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        if not self._has("audit_meta"):
            return {}
        return dict(self.db.execute("SELECT key, value FROM audit_meta").fetchall())

    def format(self) -> int:
        """The log's format: 1 for one written before the seals (no ``audit_meta``); what
        ``audit_meta`` says otherwise (a value no recorderd writes is taken for this code's, and
        ``verify`` says so)."""
        value = self._meta().get("format")
        if value is None:
            return 1
        return int(value) if value.isdigit() and len(value) < 10 else FORMAT

    def _check_format(self) -> None:
        found = self.format()
        if found > FORMAT:
            raise AuditFormatError(
                f"the audit log {self.path} is format {found}, newer than this recorderd knows (format {FORMAT}): "
                "it was written by a newer release; install that release (or a newer one) again, do not downgrade"
            )

    @staticmethod
    def _start_needed(meta: dict[str, str], has_rows: bool, check: str, replaced: bool, legacy: bool) -> str | None:
        """What sealing with the key takes first: a new log's meta, the migration of a format-1 log
        (only when the store says it predates the seals), a re-key (only when init has just made the
        key): never on what the file alone says. "removed": the log's meta was removed in a sealed store."""
        if meta.get("format") is None:
            if not has_rows:
                return "new"
            return "migrate" if legacy else "removed"
        if replaced and meta.get("seal_check") != check:
            return "rekey"
        return None

    def use_key(self, key: bytes, *, at: float, replaced: bool = False, legacy: bool = False) -> None:
        """Seal the rows appended from now on with ``key`` (the audit-seal key). The first time a log
        of format 1 is opened with it, its head is sealed into one ``audit-migrated`` row; with
        ``replaced`` (``init`` has just made a new master key) a log sealed under another key gets
        an ``audit-rekeyed`` row. A log without ``audit_meta`` is migrated only with ``legacy`` (the
        store predates the seals); otherwise it was rewritten: rows are appended sealed after it, no
        meta or migration row vouches for what is there, and ``verify`` fails. On a read-only (full) disk nothing is written: the log is sealed
        at a later open, and cannot be appended to until then. A log of a newer format is refused."""
        self._check_format()
        self.key, check = key, key_check(key)
        need = self._start_needed(self._meta(), self._last() is not None, check, replaced, legacy)
        if need == "removed":
            self.meta_removed = self._sealing = True
            log.error("the audit log has no audit_meta, but the store's index says it was sealed: it was rewritten; "
                      "run 'recorderctl audit verify' and restore audit.sqlite from its backup",
                      extra={"EVENT": "audit-meta-removed"})
        elif need is None:
            self._sealing = True
            if self._meta().get("seal_check") != check:
                log.error("the audit log is sealed under another master key than the store's: audit verify "
                          "will fail for its rows", extra={"EVENT": "audit-key-differs"})
        elif not database.is_read_only(self.db):
            try:
                with database.transaction(self.db):
                    started = self._start_seals(key, at, replaced, legacy)
            except BaseException:
                self._sealing = False
                raise
            self._sealing = True
            if started is not None:
                log.warning("the audit log is sealed from row %d on (%s)", started[0], started[1],
                            extra={"EVENT": started[1]})
        missing = self.missing_guards() if self.sealed() else []
        if missing:
            log.error("the audit log is sealed but its guards are gone (%s): they were removed, and with them what "
                      "shows rows cut from its end; they are not put back. Run 'recorderctl audit verify "
                      "--against-journal' and restore audit.sqlite from its backup", ", ".join(missing),
                      extra={"EVENT": "audit-guards-missing"})

    def _start_seals(self, key: bytes, at: float, replaced: bool, legacy: bool) -> tuple[int, str] | None:
        """Inside the caller's transaction (another process may have done it first)."""
        meta, check, last = self._meta(), key_check(key), self._last()
        need = self._start_needed(meta, last is not None, check, replaced, legacy)
        if need is None:
            return None
        if need == "removed":  # a rewrite came in meanwhile: nothing written over it
            self.meta_removed = True
            return None
        self.db.execute(META)
        if need in ("new", "migrate"):  # the guards come with the seals: a sealed log without them lost them
            self._install_guards()
        if need == "new":  # sealed from its first row
            self._set_meta(format=FORMAT, sealed_from=1, legacy_through=0, seal_check=check)
            return None
        through = last or (0, GENESIS)
        if need == "migrate":
            action = MIGRATED_ACTION
            detail: dict[str, Any] = {"from_format": 1, "to_format": FORMAT, "legacy_through": through[0]}
        else:
            action = REKEYED_ACTION
            before = meta.get("legacy_through", "0")
            detail = {"reason": "init made a new master key", "legacy_through": int(before) if before.isdigit() else 0}
        detail |= {"through_seq": through[0], "through_hash": through[1]}
        self._set_meta(format=FORMAT, sealed_from=through[0] + 1, legacy_through=detail["legacy_through"], seal_check=check)
        self.key, self._sealing = key, True
        user, uid = _process_user()
        return self._insert(AuditEvent(at, user, uid, action, None, detail, "allowed")), action

    def _set_meta(self, **values: Any) -> None:
        self.db.executemany("INSERT OR REPLACE INTO audit_meta (key, value) VALUES (?, ?)",
                            [(k, str(v)) for k, v in values.items()])

    # -- appending ------------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> int:
        with database.transaction(self.db):
            return self._insert(event)

    def _last(self) -> tuple[int, str] | None:
        """(seq, seal) of the last row, or the pruning anchor's when every row went."""
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            anchor = self.anchor()
            return (anchor[0], anchor[1]) if anchor else None
        return last[0], last[1]

    def tip(self) -> tuple[int, str]:
        """(seq, seal) of the chain's head, as the journal checkpoints carry it ((0, GENESIS): empty)."""
        return self._last() or (0, GENESIS)

    def _insert(self, event: AuditEvent) -> int:
        """Seal ``event`` after the last row (inside the caller's transaction)."""
        if self.key is None or not self._sealing:
            raise AuditFormatError("the audit log cannot be written before it is opened with its seal key")
        event = _kept(event)
        seq, prev = self.tip()
        seq += 1
        self.db.execute(
            "INSERT INTO audit (seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, event.at, event.user, event.uid, event.action, event.recording_id,
             json.dumps(event.detail, ensure_ascii=False, sort_keys=True), event.result, prev,
             seal(self.key, seq, event, prev)),
        )
        return seq

    # -- protection, head and anchor ------------------------------------------------------------

    def protect(self) -> None:
        """Install the append-only triggers and the head record on a log not sealed yet (one of
        format 1 opened without its key, or on a full disk; idempotent; old logs get a head record
        from their last row). A sealed log has had them since its seals started
        (:meth:`_start_seals`): one that lacks any is not given them again here, as it was before
        (silently, at every open): whoever cut rows from its end removed them, and putting them back
        would hide it. :meth:`verify` reports it and :meth:`use_key` logs it."""
        if self.sealed() or not self.missing_guards():
            return
        with database.transaction(self.db):
            self._install_guards()

    def _install_guards(self) -> None:
        """Inside the caller's transaction."""
        for statement in (*PROTECTION, NO_DELETE):
            self.db.execute(statement)
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if last and not self.db.execute("SELECT 1 FROM audit_head").fetchone():
            self.db.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", last)

    def sealed(self) -> bool:
        """Whether the log is sealed (``audit_meta`` says a format), or was by the store's index."""
        return self._meta().get("format") is not None or self.meta_removed

    def missing_guards(self) -> list[str]:
        """The append-only triggers and head record the log lacks (a sealed log must have them all)."""
        have = set(self.db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger')").fetchall())
        missing = [name for name in GUARDS if ("trigger", name) not in have]
        if ("table", "audit_head") not in have:
            missing.append("the head record (table audit_head)")
        elif self.head() is None and self.db.execute("SELECT 1 FROM audit LIMIT 1").fetchone():
            missing.append("the head record (its row)")
        return missing

    def _has(self, table: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None

    def head(self) -> tuple[int, str] | None:
        """The last row's (seq, hash) as the insert trigger recorded it."""
        if not self._has("audit_head"):
            return None
        row = self.db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    def anchor(self) -> tuple[int, str, float] | None:
        """(seq, hash, when) of the last row removed by pruning: the chain starts after it."""
        if not self._has("audit_anchor"):
            return None
        row = self.db.execute("SELECT seq, hash, pruned_at FROM audit_anchor WHERE id = 1").fetchone()
        return (row[0], row[1], row[2]) if row else None

    def prune(self, before: float, event: AuditEvent) -> int:
        """Remove the rows older than ``before`` (a prefix of the chain), keep the last one's hash
        as the anchor, and append ``event`` (its detail completed with the anchor). Returns the
        number of rows removed. A sealed log whose guards are gone is not pruned (its rows are kept
        for whoever looks into it)."""
        self.protect()
        missing = self.missing_guards()
        if missing:
            log.error("the audit log was not pruned: its guards are gone (%s)", ", ".join(missing),
                      extra={"EVENT": "audit-guards-missing"})
            return 0
        with database.transaction(self.db):
            through = self.db.execute("SELECT max(seq) FROM audit WHERE at < ?", (before,)).fetchone()[0]
            if through is None:
                return 0
            through_hash = self.db.execute("SELECT hash FROM audit WHERE seq = ?", (through,)).fetchone()[0]
            self.db.execute("DROP TRIGGER audit_no_delete")
            removed = self.db.execute("DELETE FROM audit WHERE seq <= ?", (through,)).rowcount
            self.db.execute(NO_DELETE)
            self.db.execute(
                "INSERT OR REPLACE INTO audit_anchor (id, seq, hash, pruned_at) VALUES (1, ?, ?, ?)",
                (through, through_hash, event.at),
            )
            detail = {**event.detail, "through_seq": through, "through_hash": through_hash, "rows_removed": removed}
            self._insert(AuditEvent(event.at, event.user, event.uid, PRUNE_ACTION, None, detail, event.result))
        return removed

    def rows(self) -> list[tuple[int, AuditEvent, str, str]]:
        cur = self.db.execute(
            "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash FROM audit ORDER BY seq"
        )
        return [(r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], _detail(r[6]), r[7]), r[8], r[9]) for r in cur.fetchall()]

    def select(self, start: float | None = None, end: float | None = None, *, user: str | None = None,
               action: str | None = None, recording_id: str | None = None,
               limit: int | None = None) -> list[tuple[int, AuditEvent, str, str]]:
        """Rows in ``[start, end)`` matching the filters, oldest first (the last ``limit`` of them)."""
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (("at >= ?", start), ("at < ?", end), ("user = ?", user), ("action = ?", action),
                              ("recording_id = ?", recording_id)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT seq, at, user, uid, action, recording_id, detail, result, prev_hash, hash FROM audit"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cur = self.db.execute(sql, args)
        rows = [(r[0], AuditEvent(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]), r[8], r[9]) for r in cur]
        return rows[::-1]

    def recorded_signing_key(self) -> str | None:
        """The fingerprint of the last signing key the chain records (an ``init`` or
        ``signing-key-created`` row naming it) since the seals last started under a new master key
        (``audit-rekeyed``: a key from before that was wrapped by the lost one); None: none."""
        rekeyed = self.db.execute("SELECT coalesce(max(seq), 0) FROM audit WHERE action = ?", (REKEYED_ACTION,)).fetchone()[0]
        cur = self.db.execute("SELECT detail FROM audit WHERE seq > ? AND action IN ('init', 'signing-key-created') "
                              "ORDER BY seq DESC", (rekeyed,))
        for (text,) in cur:
            try:
                found = json.loads(text).get("signing_key", {}).get("fingerprint")
            except (ValueError, AttributeError):
                continue
            if isinstance(found, str) and found:
                return found
        return None

    def _hashers(self, rows: list[tuple[int, AuditEvent, str, str]], first: int,
                 problems: list[str]) -> Callable[[int], Callable[[int, AuditEvent, str], str] | None]:
        """What recomputes row ``seq``'s hash: the seal (format 2), plain SHA-256 (the rows before
        the migration), or nothing (rows sealed under a master key that init replaced)."""
        meta = self._meta()
        if meta.get("format") is None and self.meta_removed and self.key is not None:
            problems.append("audit_meta removed or rewritten: the store's index says its audit log is sealed, but "
                            "the log claims the format before the seals (plain SHA-256): it was rewritten")
            key = self.key
            return lambda s: lambda s2, e, p: seal(key, s2, e, p)
        if meta.get("format") is None:  # not sealed yet (opened read-only, or without the key)
            return lambda s: _digest
        if meta["format"] != str(FORMAT):
            problems.append(f"audit_meta says the log is format {meta['format'][:20]!r}, which no recorderd writes (altered)")
        if self.key is None:
            problems.append("the seals cannot be checked here: the store's master key is not available")
            return lambda s: None
        key = self.key
        def keyed(s: int, e: AuditEvent, p: str) -> str:
            return seal(key, s, e, p)

        if meta.get("seal_check") != key_check(key):
            problems.append("the log is sealed under another master key than the store's (its key check differs)")
        sealed_from = int(meta.get("sealed_from", "1")) if meta.get("sealed_from", "1").isdigit() else first
        legacy_through = 0
        if sealed_from > first:  # the row that started the seals is still here: it says what came before
            start = next((r for r in rows if r[0] == sealed_from), None)
            if (start is None or start[1].action not in (MIGRATED_ACTION, REKEYED_ACTION)
                    or keyed(start[0], start[1], start[2]) != start[3]
                    or start[1].detail.get("through_seq") != sealed_from - 1):
                problems.append(f"row {sealed_from}: the log says its seals start there, but it is no sealed "
                                f"{MIGRATED_ACTION} or {REKEYED_ACTION} row (the start of the seals was moved)")
                return lambda s: keyed
            legacy_through = int(start[1].detail.get("legacy_through", 0))
            if legacy_through >= first:
                moved = next((r for r in rows if r[0] == legacy_through + 1 and r[1].action == MIGRATED_ACTION), start)
                when = iso(moved[1].at, self.tz, "seconds")
                self.notes.append(f"rows {first}-{legacy_through}: plain SHA-256, from before the seals, migrated at "
                                  f"{when} (row {moved[0]}): anyone can recompute their hashes; the sealed row "
                                  "binds them to its head")
            if sealed_from - 1 > max(legacy_through, first - 1):
                lo = max(legacy_through + 1, first)
                self.notes.append(f"rows {lo}-{sealed_from - 1}: sealed under the master key that init replaced "
                                  f"at row {sealed_from}: only their order is checked")
        return lambda s: keyed if s >= sealed_from else _digest if s <= legacy_through else None

    def verify(self) -> list[str]:
        """Problems found in the chain, each naming its row; empty when the chain holds. What could
        only be partly checked is in :attr:`notes`."""
        rows = self.rows()
        anchor = self.anchor()
        first, prev0 = (anchor[0] + 1, anchor[1]) if anchor else (1, GENESIS)
        problems: list[str] = []
        self.notes = []
        hasher = self._hashers(rows, first, problems)

        def holds(s: int, event: AuditEvent, prev_hash: str, digest: str) -> bool:
            fn = hasher(s)
            try:
                return fn is None or fn(s, event, prev_hash) == digest
            except (TypeError, ValueError):  # a value no writer stores (a BLOB, a lone surrogate): altered
                return False

        # Where each row's content belongs: its own place, another place (moved), or none (altered).
        belongs: dict[int, int | None] = {}
        true_hash: dict[int, str] = {first - 1: prev0}
        for seq, event, prev_hash, digest in rows:
            place = seq if holds(seq, event, prev_hash, digest) else next(
                (s for s in range(seq - NEAR, seq + NEAR + 1)
                 if s != seq and hasher(s) is not None and holds(s, event, prev_hash, digest)),
                None)
            belongs[seq] = place
            if place is not None:
                true_hash.setdefault(place, digest)
        expected = first
        for seq, _event, prev_hash, _digest in rows:
            if seq < first:
                problems.append(f"row {seq}: is older than the pruning anchor (row {first - 1}): put back after pruning")
                continue
            if seq > expected:
                gap = f"row {expected}" if seq == expected + 1 else f"rows {expected}-{seq - 1}"
                problems.append(f"{gap}: missing (removed) before row {seq}")
            place = belongs[seq]
            if place is None:
                problems.append(f"row {seq}: content does not match its hash (altered)")
            elif place != seq:
                problems.append(f"row {seq}: holds what was row {place} (rows swapped or reordered)")
            elif seq == expected and seq - 1 in true_hash and prev_hash != true_hash[seq - 1]:
                problems.append(f"row {seq}: does not chain to the row before it (row {seq - 1} was replaced)")
            expected = seq + 1
        head = self.head()
        if head is not None and head[0] >= expected:
            gap = f"row {head[0]}" if head[0] == expected else f"rows {expected}-{head[0]}"
            problems.append(f"{gap}: missing at the end (removed; the head record says the log ends at row {head[0]})")
        elif head is not None and rows and head[0] == rows[-1][0] and head[1] != rows[-1][3]:
            problems.append(f"row {head[0]}: differs from the head record (the last row was replaced)")
        missing = self.missing_guards() if self.sealed() else []
        if missing:
            problems.append(f"the log is sealed but its guards are gone ({', '.join(missing)}): they were removed, so "
                            "rows may have been cut from its end and its head record set back without a trace here "
                            "(check it --against-journal, restore audit.sqlite from its backup)")
        if anchor is not None:
            prunes = [r for r in rows if r[1].action == PRUNE_ACTION]
            last = prunes[-1][1].detail if prunes else {}
            if (last.get("through_seq"), last.get("through_hash")) != (anchor[0], anchor[1]):
                problems.append(f"rows 1-{anchor[0]}: removed without a recorded pruning (the anchor matches no audit-prune row)")
        return problems

    def key_id(self) -> str:
        """Which key seals the log (its check value): the journal checkpoints carry it, so that
        those of another store (made before on the box, or before init replaced the key) are told apart."""
        if self.key is None:
            raise AuditFormatError("the audit log is not open with its seal key")
        return key_check(self.key)

    def check_checkpoints(self, checkpoints: Iterable[tuple[int, str, str, str]]) -> tuple[list[str], dict[str, int]]:
        """Each checkpoint the journal holds of this log, (seq, seal, when, key id), must still be
        row ``seq`` of the chain with that seal: a log cut short or rewritten since fails, naming the
        checkpoint's time. Returns the problems and the counts: checked, before the pruning anchor
        (not checkable), of another key (another store's log)."""
        anchor = self.anchor()
        floor = anchor[0] if anchor else 0
        end = self.tip()[0]
        mine = self.key_id()
        problems: list[str] = []
        counts = {"checked": 0, "pruned": 0, "other_key": 0}
        for seq, head, when, key_id in checkpoints:
            if key_id != mine:
                counts["other_key"] += 1
                continue
            if seq < floor:
                counts["pruned"] += 1
                continue
            counts["checked"] += 1
            found: str | None
            if seq == floor:
                found = anchor[1] if anchor else GENESIS
            else:
                row = self.db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
                found = row[0] if row else None
            where = f"checkpoint of {when} (row {seq}, seal {head[:16]}…)"
            if found is None and seq > end:
                problems.append(f"{where}: the log now ends at row {end}: rows {end + 1}-{seq} at least were "
                                "removed (cut short)")
            elif found is None:
                problems.append(f"{where}: row {seq} is missing")
            elif found != head:
                problems.append(f"{where}: row {seq} has another seal than the journal recorded (the log was rewritten)")
        if len(problems) > SHOWN_CHECKPOINTS:
            more = len(problems) - SHOWN_CHECKPOINTS
            problems = problems[:SHOWN_CHECKPOINTS] + [f"{more} more checkpoint(s) after these are not in the chain either"]
        if not counts["checked"] and not counts["pruned"]:
            problems.append(f"the journal holds no checkpoint of this audit log (key {mine}): it cannot vouch for it")
        return problems, counts
