"""The SQLite index of kept recordings (and their holds).

One row per kept recording. ``secure_delete`` is on so that erased rows do not linger in free pages.
The personal fields of a recording (the caller's number, the SIP Call-ID, which often carries an
address or a number, and the DTMF digits its streams carried: PINs, card numbers) are not columns:
they are sealed together (AES-256-GCM, the recording id as associated data) under the recording's
own data key, so destroying its wrapped key (crypto-erase) makes them unreadable with the audio.
They are opened only for the rows shown. The caller's number is searched through keyed digests
(``storage/search.py``). The recording id is the local start time and a digest of the Call-ID, DID
and start (``storage/spool.py``): no caller number.

One conversation may be kept in parts (a transfer, a codec change mid-call): every part has the
conversation's token (``conversation``, opaque, made by capture: not personal), its ``part`` number
and ``part_reason``, and ``conversation_start`` (the start of its first part) so that a search lists
the parts of one conversation together. The other legs of a conversation that were seen and not
recorded (an SBC's other face) are in ``linked_legs``: how they were matched in clear, their Call-IDs
sealed under the recording's data key like its own, and gone with it at crypto-erase.

``schema_version`` in ``store_meta`` says which layout the file has; :meth:`Index.migrate` brings an
older one up to :data:`SCHEMA_VERSION` once, and a newer one is refused. The number must match the
layout (:meth:`Index.layout_version`, by what each migration made): one that does not, set back or
forward, is refused, so that no migration is run twice, nor skipped, by an edited number.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import database, keys, search, vault

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    did TEXT NOT NULL,
    did_label TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    codec TEXT NOT NULL,
    channels INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    retain_until REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('complete', 'incomplete')),
    end_reason TEXT NOT NULL,
    path TEXT NOT NULL,
    streams TEXT NOT NULL,           -- quality per direction (DTMF digits are sealed)
    created_at REAL NOT NULL,
    wrapped_key BLOB,                -- NULL once crypto-erased
    erasing_at REAL,                 -- set when erasure began (an interrupted one is finished next run)
    audio TEXT NOT NULL DEFAULT 'exact',   -- exact (G.711 bytes) | transcoded | not-decoded
    rate INTEGER NOT NULL DEFAULT 8000,
    pcap_path TEXT NOT NULL DEFAULT '',    -- the evidence pcap ('' when not kept)
    pcap_sha256 TEXT NOT NULL DEFAULT '',
    pcap_size INTEGER NOT NULL DEFAULT 0,
    sealed BLOB NOT NULL DEFAULT x'',      -- caller, Call-ID, DTMF under the data key (x'' once erased)
    conversation TEXT NOT NULL DEFAULT '', -- the conversation's token (schema 3): the same for all its parts
    part INTEGER NOT NULL DEFAULT 1,
    part_reason TEXT NOT NULL DEFAULT '',  -- '' (the first), transfer, codec-change
    conversation_start REAL NOT NULL DEFAULT 0, -- started_at of the conversation's first part kept ...
    conversation_first TEXT NOT NULL DEFAULT ''  -- ... and its id (the search's order: parts together)
);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL REFERENCES recordings (id),
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    released_at REAL
);
CREATE TABLE IF NOT EXISTS erasures (       -- the minimal record left of an erased recording
    id TEXT PRIMARY KEY,
    did_label TEXT NOT NULL,
    call_date TEXT NOT NULL,                -- local date of the call, no time, no caller
    retain_until REAL NOT NULL,
    erased_at REAL NOT NULL,
    method TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
"""
# Tables and indexes of the second edition (also made by the migration from version 1).
SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS caller_digests (  -- keyed digests of the caller's number (storage/search.py)
    digest BLOB NOT NULL,
    recording_id TEXT NOT NULL REFERENCES recordings (id),
    PRIMARY KEY (digest, recording_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS caller_digests_recording ON caller_digests (recording_id);
CREATE INDEX IF NOT EXISTS recordings_newest ON recordings (started_at, id);
CREATE INDEX IF NOT EXISTS recordings_retain ON recordings (retain_until);
CREATE INDEX IF NOT EXISTS recordings_did ON recordings (did, started_at, id);
CREATE INDEX IF NOT EXISTS recordings_did_label ON recordings (did_label, started_at, id);
CREATE INDEX IF NOT EXISTS recordings_state ON recordings (state, started_at, id);
CREATE INDEX IF NOT EXISTS recordings_duration ON recordings ((ended_at - started_at));
CREATE INDEX IF NOT EXISTS holds_recording ON holds (recording_id);
CREATE INDEX IF NOT EXISTS holds_in_force ON holds (until) WHERE released_at IS NULL;
"""
# Tables and indexes of schema 3 (also made by the migration from versions 1 and 2).
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS linked_legs (   -- other legs of a recording's conversation, not recorded
    recording_id TEXT NOT NULL REFERENCES recordings (id),
    n INTEGER NOT NULL,
    how TEXT NOT NULL,                     -- address | rtp-relay | unsure
    sealed BLOB NOT NULL,                  -- its Call-ID under the recording's data key
    PRIMARY KEY (recording_id, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recordings_conversation ON recordings (conversation, part);
CREATE INDEX IF NOT EXISTS recordings_conversations_newest
    ON recordings (conversation_start DESC, conversation_first DESC, part, id);
"""
# Columns schema 3 added to the recordings table: (name, declaration) for ALTER TABLE.
SCHEMA_3_COLUMNS = (
    ("conversation", "TEXT NOT NULL DEFAULT ''"), ("part", "INTEGER NOT NULL DEFAULT 1"),
    ("part_reason", "TEXT NOT NULL DEFAULT ''"), ("conversation_start", "REAL NOT NULL DEFAULT 0"),
    ("conversation_first", "TEXT NOT NULL DEFAULT ''"),
)
HOW = ("address", "rtp-relay", "unsure")  # how a linked leg was matched (anything else is kept as "unsure")
MAX_LEGS = 16  # linked legs kept per recording
MAX_LEG_CALL_ID = 512  # characters of a linked leg's Call-ID kept
CONVERSATION_SPAN = "conversation_span"  # store_meta: Index.conversation_span
COUNT_CHUNK = 500  # values per IN (...) of a count: well under SQLite's limit on a statement's parameters
COLUMNS = (
    "id", "did", "did_label", "started_at", "ended_at", "codec", "channels", "frames", "size", "sha256",
    "retain_until", "state", "end_reason", "path", "streams", "created_at", "wrapped_key", "erasing_at",
    "audio", "rate", "pcap_path", "pcap_sha256", "pcap_size", "sealed",
    "conversation", "part", "part_reason", "conversation_start", "conversation_first",
)
PERSONAL = ("caller", "call_id")  # RecordingRow fields kept sealed (with the streams' DTMF digits)
_SEAL_AAD = b"recorderd index fields v1\0"
_LEG_AAD = b"recorderd linked leg v1\0"
UNREADABLE = "(unreadable)"  # a personal field whose seal or key does not open (the row was altered)
# Columns the first edition added after its first stores were made: (name, declaration) for ALTER TABLE.
ADDED_COLUMNS = (
    ("audio", "TEXT NOT NULL DEFAULT 'exact'"), ("rate", "INTEGER NOT NULL DEFAULT 8000"),
    ("pcap_path", "TEXT NOT NULL DEFAULT ''"), ("pcap_sha256", "TEXT NOT NULL DEFAULT ''"),
    ("pcap_size", "INTEGER NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True, slots=True)
class RecordingRow:
    id: str
    call_id: str
    did: str
    did_label: str
    caller: str
    started_at: float
    ended_at: float
    codec: str
    channels: int
    frames: int
    size: int
    sha256: str
    retain_until: float
    state: str
    end_reason: str
    path: str  # relative to the store's recordings directory
    streams: list[dict[str, Any]]
    created_at: float
    wrapped_key: bytes | None = None
    erasing_at: float | None = None
    audio: str = "exact"
    rate: int = 8000
    pcap_path: str = ""
    pcap_sha256: str = ""
    pcap_size: int = 0
    conversation: str = ""  # "" when added: a token of its own (:func:`own_conversation`)
    part: int = 1
    part_reason: str = ""
    conversation_start: float = 0.0  # set by the index: the start of the conversation's first part kept
    conversation_first: str = ""  # and that part's id


def own_conversation(recording_id: str) -> str:
    """The conversation token of a recording kept without one (schema 2's rows, a call capture gave
    none): a conversation of its own, in the form of capture's tokens (16 hex digits)."""
    return hashlib.sha256(b"recorderd recording\0" + recording_id.encode()).hexdigest()[:16]


class DuplicateRecording(Exception):
    pass


class SchemaError(Exception):
    """The index's layout is one this code cannot use (newer than it, or not migrated)."""


class Index:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = database.connect(path, foreign_keys=True, secure_delete=True)  # read-only on a full disk
        # The master key, when the personal fields are to be sealed, opened or searched (set by the store).
        self.master: Callable[[], bytes] | None = None
        self._digest_key: bytes | None = None

    def close(self) -> None:
        self.db.close()

    def create(self) -> None:
        """A new index; an existing one gets what its own edition added later (the second
        edition's changes are :meth:`migrate`'s)."""
        if not self._table("recordings"):
            self.db.executescript(SCHEMA + SCHEMA_2 + SCHEMA_3)
            self.db.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),))
            return
        self.db.executescript(SCHEMA)  # store_meta, holds, erasures of a partial first-edition file
        version = self.check_version()
        if version == 1:
            self._add_first_edition_columns()
        self.db.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', '1')")

    def _table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def _add_first_edition_columns(self) -> None:
        have = {r[1] for r in self.db.execute("PRAGMA table_info(recordings)")}
        for name, declaration in ADDED_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE recordings ADD COLUMN {name} {declaration}")

    # -- schema version and migration ------------------------------------------------------------

    def schema_version(self) -> int:
        value = self.meta("schema_version") if self._table("store_meta") else None
        try:
            version = int(value) if value is not None else 1  # the first stores had none
        except ValueError:
            raise SchemaError(f"the index {self.path} has a schema_version that is not a number "
                              f"({str(value)[:20]!r})") from None
        if version < 1:  # no release wrote one: altered (it once passed as a store from before the seals)
            raise SchemaError(f"the index {self.path} has schema_version {version}, which no recorderd writes "
                              "(altered): nothing was changed")
        return version

    def first_edition_shape(self) -> bool:
        """Whether the recordings table is still the first edition's: its caller numbers in a plain
        column, none sealed. Only such a store predates the audit seals (its audit log may then be
        migrated); a version number alone is a value anyone who can write the file can set."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(recordings)")}
        return "caller" in have and "sealed" not in have

    def layout_version(self) -> int | None:
        """Which schema's layout the index has, by what each one made, not by the number it says: 1
        (the first edition's: :meth:`first_edition_shape`), 2 (the personal fields sealed, none of
        schema 3's columns nor its linked legs' table), 3 (all of them); None: none of these."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(recordings)")}
        if "caller" in have and "sealed" not in have:
            return 1
        if "sealed" not in have or have & {"caller", "call_id"}:
            return None
        added, legs = have & {name for name, _ in SCHEMA_3_COLUMNS}, self._table("linked_legs")
        if not added and not legs:
            return 2
        return 3 if len(added) == len(SCHEMA_3_COLUMNS) and legs else None

    def _check_layout(self, version: int) -> None:
        """A version that does not match the layout is refused. No release writes one (each
        migration changes the layout and the number in one transaction; a release refuses a newer
        index), so the number was edited (or the file put together from two), and trusting it would
        redo a migration whose changes are there (2 -> 3 makes every part a conversation of its
        own) or skip one that is due. Restoring the number would be safe for the layout, but would
        pass over an edit of the store's index without anyone looking at it."""
        layout = self.layout_version()
        if layout == version:
            return
        found = f"schema {layout}'s" if layout is not None else "of no schema a recorderd made"
        fix = (f"once you know why it changed, set schema_version back to {layout} or restore index.sqlite from "
               "its backup" if layout is not None else "restore index.sqlite from its backup")
        raise SchemaError(f"the index {self.path} says schema_version {version}, but its layout is {found}: the "
                          f"version does not match the layout (altered), and no migration is run by it; nothing "
                          f"was changed; {fix}")

    def _too_new(self, version: int) -> SchemaError:
        return SchemaError(f"the index {self.path} is schema version {version}, newer than this recorderd, which "
                           f"reads versions up to {SCHEMA_VERSION}: install the release that made it (or a newer one); "
                           "nothing was changed")

    def check_version(self) -> int:
        """The file's version; a newer one than this code's is refused, and so is one that does not
        match the file's layout (:meth:`_check_layout`)."""
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise self._too_new(version)
        self._check_layout(version)
        return version

    def migrate(self, master: bytes) -> tuple[int, int, int] | None:
        """Bring an older index to this edition, once. From the first edition: every caller number,
        Call-ID and DTMF sealed under its recording's data key, its digests made, the plaintext
        columns dropped, then VACUUM and a WAL checkpoint so the old values leave the file. From
        schema 2: each recording a conversation of its own (part 1), and the linked legs' table.
        ``(from, to, rows)``, or None when there was nothing to do. All or nothing (one transaction)."""
        if self.check_version() == SCHEMA_VERSION:
            if self.meta("compact_pending") and not database.is_read_only(self.db):
                self.compact()
            return None
        if database.is_read_only(self.db):
            raise SchemaError(f"the index {self.path} is schema version {self.schema_version()} and must be migrated to "
                              f"{SCHEMA_VERSION}, which needs room on the store's disk: free some space, then start "
                              "again")
        self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB while every row is rewritten (random digest keys)
        with database.transaction(self.db):
            version = self.check_version()
            if version == SCHEMA_VERSION:  # another process did it meanwhile
                return None
            if version == 1:
                self._seal_first_edition(master)
            rows = self._add_conversations()
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        if self.meta("compact_pending"):
            self.compact()
        return version, SCHEMA_VERSION, rows

    def _seal_first_edition(self, master: bytes) -> None:
        """1 -> 2, inside :meth:`migrate`'s transaction."""
        self._add_first_edition_columns()
        self.db.execute("ALTER TABLE recordings ADD COLUMN sealed BLOB NOT NULL DEFAULT x''")
        self.db.execute("DROP INDEX IF EXISTS recordings_started")  # recordings_newest is its successor
        for statement in SCHEMA_2.split(";"):  # not executescript: it would commit
            if statement.strip():
                self.db.execute(statement)
        digest_key = keys.derive(master, "caller-digest")
        rows = self.db.execute("SELECT id, caller, call_id, streams, wrapped_key FROM recordings").fetchall()
        updates, digests = [], []
        for rid, caller, call_id, streams_text, wrapped in rows:
            public, dtmf = _split_dtmf(json.loads(streams_text))
            sealed = b""
            if wrapped is not None:  # an erasure begun: its key is gone, nothing is kept
                sealed = _seal(vault.unwrap(master, wrapped, rid), rid, caller, call_id, dtmf)
                digests += [(d, rid) for d in search.caller_digests(digest_key, caller)]
            updates.append((sealed, _dumps(public), rid))
        self.db.executemany("UPDATE recordings SET sealed = ?, streams = ? WHERE id = ?", updates)
        digests.sort()  # in key order: appended to the b-tree, not scattered over it
        self.db.execute("DROP INDEX caller_digests_recording")  # made again once the digests are in: faster
        self.db.executemany("INSERT OR IGNORE INTO caller_digests (digest, recording_id) VALUES (?, ?)", digests)
        self.db.execute("CREATE INDEX caller_digests_recording ON caller_digests (recording_id)")
        self.db.execute("ALTER TABLE recordings DROP COLUMN caller")
        self.db.execute("ALTER TABLE recordings DROP COLUMN call_id")
        self.set_meta("compact_pending", "1")  # cleared by compact(): a crash before it is compacted at the next open

    def _add_conversations(self) -> int:
        """2 -> 3, inside :meth:`migrate`'s transaction: every recording so far is a conversation of
        its own, part 1 (nothing older knew of parts); the linked legs' table, empty. Returns the rows."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(recordings)")}
        for name, declaration in SCHEMA_3_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE recordings ADD COLUMN {name} {declaration}")
        ids = [rid for (rid,) in self.db.execute("SELECT id FROM recordings")]
        self.db.executemany("UPDATE recordings SET conversation = ?, part = 1, part_reason = '', "
                            "conversation_start = started_at, conversation_first = id WHERE id = ?",
                            [(own_conversation(rid), rid) for rid in ids])
        for statement in SCHEMA_3.split(";"):
            if statement.strip():
                self.db.execute(statement)
        return len(ids)

    def compact(self) -> None:
        """VACUUM and fold the WAL into the file, so values a migration removed leave it (pages of
        the old layout included). Retried at the next open when another process held the file."""
        try:
            self.db.execute("VACUUM")
            self.checkpoint()
        except sqlite3.OperationalError as exc:
            log.warning("the index could not be compacted after its migration (%s): tried again at the next start", exc)
            self.set_meta("compact_pending", "1")
        else:
            self.delete_meta("compact_pending")

    def initialised(self) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'"
        ).fetchone()
        return row is not None

    # -- store_meta: small named values of the store (key check value, clock reference) ----------

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM store_meta WHERE key = ?", (key,))

    def wrapped_key_sample(self) -> tuple[str, bytes] | None:
        """One recording's id and wrapped data key (None: no recording holds a key)."""
        row = self.db.execute("SELECT id, wrapped_key FROM recordings WHERE wrapped_key IS NOT NULL LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def wrapped_keys(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM recordings WHERE wrapped_key IS NOT NULL").fetchone()[0])

    def digest_key(self) -> bytes:
        if self._digest_key is None:
            self._digest_key = keys.derive(self._master(), "caller-digest")
        return self._digest_key

    def _master(self) -> bytes:
        if self.master is None:
            raise SchemaError("the index was opened without the master key: its personal fields stay sealed")
        return self.master()

    def _add_digests(self, recording_id: str, caller: str, key: bytes) -> None:
        self.db.executemany("INSERT OR IGNORE INTO caller_digests (digest, recording_id) VALUES (?, ?)",
                            [(d, recording_id) for d in search.caller_digests(key, caller)])

    def add(self, row: RecordingRow, data_key: bytes | None = None,
            legs: Iterable[tuple[str, str]] = ()) -> None:
        """Index a kept recording: its personal fields sealed under its data key (given, or
        unwrapped from the row), its caller's digests beside it, its conversation's place and the
        other legs of it that were not recorded (``legs``: (Call-ID, how), the Call-IDs sealed), in
        one transaction."""
        [failed] = self.add_many([(row, data_key, legs)])
        if failed is not None:
            raise failed

    def add_many(self, items: Sequence[tuple[RecordingRow, bytes | None, Iterable[tuple[str, str]]]]) -> list[Exception | None]:
        """:meth:`add` for several recordings (a batch of keeps) in one transaction, so the index is
        committed, and its journal synced, once for all of them: each one in a savepoint of its own,
        so one that cannot be indexed (a duplicate, an altered row) fails alone. What failed each
        (None: indexed); when the commit itself fails, that for every one."""
        results: list[Exception | None] = [None] * len(items)
        with database.transaction(self.db):
            for i, (row, data_key, legs) in enumerate(items):
                self.db.execute("SAVEPOINT one_recording")
                try:
                    self._insert(row, data_key, legs)
                except Exception as exc:  # noqa: BLE001  (this recording fails; the others are indexed)
                    if not self.db.in_transaction:  # SQLite rolled it all back itself (a full disk, an I/O
                        raise  # error): the batch fails, with that cause
                    self.db.execute("ROLLBACK TO one_recording")
                    self.db.execute("RELEASE one_recording")
                    if isinstance(exc, sqlite3.IntegrityError):  # its id indexed already
                        duplicate = DuplicateRecording(row.id)
                        duplicate.__cause__ = exc
                        exc = duplicate
                    results[i] = exc
                else:
                    self.db.execute("RELEASE one_recording")
        return results

    def _insert(self, row: RecordingRow, data_key: bytes | None, legs: Iterable[tuple[str, str]]) -> None:
        """One recording's rows (in the caller's transaction)."""
        if row.wrapped_key is None:
            raise ValueError(f"recording {row.id} has no data key: its personal fields could not be sealed")
        if data_key is None:
            data_key = vault.unwrap(self._master(), row.wrapped_key, row.id)
        public, dtmf = _split_dtmf(row.streams)
        values = {c: getattr(row, c) for c in COLUMNS if c != "sealed"}
        values["streams"] = _dumps(public)
        values["sealed"] = _seal(data_key, row.id, row.caller, row.call_id, dtmf)
        conversation = row.conversation if _token_ok(row.conversation) else own_conversation(row.id)
        part = row.part if isinstance(row.part, int) and 1 <= row.part < 1 << 31 else 1
        values.update(conversation=conversation, part=part, part_reason=str(row.part_reason or "")[:40])
        sealed_legs = [(row.id, n, how if how in HOW else "unsure", _seal_leg(data_key, row.id, n, str(call_id)))
                       for n, (call_id, how) in enumerate(list(legs)[:MAX_LEGS], 1)]
        digest_key = self.digest_key()
        first = self.db.execute("SELECT conversation_start, conversation_first FROM recordings WHERE "
                                "conversation = ? ORDER BY conversation_start, conversation_first LIMIT 1",
                                (conversation,)).fetchone()
        earliest = first is None or (row.started_at, row.id) < tuple(first)
        start = (row.started_at, row.id) if earliest else first
        values["conversation_start"], values["conversation_first"] = start
        self.db.execute(
            f"INSERT INTO recordings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [values[c] for c in COLUMNS],
        )
        if first is not None and earliest:  # kept after a later part: the parts stay together
            self.db.execute("UPDATE recordings SET conversation_start = ?, conversation_first = ? WHERE "
                            "conversation = ?", (row.started_at, row.id, conversation))
        if first is not None:  # a conversation in parts: how far a part may start after its conversation
            latest = self.db.execute("SELECT max(started_at) FROM recordings WHERE conversation = ?",
                                     (conversation,)).fetchone()[0]
            if latest - values["conversation_start"] > self.conversation_span():
                self.set_meta(CONVERSATION_SPAN, repr(float(latest - values["conversation_start"])))
        self.db.executemany("INSERT INTO linked_legs (recording_id, n, how, sealed) VALUES (?, ?, ?, ?)",
                            sealed_legs)
        self._add_digests(row.id, row.caller, digest_key)

    def get(self, recording_id: str) -> RecordingRow | None:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings WHERE id = ?", (recording_id,))
        found = cur.fetchone()
        return self._row(found) if found else None

    def rows(self, ids: Iterable[str]) -> list[RecordingRow]:
        """The recordings of ``ids``, in that order (those not there left out), opened."""
        ids = list(ids)
        found: dict[str, tuple[Any, ...]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings WHERE id IN ({', '.join('?' * len(part))})", part)
            found.update((r[0], r) for r in cur.fetchall())
        return [self._row(found[i]) for i in ids if i in found]

    def all(self) -> list[RecordingRow]:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings ORDER BY started_at, id")
        return [self._row(r) for r in cur.fetchall()]

    def _row(self, values: tuple[Any, ...]) -> RecordingRow:
        data = dict(zip(COLUMNS, values, strict=False))
        sealed = data.pop("sealed")
        streams = json.loads(data["streams"])
        personal: dict[str, Any] = {"caller": "", "call_id": "", "dtmf": []}
        if sealed and data["wrapped_key"] is not None:
            try:
                personal = _open(vault.unwrap(self._master(), data["wrapped_key"], data["id"]), data["id"], sealed)
            except vault.VaultError as exc:  # an altered row: shown as such (verify names it), the others still listed
                log.warning("%s", exc, extra={"EVENT": "index-fields-unreadable", "RECORDING_ID": data["id"]})
                personal = {"caller": UNREADABLE, "call_id": UNREADABLE, "dtmf": []}
        dtmf = personal["dtmf"]
        data["streams"] = [{**s, "dtmf": dtmf[i] if i < len(dtmf) else []} for i, s in enumerate(streams)]
        return RecordingRow(caller=personal["caller"], call_id=personal["call_id"], **data)

    def conversation_span(self) -> float:
        """The longest time between a conversation's start and the start of one of its later parts
        (what a search by start time widens its look by: ``storage/search.py``)."""
        try:
            return max(0.0, float(self.meta(CONVERSATION_SPAN) or 0))
        except ValueError:
            return float("inf")  # an altered value: the search looks at every conversation

    def parts(self, conversation: str) -> list[RecordingRow]:
        """Every kept part of a conversation, in part order (opened)."""
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM recordings WHERE conversation = ? "
                              "ORDER BY part, started_at, id", (conversation,))
        return [self._row(r) for r in cur.fetchall()]

    def part_counts(self, conversations: Iterable[str]) -> dict[str, int]:
        """How many parts each of ``conversations`` has in the store."""
        return self._counts("recordings", "conversation", conversations)

    def leg_counts(self, ids: Iterable[str]) -> dict[str, int]:
        """How many linked legs each of the recordings ``ids`` has (those with none left out)."""
        return self._counts("linked_legs", "recording_id", ids)

    def _counts(self, table: str, column: str, keys: Iterable[str]) -> dict[str, int]:
        """The rows of ``table`` per value of ``column`` among ``keys`` (those with none left out),
        ``COUNT_CHUNK`` values to a query."""
        wanted = sorted(set(keys))
        counts: dict[str, int] = {}
        for i in range(0, len(wanted), COUNT_CHUNK):
            chunk = wanted[i : i + COUNT_CHUNK]
            counts.update(self.db.execute(f"SELECT {column}, count(*) FROM {table} WHERE {column} IN "
                                          f"({', '.join('?' * len(chunk))}) GROUP BY {column}", chunk).fetchall())
        return counts

    def legs(self, recording_id: str) -> list[dict[str, str]]:
        """The recording's linked legs, {how, call_id} in the order they were seen, their Call-IDs
        opened (:data:`UNREADABLE` for one whose seal does not open; none once erased)."""
        found = self.db.execute("SELECT n, how, sealed FROM linked_legs WHERE recording_id = ? ORDER BY n",
                                (recording_id,)).fetchall()
        if not found:
            return []
        wrapped = self.db.execute("SELECT wrapped_key FROM recordings WHERE id = ?", (recording_id,)).fetchone()
        key = None
        if wrapped and wrapped[0] is not None:
            try:
                key = vault.unwrap(self._master(), wrapped[0], recording_id)
            except vault.VaultError:
                key = None
        out = []
        for n, how, sealed in found:
            call_id = UNREADABLE
            if key is not None:
                try:
                    call_id = _open_leg(key, recording_id, n, sealed)
                except vault.VaultError:
                    log.warning("recording %s: linked leg %d does not open with its key", recording_id, n,
                                extra={"EVENT": "index-fields-unreadable", "RECORDING_ID": recording_id})
            out.append({"how": how, "call_id": call_id})
        return out

    def holds(self, recording_id: str, now: float | None = None) -> list[dict[str, Any]]:
        """Holds not released (and, given ``now``, not yet past their end)."""
        cur = self.db.execute(
            "SELECT id, until, reason, ref, created_by, created_at FROM holds "
            "WHERE recording_id = ? AND released_at IS NULL AND (? IS NULL OR until > ?) ORDER BY id",
            (recording_id, now, now),
        )
        keys = ("hold_id", "until", "reason", "ref", "created_by", "created_at")
        return [dict(zip(keys, r, strict=False)) for r in cur.fetchall()]

    def add_hold(self, recording_id: str, until: float, reason: str, ref: str, by: str, at: float) -> int:
        cur = self.db.execute(
            "INSERT INTO holds (recording_id, until, reason, ref, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (recording_id, until, reason, ref, by, at),
        )
        return int(cur.lastrowid or 0)

    def release_hold(self, recording_id: str, hold_id: int, at: float) -> bool:
        cur = self.db.execute(
            "UPDATE holds SET released_at = ? WHERE id = ? AND recording_id = ? AND released_at IS NULL",
            (at, hold_id, recording_id),
        )
        return cur.rowcount == 1

    def due(self, now: float) -> list[RecordingRow]:
        """Recordings past their deadline with no hold in force (or already being erased)."""
        cur = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM recordings r WHERE erasing_at IS NOT NULL OR (retain_until <= ? "
            "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.recording_id = r.id AND h.released_at IS NULL "
            "AND h.until > ?)) ORDER BY retain_until, id",
            (now, now),
        )
        return [self._row(r) for r in cur.fetchall()]

    def paths(self) -> set[str]:
        """Every file the index knows (WAVs and evidence pcaps), relative to the recordings tree."""
        return {p for (a, b) in self.db.execute("SELECT path, pcap_path FROM recordings") for p in (a, b) if p}

    def newest_start(self) -> float | None:
        row = self.db.execute("SELECT max(started_at) FROM recordings").fetchone()
        return row[0] if row else None

    def next_deadline(self) -> float | None:
        row = self.db.execute("SELECT min(retain_until) FROM recordings").fetchone()
        return row[0] if row else None

    def begin_erasure(self, recording_id: str, at: float) -> None:
        """Mark the erasure begun and destroy the wrapped data key, the sealed fields with it, and
        the caller's digests (secure_delete zeroes them)."""
        with database.transaction(self.db):
            self.db.execute(
                "UPDATE recordings SET erasing_at = coalesce(erasing_at, ?), wrapped_key = NULL, sealed = x'' WHERE id = ?",
                (at, recording_id),
            )
            self.db.execute("DELETE FROM caller_digests WHERE recording_id = ?", (recording_id,))
            self.db.execute("DELETE FROM linked_legs WHERE recording_id = ?", (recording_id,))

    def finish_erasure(self, row: RecordingRow, call_date: str, erased_at: float, method: str) -> None:
        """Replace the recording's row (and its sealed fields and digests) by the minimal deletion record."""
        with database.transaction(self.db):
            self.db.execute(
                "INSERT OR REPLACE INTO erasures (id, did_label, call_date, retain_until, erased_at, method, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.did_label, call_date, row.retain_until, erased_at, method, row.sha256),
            )
            self.db.execute("DELETE FROM holds WHERE recording_id = ?", (row.id,))
            self.db.execute("DELETE FROM caller_digests WHERE recording_id = ?", (row.id,))
            self.db.execute("DELETE FROM linked_legs WHERE recording_id = ?", (row.id,))
            self.db.execute("DELETE FROM recordings WHERE id = ?", (row.id,))

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so no erased row lingers in the WAL."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def erasures(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT id, did_label, call_date, retain_until, erased_at, method, sha256 FROM erasures ORDER BY erased_at, id"
        )
        keys = ("id", "did_label", "call_date", "retain_until", "erased_at", "method", "sha256")
        return [dict(zip(keys, r, strict=False)) for r in cur.fetchall()]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _split_dtmf(streams: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The streams' figures without their DTMF events, and the events (one list per stream)."""
    return [{k: v for k, v in s.items() if k != "dtmf"} for s in streams], [s.get("dtmf", []) for s in streams]


def _seal(data_key: bytes, recording_id: str, caller: str, call_id: str, dtmf: list[Any]) -> bytes:
    nonce = os.urandom(12)
    plain = _dumps({"caller": caller, "call_id": call_id, "dtmf": dtmf}).encode()
    return nonce + AESGCM(data_key).encrypt(nonce, plain, _SEAL_AAD + recording_id.encode())


def _open(data_key: bytes, recording_id: str, sealed: bytes) -> dict[str, Any]:
    try:
        plain = AESGCM(data_key).decrypt(sealed[:12], sealed[12:], _SEAL_AAD + recording_id.encode())
    except InvalidTag:
        raise vault.VaultError(f"recording {recording_id}: its sealed index fields do not open with its key") from None
    fields: dict[str, Any] = json.loads(plain)
    return fields


def _token_ok(token: Any) -> bool:
    """A conversation token as capture makes them (16 lower-case hex digits)."""
    return isinstance(token, str) and len(token) == 16 and all(c in "0123456789abcdef" for c in token)


def _seal_leg(data_key: bytes, recording_id: str, n: int, call_id: str) -> bytes:
    nonce = os.urandom(12)
    aad = _LEG_AAD + f"{recording_id}\0{n}".encode()
    return nonce + AESGCM(data_key).encrypt(nonce, call_id[:MAX_LEG_CALL_ID].encode("utf-8", "replace"), aad)


def _open_leg(data_key: bytes, recording_id: str, n: int, sealed: bytes) -> str:
    try:
        plain = AESGCM(data_key).decrypt(sealed[:12], sealed[12:], _LEG_AAD + f"{recording_id}\0{n}".encode())
    except (InvalidTag, ValueError):
        raise vault.VaultError(f"recording {recording_id}: linked leg {n} does not open with its key") from None
    return plain.decode("utf-8", "replace")
