"""The recording sink: stereo G.711 WAVs written progressively into the spool as the call goes.

Each channel has a small buffer that starts at the *frontier* (the first sample not yet on disk).
A payload is copied to its place in its channel's buffer, gaps are filled with the codec's silence
byte, and once enough is buffered the frames up to the frontier are interleaved and appended to the
spool file. The frontier stays ``REORDER_MARGIN`` behind the slower channel, so packets reordered
within that window land in the buffer, and at most ``MAX_LAG`` behind the faster one, so a silent
direction (one-way audio, hold) cannot make the buffers grow. A payload whose place is already on
disk (a burst after a network stall) is patched into the file in place: nothing is dropped as late. Memory per call stays under ~40 KiB,
and at most about one second of audio is ever in memory only (what a crash may lose).

At the end the header is completed and fsynced, and the store encrypts it into the locked store.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import wav

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

REORDER_MARGIN = 2_000  # samples (250 ms): how late a reordered packet may still land in place
MAX_LAG = 6_400  # samples (0.8 s): how far a silent direction may trail the other
FLUSH_AT = 8_000  # a channel buffer this long (1 s) triggers a write: at most ~1 s is ever unwritten
MIN_WRITE = 1_600  # samples (0.2 s): smallest write worth a system call


class StoreFull(OSError):
    """The store is below its critical free space: new calls cannot be recorded."""


class SpoolSink:
    """Creates one :class:`SpoolRecording` per recorded call (the ``RecordingSink`` of capture)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.open_recordings: dict[str, SpoolRecording] = {}
        self.accepting = True  # the service turns this off while the store is critically full

    def call_started(self, call: Any) -> SpoolRecording:
        if not self.accepting:
            raise StoreFull(errno.ENOSPC, "the store is full: new calls cannot be recorded")
        recording_id = self.store.new_recording_id(call.call_id, call.did, call.started_at)
        rec = SpoolRecording(self, recording_id, call)
        self.open_recordings[recording_id] = rec
        return rec


class SpoolRecording:
    """One call being written (``RecordingHandle`` of capture)."""

    def __init__(self, sink: SpoolSink, recording_id: str, call: Any) -> None:
        self.sink = sink
        self.id = recording_id
        self.call = call
        self.codec: str = call.codec
        self.fill = wav.SILENCE[self.codec]
        self.silence = bytes([self.fill]) * MAX_LAG
        self.bufs = (bytearray(), bytearray())
        self.frontier = 0
        self.late = [0, 0]  # samples that arrived after their place was written
        self.error: str | None = None
        self.path = os.path.join(sink.store.spool_dir, recording_id + ".wav")
        write_sidecar(self.path, call)  # first, so a WAV in the spool always has its call beside it
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file = os.fdopen(fd, "r+b", buffering=0)  # read too: late payloads are patched in place
        self.file.write(wav.header(self.codec, 0))

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        buf = self.bufs[channel - 1]
        rel = position - self.frontier
        if rel < 0:  # its place is already on disk (as silence): patch it there
            late = min(-rel, len(payload))
            self._patch(channel, position, payload[:late])
            payload = payload[late:]
            rel = 0
            if not payload:
                return
        have = len(buf)
        if rel > have:
            self._pad(buf, rel - have)
            buf += payload
        elif rel == have:
            buf += payload
        else:
            buf[rel : rel + len(payload)] = payload
        if len(buf) >= FLUSH_AT:
            self._flush(final=False)

    def _patch(self, channel: int, position: int, payload: bytes) -> None:
        """Write a late payload into one channel of frames already in the spool file (rare: a
        packet later than the reorder margin, e.g. a burst after a network stall)."""
        self.late[channel - 1] += len(payload)
        if self.error is not None:
            return
        offset = wav.HEADER_SIZE + 2 * position
        fd = self.file.fileno()
        try:
            frames = bytearray(os.pread(fd, 2 * len(payload), offset))
            if len(frames) != 2 * len(payload):
                return  # beyond what was written: cannot happen while position < frontier
            frames[channel - 1 :: 2] = payload
            os.pwrite(fd, frames, offset)
        except OSError as exc:
            self._write_failed(exc)

    def _pad(self, buf: bytearray, n: int) -> None:
        while n > 0:
            step = min(n, MAX_LAG)
            buf += self.silence[:step]
            n -= step

    def _flush(self, *, final: bool) -> None:
        a, b = self.bufs
        longest = max(len(a), len(b))
        if final:
            n = longest
        else:
            n = max(min(len(a), len(b)) - REORDER_MARGIN, longest - MAX_LAG)
            if n < MIN_WRITE:
                return
        for buf in self.bufs:
            if len(buf) < n:
                self._pad(buf, n - len(buf))
        frames = bytearray(2 * n)
        frames[0::2] = a[:n]
        frames[1::2] = b[:n]
        del a[:n]
        del b[:n]
        if self.error is None:
            try:
                self.file.write(frames)
            except OSError as exc:
                self._write_failed(exc)
                return
        self.frontier += n

    def _write_failed(self, exc: OSError) -> None:
        self.error = "store full" if exc.errno == errno.ENOSPC else f"write error: {exc.strerror}"
        log.critical(
            "recording %s: %s; audio from here on is lost, what was written is kept",
            self.id, self.error,
            extra={"EVENT": "spool-write-failed", "RECORDING_ID": self.id, "DID_LABEL": self.call.did_label},
        )  # fmt: skip

    def end(self, result: Any) -> None:
        self._flush(final=True)
        self.file.close()
        frames = wav.repair_header(self.path, self.codec)
        streams = [stream_record(s, self.late[s.channel - 1]) for s in result.streams]
        complete = bool(result.complete) and self.error is None
        reason = result.reason if self.error is None else f"{result.reason}; {self.error}"
        self.sink.open_recordings.pop(self.id, None)
        self.sink.store.keep(
            self.id, self.path, self.call, ended_at=result.ended_at, frames=frames,
            complete=complete, end_reason=reason, streams=streams,
        )  # fmt: skip


SIDECAR_FIELDS = ("call_id", "did", "did_label", "caller", "started_at", "codec")


def sidecar_path(wav_path: str) -> str:
    return wav_path[: -len(".wav")] + ".call.json"


def write_sidecar(wav_path: str, call: Any) -> None:
    """The call's metadata beside its spool WAV, for crash recovery (same lock as the index)."""
    fd = os.open(sidecar_path(wav_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({k: getattr(call, k) for k in SIDECAR_FIELDS}, f, ensure_ascii=False)


def stream_record(stats: Any, late: int) -> dict[str, Any]:
    return {
        "channel": stats.channel,
        "ssrcs": list(stats.ssrcs),
        "packets": stats.packets,
        "expected": stats.expected,
        "lost": stats.lost,
        "duplicates": stats.duplicates,
        "late_samples": late,  # samples patched into frames already written
        "other_payload": stats.other_payload,
        "anchors": [list(a) for a in stats.anchors],
        "jitter_ms": stats.jitter_ms,
        "max_gap_ms": stats.max_gap_ms,
        "dtmf": [list(e) for e in stats.events],  # kept with the recording, erased with it, never logged
    }


def recording_id(call_id: str, did: str, started_at: float, tz: Any) -> str:
    """Readable and deterministic: local start time and a digest of the call's identity, so
    replaying the same capture twice names the same recordings."""
    stamp = datetime.fromtimestamp(started_at, tz).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{call_id}\0{did}\0{started_at!r}".encode()).hexdigest()[:10]
    return f"{stamp}-{digest}"
