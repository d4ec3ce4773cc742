"""The recording sink: stereo WAVs (and evidence pcaps) written progressively into the spool as the
call goes, sealed as they are written (``storage/sealed.py``: RDS1 under the recording's own data
key, made when the call starts and wrapped by the master key into the sidecar's clear first line). G.711 payload bytes go in as they are; G.722, Opus and L16 are decoded to 16-bit PCM
(``storage.codecs``); a codec that cannot be decoded here leaves only the evidence pcap.

Each channel has a small buffer that starts at the *frontier* (the first sample not yet on disk);
for G.711 they are capture's (``use_buffers``: capture's per-packet kernel places the steady case's
payloads into them itself, and ``flush_buffers`` is called when one is full).
A payload is copied to its place in its channel's buffer, gaps are filled with the codec's silence
byte, and once enough is buffered the frames up to the frontier are interleaved and appended to the
spool file as one sealed DATA record (~1 s; never per packet). The frontier stays ``REORDER_MARGIN`` behind the slower channel, so packets reordered
within that window land in the buffer, and at most ``MAX_LAG`` behind the faster one, so a silent
direction (one-way audio, hold) cannot make the buffers grow. A payload whose place is already on
disk (a burst after a network stall) is held and, at the next write, the frames it falls in are
sealed again as a new DATA record with it in place (a later record wins; the bytes on disk are never
rewritten): nothing is dropped as late.
Memory per G.711 call stays under ~40 KiB, and at most about one second of audio is ever in memory
only (what a crash may lose).

The call's sidecar (``storage/sidecar.py``) is written first, whole or not at all, and gets the
streams' quality figures and DTMF events so far after ``FIRST_PROGRESS`` s of audio, then every ``PROGRESS_EVERY`` s, so a
recording recovered after a crash keeps them up to then.

At the end the final header is sealed as a DATA record at 0, then FINAL; the store fsyncs the files
and renames them into the locked store (no read-back, no second encryption, no overwrite).
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import codecs, sealed, vault, wav
from .evidence import FLUSH_BYTES, EvidencePcap
from .sidecar import FIRST_PROGRESS, PROGRESS_EVERY, CallSidecar

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

REORDER_MARGIN = 2_000  # samples at 8 kHz (250 ms): how late a reordered packet may still land in place
MAX_LAG = 6_400  # samples (0.8 s): how far a silent direction may trail the other
FLUSH_AT = 8_000  # a channel buffer this long (1 s) triggers a write: at most ~1 s is ever unwritten
MIN_WRITE = 1_600  # samples (0.2 s): smallest write worth a system call


@dataclass(frozen=True)
class RecordSizes:
    """How much of a recording waits in memory before it is sealed and written: ``audio`` samples
    (at 8 kHz) in a channel's buffer, ``evidence`` bytes of the evidence pcap's records; and
    ``writeback``, bytes written before the disk is asked to start on them (0: never;
    ``sealed.SealedWriter``)."""

    audio: int
    evidence: int
    writeback: int


LIVE = RecordSizes(FLUSH_AT, FLUSH_BYTES, 0)
"""The service: ~1 s of audio, ~16 KiB of packets (what a crash may lose: the packets exist nowhere
else); its spool-sync thread syncs the file system every second."""

IMPORT = RecordSizes(4 * FLUSH_AT, 66 * 1024, sealed.WRITEBACK)
"""``recorderd replay`` (a capture file imported): ~4 s of audio and ~64 KiB of packets a record,
a quarter of the records for the same bytes (each record's clear header, nonce, tag, ``pwritev``
and the Python around it: ~20 us), and the disk asked to start as the spool grows (a replay has no
spool-sync thread; its calls end together and are kept at the end). A replay that dies is run
again from its file, so holding ~4 s loses nothing that exists nowhere else. The plaintext, and so
every recording's bytes and digests, is the same whatever the sizes. It costs memory per call being
imported: ~150 KB instead of ~45 KB (30 MB for the bench capture's 200 calls at once)."""


class StoreFull(OSError):
    """The store is below its critical free space: new calls cannot be recorded."""


class KeyUnavailable(OSError):
    """The master key cannot be loaded: a new call's data key cannot be wrapped, so it is not recorded."""


class SpoolSink:
    """Creates one :class:`SpoolRecording` per recorded call (the ``RecordingSink`` of capture)."""

    def __init__(self, store: Store, keep: Any = None, files: Any = None, sizes: RecordSizes = LIVE) -> None:
        self.store = store
        self.sizes = sizes
        self.create = files.create if files is not None else None  # spool files made ahead (storage/spool_files.py)
        self.keep = keep or store.keeper.keep  # a StoreWorker's keep() queues it for the store's own thread
        self.open_recordings: dict[str, SpoolRecording] = {}
        self.accepting = True  # the service turns this off while the store is critically full

    def call_started(self, call: Any) -> SpoolRecording:
        if not self.accepting:
            raise StoreFull(errno.ENOSPC, "the store is full: new calls cannot be recorded")
        from .store import StoreError

        try:
            self.store.master_key()  # loaded once (the service checks it at start): a new call's key is wrapped by it
        except StoreError as exc:  # a key gone, or not the store's: said, and the call not recorded
            raise KeyUnavailable(errno.EACCES, f"the master key cannot be loaded: {exc}") from None
        recording_id = self.store.layout.new_recording_id(call.call_id, call.did, call.started_at)
        rec = SpoolRecording(self, recording_id, call)
        self.open_recordings[recording_id] = rec
        return rec


class SpoolRecording:
    """One call being written (``RecordingHandle`` of capture): its WAV and its evidence pcap."""

    figures: Any = None  # set by capture: the streams' StreamStats so far, for the sidecar

    def __init__(self, sink: SpoolSink, recording_id: str, call: Any) -> None:
        self.linked_legs: list[tuple[str, str]] = []  # (Call-ID, how matched) of legs not recorded
        base = os.path.join(sink.store.spool_dir, recording_id)
        self.data_key = vault.new_data_key()
        self.aes = AESGCM(self.data_key)
        self.wrapped_key = vault.wrap(sink.store.master_key(), self.data_key, recording_id)
        self.sidecar = CallSidecar(base, call, recording_id=recording_id, aes=self.aes, wrapped=self.wrapped_key,
                                   create=sink.create)  # first: the spool files always have their call and key beside them
        try:
            self._open(sink, recording_id, call, base)
        except BaseException:
            self.sidecar.discard()
            raise

    def _open(self, sink: SpoolSink, recording_id: str, call: Any, base: str) -> None:
        self.sink = sink
        self.id = recording_id
        self.call = call
        self.codec: str = call.codec
        clock, channels = getattr(call, "clock_rate", 8000), getattr(call, "channels", 1)
        self.fmt = codecs.audio_format(call.codec, clock, channels)  # None: not decoded here
        self.error: str | None = None  # the WAV's write failure
        self.evidence_error: str | None = None
        self.keeps_packets = sink.store.keep_pcap or self.fmt is None
        progress = self._evidence_flushed if self.fmt is None else None  # no WAV: the pcap's writes pace it
        sizes = sink.sizes
        self.evidence = (EvidencePcap(base + ".pcap", self.aes, self._evidence_failed, progress, create=sink.create,
                                      flush_bytes=sizes.evidence, writeback=sizes.writeback)
                         if self.keeps_packets else None)
        self._progress_at = 0  # spool position (samples; evidence flushes without a WAV) of the next figures
        # (the first after FIRST_PROGRESS s, when the streams and their sources are known, then every
        # PROGRESS_EVERY s)
        if self.evidence is not None:
            self.packet = self.evidence.add  # type: ignore[method-assign]  # straight to the pcap, per packet
        self.path = base + ".wav"
        self.late = [0, 0]  # samples patched into frames already written
        self.held: list[tuple[int, int, bytes]] = []  # late payloads (channel, position, samples) until the next write
        self.written = 0  # WAV data bytes sealed
        self.lanes: Any = None  # capture's audio placement buffers once taken (use_buffers): self.bufs are theirs
        self.frontier = 0
        if self.fmt is None:
            log.warning("recording %s: codec %s cannot be decoded here; its RTP is kept in the evidence pcap",
                        recording_id, self.codec, extra={"EVENT": "audio-not-decoded", "RECORDING_ID": recording_id,
                                                        "DID_LABEL": call.did_label})
            return
        fmt = self.fmt
        self.width = fmt.width
        self.ratio = fmt.ratio
        scale = fmt.rate // 8000 or 1  # the buffer thresholds below are for 8 kHz
        self.reorder_margin, self.max_lag = REORDER_MARGIN * scale, MAX_LAG * scale
        self.flush_at, self.min_write = sizes.audio * scale * fmt.width, MIN_WRITE * scale
        self.silence = bytes([fmt.silence]) * (self.max_lag * fmt.width)
        self.progress_every = int(PROGRESS_EVERY * fmt.rate)
        self._progress_at = int(FIRST_PROGRESS * fmt.rate)
        self.decoders = (codecs.new_decoder(fmt, clock, channels), codecs.new_decoder(fmt, clock, channels))
        self.bufs = (bytearray(), bytearray())
        if fmt.exact:
            self.audio = self._place  # type: ignore[method-assign]  # G.711: the payload is the samples
        provisional = wav.header(self.codec, 0, rate=fmt.rate, width=fmt.width, tag=fmt.format_tag)
        self.file = sealed.SealedWriter(self.path, sealed.WAV, self.aes, first=provisional, readable=True,
                                        create=self.sink.create, writeback=sizes.writeback)

    def use_buffers(self, lanes: Any, records: Any) -> bool:
        """Capture's buffers (capture.sink.RecordingHandle.use_buffers): taken for G.711 (one byte a
        sample, kept as it came), with records exactly where this recording keeps packets. From here
        on the channel buffers are ``lanes.bufs`` and the evidence pcap's buffer ``records.buf``,
        whoever places into them: this recording (audio(), packet()) or capture's kernel."""
        fmt = self.fmt
        if fmt is None or not fmt.exact or fmt.width != 1 or (records is None) != (self.evidence is None):
            return False
        lanes.silence = fmt.silence
        lanes.limit = self.flush_at
        lanes.frontier = self.frontier
        for mine, theirs in zip(self.bufs, lanes.bufs, strict=False):
            theirs[:] = mine  # (empty: offered as the recording opens)
        self.bufs = lanes.bufs
        self.lanes = lanes
        if records is not None and self.evidence is not None:
            self.evidence.use_records(records)
        return True

    def flush_buffers(self) -> None:
        """A buffer taken by use_buffers reached its limit (capture's kernel filled it)."""
        if self.lanes is not None and max(len(self.bufs[0]), len(self.bufs[1])) >= self.flush_at:
            self._flush(final=False)
        if self.evidence is not None and len(self.evidence.buf) >= self.evidence.flush_bytes:
            self.evidence.flush()

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        if self.evidence is not None:
            self.evidence.add(ts, linktype, frame)

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        """Decode (G.722, Opus, L16) and place; G.711 goes straight to :meth:`_place`."""
        if self.fmt is None:
            return  # not decoded here: the evidence pcap has it
        self._place(channel, position * self.ratio, self.decoders[channel - 1](payload))

    def _place(self, channel: int, position: int, payload: bytes) -> None:
        width = self.width
        buf = self.bufs[channel - 1]
        rel = position - self.frontier
        if rel < 0:  # its place is already on disk (as silence): patch it there
            late = min(-rel, len(payload) // width)
            self._patch(channel, position, payload[: late * width])
            payload = payload[late * width :]
            rel = 0
            if not payload:
                return
        rel *= width
        have = len(buf)
        if rel > have:
            self._pad(buf, rel - have)
            buf += payload
        elif rel == have:
            buf += payload
        else:
            buf[rel : rel + len(payload)] = payload
        if len(buf) >= self.flush_at:
            self._flush(final=False)

    def _patch(self, channel: int, position: int, payload: bytes) -> None:
        """Hold a late payload for one channel of frames already sealed (rare: a packet later than
        the reorder margin, e.g. a burst after a network stall); :meth:`_seal_late` places it."""
        samples = len(payload) // self.width
        self.late[channel - 1] += samples
        if self.error is not None or not samples or position < 0:
            return
        self.held.append((channel, position, bytes(payload)))

    def _seal_late(self) -> None:
        """The held late payloads, one DATA record per run of frames they fall in: those frames as
        sealed so far (decrypted from the spool file), each payload put in place."""
        held, self.held = sorted(self.held, key=lambda h: h[1]), []
        width, frame = self.width, 2 * self.width
        runs: list[list[tuple[int, int, bytes]]] = []
        end = -1
        for h in held:
            if runs and h[1] <= end:
                runs[-1].append(h)
            else:
                runs.append([h])
            end = max(end, h[1] + len(h[2]) // width)
        for run in runs:
            first = run[0][1]
            last = min(max(p + len(b) // width for _, p, b in run), self.written // frame)
            if last <= first:
                continue
            offset = wav.HEADER_SIZE + frame * first
            try:
                frames = self.file.read(offset, frame * (last - first))
                for channel, position, payload in run:  # in arrival order within a position: the later wins
                    rel = (position - first) * frame + (channel - 1) * width
                    n = min(len(payload) // width, last - position)
                    for i in range(width):
                        frames[rel + i : rel + n * frame : frame] = payload[i : n * width : width]
                self.file.data(offset, frames)
            except OSError as exc:
                self._write_failed(exc)
                return

    def _pad(self, buf: bytearray, n: int) -> None:
        while n > 0:
            step = min(n, len(self.silence))
            buf += self.silence[:step]
            n -= step

    def _flush(self, *, final: bool) -> None:
        width = self.width
        a, b = self.bufs
        longest = max(len(a), len(b)) // width
        if final:
            n = longest
        else:
            n = max(min(len(a), len(b)) // width - self.reorder_margin, longest - self.max_lag)
            if n < self.min_write:
                return
        extra = 0
        if width == 1 and not final and self.error is None:
            n, extra = self._on_a_page(n, min(len(a), len(b)))
        size = n * width
        for buf in self.bufs:
            if len(buf) < size + extra:
                self._pad(buf, size + extra - len(buf))
        if width == 1 and self.lanes is not None:  # capture's buffers: their frames made in one pass
            frames = self.lanes.interleaved(size, extra)
        elif width == 1:  # G.711: channel 1's bytes, each followed by a zero byte (Latin-1 maps a byte to
            # the same code point, UTF-16-LE writes one below 256 as that byte and a zero), then channel 2's
            # bytes in those: one strided copy instead of two, and no zeroed buffer
            frames = bytearray(a[: size + extra].decode("latin-1"), "utf-16-le")
            frames[1 : 2 * size : 2] = b[:size]
            if extra:  # the next frame's channel 1 byte, its zero dropped: the record's length even
                del frames[-1]
        else:
            frames = bytearray(2 * size)
            for i in range(width):  # interleave: channel 1's sample, then channel 2's
                frames[i :: 2 * width] = a[i:size:width]
                frames[width + i :: 2 * width] = b[i:size:width]
        del a[:size]
        del b[:size]
        self.frontier += n  # the buffers start n samples later, written or not
        if self.lanes is not None:
            self.lanes.frontier = self.frontier  # where capture's kernel places from
        if self.error is None:
            try:
                self.file.data(wav.HEADER_SIZE + self.written, frames)
                self.written += 2 * size  # (an extra byte is sealed again, whole, by the next record)
            except OSError as exc:
                self._write_failed(exc)  # the record was cut back: the frames sealed before it stay
        if self.held and self.error is None:
            self._seal_late()
        if not final and self.frontier >= self._progress_at:
            self._progress_at = self.frontier + self.progress_every
            self._save_progress()

    def _on_a_page(self, n: int, both: int) -> tuple[int, int]:
        """The frames to write instead of ``n`` (G.711: 2 bytes a frame) so that the WAV's write
        ends on a page (storage/sealed.py, past_page), and 1 when the record must also take the
        next frame's first byte to get there: a record's 45 bytes besides its plaintext are odd,
        so from an even place in the file only a record of odd plaintext ends on a page. That byte
        is sealed again by the next record, which starts at that frame (a later record wins).
        The nearest such count: up (into the reorder margin, no more than half of it: a reordered
        packet behind a sealed frame is a late patch, placed all the same) or down (the rest waits
        in the buffers, which are written when they reach FLUSH_AT as before: what a crash can
        lose stays ~1 s); ``n`` itself when neither will do."""
        past = self.file.past_page(2 * n)
        extra = past & 1
        down = n - (past + extra) // 2
        up = down + sealed.PAGE // 2
        if up - n < n - down and up + extra <= both - self.reorder_margin // 2:
            return up, extra
        if down >= self.min_write:
            return down, extra
        return n, 0

    def _evidence_flushed(self) -> None:
        """Without a WAV, every 40 evidence writes (~16 KiB each, ~0.75 s of G.711 packets: ~30 s)."""
        self._progress_at += 1
        if self._progress_at % 40 == 0:
            self._save_progress()

    def _save_progress(self) -> None:
        """The streams' figures and DTMF events so far into the sidecar (for crash recovery)."""
        if self.figures is not None:
            self.sidecar.progress([stream_record(s, self.late[s.channel - 1]) for s in self.figures()])

    def _write_failed(self, exc: OSError) -> None:
        self.error = self._failure(exc, "", "audio from here on is lost")

    def _evidence_failed(self, exc: OSError) -> None:
        self.evidence_error = self._failure(exc, "evidence pcap: ", "packets from here on are not in it")

    def _failure(self, exc: OSError, part: str, lost: str) -> str:
        """Say loudly that a spool file stopped being written; the reason, for the recording."""
        why = "store full" if exc.errno == errno.ENOSPC else f"write error: {exc.strerror}"
        log.critical("recording %s: %s%s; %s, what was written is kept", self.id, part, why, lost,
                     extra={"EVENT": "spool-write-failed", "RECORDING_ID": self.id,
                            "DID_LABEL": self.call.did_label})
        return why

    def link_leg(self, call_id: str, how: str) -> None:
        """Another leg of this conversation, not recorded (capture.sink.RecordingHandle.link_leg)."""
        if len(self.linked_legs) < 16:
            self.linked_legs.append((call_id, how))
            self.sidecar.leg(call_id, how)  # recovered with the recording after a crash

    def end(self, result: Any) -> None:
        frames = 0
        wav_path = None
        if self.fmt is not None:
            self._flush(final=True)
            frames = self.written // (2 * self.width)
            if self.error is None:
                try:  # the final sizes, then FINAL (the store syncs and renames it next)
                    fmt = self.fmt
                    self.file.data(0, wav.header(self.codec, frames, rate=fmt.rate, width=fmt.width, tag=fmt.format_tag))
                    self.file.final(wav.HEADER_SIZE + self.written)
                except OSError as exc:
                    self._write_failed(exc)  # the store finishes the file (storage.sealed.finish) when it keeps it
            self.file.close()
            wav_path = self.path
        pcap_path = self.evidence.close() if self.evidence is not None else None
        pcap_digest = self.evidence.digest if self.evidence is not None else None  # taken as sealed
        self.sidecar.close()
        self.figures = None
        streams = [stream_record(s, self.late[s.channel - 1]) for s in result.streams]
        strangers = sum(s["other_source"] for s in streams)
        if strangers:
            log.warning("recording %s: %d RTP packets from another address than the call's sender were dropped "
                        "(a flood or spoofed media)", self.id, strangers,
                        extra={"EVENT": "rtp-other-source", "RECORDING_ID": self.id,
                               "DID_LABEL": self.call.did_label})
        errors = [e for e in (self.error, self.evidence_error and f"evidence pcap: {self.evidence_error}") if e]
        complete = bool(result.complete) and not errors
        reason = "; ".join([result.reason, *errors])
        self.sink.open_recordings.pop(self.id, None)
        self.sink.keep(
            self.id, wav_path, self.call, ended_at=result.ended_at, frames=frames, complete=complete,
            end_reason=reason, streams=streams, pcap_path=pcap_path, audio=audio_kind(self.fmt),
            rate=self.fmt.rate if self.fmt else 0, linked_legs=list(self.linked_legs),
            data_key=self.data_key, wrapped_key=self.wrapped_key, pcap_digest=pcap_digest,
        )


def audio_kind(fmt: Any) -> str:
    """"exact" (G.711 bytes as on the wire), "transcoded" (decoded to PCM) or "not-decoded"."""
    return "not-decoded" if fmt is None else "exact" if fmt.exact else "transcoded"


def stream_record(stats: Any, late: int) -> dict[str, Any]:
    return {
        "channel": stats.channel,
        "ssrcs": list(stats.ssrcs),
        "packets": stats.packets,
        "expected": stats.expected,
        "lost": stats.lost,
        "duplicates": stats.duplicates,
        "mirror_duplicates": getattr(stats, "mirror_duplicates", 0),  # a second mirror session's copies: dropped
        "late_samples": late,  # samples patched into frames already written
        "other_payload": stats.other_payload,
        "anchors": [list(a) for a in stats.anchors],
        "jitter_ms": stats.jitter_ms,
        "max_gap_ms": stats.max_gap_ms,
        "other_source": getattr(stats, "other_source", 0),  # packets from another source: dropped
        "truncated": getattr(stats, "truncated", 0),  # packets cut short by the capture: captured bytes kept, rest silence
        "dtmf": [list(e) for e in stats.events],  # kept with the recording, erased with it, never logged
    }


def recording_id(call_id: str, did: str, started_at: float, tz: Any) -> str:
    """Readable and deterministic: local start time and a digest of the call's identity, so
    replaying the same capture twice names the same recordings."""
    stamp = datetime.fromtimestamp(started_at, tz).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{call_id}\0{did}\0{started_at!r}".encode()).hexdigest()[:10]
    return f"{stamp}-{digest}"
