"""The console's recording page and player: ``show``, ``play``, ``play-audio``, ``play-check``, ``waveform``.

``show ID`` is the recording page: its metadata (as ``list --json``), each direction's quality,
DTMF events, legal holds, the parts of its conversation (all of them, itself included), the other
legs of the conversation that were seen and not recorded (how they were matched, their Call-IDs),
and its access history from the audit log (newest first, at most ``HISTORY_ROWS``). It is audited
as a view like ``list``.

Playing is purpose-gated (guideline Art. 5(3)): ``play ID --purpose quality|suspicious_call`` is the
audited act and returns a *ticket*: 128 random bits, bound to the user and the recording, kept in
this process's memory only and valid ``TICKET_IDLE`` after its last use. With it the same user may
fetch byte ranges of a 16-bit PCM stereo WAV rendition (``play-audio``: a 44-byte header, then the
G.711 samples expanded; a transcoded recording's PCM as it is), the rendition's min/max peaks per
channel (``waveform``) and the result of the integrity check that ``play`` started in the background
(``play-check``: decrypt the whole recording and compare its SHA-256 with the index's). These three
are not audited when they succeed (the play was); a refusal is. A range decrypts only the vault
chunks it covers (:mod:`storage.reader`), so the first byte of a one-hour call comes at once, and
the role and the recording (erased? its key gone?) are checked again at every request.

``play-audio`` and ``waveform`` answer only the web console (``via: console``): the player streams
what it fetches, while ``recorderctl`` would write the rendition to a file, a full copy of the
call that no copy register knows (``export`` makes the registered copy).
"""
from __future__ import annotations

import hashlib
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from storage import vault
from storage.codecs import g711
from storage.index import RecordingRow
from storage.reader import VaultReader, open_reader
from storage.sealed import SealedFile
from storage.wav import read_info

from ..roles import MANAGER, STAFF
from .access import PURPOSES
from .framework import Args, Context, NotAllowed, OpError, Reply, UsageError, action, iso
from .records import iso_ms, recording_json

HISTORY_ROWS = 200
TICKET_IDLE = 3600.0  # s a ticket lives after its last use
MAX_TICKETS = 1000
MAX_RANGE = 8 << 20  # bytes of one play-audio answer
MAX_POINTS = 2000
PCM_HEADER = g711.PCM_HEADER_SIZE
AUDIO_OUT = "audio"  # the name of play-audio's output (the client's sink)
HISTORY_DETAIL = ("purpose", "basis", "format", "copy", "hold", "request", "decision")


# -- tickets (this process's memory only) -------------------------------------------------------


@dataclass
class Ticket:
    token: str
    uid: int
    user: str
    recording_id: str
    sha256: str
    codec: str  # of the stored WAV: PCMU / PCMA, or PCM (transcoded)
    data_offset: int  # of the stored WAV's samples
    data_bytes: int  # of the stored WAV's samples
    channels: int
    rate: int
    last_used: float
    check: str = "checking"  # checked | failed | checking
    check_error: str = ""
    peaks: dict[int, list[list[list[int]]]] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return 2 if self.codec == "PCM" else 1

    @property
    def frames(self) -> int:
        return self.data_bytes // (self.channels * self.width)

    @property
    def size(self) -> int:
        return PCM_HEADER + self.frames * self.channels * 2


class Tickets:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_token: dict[str, Ticket] = {}

    def add(self, ticket: Ticket) -> None:
        with self.lock:
            self._expire(time.monotonic())
            while len(self.by_token) >= MAX_TICKETS:
                oldest = min(self.by_token.values(), key=lambda t: t.last_used)
                del self.by_token[oldest.token]
            self.by_token[ticket.token] = ticket

    def take(self, token: str, ctx: Context) -> Ticket:
        """The caller's live ticket ``token`` (its last use is now), or a refusal."""
        now = time.monotonic()
        with self.lock:
            self._expire(now)
            ticket = self.by_token.get(token)
            if ticket is None or not secrets.compare_digest(ticket.token, token):
                raise NotAllowed("no such ticket, or it has expired: choose the purpose and press play again")
            if (ticket.uid, ticket.user) != (ctx.caller.uid, ctx.caller.user):
                raise NotAllowed("this ticket was given to another user")
            ticket.last_used = now
        return ticket

    def _expire(self, now: float) -> None:
        for token in [t for t, k in self.by_token.items() if now - k.last_used > TICKET_IDLE]:
            del self.by_token[token]


TICKETS = Tickets()


def _token(args: Args) -> str:
    token = args.text("ticket", 64)
    if len(token) != 32 or any(c not in "0123456789abcdef" for c in token):
        raise UsageError("--ticket: expected the 32 hex digits play gave")
    return token


def _reader(ctx: Context, row: RecordingRow) -> VaultReader | SealedFile:
    if row.audio == "not-decoded":
        raise OpError(f"recording {row.id} has no WAV: its codec {row.codec} is not decoded here (its audio is the "
                      "original RTP in its evidence pcap)")
    data_key = vault.unwrap(ctx.store.master_key(), row.wrapped_key, row.id)
    try:
        return open_reader(ctx.store.layout.file_path(row), data_key, f"recording {row.id}")  # RDS1 or RDV1
    except FileNotFoundError:
        raise OpError(f"recording {row.id} has no file in the store (erased?)") from None


def _current(ctx: Context, ticket: Ticket) -> RecordingRow:
    """The ticket's recording, still there and still the one played (not erased, same SHA-256)."""
    row = ctx.store.reading.get(ticket.recording_id)
    if row.sha256 != ticket.sha256 or row.erasing_at is not None:
        raise OpError(f"recording {row.id} is being erased or has changed since it was played")
    return row


# -- show -----------------------------------------------------------------------------------------


def history(ctx: Context, recording_id: str, limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
    """Who did what with the recording, newest first (from the audit log)."""
    rows = ctx.store.audit_log().select(recording_id=recording_id, limit=limit)
    out = []
    for _seq, event, _prev, _hash in reversed(rows):
        detail = event.detail if isinstance(event.detail, dict) else {}
        entry = {"at": iso(event.at, ctx), "user": event.user, "role": detail.get("role"), "via": detail.get("via"),
                 "action": event.action, "result": event.result}
        entry.update({k: detail[k] for k in HISTORY_DETAIL if k in detail})
        out.append(entry)
    return out


@action("show", MANAGER, STAFF)
def show(ctx: Context, args: Args) -> Reply:
    rid = args.text("id", 100)
    ctx.note(rid)
    row = ctx.store.reading.get(rid)
    index = ctx.store.db()
    parts = index.parts(row.conversation)
    legs = index.legs(row.id)
    record = recording_json(row, ctx, parts=len(parts), legs=len(legs))
    quality = [{k: s.get(k) for k in ("channel", "packets", "expected", "lost", "duplicates", "late_samples",
                                      "jitter_ms", "max_gap_ms", "truncated", "mirror_duplicates")}
               for s in row.streams]
    for q in quality:
        expected = q.get("expected") or 0
        q["loss_pct"] = round(100.0 * (q.get("lost") or 0) / expected, 2) if expected else None
    dtmf = [{"channel": s.get("channel"), **(e if isinstance(e, dict) else {"event": e})}
            for s in row.streams for e in (s.get("dtmf") or [])]
    data = {"recording": record, "quality": quality, "one_way_audio": record["one_way_audio"], "dtmf": dtmf,
            "holds": record["holds"], "history": history(ctx, row.id),
            "conversation": {"token": row.conversation, "part": row.part, "part_reason": row.part_reason,
                             "parts": [part_json(p, ctx) for p in parts]},
            "linked_legs": legs}
    text = (f"{row.id}  {record['started_at']}  {row.did_label}  {record['duration_s']} s  {row.state}\n"
            f"{len(data['history'])} entries in its access history")
    return Reply(text=text, data=data)


def part_json(row: RecordingRow, ctx: Context) -> dict[str, Any]:
    """One part of a conversation as ``show`` lists it (no caller: the same call's)."""
    return {"id": row.id, "part": row.part, "part_reason": row.part_reason, "started_at": iso_ms(row.started_at, ctx),
            "duration_s": round(row.ended_at - row.started_at, 3), "codec": row.codec, "state": row.state,
            "audio": row.audio}


# -- play -----------------------------------------------------------------------------------------


@action("play", MANAGER, STAFF)
def play(ctx: Context, args: Args) -> Reply:
    rid, purpose = args.text("id", 100), args.text("purpose", 100)
    ctx.note(rid, purpose=purpose)
    if purpose not in PURPOSES:
        raise NotAllowed(f"playing a recording needs a purpose: one of {', '.join(PURPOSES)} (guideline Art. 5(3))")
    row = ctx.store.reading.get(rid)
    with _reader(ctx, row) as reader:
        head = reader.read(0, min(reader.size, 4096))
        try:
            info = read_info(head)
        except ValueError as exc:
            raise OpError(f"recording {row.id}: its WAV header cannot be read ({exc})") from None
        declared = struct.unpack_from("<I", head, info.data_offset - 4)[0]
        data_bytes = min(declared, reader.size - info.data_offset)
    if info.codec not in ("PCMU", "PCMA") and not (info.codec == "PCM" and info.width == 2):
        raise OpError(f"recording {row.id}: {info.codec} cannot be played here")
    ticket = Ticket(secrets.token_hex(16), ctx.caller.uid, ctx.caller.user, row.id, row.sha256, info.codec,
                    info.data_offset, data_bytes, info.channels, info.rate, time.monotonic())
    TICKETS.add(ticket)
    _start_check(ctx, row, ticket)
    duration = round(ticket.frames / ticket.rate, 3) if ticket.rate else 0.0
    data = {"ticket": ticket.token, "size": ticket.size, "duration_s": duration, "sha256": row.sha256,
            "channels": ticket.channels, "rate": ticket.rate, "content_type": "audio/wav",
            "expires_after_idle_s": int(TICKET_IDLE)}
    return Reply(text=f"ticket {ticket.token} for {row.id} ({purpose}): {ticket.size} bytes, {duration} s", data=data)


_RUNNING: dict[tuple[str, str], list[Ticket]] = {}  # (recording, sha256) -> the tickets waiting on its check
_RUNNING_LOCK = threading.Lock()


def _start_check(ctx: Context, row: RecordingRow, ticket: Ticket) -> None:
    """Decrypt the whole recording and compare its SHA-256, in a thread of its own (no SQLite there:
    the key and path are taken now). A play of a recording whose check is running waits for that
    one instead of starting another."""
    key = (row.id, row.sha256)
    with _RUNNING_LOCK:
        if key in _RUNNING:
            _RUNNING[key].append(ticket)
            return
        _RUNNING[key] = [ticket]
    data_key = vault.unwrap(ctx.store.master_key(), row.wrapped_key, row.id)
    path, expected = ctx.store.layout.file_path(row), row.sha256

    def outcome() -> tuple[str, str]:
        digest = hashlib.sha256()
        try:
            with open_reader(path, data_key, f"recording {row.id}") as reader:
                for i in range(reader.chunks):
                    digest.update(reader.chunk(i))
                if isinstance(reader, SealedFile):
                    reader.verify()  # the records a later one replaced too
        except (vault.VaultError, OSError) as exc:
            return "failed", str(exc)
        if digest.hexdigest() != expected:
            return "failed", "SHA-256 differs from the one recorded at finalisation"
        return "checked", ""

    def check() -> None:
        try:
            state, error = outcome()
        finally:
            with _RUNNING_LOCK:
                waiting = _RUNNING.pop(key, [])
        for t in waiting:
            if t.check == "checking":
                t.check, t.check_error = state, error

    threading.Thread(target=check, name="play-check", daemon=True).start()


@action("play-check", MANAGER, STAFF)
def play_check(ctx: Context, args: Args) -> Reply:
    ticket = TICKETS.take(_token(args), ctx)
    ctx.note(ticket.recording_id)
    data = {"id": ticket.recording_id, "integrity": ticket.check, "sha256": ticket.sha256}
    if ticket.check == "failed":
        data["error"] = ticket.check_error
    return Reply(text=ticket.check, data=data)


# -- play-audio -------------------------------------------------------------------------------------


def rendition(ticket: Ticket, reader: VaultReader | SealedFile, offset: int, length: int) -> bytes:
    """Bytes ``[offset, offset + length)`` of the ticket's 16-bit PCM WAV rendition."""
    end = min(ticket.size, offset + length)
    if offset >= end:
        return b""
    out = []
    if offset < PCM_HEADER:
        out.append(g711.pcm_header(ticket.frames, ticket.channels, ticket.rate)[offset:end])
    d0, d1 = max(0, offset - PCM_HEADER), end - PCM_HEADER  # in the rendition's samples
    if d1 > d0:
        if ticket.codec == "PCM":
            out.append(reader.read(ticket.data_offset + d0, d1 - d0))
        else:
            s0, s1 = d0 // 2, (d1 + 1) // 2  # stored G.711 bytes
            pcm = g711.decode(ticket.codec, reader.read(ticket.data_offset + s0, s1 - s0))
            out.append(pcm[d0 - 2 * s0 : d1 - 2 * s0])
    return b"".join(out)


def _console_only(ctx: Context, name: str) -> None:
    if ctx.caller.via != "console":
        raise NotAllowed(f"{name} is the web console's player, not a copy: use export for a registered copy of a call")


@action("play-audio", MANAGER, STAFF)
def play_audio(ctx: Context, args: Args) -> Reply:
    _console_only(ctx, "play-audio")
    ticket = TICKETS.take(_token(args), ctx)
    ctx.note(ticket.recording_id)
    offset, length = args.int("offset"), args.int("length")
    if offset < 0 or not 0 < length <= MAX_RANGE:
        raise UsageError(f"--offset must be 0 or more and --length 1 to {MAX_RANGE}")
    if offset >= ticket.size:
        raise UsageError(f"--offset {offset} is past the end of the audio ({ticket.size} bytes)")
    name = args.opt("out", 200) or AUDIO_OUT
    row = _current(ctx, ticket)
    with _reader(ctx, row) as reader:
        sink = ctx.outputs(name)
        digest, sent = hashlib.sha256(), 0
        try:
            step = 1 << 20
            for at in range(offset, min(ticket.size, offset + length), step):
                part = rendition(ticket, reader, at, min(step, offset + length - at))
                digest.update(part)
                sink.write(part)
                sent += len(part)
        except vault.VaultError as exc:
            sink.abort()
            ticket.check, ticket.check_error = "failed", str(exc)
            raise OpError(f"recording {row.id} fails its integrity check: {exc}") from None
        except BaseException:
            sink.abort()
            raise
        sink.commit(digest.hexdigest())
    return Reply(text=f"{sent} bytes from {offset}", data={"offset": offset, "length": sent, "size": ticket.size,
                                                          "content_type": "audio/wav"})


# -- waveform ----------------------------------------------------------------------------------------


def _order(codec: str) -> tuple[bytes, list[int]]:
    """A table taking each G.711 code to its rank by linear value, and the value of each rank: so
    min()/max() over translated bytes (a C loop) find the smallest and largest sample."""
    low, high = g711.TABLES[codec]
    values = [struct.unpack("<h", bytes((low[c], high[c])))[0] for c in range(256)]
    by_value = sorted(range(256), key=lambda c: values[c])
    rank = bytearray(256)
    for r, c in enumerate(by_value):
        rank[c] = r
    return bytes(rank), [values[c] for c in by_value]


ORDERS = {codec: _order(codec) for codec in ("PCMU", "PCMA")}
RANK_BYTES = [bytes((r,)) for r in range(256)]
_WAVEFORM_SLOT = threading.Lock()


def peaks(ticket: Ticket, data: bytes, points: int) -> list[list[list[int]]]:
    """Per channel, ``points`` buckets of [min, max] sample values (16-bit)."""
    frame = ticket.channels * ticket.width
    frames = len(data) // frame
    out: list[list[list[int]]] = []
    for ch in range(ticket.channels):
        buckets: list[list[int]] = []
        if ticket.codec == "PCM":
            samples = memoryview(data[: frames * frame]).cast("h")[ch :: ticket.channels]
            for b in range(points):
                part = samples[b * frames // points : (b + 1) * frames // points]
                buckets.append([min(part), max(part)] if len(part) else [0, 0])
        else:
            rank, value = ORDERS[ticket.codec]
            chan = data[ch : frames * frame : ticket.channels].translate(rank)
            for b in range(points):
                ranks = chan[b * frames // points : (b + 1) * frames // points]
                if not ranks:
                    buckets.append([0, 0])
                    continue
                # the lowest and the highest rank present: each test a memchr, most buckets settle in a few
                low = next(r for r in range(256) if RANK_BYTES[r] in ranks)
                high = next(r for r in range(255, -1, -1) if RANK_BYTES[r] in ranks)
                buckets.append([value[low], value[high]])
        out.append(buckets)
    return out


@action("waveform", MANAGER, STAFF)
def waveform(ctx: Context, args: Args) -> Reply:
    _console_only(ctx, "waveform")
    ticket = TICKETS.take(_token(args), ctx)
    ctx.note(ticket.recording_id)
    points = args.int("points")
    if not 1 <= points <= MAX_POINTS:
        raise UsageError(f"--points must be 1 to {MAX_POINTS}")
    cached = ticket.peaks.get(points)
    if cached is None:
        row = _current(ctx, ticket)
        with _WAVEFORM_SLOT, _reader(ctx, row) as reader:  # one at a time: an hour is ~60 MB in memory
            try:
                audio = reader.read(ticket.data_offset, ticket.data_bytes)
            except vault.VaultError as exc:
                raise OpError(f"recording {row.id} fails its integrity check: {exc}") from None
            cached = peaks(ticket, audio, min(points, max(1, ticket.frames)))
            del audio
        if len(ticket.peaks) >= 4:
            ticket.peaks.clear()
        ticket.peaks[points] = cached
    labels = (["caller", "contact centre"] if ticket.channels == 2
              else [f"channel {i + 1}" for i in range(ticket.channels)])
    data = {"id": ticket.recording_id, "points": len(cached[0]) if cached else 0, "duration_s":
            round(ticket.frames / ticket.rate, 3) if ticket.rate else 0.0,
            "channels": [{"label": labels[i], "min": [p[0] for p in c], "max": [p[1] for p in c]}
                         for i, c in enumerate(cached)]}
    return Reply(text=f"{data['points']} points per channel", data=data)
