"""The call sidecar: a recording's metadata beside its spool files, with its quality figures and
DTMF events so far, for crash recovery (storage/recovery.py).

``<id>.call.json`` begins with one clear line, the recording's id and its data key wrapped by the
master key (``{"recording": ID, "key": HEX, "format": "RDS1"}``); the rest of the file is a sealed
CALL file (``storage/sealed.py``) under that key, whose plaintext is JSON lines. Nothing personal
(the caller, the Call-ID, the figures, DTMF digits, linked legs) is ever in the clear.

The sealed plaintext's first line, the call, is written with the clear line in one write to a new
file (``O_EXCL``): a full disk or any failure unlinks it (the call is reported not recorded), and a
sidecar without a whole first record (a death in that write) is no recording's. Each later line is
the streams' figures at that moment, appended as the spool is written (after ``FIRST_PROGRESS`` s
of audio, then every ``PROGRESS_EVERY`` s, never per packet), with the DTMF events new since the
line before; and a line for each other leg of the conversation seen and not recorded (``{"leg":
[Call-ID, how]}``, a rare event, not per packet). Each line is one sealed record: a write the disk
cannot take is cut back; a crash can cut the last one: recovery reads up to the last whole valid
record. A sidecar is never rewritten in place nor staged and linked: on ext4 a rename over a file
costs half a millisecond, which 3,000 calls a second could not afford.

A sidecar of the previous edition (a plaintext first line with the call) is still read, so a spool
left by the older code's crash is recovered.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import sealed, vault

SIDECAR = ".call.json"
STAGING = ".call.json.part"  # the previous edition's first line before it was in place (a crash may leave one: erased)
FIELDS = ("call_id", "did", "did_label", "caller", "started_at", "codec", "clock_rate", "channels",
          "conversation", "part", "part_reason")
FIRST_PROGRESS = 1.0  # s of audio before the first line (its streams and sources known by then)
PROGRESS_EVERY = 30.0  # s of audio between two lines of figures (what a crash may leave out of them)
# (each save costs ~0.1 ms of the capture thread: every 5 s, 3,000 calls cost 6% of a core and
# dropped packets in the bench's churn run; a crash costs figures up to 30 s, never audio)


class CallSidecar:
    def __init__(self, base: str, call: Any, *, recording_id: str, aes: AESGCM, wrapped: bytes,
                 create: Callable[[str, int], int] | None = None) -> None:
        """Write the clear line and the call's record; ``OSError`` (nothing left behind) if it cannot."""
        meta = {k: getattr(call, k, None) for k in FIELDS}
        line = (json.dumps(meta, ensure_ascii=False) + "\n").encode()
        clear = (json.dumps({"recording": recording_id, "key": wrapped.hex(), "format": "RDS1"}) + "\n").encode()
        self.path = base + SIDECAR
        self.writer = sealed.SealedWriter(self.path, sealed.CALL, aes, prefix=clear, first=line, create=create)
        self.events_kept: dict[int, int] = {}  # channel -> DTMF events in the lines so far
        self.failed = False  # a write failed (a full disk): no more lines, the last whole one stands

    @property
    def fd(self) -> int:
        return self.writer.fd

    def leg(self, call_id: str, how: str) -> None:
        """Append a linked leg (``SpoolRecording.link_leg``), for recovery to keep with the recording."""
        self._append((json.dumps({"leg": [str(call_id)[:512], str(how)[:20]]}) + "\n").encode())

    def _append(self, line: bytes) -> bool:
        if self.writer.fd < 0 or self.failed:
            return False
        try:
            self.writer.append(line)
        except OSError:
            self.failed = True  # the record was cut back: no partial line left behind
            return False
        return True

    def progress(self, streams: list[dict[str, Any]]) -> None:
        """Append the figures so far (stream records as the index keeps them, DTMF included)."""
        if self.fd < 0 or self.failed:
            return
        figures, dtmf = [], {}
        for s in streams:
            events = s.get("dtmf", [])
            start = max(0, self.events_kept.get(s["channel"], 0) - 1)  # the last may have grown longer
            dtmf[str(s["channel"])] = [start, events[start:]]
            figures.append({k: v for k, v in s.items() if k != "dtmf"})
        if not self._append((json.dumps({"streams": figures, "dtmf": dtmf}) + "\n").encode()):
            return
        for s in streams:
            self.events_kept[s["channel"]] = len(s.get("dtmf", []))

    def close(self) -> None:
        self.writer.close()

    def discard(self) -> None:
        """The recording could not be opened after all: no sidecar without spool files."""
        self.close()
        _unlink(self.path)


def read_sidecar(path: str, master: bytes | None = None) -> tuple[dict[str, Any], list[dict[str, Any]] | None,
                                                                 tuple[bytes, bytes] | None]:
    """The call's metadata (with ``linked_legs``: the (Call-ID, how) of its leg lines), its streams'
    figures at the last whole line (None when no line of figures was written), and the recording's
    (data key, wrapped key) (None for a sidecar of the previous edition, whose lines are clear).
    ``ValueError`` when the call's line is unreadable (or the key does not open)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 4096, 0)
        first = head.split(b"\n", 1)[0]
        clear = json.loads(first)
        if not isinstance(clear, dict):
            raise ValueError("the first line is not an object")
        if "key" not in clear:  # the previous edition: every line clear
            with os.fdopen(os.dup(fd), "rb") as f:
                lines = f.read().split(b"\n")
            keys = None
        else:
            if master is None:
                raise ValueError("a sealed sidecar needs the master key")
            wrapped = bytes.fromhex(str(clear["key"]))
            try:
                data_key = vault.unwrap(master, wrapped, str(clear["recording"]))
            except vault.VaultError as exc:
                raise ValueError(str(exc)) from None
            try:
                _, plains = sealed.valid_prefix(fd, AESGCM(data_key), path, base=len(first) + 1, kinds=(sealed.CALL,),
                                                plain=True)
            except sealed.SealedError as exc:
                raise ValueError(str(exc)) from None
            if not plains:
                raise ValueError("the call's record is not whole")
            lines = [p.rstrip(b"\n") for p in plains]
            keys = (data_key, wrapped)
    finally:
        os.close(fd)
    meta, streams = parse_lines(lines)
    return meta, streams, keys


def parse_lines(lines: list[bytes]) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    meta = json.loads(lines[0])
    if not isinstance(meta, dict):
        raise ValueError("the call's line is not an object")
    streams: list[dict[str, Any]] | None = None
    events: dict[str, list[Any]] = {}
    legs: list[tuple[str, str]] = []
    meta["linked_legs"] = legs
    for raw in lines[1:]:
        try:
            line = json.loads(raw)
            if isinstance(line, dict) and isinstance(line.get("leg"), list) and len(line["leg"]) == 2:
                legs.append((str(line["leg"][0]), str(line["leg"][1])))
                continue
            figures, dtmf = line["streams"], line["dtmf"]
            merged = {ch: events.get(ch, [])[: int(start)] + list(new) for ch, (start, new) in dtmf.items()}
        except (ValueError, KeyError, TypeError):
            continue  # cut by the crash (or by a full disk)
        if not isinstance(figures, list) or not all(isinstance(s, dict) for s in figures):
            continue
        events.update(merged)
        streams = figures
    if streams is not None:
        streams = [{**s, "dtmf": events.get(str(s.get("channel")), [])} for s in streams]
    return meta, streams


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
