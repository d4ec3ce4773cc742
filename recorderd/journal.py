"""Logging to the journal (systemd-python) when there is one, to stderr otherwise.

Structured fields travel in ``extra``: ``EVENT``, ``RECORDING_ID``, ``DID_LABEL`` and counters.
Nothing here ever receives a caller's number, a SIP URI or audio: callers log ids and labels only.
"""
from __future__ import annotations

import logging
import os
import sys

FIELDS = ("EVENT", "RECORDING_ID", "DID_LABEL")


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
        from systemd.journal import JournalHandler  # type: ignore[import-not-found]
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER="recorderd")


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
