"""Logging to the journal (systemd-python) when there is one, to stderr otherwise.

Structured fields travel in ``extra``: ``EVENT``, ``RECORDING_ID``, ``DID_LABEL`` and counters.
Nothing here ever receives a caller's number, a SIP URI or audio: callers log ids and labels only.

The audit chain's head goes to the journal as a checkpoint (``EVENT=audit-checkpoint``, ``AUDIT_SEQ``,
``AUDIT_HEAD``, ``AUDIT_KEY_ID``): the service's through its logging (:func:`audit_checkpoint`), and
recorderctl's, when it worked on the store itself (direct mode), straight to journald
(:func:`send_checkpoint`: never to the technician's terminal; nothing where there is no journald).
:func:`read_checkpoints` reads them back (``journalctl -o json``, or a file of its lines) for
``recorderctl audit verify --against-journal``.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import syslog
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

FIELDS = ("EVENT", "RECORDING_ID", "DID_LABEL", "AUDIT_SEQ", "AUDIT_HEAD", "AUDIT_KEY_ID")
IDENTIFIER = "recorderd"
CTL_IDENTIFIER = "recorderctl"  # the checkpoints recorderctl sends in direct mode
CHECKPOINT = "audit-checkpoint"
CHECKPOINT_MESSAGE = "audit log checkpoint: row %d, seal %s"
JOURNAL_SOCKET = "/run/systemd/journal/socket"  # journald's: where there is none, direct mode sends nothing
UNIT = "recorderd.service"  # the service's unit (systemd/recorderd.service): journald's _SYSTEMD_UNIT of its entries
PER_KEY_ID = 1000  # checkpoints sent for one audit log (key id): those of its highest rows
SENT = 6000  # checkpoints sent in all (~840 KB in a request)
DIRECT_KEY_IDS = 16  # key ids not from the service's unit kept while reading (the newest)
_HEAD = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{32}")

log = logging.getLogger(__name__)


class FieldsFormatter(logging.Formatter):
    """Plain-text lines for stderr, with the structured fields appended."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k)]
        return f"{line} [{' '.join(fields)}]" if fields else line


def _journal_handler() -> logging.Handler | None:
    if not os.environ.get("JOURNAL_STREAM") and not os.environ.get("INVOCATION_ID"):
        return None  # not started by systemd: a terminal or a test wants stderr
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)


def setup(level: str = "info") -> None:
    handler = _journal_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# -- the audit checkpoints -------------------------------------------------------------------------


def _checkpoint_fields(seq: int, head: str, key_id: str) -> dict[str, Any]:
    return {"EVENT": CHECKPOINT, "AUDIT_SEQ": seq, "AUDIT_HEAD": head, "AUDIT_KEY_ID": key_id}


def audit_checkpoint(seq: int, head: str, key_id: str) -> None:
    """The audit chain's head (last row and its seal, and which key seals the log) into the
    journal, beyond the reach of whoever can rewrite the audit file (the service's: through its
    logging, which is the journal under systemd)."""
    log.info(CHECKPOINT_MESSAGE, seq, head, extra=_checkpoint_fields(seq, head, key_id))


def send_checkpoint(seq: int, head: str, key_id: str) -> bool:
    """:func:`audit_checkpoint` for recorderctl in direct mode: the same fields, sent to journald
    itself (``SYSLOG_IDENTIFIER=recorderctl``), never through its logging, which goes to the
    technician's terminal outside systemd. Where there is no journald (no socket) or no
    systemd-python, nothing is sent. Returns whether it was."""
    if not os.path.exists(JOURNAL_SOCKET):
        return False
    try:
        from systemd.journal import send
    except ImportError:
        return False
    fields = {name: str(value) for name, value in _checkpoint_fields(seq, head, key_id).items()}
    try:
        send(CHECKPOINT_MESSAGE % (seq, head), SYSLOG_IDENTIFIER=CTL_IDENTIFIER, PRIORITY=str(syslog.LOG_INFO), **fields)
    except OSError as exc:
        log.warning("the audit log's checkpoint could not be sent to the journal (%s)", exc.strerror or exc)
        return False
    return True


def checkpoint_if_appended(audit: Any, opened_at: tuple[int, str]) -> None:
    """The audit log's head to the journal (:func:`send_checkpoint`) when rows were appended to it
    since ``opened_at`` (its tip then): recorderctl in direct mode, which works on the store itself
    (the service, stopped, checkpoints them only at its next start). ``recorderd replay`` audits
    nothing: the calls it keeps are not accesses."""
    from storage.audit import AuditFormatError

    try:
        seq, head = audit.tip()
        if (seq, head) != opened_at:
            send_checkpoint(seq, head, audit.key_id())
    except (sqlite3.Error, AuditFormatError) as exc:
        log.warning("the audit log's checkpoint could not be taken (%s)", exc)


class JournalUnavailable(Exception):
    """No journal to read the checkpoints from."""


def journal_lines(uid: int, timeout: float = 120.0) -> Iterator[str]:
    """The checkpoints as ``journalctl -o json`` prints them (read as they come): those journald says
    came from the service's unit, or from root or ``uid`` (the service's user: recorderctl in direct
    mode); :func:`read_checkpoints` checks each again."""
    event = f"EVENT={CHECKPOINT}"
    cmd = ["journalctl", "-o", "json", "--no-pager", "-q", event, f"_SYSTEMD_UNIT={UNIT}", "+", event, "_UID=0",
           *(["+", event, f"_UID={uid}"] if uid != 0 else []),
           "--output-fields=EVENT,SYSLOG_IDENTIFIER,AUDIT_SEQ,AUDIT_HEAD,AUDIT_KEY_ID,_UID,_SYSTEMD_UNIT"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise JournalUnavailable("journalctl is not installed: there is no journal to check against") from None
    out, errors = proc.stdout, proc.stderr  # both pipes (PIPE above)
    try:
        yield from out or ()
        if out is not None:
            out.close()
        err = errors.read(4000).strip() if errors is not None else ""
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise JournalUnavailable(f"journalctl failed (exit {rc}): {err.splitlines()[0] if err else 'no message'}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    head: str
    when: float  # Unix seconds (the first entry of it)
    key_id: str


class CheckpointSelection:
    """The checkpoints sent for checking, chosen so that entries others add cannot push the real ones
    out: per key id the ``per_key_id`` with the highest rows (an entry repeated counted once), so a
    checkpoint can be outranked only by one of a higher row, which a log cut short does not hold
    (it fails); the key ids the service's unit wrote first, then the others, newest first; at most
    ``total`` in all. Bounded memory: at most ``per_key_id`` a key id, and ``DIRECT_KEY_IDS`` key
    ids not from the unit (the newest)."""

    def __init__(self, per_key_id: int, total: int) -> None:
        self.per_key_id, self.total = per_key_id, total
        self._top: dict[str, list[tuple[int, str]]] = {}  # key id -> min-heap of (seq, seal)
        self._first: dict[tuple[str, int, str], float] = {}  # (key id, seq, seal) -> its first entry's time
        self._newest: dict[str, float] = {}
        self._from_unit: set[str] = set()

    def add(self, checkpoint: Checkpoint, from_unit: bool) -> None:
        key_id, item = checkpoint.key_id, (checkpoint.seq, checkpoint.head)
        if from_unit:
            self._from_unit.add(key_id)
        self._newest[key_id] = max(checkpoint.when, self._newest.get(key_id, checkpoint.when))
        new_key = key_id not in self._top
        top = self._top.setdefault(key_id, [])
        name = (key_id, *item)
        if name in self._first:
            self._first[name] = min(checkpoint.when, self._first[name])
        elif len(top) < self.per_key_id:
            heapq.heappush(top, item)
            self._first[name] = checkpoint.when
        elif item > top[0]:
            dropped = heapq.heapreplace(top, item)
            del self._first[(key_id, *dropped)]
            self._first[name] = checkpoint.when
        if new_key:  # (the key ids not from the unit grow only here)
            others = [k for k in self._top if k not in self._from_unit]
            if len(others) > DIRECT_KEY_IDS:
                self._forget(min(others, key=self._newest.__getitem__))

    def _forget(self, key_id: str) -> None:
        for seq, head in self._top.pop(key_id):
            del self._first[(key_id, seq, head)]
        del self._newest[key_id]

    def chosen(self) -> list[Checkpoint]:
        """What is sent, oldest first."""
        order = sorted(self._top, key=lambda k: (k in self._from_unit, self._newest[k]), reverse=True)
        out: list[Checkpoint] = []
        for key_id in order:
            best = sorted(self._top[key_id], reverse=True)[: self.total - len(out)]
            out += [Checkpoint(seq, head, self._first[(key_id, seq, head)], key_id) for seq, head in best]
        return sorted(out, key=lambda c: (c.when, c.seq))


def read_checkpoints(lines: Iterable[str], uid: int, *, per_key_id: int = PER_KEY_ID,
                     total: int = SENT) -> tuple[list[Checkpoint], dict[str, int]]:
    """The checkpoints among ``journalctl -o json`` lines to send (:class:`CheckpointSelection`), and
    the count of what was left out: lines that are not JSON objects, other entries, and checkpoints
    not from a writer journald vouches for. Anyone can send a line that says recorderd (``EVENT``,
    ``SYSLOG_IDENTIFIER``: the sender's own); journald's trusted fields say who did: the service's
    entries come from its unit (``_SYSTEMD_UNIT``) as ``uid`` (the service's user), recorderctl's in
    direct mode from root or ``uid`` (the users who can open the store; ``_UID``). An entry without
    ``_UID``, as a hand-made export may be, is not taken."""
    selection = CheckpointSelection(per_key_id, total)
    left = {"unreadable": 0, "other": 0, "untrusted": 0}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            left["unreadable"] += 1
            continue
        if not isinstance(entry, dict):
            left["unreadable"] += 1
            continue
        if entry.get("EVENT") != CHECKPOINT or entry.get("SYSLOG_IDENTIFIER") not in (IDENTIFIER, CTL_IDENTIFIER):
            left["other"] += 1
            continue
        seq, head, when = entry.get("AUDIT_SEQ"), entry.get("AUDIT_HEAD"), entry.get("__REALTIME_TIMESTAMP")
        key_id = entry.get("AUDIT_KEY_ID")
        if (not isinstance(seq, str) or not seq.isdigit() or len(seq) > 18 or not isinstance(head, str)
                or not _HEAD.fullmatch(head) or not isinstance(when, str) or not when.isdigit() or len(when) > 20
                or not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id)):
            left["unreadable"] += 1
            continue
        sender = entry.get("_UID")  # journald's own fields, from the sender's credentials and cgroup
        if sender not in (str(uid), "0"):
            left["untrusted"] += 1
            continue
        from_unit = entry.get("_SYSTEMD_UNIT") == UNIT and sender == str(uid)
        selection.add(Checkpoint(int(seq), head, int(when) / 1e6, key_id), from_unit)
    return selection.chosen(), left
