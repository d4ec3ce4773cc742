"""Copies of recordings: export as a download (Art. 5(5)), the four-eyes export requests for any
other purpose, provide to an outside party under APPI Art. 69 (Art. 5(6)), and the copies made.

An export or provision is one ZIP download (:mod:`console.download`): the WAV as ``recorderctl
export`` writes it, its signed manifest and the signature. A purpose other than quality or
suspicious_call is never exported at once: it becomes a request, a manager other than the requester
approves or refuses it, and the requester then downloads it once. A recording kept in parts (a
transfer, a codec change mid-call) can be downloaded whole: one ZIP with every part's WAV, manifest
and signature (``export --conversation``, each part its own registered copy; ``provide
--conversation`` likewise, each part its own provision).
"""
from __future__ import annotations

import re

from starlette.responses import Response

from .. import i18n
from ..download import zip_download
from ..web import MANAGER, STAFF, Req, page

PURPOSES = ("quality", "suspicious_call")  # exported at once (the daemon says so too)
FORMATS = ("wav", "pcm")
BASES = ("law", "consent", "to-subject", "internal", "public-body", "statistics", "clear-benefit", "special-reason")
RECORDING_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,99}")
MAX_PARTS = 50  # parts of one conversation in one download

i18n.add({
    "copies.requests": ("持出し申請", "Export requests"),
    "copies.copies": ("作成された複製", "Copies made"),
    "copies.none": ("ありません。", "None."),
    "copies.request": ("申請番号", "Request"),
    "copies.recording": ("録音", "Recording"),
    "copies.purpose": ("目的", "Purpose"),
    "copies.reason": ("理由", "Reason"),
    "copies.requested_by": ("申請者", "Requested by"),
    "copies.requested_at": ("申請日時", "Requested at"),
    "copies.state": ("状態", "State"),
    "copies.decision": ("判断", "Decision"),
    "copies.decide_reason": ("判断の理由", "Reason for the decision"),
    "copies.approve": ("承認する", "Approve"),
    "copies.refuse": ("却下する", "Refuse"),
    "copies.own": ("自分の申請は判断できません（他の管理責任者が判断します）。",
                   "You cannot decide your own request (another manager does)."),
    "copies.download": ("ダウンロード（1回限り）", "Download (once)"),
    "copies.state.pending": ("判断待ち", "Waiting for a manager"),
    "copies.state.approved": ("承認済み（未ダウンロード）", "Approved (not downloaded yet)"),
    "copies.state.refused": ("却下", "Refused"),
    "copies.state.used": ("ダウンロード済み", "Downloaded"),
    "copies.state.exporting": ("ダウンロード中", "Being downloaded"),
    "copies.copy": ("複製番号", "Copy"),
    "copies.kind": ("種別", "Kind"),
    "copies.kind.export": ("持出し", "Export"),
    "copies.kind.provision": ("提供", "Provision"),
    "copies.user": ("作成者", "Made by"),
    "copies.made_at": ("作成日時", "Made at"),
    "copies.expires_at": ("廃棄期限", "To be destroyed by"),
    "copies.approved_by": ("承認者", "Approved by"),
    "copies.copy_state.kept": ("保持中", "Kept"),
    "copies.copy_state.expired": ("期限切れ（廃棄の確認待ち）", "Expired (destruction not yet confirmed)"),
    "copies.copy_state.destroyed": ("廃棄済み", "Destroyed"),
    "copies.purpose.quality": ("応対品質の向上", "Quality of response"),
    "copies.purpose.suspicious_call": ("不審な電話への対応", "Suspicious call"),
    "copies.bad_purpose": ("この目的では直ちに持ち出せません。目的と理由を書いて持出し申請をしてください（管理責任者の承認が必要です）。",
                           "This purpose cannot be exported at once: file an export request with the purpose and "
                           "a reason (a manager must approve it)."),
    "copies.bad_form": ("入力内容が正しくありません。", "The form is not filled in correctly."),
    "copies.requested": ("持出し申請 {n} を受け付けました。管理責任者の判断を待ってください。",
                         "Export request {n} is filed: wait for a manager's decision."),
    "copies.approved": ("持出し申請 {n} を承認しました。申請者が1回だけダウンロードできます。",
                        "Export request {n} is approved: the requester may download it once."),
    "copies.refused": ("持出し申請 {n} を却下しました。", "Export request {n} is refused."),
    "copies.back_requests": ("持出し申請の一覧へ", "Back to the export requests"),
    "copies.back_recording": ("録音へ戻る", "Back to the recording"),
    "copies.done": ("完了", "Done"),
})


def recording_id(r: Req) -> str | None:
    rid = r.request.path_params.get("id", "")
    return rid if RECORDING_ID.fullmatch(rid) else None


def number(r: Req, key: str) -> int | None:
    text = str(r.request.path_params.get(key, ""))
    return int(text) if text.isdigit() and len(text) < 10 else None


CONSOLE_FOLDER = "console-download"


def out_for(rid: str, fmt: str) -> str:
    """The copy's name as the daemon registers it: a relative name (where the browser saved it is
    not known here), which the retention run leaves to its holder to destroy and confirm (the
    daemon names a conversation's parts in the folder the same way)."""
    return f"{CONSOLE_FOLDER}/{rid}.wav" if fmt in ("wav", "pcm") else f"{CONSOLE_FOLDER}/{rid}.pcap"


def done(r: Req, message: str, *, back: str, back_label: str) -> Response:
    return r.render("copies.html", view="done", message=message, back=back, back_label=r.t(back_label))


def _parts(r: Req, rid: str) -> list[str] | None:
    """The parts of the conversation the form names (as the recording page listed them), or None."""
    parts = [p.strip() for p in r.form.get("parts", "").split(",")[: MAX_PARTS + 1] if p.strip()]
    if not parts or len(parts) > MAX_PARTS or rid not in parts or not all(RECORDING_ID.fullmatch(p) for p in parts):
        return None
    return parts


@page("/recordings/{id}/export", (MANAGER, STAFF), ("POST",))
async def export(r: Req) -> Response:
    rid, purpose, fmt = recording_id(r), r.form.get("purpose", ""), r.form.get("format") or "wav"
    if rid is None or fmt not in FORMATS:
        return r.error("copies.bad_form", 400)
    if purpose not in PURPOSES:
        return r.error("copies.bad_purpose", 400)
    if r.form.get("conversation") == "1":  # every part, as the page listed them (the daemon checks the list)
        parts = _parts(r, rid)
        if parts is None:
            return r.error("copies.bad_form", 400)
        copies = {out_for(p, fmt): f"{p}.wav" for p in parts}
        return await zip_download(r, "export", {"id": rid, "purpose": purpose, "format": fmt, "conversation": True,
                                                "parts": parts}, out=CONSOLE_FOLDER, name=f"{rid}.conversation",
                                  copies=copies)
    return await zip_download(r, "export", {"id": rid, "purpose": purpose, "format": fmt}, out=out_for(rid, fmt),
                              name=f"{rid}.wav")


@page("/recordings/{id}/request", (MANAGER, STAFF), ("POST",))
async def request_export(r: Req) -> Response:
    rid, purpose, reason = recording_id(r), r.form.get("purpose", "").strip(), r.form.get("reason", "").strip()
    if rid is None or not purpose or not reason or len(purpose) > 100 or len(reason) > 1000:
        return r.error("copies.bad_form", 400)
    reply = await r.call("export-request", {"id": rid, "purpose": purpose, "reason": reason})
    if reply.rc != 0:
        return r.refused(reply)
    n = (reply.data or {}).get("id")
    return done(r, r.t("copies.requested", n=n), back="/requests", back_label="copies.back_requests")


@page("/requests", (MANAGER, STAFF))
async def requests(r: Req) -> Response:
    reply = await r.call("export-requests")
    if reply.rc != 0:
        return r.refused(reply)
    return r.render("copies.html", view="requests", rows=_requests(reply.data),
                    manager=r.session is not None and r.session.has(MANAGER))


def _requests(data: object) -> list[dict]:
    rows = data.get("requests") if isinstance(data, dict) else None
    return [row for row in rows or [] if isinstance(row, dict)]


@page("/requests/{n}/decide", (MANAGER,), ("POST",))
async def decide(r: Req) -> Response:
    n, decision, reason = number(r, "n"), r.form.get("decision"), r.form.get("reason", "").strip()
    if n is None or decision not in ("approve", "refuse") or not reason or len(reason) > 1000:
        return r.error("copies.bad_form", 400)
    reply = await r.call("export-decide", {"request": n, decision: True, "reason": reason})
    if reply.rc != 0:
        return r.refused(reply)
    return done(r, r.t(f"copies.{decision}d", n=n), back="/requests", back_label="copies.back_requests")


@page("/requests/{n}/download", (MANAGER, STAFF), ("POST",))
async def download(r: Req) -> Response:
    """The approved request's one download: the daemon checks it is the requester's, approved and
    not yet downloaded, and uses the request's recording and purpose. A POST with the CSRF token
    (a button): a GET would be used up by any <img> of another site (SameSite ignores ports)."""
    n = number(r, "n")
    if n is None:
        return r.error("copies.bad_form", 400)
    reply = await r.call("export-requests")
    if reply.rc != 0:
        return r.refused(reply)
    row = next((x for x in _requests(reply.data) if x.get("id") == n), None)
    rid = row.get("recording_id") if row else None
    if not isinstance(rid, str) or not RECORDING_ID.fullmatch(rid):
        rid = f"request-{n}"  # the daemon refuses it anyway: not theirs, or no such request
    return await zip_download(r, "export", {"request": n}, out=out_for(rid, "wav"), name=f"{rid}.wav")


@page("/recordings/{id}/provide", (MANAGER,), ("POST",))
async def provide(r: Req) -> Response:
    rid, basis = recording_id(r), r.form.get("basis", "")
    recipient, note, fmt = r.form.get("to", "").strip(), r.form.get("note", "").strip(), r.form.get("format") or "wav"
    if rid is None or basis not in BASES or not recipient or len(recipient) > 300 or len(note) > 1000 or fmt not in FORMATS:
        return r.error("copies.bad_form", 400)
    if r.form.get("conversation") == "1":  # every part, each its own provision (the daemon checks the list)
        parts = _parts(r, rid)
        if parts is None:
            return r.error("copies.bad_form", 400)
        return await zip_download(r, "provide", {"id": rid, "basis": basis, "to": recipient, "note": note, "format": fmt,
                                                 "conversation": True, "parts": parts}, out=CONSOLE_FOLDER,
                                  name=f"{rid}.conversation", copies={out_for(p, fmt): f"{p}.wav" for p in parts})
    return await zip_download(r, "provide", {"id": rid, "basis": basis, "to": recipient, "note": note, "format": fmt},
                              out=out_for(rid, fmt), name=f"{rid}.wav")


@page("/copies", (MANAGER, STAFF))
async def copies(r: Req) -> Response:
    reply = await r.call("copies-list")
    if reply.rc != 0:
        return r.refused(reply)
    rows = [row for row in (reply.data or []) if isinstance(row, dict)]
    return r.render("copies.html", view="copies", rows=rows)
