"""Opening the store's SQLite files (index, audit log, casework): WAL, full sync, and reads on a
full disk.

A WAL database is opened with its shared-memory file (``-shm``), which SQLite makes and grows when
no one has it open; on a full disk that fails ("disk I/O error") and even a read is refused. Then,
when nothing waits in the WAL (no ``-wal``, or an empty one: everything is in the main file), the
file is opened read-only and immutable (no locks, no shared memory): ``status``, ``list`` and the
like still read it, and every write fails at once ("attempt to write a readonly database").
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator

log = logging.getLogger(__name__)

FULL_BELOW = 1 << 20  # bytes free under which a failing open is taken for a full disk


class StoreFull(sqlite3.OperationalError):
    """The disk is full and the file cannot be read safely read-only (its WAL holds changes)."""


class ReadOnlyConnection(sqlite3.Connection):
    """A connection opened read-only because the disk is full."""


def is_read_only(db: sqlite3.Connection) -> bool:
    return isinstance(db, ReadOnlyConnection)


def free_bytes(path: str) -> int:
    st = os.statvfs(os.path.dirname(path) or ".")
    return st.f_bavail * st.f_frsize


def connect(path: str, *, foreign_keys: bool = False, secure_delete: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        db.close()
        if not os.path.exists(path) or free_bytes(path) >= FULL_BELOW:
            raise
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise StoreFull(f"the store's disk is full and {os.path.basename(path)} has changes in its WAL "
                            "that cannot be read without room: free some space") from None
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?immutable=1", uri=True, isolation_level=None,
                             factory=ReadOnlyConnection)
        log.warning("the store's disk is full: %s is opened read-only (nothing can be written to it)",
                    os.path.basename(path), extra={"EVENT": "store-read-only"})
    else:
        db.execute("PRAGMA synchronous = FULL")
    if secure_delete:
        db.execute("PRAGMA secure_delete = ON")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys = ON")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock taken at once, so no other writer slips in between a read
    and the write it decides), ``COMMIT`` at the end of the block, ``ROLLBACK`` when anything escapes
    it (an SQLite error, a refusal, a KeyboardInterrupt) or the COMMIT itself fails: all or nothing.
    A block that returns early commits what it did (nothing, when it only read)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a failed COMMIT on a full disk)
            db.execute("ROLLBACK")
        raise
