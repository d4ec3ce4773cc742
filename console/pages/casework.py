"""Casework as forms and lists: disclosure requests (Art. 10) and incidents (Art. 7), the manager's;
complaints (Art. 8), the manager's and the staff's. The workflows are the daemon's
(recorderd/ops/casework.py): open -> search (the caller's recordings held at once) -> identity check
-> decide -> release for a disclosure; new -> actions -> close for an incident; new -> close for a
complaint. Every result is shown in words; every refusal is the daemon's own.

The caller's number a disclosure search needs is posted (never in a URL: the access log never has
it) and goes to the daemon only; the page shows the recordings found by id and DID label.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from starlette.responses import Response

from .. import i18n
from ..web import MANAGER, STAFF, Req, page
from .copies import number

REQUESTERS = ("self", "legal-representative", "appointed-agent")
IDENTITY_DOCUMENTS = ("my-number-card", "driving-licence", "passport", "residence-card", "health-insurance-card",
                      "other-photo-id", "other-document")
AUTHORITY_DOCUMENTS = ("power-of-attorney", "family-register", "guardianship-registration")
DECISIONS = ("disclose", "partial", "refuse", "no-record")
INCIDENT_KINDS = ("leak", "theft", "loss", "other")
CHANNELS = ("phone", "letter", "email", "counter", "web", "other")

i18n.add({
    "casework.title": ("開示請求・事故・苦情", "Disclosures, incidents, complaints"),
    "casework.disclosures": ("開示請求（第10条）", "Disclosure requests (Art. 10)"),
    "casework.incidents": ("事故（第7条）", "Incidents (Art. 7)"),
    "casework.complaints": ("苦情（第8条）", "Complaints (Art. 8)"),
    "casework.none": ("ありません。", "None."),
    "casework.no": ("番号", "No."),
    "casework.state": ("状態", "State"),
    "casework.state.open": ("対応中", "Open"),
    "casework.state.decided": ("決定済み", "Decided"),
    "casework.state.closed": ("終了", "Closed"),
    "casework.opened": ("受付", "Opened"),
    "casework.by": ("担当", "By"),
    "casework.ref": ("受付番号", "Reference"),
    "casework.note": ("備考", "Note"),
    "casework.open": ("開示請求を受け付ける", "Open a disclosure request"),
    "casework.requester_type": ("請求者", "Requester"),
    "casework.requester.self": ("本人", "The person"),
    "casework.requester.legal-representative": ("法定代理人", "Legal representative"),
    "casework.requester.appointed-agent": ("任意代理人", "Appointed agent"),
    "casework.show": ("詳細", "Details"),
    "casework.submit": ("登録する", "Record"),
    "casework.search": ("録音を探して保全する", "Find the recordings and hold them"),
    "casework.caller": ("請求者の電話番号", "The requester's phone number"),
    "casework.from": ("期間（から）", "From"),
    "casework.to": ("期間（まで）", "To"),
    "casework.hold_until": ("保全の終了日（省略時 30 日後）", "Hold until (default: 30 days)"),
    "casework.candidates": ("該当する録音", "Recordings found"),
    "casework.hold": ("保全番号", "Hold"),
    "casework.released": ("解除済み", "released"),
    "casework.check": ("本人確認を記録する", "Record an identity check"),
    "casework.checks": ("本人確認", "Identity checks"),
    "casework.document": ("確認書類", "Document"),
    "casework.checked_by": ("確認者", "Checked by"),
    "casework.checked_on": ("確認日", "Checked on"),
    "casework.matched_with": ("照合した内容", "Matched with"),
    "casework.document.my-number-card": ("マイナンバーカード", "My Number card"),
    "casework.document.driving-licence": ("運転免許証", "Driving licence"),
    "casework.document.passport": ("旅券", "Passport"),
    "casework.document.residence-card": ("在留カード", "Residence card"),
    "casework.document.health-insurance-card": ("健康保険証", "Health insurance card"),
    "casework.document.other-photo-id": ("その他の写真付き証明書", "Other photo ID"),
    "casework.document.other-document": ("その他の書類", "Other document"),
    "casework.document.power-of-attorney": ("委任状", "Power of attorney"),
    "casework.document.family-register": ("戸籍謄本", "Family register"),
    "casework.document.guardianship-registration": ("後見登記事項証明書", "Guardianship registration"),
    "casework.decide": ("決定を記録する", "Record the decision"),
    "casework.decision": ("決定", "Decision"),
    "casework.decision.disclose": ("開示", "Disclose"),
    "casework.decision.partial": ("一部開示", "Disclose in part"),
    "casework.decision.refuse": ("不開示", "Refuse"),
    "casework.decision.no-record": ("該当する録音なし", "No such recording"),
    "casework.reason": ("理由", "Reason"),
    "casework.release": ("保全を解除して終了する", "Release the holds and close"),
    "casework.new_incident": ("事故を記録する", "Record an incident"),
    "casework.kind": ("種類", "Kind"),
    "casework.kind.leak": ("漏えい", "Leak"),
    "casework.kind.theft": ("盗難", "Theft"),
    "casework.kind.loss": ("紛失", "Loss"),
    "casework.kind.other": ("その他", "Other"),
    "casework.summary": ("概要", "Summary"),
    "casework.recordings": ("関係する録音（ID をカンマ区切り）", "Recordings concerned (ids, separated by commas)"),
    "casework.occurred": ("発生日時（省略時 現在）", "Occurred (default: now)"),
    "casework.action": ("講じた措置", "Action taken"),
    "casework.actions": ("措置", "Actions"),
    "casework.automatic": ("（完全性検査で自動作成）", "(opened automatically by an integrity check)"),
    "casework.close": ("終了する", "and close it"),
    "casework.add_action": ("措置を記録する", "Record an action"),
    "casework.report": ("報告書（局長・部長あて）", "Report (to the director and the bureau chief)"),
    "casework.new_complaint": ("苦情を記録する", "Record a complaint"),
    "casework.channel": ("受付方法", "Received by"),
    "casework.channel.phone": ("電話", "Phone"),
    "casework.channel.letter": ("手紙", "Letter"),
    "casework.channel.email": ("電子メール", "Email"),
    "casework.channel.counter": ("窓口", "Counter"),
    "casework.channel.web": ("ウェブ", "Web"),
    "casework.channel.other": ("その他", "Other"),
    "casework.received": ("受付日時（省略時 現在）", "Received (default: now)"),
    "casework.outcome": ("対応結果", "Outcome"),
    "casework.close_complaint": ("対応結果を記録して終了する", "Record the outcome and close"),
    "casework.bad_form": ("入力内容が正しくありません。必須の項目を確かめてください。",
                          "The form is not filled in correctly: check the required fields."),
    "casework.done.opened": ("開示請求 {n} を受け付けました。", "Disclosure request {n} is opened."),
    "casework.done.searched": ("開示請求 {n}: 該当する録音 {count} 件を {until} まで保全しました。",
                               "Disclosure request {n}: {count} recording(s) found and held until {until}."),
    "casework.done.checked": ("開示請求 {n} に本人確認を記録しました。", "Identity check recorded for disclosure request {n}."),
    "casework.done.decided": ("開示請求 {n} の決定を記録しました: {decision}", "Disclosure request {n}: decision recorded: {decision}"),
    "casework.done.released": ("開示請求 {n} を終了し、保全 {count} 件を解除しました。",
                               "Disclosure request {n} is closed; {count} hold(s) released."),
    "casework.done.incident": ("事故 {n} を記録しました。", "Incident {n} is recorded."),
    "casework.done.action": ("事故 {n} に措置を記録しました。", "Action recorded for incident {n}."),
    "casework.done.action_closed": ("事故 {n} に措置を記録し、終了しました。", "Action recorded for incident {n}; it is closed."),
    "casework.done.complaint": ("苦情 {n} を記録しました。", "Complaint {n} is recorded."),
    "casework.done.complaint_closed": ("苦情 {n} を終了しました。", "Complaint {n} is closed."),
    "casework.back": ("一覧へ戻る", "Back to the list"),
    "casework.back_request": ("開示請求へ戻る", "Back to the request"),
    "casework.back_incident": ("事故へ戻る", "Back to the incident"),
})


def _form(r: Req, *keys: str, limit: int = 4000) -> dict[str, str] | None:
    """The posted fields, stripped; None when one of them is too long."""
    values = {k: r.form.get(k, "").strip() for k in keys}
    return None if any(len(v) > limit for v in values.values()) else values


def _date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _when(text: str) -> bool:
    """A date (YYYY-MM-DD) or a date and time (the datetime-local field's YYYY-MM-DDTHH:MM)."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _done(r: Req, message: str, back: str, back_label: str) -> Response:
    return r.render("casework.html", view="done", message=message, back=back, back_label=r.t(back_label))


async def _answer(r: Req, action: str, args: Mapping[str, object]):
    reply = await r.call(action, dict(args))
    return reply, (r.refused(reply) if reply.rc != 0 else None)


# -- the manager's overview --------------------------------------------------------------------------


@page("/casework", (MANAGER,))
async def casework(r: Req) -> Response:
    disclosures, refused = await _answer(r, "disclosure-list", {})
    if refused:
        return refused
    incidents, refused = await _answer(r, "incident-list", {})
    if refused:
        return refused
    return r.render("casework.html", view="overview", disclosures=list(reversed(disclosures.data or [])),
                    incidents=list(reversed(incidents.data or [])), requesters=REQUESTERS, kinds=INCIDENT_KINDS)


# -- disclosure requests -----------------------------------------------------------------------------


@page("/disclosures", (MANAGER,), ("POST",))
async def disclosure_open(r: Req) -> Response:
    f = _form(r, "requester_type", "ref", "note")
    if f is None or f["requester_type"] not in REQUESTERS or not f["ref"] or len(f["ref"]) > 200:
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "disclosure-open", f)
    if refused:
        return refused
    n = (reply.data or {}).get("request")
    return _done(r, r.t("casework.done.opened", n=n), f"/disclosures/{n}", "casework.back_request")


@page("/disclosures/{n}", (MANAGER,))
async def disclosure_show(r: Req) -> Response:
    n = number(r, "n")
    if n is None:
        return r.error("error.notfound", 404)
    reply, refused = await _answer(r, "disclosure-show", {"request": n})
    if refused:
        return refused
    return r.render("casework.html", view="disclosure", d=reply.data or {}, documents=IDENTITY_DOCUMENTS + AUTHORITY_DOCUMENTS,
                    decisions=DECISIONS)


@page("/disclosures/{n}/search", (MANAGER,), ("POST",))
async def disclosure_search(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "caller", "from", "to", "hold_until", limit=40)
    if n is None or f is None or not f["caller"] or not _when(f["from"]) or not _when(f["to"]) or (
            f["hold_until"] and not _date(f["hold_until"])):
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "disclosure-search", {"request": n, **{k: v for k, v in f.items() if v}})
    if refused:
        return refused
    data = reply.data or {}
    message = r.t("casework.done.searched", n=n, count=len(data.get("candidates") or []),
                  until=r.time(data.get("held_until"), seconds=False))
    return r.render("casework.html", view="done", message=message, candidates=data.get("candidates") or [],
                    back=f"/disclosures/{n}", back_label=r.t("casework.back_request"))


@page("/disclosures/{n}/check", (MANAGER,), ("POST",))
async def disclosure_check(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "document", "checked_by", "date", "matched_with", limit=300)
    if n is None or f is None or f["document"] not in IDENTITY_DOCUMENTS + AUTHORITY_DOCUMENTS or not f["checked_by"] \
            or not _date(f["date"]):
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "disclosure-check", {"request": n, **f})
    if refused:
        return refused
    return _done(r, r.t("casework.done.checked", n=n), f"/disclosures/{n}", "casework.back_request")


@page("/disclosures/{n}/decide", (MANAGER,), ("POST",))
async def disclosure_decide(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "decision", "reason", limit=1000)
    if n is None or f is None or f["decision"] not in DECISIONS or not f["reason"]:
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "disclosure-decide", {"request": n, **f})
    if refused:
        return refused
    message = r.t("casework.done.decided", n=n, decision=r.t("casework.decision." + f["decision"]))
    return _done(r, message, f"/disclosures/{n}", "casework.back_request")


@page("/disclosures/{n}/release", (MANAGER,), ("POST",))
async def disclosure_release(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "reason", limit=1000)
    if n is None or f is None or not f["reason"]:
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "disclosure-release", {"request": n, **f})
    if refused:
        return refused
    released = (reply.data or {}).get("released") or []
    return _done(r, r.t("casework.done.released", n=n, count=len(released)), f"/disclosures/{n}", "casework.back_request")


# -- incidents ---------------------------------------------------------------------------------------


@page("/incidents", (MANAGER,), ("POST",))
async def incident_new(r: Req) -> Response:
    f = _form(r, "kind", "summary", "recordings", "occurred", "action")
    if f is None or f["kind"] not in INCIDENT_KINDS or not f["summary"] or (f["occurred"] and not _when(f["occurred"])):
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "incident-new", {k: v for k, v in f.items() if v})
    if refused:
        return refused
    n = (reply.data or {}).get("incident")
    return _done(r, r.t("casework.done.incident", n=n), f"/incidents/{n}", "casework.back_incident")


@page("/incidents/{n}", (MANAGER,))
async def incident_show(r: Req) -> Response:
    n = number(r, "n")
    if n is None:
        return r.error("error.notfound", 404)
    reply, refused = await _answer(r, "incident-report", {"incident": n})
    if refused:
        return refused
    return r.render("casework.html", view="incident", i=reply.data or {}, report=reply.text)


@page("/incidents/{n}/action", (MANAGER,), ("POST",))
async def incident_action(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "text", "close")
    if n is None or f is None or not f["text"]:
        return r.error("casework.bad_form", 400)
    close = f["close"] == "1"
    reply, refused = await _answer(r, "incident-action", {"incident": n, "text": f["text"], "close": close})
    if refused:
        return refused
    return _done(r, r.t("casework.done.action_closed" if close else "casework.done.action", n=n), f"/incidents/{n}",
                 "casework.back_incident")


# -- complaints (manager and staff) ------------------------------------------------------------------


@page("/complaints", (MANAGER, STAFF))
async def complaints(r: Req) -> Response:
    reply, refused = await _answer(r, "complaint-list", {})
    if refused:
        return refused
    return r.render("casework.html", view="complaints", complaints=list(reversed(reply.data or [])), channels=CHANNELS)


@page("/complaints", (MANAGER, STAFF), ("POST",))
async def complaint_new(r: Req) -> Response:
    f = _form(r, "summary", "channel", "received", "recordings")
    if f is None or not f["summary"] or f["channel"] not in CHANNELS or (f["received"] and not _when(f["received"])):
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "complaint-new", {k: v for k, v in f.items() if v})
    if refused:
        return refused
    n = (reply.data or {}).get("complaint")
    return _done(r, r.t("casework.done.complaint", n=n), "/complaints", "casework.back")


@page("/complaints/{n}/close", (MANAGER, STAFF), ("POST",))
async def complaint_close(r: Req) -> Response:
    n, f = number(r, "n"), _form(r, "outcome")
    if n is None or f is None or not f["outcome"]:
        return r.error("casework.bad_form", 400)
    reply, refused = await _answer(r, "complaint-close", {"complaint": n, **f})
    if refused:
        return refused
    return _done(r, r.t("casework.done.complaint_closed", n=n), "/complaints", "casework.back")
