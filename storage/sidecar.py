"""The call sidecar: a recording's metadata beside its spool files, with its quality figures and
DTMF events so far, for crash recovery (storage/recovery.py).

``<id>.call.json`` holds JSON lines. The first, the call, is written to a staging name and linked
into place whole: a full disk leaves no sidecar at all (and the call is reported not recorded),
never an empty or a partial one. Each later line is the streams' figures at that moment, appended
as the spool is written (after ``FIRST_PROGRESS`` s of audio, then every ``PROGRESS_EVERY`` s,
never per packet), with the DTMF
events new since the line before; and a line for each other leg of the conversation seen and not
recorded (``{"leg": [Call-ID, how]}``, a rare event, not per packet). A write the disk cannot take
is cut back; a crash can cut the last line: recovery reads the last whole one. A sidecar is not rewritten in place: on ext4 a
rename over a file costs half a millisecond, which 3,000 calls a second could not afford.
"""
from __future__ import annotations

import errno
import json
import os
from typing import Any

SIDECAR = ".call.json"
STAGING = ".call.json.part"  # the first line before it is in place (a crash may leave one: erased)
FIELDS = ("call_id", "did", "did_label", "caller", "started_at", "codec", "clock_rate", "channels",
          "conversation", "part", "part_reason")  # fmt: skip
FIRST_PROGRESS = 1.0  # s of audio before the first line (its streams and sources known by then)
PROGRESS_EVERY = 30.0  # s of audio between two lines of figures (what a crash may leave out of them)
# (each save costs ~0.1 ms of the capture thread: every 5 s, 3,000 calls cost 6% of a core and
# dropped packets in the bench's churn run; a crash costs figures up to 30 s, never audio)


class CallSidecar:
    def __init__(self, base: str, call: Any) -> None:
        """Write the call's line and put it in place; ``OSError`` (nothing left behind) if it cannot."""
        meta = {k: getattr(call, k, None) for k in FIELDS}
        line = (json.dumps(meta, ensure_ascii=False) + "\n").encode()
        path, staging = base + SIDECAR, base + STAGING
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            _write(fd, line)
            os.link(staging, path)  # whole, and never over another call's sidecar
        except BaseException:
            os.close(fd)
            _unlink(staging)
            raise
        _unlink(staging)
        self.path = path
        self.fd = fd
        self.size = len(line)
        self.events_kept: dict[int, int] = {}  # channel -> DTMF events in the lines so far
        self.failed = False  # a write failed (a full disk): no more lines, the last whole one stands

    def leg(self, call_id: str, how: str) -> None:
        """Append a linked leg (``SpoolRecording.link_leg``), for recovery to keep with the recording."""
        self._append((json.dumps({"leg": [str(call_id)[:512], str(how)[:20]]}) + "\n").encode())

    def _append(self, line: bytes) -> bool:
        if self.fd < 0 or self.failed:
            return False
        try:
            _write(self.fd, line)
        except OSError:
            self.failed = True
            try:
                os.ftruncate(self.fd, self.size)  # no partial line left behind
            except OSError:
                pass
            return False
        self.size += len(line)
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
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """The recording could not be opened after all: no sidecar without spool files."""
        self.close()
        _unlink(self.path)


def read_sidecar(path: str) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The call's metadata (with ``linked_legs``: the (Call-ID, how) of its leg lines), and its
    streams' figures at the last whole line (None when no line of figures was written).
    ``ValueError`` when the call's line is unreadable."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
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


def _write(fd: int, data: bytes) -> None:
    if os.write(fd, data) != len(data):  # a short write: the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
