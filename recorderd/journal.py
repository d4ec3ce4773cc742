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

import json
import logging
import os
import re
import subprocess
import sys
import syslog
from collections.abc import Iterable, Iterator
from typing import Any

FIELDS = ("EVENT", "RECORDING_ID", "DID_LABEL", "AUDIT_SEQ", "AUDIT_HEAD", "AUDIT_KEY_ID")
IDENTIFIER = "recorderd"
CTL_IDENTIFIER = "recorderctl"  # the checkpoints recorderctl sends in direct mode
CHECKPOINT = "audit-checkpoint"
CHECKPOINT_MESSAGE = "audit log checkpoint: row %d, seal %s"
JOURNAL_SOCKET = "/run/systemd/journal/socket"  # journald's: where there is none, direct mode sends nothing
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


class JournalUnavailable(Exception):
    """No journal to read the checkpoints from."""


def journal_lines(timeout: float = 120.0) -> Iterator[str]:
    """The checkpoints (the service's and recorderctl's) as ``journalctl -o json`` prints them (read
    as they come)."""
    cmd = ["journalctl", "-o", "json", "--no-pager", "-q", f"SYSLOG_IDENTIFIER={IDENTIFIER}",
           f"SYSLOG_IDENTIFIER={CTL_IDENTIFIER}", f"EVENT={CHECKPOINT}",
           "--output-fields=EVENT,SYSLOG_IDENTIFIER,AUDIT_SEQ,AUDIT_HEAD,AUDIT_KEY_ID,_UID"]
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


def read_checkpoints(lines: Iterable[str], uid: int) -> tuple[list[tuple[int, str, float, str]], dict[str, int]]:
    """The checkpoints among ``journalctl -o json`` lines: (row, seal, when in Unix seconds, key id), and
    the count of what was left out: lines that are not JSON objects, other entries, and checkpoints
    not written by ``uid`` (the service's user: anyone can send a line that says recorderd or recorderctl; the
    journal's own ``_UID`` says who did, and an entry without one, as a hand-made export may be, is
    not taken)."""
    found: list[tuple[int, str, float, str]] = []
    left = {"unreadable": 0, "other": 0, "not_the_service": 0}
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
        if entry.get("_UID") != str(uid):  # journald's own field: an entry without it vouches for nothing
            left["not_the_service"] += 1
            continue
        found.append((int(seq), head, int(when) / 1e6, key_id))
    return found, left
