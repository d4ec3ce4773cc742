"""The locked store: the composition root that opens it and gives its parts.

Each job is a part named for it: where the files are (:mod:`storage.layout`), the master key
(:mod:`storage.master_key`), keeping finished calls (:mod:`storage.keeping`), reading recordings back
and writing them out (:mod:`storage.reading`), checking them (:mod:`storage.integrity`) and holds
(:mod:`storage.holds`). ``Store`` creates the store (``init``), opens its index and audit log, seals
the audit log with the key derived from the master key, migrates an older index once, and hands the
parts out: ``store.layout``, ``store.master``, ``store.keeper``, ``store.reading``,
``store.integrity``, ``store.holding``; callers use the parts. Four old names stay, delegating, for
the hot path's files not yet moved (``new_recording_id``, ``keep``, ``recordings``, ``plaintext``).

Files: see :mod:`storage.layout`; directories are 0700 and files 0600, created under umask 077: only
the service user reads them. A stored recording is never rewritten.
"""
from __future__ import annotations

import logging
import os
import pwd
import sqlite3
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from . import keys
from .audit import FORMAT, AuditEvent, AuditFormatError, AuditLog
from .audit import marker as audit_marker
from .clock import boot_clock, boot_id
from .errors import IntegrityError, StoreError, StoreNotInitialised
from .holds import Holds
from .index import SCHEMA_VERSION as INDEX_SCHEMA
from .index import Index, SchemaError
from .integrity import Integrity
from .keeping import Keeper
from .layout import DIR_MODE, PCAP_SUFFIX, SUFFIX, Layout
from .master_key import KEY_CHECK, MasterKey
from .reading import Reading

__all__ = ["DIR_MODE", "KEY_CHECK", "PCAP_SUFFIX", "SUFFIX", "Actor", "IntegrityError", "Store", "StoreError",
           "StoreNotInitialised"]

log = logging.getLogger(__name__)

AUDIT_MARKER = "audit_sealed"  # store_meta: audit.marker(audit-seal key): the audit log is sealed (format 2)
SEALED_SINCE = 2  # the index schema whose stores have a sealed audit log (the marker says so)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class Actor:
    """Who asks for an operation (a Unix user)."""

    def __init__(self, user: str, uid: int) -> None:
        self.user = user
        self.uid = uid


class Store:
    def __init__(
        self,
        root: str,
        *,
        tz: ZoneInfo,
        retention_days: int,
        anchor: str = "start",
        keep_pcap: bool = True,
        key_file: str | None = None,
        credentials_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        steady: Callable[[], float] = boot_clock,
    ) -> None:
        self.layout = Layout(root, tz, key_file)
        self.root = self.layout.root
        self.tz = tz
        self.retention_days = retention_days
        self.anchor = anchor  # "start" | "end": which moment of the call dates it for retention
        self.keep_pcap = keep_pcap  # an evidence pcap beside each WAV (always, for codecs not decoded)
        self.key_file = self.layout.key_file
        self.credentials_dir = credentials_dir
        self.clock = clock
        self.steady = steady  # what a step of ``clock`` does not move (retention checks one against the other)
        self.boot_id = boot_id
        self.spool_dir = self.layout.spool_dir
        self.recordings_dir = self.layout.recordings_dir
        self.index_path = self.layout.index_path
        self.audit_path = self.layout.audit_path
        self.index: Index | None = None
        self.audit: AuditLog | None = None
        self.master = MasterKey(self.root, self.key_file, credentials_dir)
        self.keeper = Keeper(self.layout, db=self.db, master_key=self.master_key, clock=self._now,
                             retention_days=retention_days, anchor=anchor)
        self.reading = Reading(self.layout, db=self.db, master_key=self.master_key)
        self.integrity = Integrity(self.reading, audit_log=self.audit_log)
        self.holding = Holds(db=self.db, get=self.reading.get, clock=self._now)

    def _now(self) -> float:
        """The parts' clock: ``self.clock`` as set now (tests and the service may swap it)."""
        return self.clock()

    # -- lifecycle ----------------------------------------------------------------------------

    def init(self) -> bool:
        """Create the store and, unless a systemd credential provides it, the master key file
        (idempotent), and record the key's check value. Returns True when the store was created now.

        A new key is never made for a store whose recordings hold keys wrapped by another one: it
        would open none of them. Init then refuses, and says to restore the key from its backup."""
        created = not os.path.exists(self.index_path)
        self.layout.make_dirs()
        index = Index(self.index_path)
        try:
            try:
                index.create()
            except SchemaError as exc:
                raise StoreError(str(exc)) from None
            audit = AuditLog(self.audit_path)
            audit.create()
            audit.close()
            for path in (self.index_path, self.audit_path):
                os.chmod(path, 0o600)
            made = self.master.create(index)
            self.master_key(index)
            self._seal_audit(AuditLog(self.audit_path), replaced=made, index=index)  # a new key: the seals start again
        finally:
            index.close()
        return created

    def open(self) -> Store:
        if not os.path.exists(self.index_path):
            raise StoreNotInitialised(
                f"the store at {self.root} was never initialised: run 'recorderctl --config PATH init' first"
            )
        self.index = Index(self.index_path)
        if not self.index.initialised():
            raise StoreNotInitialised(f"{self.index_path} is not a recorderd index: run 'recorderctl init'")
        self.index.master = self.master_key  # the personal fields open with each recording's key
        try:
            version = self.index.check_version()
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        self.audit = AuditLog(self.audit_path)
        if version < INDEX_SCHEMA or self.index.meta("compact_pending"):
            self._migrate_index()
        try:
            self._note_retention_policy()
        except sqlite3.Error as exc:  # a full disk (the index is read-only then): noted at a later open
            log.warning("the retention policy could not be noted in the index (%s)", exc)
        return self

    def _migrate_index(self) -> None:
        """An index of an older edition brought up to this one, once, and audited. The audit log is
        sealed first (a log of the previous code migrated while the index still says the store
        predates the seals)."""
        self.audit_log()
        try:
            done = self.db().migrate(self.master_key())
        except SchemaError as exc:
            raise StoreError(str(exc)) from None
        if done is not None:
            old, new, rows = done
            self.record(Actor(_user_name(), os.getuid()), "index-migrated", None,
                        {"from_version": old, "to_version": new, "recordings": rows}, "allowed")
            sealed = ("caller numbers, Call-IDs and DTMF digits are now sealed under each recording's key; "
                      if old < 2 else "")
            log.warning("the index was migrated from schema version %d to %d (%d recording(s)): %seach recording "
                        "kept so far is a conversation of its own", old, new, rows, sealed,
                        extra={"EVENT": "index-migrated"})

    def _note_retention_policy(self) -> None:
        """A change of retention days or anchor applies to recordings made from now on; say so."""
        policy = f"{self.retention_days} days from call {self.anchor}"
        db = self.db().db
        row = db.execute("SELECT value FROM store_meta WHERE key = 'retention_policy'").fetchone()
        if row is None or row[0] != policy:
            db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('retention_policy', ?)", (policy,))
            if row is not None:
                log.warning("retention policy changed from %s to %s: it applies to new recordings; "
                            "those already kept keep their deadline", row[0], policy,
                            extra={"EVENT": "retention-changed"})

    def check_key(self) -> None:
        """Load the master key now and check it is the store's (the daemon refuses to start without
        the right one)."""
        self.master_key()
        if self.audit is not None:
            self.audit_log()  # and the audit log's format, sealed (migrated once) with the key

    def master_key(self, index: Index | None = None) -> bytes:
        """The master key, loaded once and checked against the store's (:class:`MasterKey`)."""
        return self.master.get(index or self.index)

    def close(self) -> None:
        for part in (self.index, self.audit):
            if part is not None:
                part.close()
        self.index = self.audit = None

    def db(self) -> Index:
        if self.index is None:
            raise StoreError("store is not open")
        return self.index

    def audit_log(self) -> AuditLog:
        if self.audit is None:
            raise StoreError("store is not open")
        if self.audit.key is None:
            self._seal_audit(self.audit)
        return self.audit

    def _seal_audit(self, audit: AuditLog, *, replaced: bool = False, index: Index | None = None) -> None:
        """Its rows sealed with the key derived from the master key (a log of the previous format is
        migrated once, and only when the index says the store predates the seals: a first-edition
        index without the seal marker; a newer one is refused). Once sealed, the index keeps the
        marker (keyed: a writer of the audit file alone cannot make or move it)."""
        index = index or self.db()
        try:
            key = keys.derive(self.master_key(), "audit-seal")
            sealed = audit_marker(key)
            found = index.meta(AUDIT_MARKER)
            # a log of the format before the seals is migrated only in a store whose index is still
            # the first edition's, in shape and not only by its version (a rewritten log, its marker and
            # version removed, was once "migrated", so laundered, by the next open)
            legacy = found is None and index.schema_version() < SEALED_SINCE and index.first_edition_shape()
            audit.tz = self.tz
            audit.use_key(key, at=self.clock(), replaced=replaced, legacy=legacy)
            if found != sealed and audit.format() == FORMAT and not audit.meta_removed:
                try:
                    index.set_meta(AUDIT_MARKER, sealed)
                except sqlite3.Error as exc:  # a full disk: written at a later open
                    log.warning("the audit seal marker could not be written to the index (%s)", exc)
        except (AuditFormatError, SchemaError) as exc:
            raise StoreError(str(exc)) from None
        finally:
            if audit is not self.audit:
                audit.close()

    def record(self, actor: Actor, action: str, recording_id: str | None, detail: dict[str, Any], result: str) -> None:
        self.audit_log().append(AuditEvent(self.clock(), actor.user, actor.uid, action, recording_id, detail, result))
