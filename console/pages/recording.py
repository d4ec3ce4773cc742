"""A recording's page (manager, staff): its metadata, both directions' quality, DTMF, holds, the
SHA-256, the export and request forms (helper W2's routes), and its access history; and playback in
the browser.

Playback: the person picks the purpose first; ``POST /recordings/{id}/play`` asks the daemon for a
ticket (``play``: the play is audited there, with its purpose) and keeps it in this session only, so
a ticket from another session (or another person) is refused here before the daemon refuses it too.
The audio element then reads ``/audio/{ticket}``: the 16-bit PCM WAV rendition, by HTTP Range, at
most ``MAX_ANSWER`` bytes per answer (the browser asks again), fetched from the daemon range by
range (``play-audio``) into memory and handed on: nothing is written to disk, nothing is cached.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from recorderd import client

from .. import i18n, labels
from ..web import MANAGER, STAFF, Req, page
from .copies import BASES  # helper W2's provide route takes these
from .search import duration

PURPOSES = ("quality", "suspicious_call")
MAX_ANSWER = 1 << 20  # bytes of audio per HTTP answer
WAVEFORM_POINTS = 1000
TICKET_IDLE = 3600.0  # s a ticket lives here after its last use (the daemon keeps its own clock too)
MAX_TICKETS = 5000
RECORDING_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,99}")
TICKET = re.compile(r"[0-9A-Za-z_-]{16,100}")
RANGE = re.compile(r"bytes=(\d{0,15})-(\d{0,15})")
AUDIO_OUT = "play-audio"  # the name of the daemon's output for the bytes of a range (never a file)

i18n.add({
    "rec.title": ("録音 {id}", "Recording {id}"),
    "rec.metadata": ("録音の情報", "About the recording"),
    "rec.id": ("録音ID", "Recording id"),
    "rec.did": ("着信番号", "Number called"),
    "rec.caller": ("発信者番号", "Caller's number"),
    "rec.started": ("開始日時", "Started"),
    "rec.ended": ("終了日時", "Ended"),
    "rec.duration": ("通話時間", "Duration"),
    "rec.codec": ("符号化方式", "Codec"),
    "rec.audio": ("音声の形式", "Audio"),
    "rec.audio.exact": ("回線上のG.711そのまま", "G.711 exactly as on the wire"),
    "rec.audio.transcoded": ("16ビットPCMに変換", "decoded to 16-bit PCM"),
    "rec.audio.not-decoded": ("未変換（証拠pcapのみ）", "not decoded (evidence pcap only)"),
    "rec.state": ("状態", "State"),
    "rec.end_reason": ("終了理由", "How it ended"),
    "rec.retain_until": ("保管期限", "Kept until"),
    "rec.sha256": ("SHA-256", "SHA-256"),
    "rec.quality": ("通話品質", "Call quality"),
    "rec.direction": ("方向", "Direction"),
    "rec.channel.1": ("発信者 → センター", "Caller → contact centre"),
    "rec.channel.2": ("センター → 発信者", "Contact centre → caller"),
    "rec.packets": ("パケット数", "Packets"),
    "rec.lost": ("欠落", "Lost"),
    "rec.loss_pct": ("欠落率", "Loss"),
    "rec.jitter": ("ジッター (ms)", "Jitter (ms)"),
    "rec.max_gap": ("最大の途切れ (ms)", "Longest gap (ms)"),
    "rec.one_way": ("片通話（一方向のみ音声）", "One-way audio"),
    "rec.yes": ("あり", "yes"),
    "rec.no": ("なし", "no"),
    "rec.dtmf": ("DTMF（プッシュ信号）", "DTMF (keypad)"),
    "rec.dtmf.none": ("ありません。", "None."),
    "rec.dtmf.at": ("時刻（秒）", "At (s)"),
    "rec.dtmf.digit": ("キー", "Key"),
    "rec.dtmf.direction": ("方向", "Direction"),
    "rec.holds": ("保管延長（保全）", "Holds"),
    "rec.holds.none": ("ありません。", "None."),
    "rec.hold.until": ("期限", "Until"),
    "rec.hold.reason": ("理由", "Reason"),
    "rec.hold.ref": ("参照番号", "Reference"),
    "rec.hold.by": ("設定者", "Placed by"),
    "rec.hold.place": ("保全する", "Hold"),
    "rec.hold.release": ("解除する", "Release"),
    "rec.hold.release_reason": ("解除の理由", "Reason for the release"),
    "rec.play": ("再生", "Play"),
    "rec.purpose": ("利用目的", "Purpose"),
    "rec.purpose.choose": ("— 目的を選んでください —", "— choose the purpose —"),
    "rec.play.button": ("再生する", "Play"),
    "rec.play.need_purpose": ("再生の前に利用目的を選んでください。", "Choose the purpose before playing."),
    "rec.play.failed": ("再生できませんでした。", "The recording could not be played."),
    "rec.waveform": ("波形（上：発信者、下：センター）", "Waveform (top: caller, bottom: contact centre)"),
    "rec.wave.caller": ("発信者", "Caller"),
    "rec.wave.centre": ("センター", "Contact centre"),
    "rec.integrity": ("完全性", "Integrity"),
    "rec.integrity.checking": ("確認中…", "checking…"),
    "rec.integrity.checked": ("完全性確認済み", "integrity checked"),
    "rec.integrity.failed": ("完全性の確認に失敗しました。管理責任者に報告してください。",
                             "The integrity check FAILED: tell the manager."),
    "rec.export": ("持出し（ダウンロード）", "Export (download)"),
    "rec.export.button": ("ダウンロードする", "Download"),
    "rec.format": ("形式", "Format"),
    "rec.format.wav": ("録音そのまま (WAV)", "as recorded (WAV)"),
    "rec.format.pcm": ("16ビットPCM (WAV)", "16-bit PCM (WAV)"),
    "rec.request": ("その他の目的での持出し申請", "Request an export for another purpose"),
    "rec.request.purpose": ("目的", "Purpose"),
    "rec.request.reason": ("理由", "Reason"),
    "rec.request.button": ("申請する", "Request"),
    "rec.provide": ("外部への提供（個人情報保護法第69条）", "Provide to an outside party (APPI Art. 69)"),
    "rec.provide.basis": ("根拠", "Legal basis"),
    "rec.provide.to": ("提供先", "Recipient"),
    "rec.provide.note": ("備考", "Note"),
    "rec.provide.button": ("提供用にダウンロードする", "Download for the recipient"),
    "rec.history": ("アクセス履歴", "Access history"),
    "rec.history.none": ("まだ記録はありません。", "Nothing yet."),
    "rec.history.at": ("日時", "When"),
    "rec.history.user": ("利用者", "Who"),
    "rec.history.role": ("役割", "Role"),
    "rec.history.via": ("経路", "Through"),
    "rec.history.action": ("操作", "What"),
    "rec.history.why": ("目的・根拠", "Why"),
    "rec.history.result": ("結果", "Result"),
    "rec.parts": ("通話の一部（同じ会話の各部分）", "Parts of this conversation"),
    "rec.parts.note": ("この会話は{parts}つの部分に分けて録音されています。", "This conversation was recorded in {parts} parts."),
    "rec.part": ("部分", "Part"),
    "rec.part.reason": ("始まった理由", "Began"),
    "rec.part.reason.": ("会話の始まり", "at the start of the call"),
    "rec.part.reason.transfer": ("転送の後", "after a transfer"),
    "rec.part.reason.codec-change": ("符号化方式の変更の後", "after a codec change"),
    "rec.part.this": ("この録音", "this recording"),
    "rec.part.open": ("開く", "Open"),
    "rec.legs": ("連携した別区間", "Other legs"),
    "rec.legs.note": ("同じ会話の別の区間です（録音はこの録音だけです）。", "Other legs of the same conversation (only this one is recorded)."),
    "rec.leg.how": ("照合の方法", "How matched"),
    "rec.leg.how.address": ("アドレスで照合", "by address"),
    "rec.leg.how.rtp-relay": ("RTPの中継で照合", "by RTP relay"),
    "rec.leg.how.unsure": ("不確か", "unsure"),
    "rec.leg.call_id": ("Call-ID", "Call-ID"),
    "rec.export.conversation": ("会話の全部分（{parts}件）をまとめて", "every part of the conversation ({parts})"),
    "rec.bad_id": ("録音IDが正しくありません。", "That is not a recording id."),
    "rec.ticket_unknown": ("この再生は無効です。もう一度再生してください。", "This playback is no longer valid: play again."),
    "rec.bad_range": ("要求された範囲がありません。", "The requested range does not exist."),
})




@dataclass
class Ticket:
    session: str
    recording_id: str
    size: int
    used: float


class Tickets:
    """The tickets this console handed out, each bound to the session that asked for it."""

    def __init__(self) -> None:
        self._by_ticket: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def add(self, ticket: str, session: str, recording_id: str, size: int) -> None:
        now = time.monotonic()
        with self._lock:
            for t in [t for t, v in self._by_ticket.items() if now - v.used > TICKET_IDLE]:
                del self._by_ticket[t]
            if len(self._by_ticket) >= MAX_TICKETS:
                del self._by_ticket[min(self._by_ticket, key=lambda t: self._by_ticket[t].used)]
            self._by_ticket[ticket] = Ticket(session, recording_id, size, now)

    def get(self, ticket: str, session: str) -> Ticket | None:
        now = time.monotonic()
        with self._lock:
            found = self._by_ticket.get(ticket)
            if found is None or found.session != session or now - found.used > TICKET_IDLE:
                return None
            found.used = now
            return found


TICKETS = Tickets()


def audio_sink(limit: int) -> tuple[client.CallbackSink, bytearray]:
    """Where the daemon's bytes of one range land: memory, at most ``limit`` bytes, never a file."""
    data = bytearray()

    def take(chunk: bytes) -> None:
        if len(data) + len(chunk) > limit:
            raise ValueError("the daemon sent more audio than was asked for")
        data.extend(chunk)

    return client.CallbackSink(AUDIO_OUT, take, aborted=data.clear), data


def _rid(r: Req) -> str | None:
    rid = r.request.path_params.get("id", "")
    return rid if RECORDING_ID.fullmatch(rid) else None


def _ticket(r: Req) -> Ticket | None:
    assert r.session is not None
    text = r.request.path_params.get("ticket", "")
    return TICKETS.get(text, r.session.id) if TICKET.fullmatch(text) else None


# -- the page -------------------------------------------------------------------------------------


def _history_row(r: Req, row: dict[str, Any]) -> dict[str, str]:
    detail: dict[str, Any] = row["detail"] if isinstance(row.get("detail"), dict) else {}
    why = row.get("purpose") or row.get("basis") or detail.get("purpose") or detail.get("basis") or row.get("reason") or ""
    return {
        "at": r.time(row.get("at")) if isinstance(row.get("at"), (str, int, float)) else "",
        "user": str(row.get("user") or ""),
        "role": r.t("role." + str(row.get("role"))) if row.get("role") else "",
        "via": labels.word(r.lang, "via", row.get("via") or detail.get("via")),
        "action": labels.action(r.lang, row.get("action")),
        "why": labels.reason(r.lang, why),
        "result": labels.result(r.lang, row.get("result")),
    }


def quality(r: Req, streams: list[Any]) -> list[dict[str, str]]:
    """Each direction's figures as the page shows them (``show``'s ``quality`` rows)."""
    out = []
    for s in streams:
        if not isinstance(s, dict):
            continue
        expected, lost, pct = s.get("expected") or 0, s.get("lost") or 0, s.get("loss_pct")
        if pct is None and expected:
            pct = 100 * lost / expected
        channel = s.get("channel")
        out.append({
            "direction": r.t(f"rec.channel.{channel}") if channel in (1, 2) else str(channel),
            "packets": f"{s.get('packets') or 0:,}",
            "lost": f"{lost:,}",
            "loss": f"{pct:.2f}%" if isinstance(pct, (int, float)) else "—",
            "jitter": f"{s.get('jitter_ms') or 0:.1f}",
            "max_gap": f"{s.get('max_gap_ms') or 0:,.0f}",
        })
    return out


def dtmf(r: Req, events: Any) -> list[dict[str, str]]:
    """``show``'s DTMF events: {channel, event: [seconds into the recording, digit, duration ms]}."""
    found = []
    for e in events if isinstance(events, list) else ():
        event = e.get("event") if isinstance(e, dict) else None
        if isinstance(event, list) and len(event) >= 2 and isinstance(event[0], (int, float)):
            channel = e.get("channel")
            found.append({"at": f"{float(event[0]):.2f}", "digit": str(event[1])[:4],
                          "direction": r.t(f"rec.channel.{channel}") if channel in (1, 2) else ""})
    return found


@page("/recordings/{id}", (MANAGER, STAFF))
async def recording(r: Req) -> Response:
    assert r.session is not None
    rid = _rid(r)
    if rid is None:
        return r.error("rec.bad_id", 404)
    reply = await r.call("show", {"id": rid})
    if reply.rc != 0:
        return r.refused(reply)
    data = reply.data or {}
    rec: dict[str, Any] = data["recording"] if isinstance(data.get("recording"), dict) else data
    streams: list[Any] = data["quality"] if isinstance(data.get("quality"), list) else rec.get("streams") or []
    holds = data.get("holds") if isinstance(data.get("holds"), list) else rec.get("holds") or []
    history = [_history_row(r, h) for h in data.get("history") or () if isinstance(h, dict)]
    one_way = data.get("one_way_audio", rec.get("one_way_audio"))
    conversation: dict[str, Any] = data["conversation"] if isinstance(data.get("conversation"), dict) else {}
    parts = [p for p in conversation.get("parts") or () if isinstance(p, dict) and isinstance(p.get("id"), str)]
    legs = [g for g in data.get("linked_legs") or () if isinstance(g, dict)]
    return r.render(
        "recording.html", rid=rid, rec=rec, quality=quality(r, streams), dtmf=dtmf(r, data.get("dtmf")),
        holds=holds, history=history, one_way=one_way, purposes=PURPOSES, duration=duration,
        manager=r.session.has(MANAGER), audio_kind=rec.get("audio"), bases=BASES,
        parts=parts if len(parts) > 1 else [], part_ids=",".join(p["id"] for p in parts), legs=legs,
    )


# -- playback -------------------------------------------------------------------------------------


@page("/recordings/{id}/play", (MANAGER, STAFF), ("POST",))
async def play(r: Req) -> Response:
    """The ticket for the audio, the waveform and the integrity check (JSON, for console.js)."""
    assert r.session is not None
    rid, purpose = _rid(r), r.form.get("purpose", "")
    if rid is None:
        return JSONResponse({"error": r.t("rec.bad_id")}, status_code=404)
    if purpose not in PURPOSES:
        return JSONResponse({"error": r.t("rec.play.need_purpose")}, status_code=400)
    reply = await r.call("play", {"id": rid, "purpose": purpose})
    data = reply.data or {}
    ticket = data.get("ticket")
    if reply.rc != 0 or not isinstance(ticket, str) or not TICKET.fullmatch(ticket):
        status = {2: 400, 3: 403}.get(reply.rc, 409 if reply.rc == 1 else 500)
        return JSONResponse({"error": reply.error or r.t("rec.play.failed")}, status_code=status if reply.rc else 500)
    size = int(data.get("size") or 0)
    TICKETS.add(ticket, r.session.id, rid, size)
    return JSONResponse({
        "audio": f"/audio/{ticket}", "waveform": f"/waveform/{ticket}", "check": f"/play-check/{ticket}",
        "size": size, "duration_s": data.get("duration_s"), "sha256": data.get("sha256"),
    })


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(first, last) inclusive for ``Range: bytes=...`` (the first range only), None without one,
    "unsatisfiable" when it names no byte of the rendition."""
    if header is None:
        return None
    found = RANGE.fullmatch(header.split(",")[0].strip())
    if not found or found.group(1) == found.group(2) == "":
        return None  # not a form we know: the whole (RFC 9110 lets a server ignore a Range)
    first, last = found.group(1), found.group(2)
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


async def _fetch(r: Req, ticket: str, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the rendition from the daemon (raises on its refusal)."""
    sink, data = audio_sink(length)
    reply = await r.call("play-audio", {"ticket": ticket, "offset": offset, "length": length, "out": AUDIO_OUT},
                         sinks={AUDIO_OUT: sink})
    if reply.rc != 0:
        raise AudioRefused(reply)
    return bytes(data)


class AudioRefused(Exception):
    def __init__(self, reply: Any) -> None:
        super().__init__(reply.error)
        self.reply = reply


AUDIO_HEADERS = {"accept-ranges": "bytes", "content-type": "audio/wav", "content-disposition": "inline"}


@page("/audio/{ticket}", (MANAGER, STAFF))
async def audio(r: Req) -> Response:
    found = _ticket(r)
    if found is None:
        return r.error("rec.ticket_unknown", 403)
    ticket, size = r.request.path_params["ticket"], found.size
    wanted = parse_range(r.request.headers.get("range"), size)
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={**AUDIO_HEADERS, "content-range": f"bytes */{size}"})
    try:
        if not isinstance(wanted, tuple):  # no Range: the whole rendition, fetched and sent a part at a time
            first = await _fetch(r, ticket, 0, min(MAX_ANSWER, size))
            return StreamingResponse(_whole(r, ticket, size, first), status_code=200,
                                     headers={**AUDIO_HEADERS, "content-length": str(size)})
        start, end = wanted[0], min(wanted[1], wanted[0] + MAX_ANSWER - 1)
        body = await _fetch(r, ticket, start, end - start + 1)
    except AudioRefused as exc:
        return r.refused(exc.reply)
    if len(body) != end - start + 1:
        return r.error("error.internal", 502)
    return Response(body, status_code=206, headers={**AUDIO_HEADERS, "content-range": f"bytes {start}-{end}/{size}"})


async def _whole(r: Req, ticket: str, size: int, first: bytes) -> AsyncIterator[bytes]:
    yield first
    offset = len(first)
    while offset < size:
        part = await _fetch(r, ticket, offset, min(MAX_ANSWER, size - offset))
        if not part:
            raise RuntimeError("the daemon sent less of the rendition than its size")  # cuts the connection
        yield part
        offset += len(part)


@page("/waveform/{ticket}", (MANAGER, STAFF))
async def waveform(r: Req) -> Response:
    found = _ticket(r)
    if found is None:
        return JSONResponse({"error": r.t("rec.ticket_unknown")}, status_code=403)
    reply = await r.call("waveform", {"ticket": r.request.path_params["ticket"], "points": WAVEFORM_POINTS})
    if reply.rc != 0:
        return JSONResponse({"error": reply.error}, status_code=409)
    return JSONResponse(reply.data or {})


@page("/play-check/{ticket}", (MANAGER, STAFF))
async def play_check(r: Req) -> Response:
    found = _ticket(r)
    if found is None:
        return JSONResponse({"error": r.t("rec.ticket_unknown")}, status_code=403)
    reply = await r.call("play-check", {"ticket": r.request.path_params["ticket"]})
    if reply.rc not in (0, 1) or not isinstance(reply.data, dict):
        return JSONResponse({"error": reply.error}, status_code=409)
    state = reply.data.get("integrity")
    return JSONResponse({"state": state, "sha256": reply.data.get("sha256"),
                         "text": r.t(f"rec.integrity.{state}") if state in ("checking", "checked", "failed") else ""})
