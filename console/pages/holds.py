"""Holds (Art. 5(2)): a manager keeps a recording past its erasure deadline, with a reason, a
reference and an end date, and releases it. The recording page (its holds and these two forms) is
W1's; the daemon checks the role again and audits both."""
from __future__ import annotations

from datetime import date

from starlette.responses import Response

from .. import i18n
from ..web import MANAGER, Req, page
from .copies import number, recording_id

i18n.add({
    "holds.placed": ("録音 {id} を {until} まで保全しました（保全番号 {hold}）。",
                     "Recording {id} is held until {until} (hold {hold})."),
    "holds.released": ("録音 {id} の保全 {hold} を解除しました。", "Hold {hold} on recording {id} is released."),
    "holds.bad_form": ("保全の入力内容が正しくありません（終了日は YYYY-MM-DD、理由と参照番号は必須）。",
                       "The hold form is not filled in correctly (end date YYYY-MM-DD; reason and reference required)."),
    "holds.bad_release": ("解除の理由を書いてください。", "Give the reason for the release."),
    "holds.title": ("保全", "Hold"),
})


@page("/recordings/{id}/hold", (MANAGER,), ("POST",))
async def hold(r: Req) -> Response:
    rid = recording_id(r)
    until, reason, ref = r.form.get("until", "").strip(), r.form.get("reason", "").strip(), r.form.get("ref", "").strip()
    try:
        date.fromisoformat(until)
    except ValueError:
        until = ""
    if rid is None or len(until) != 10 or not reason or not ref or len(reason) > 1000 or len(ref) > 200:
        return r.error("holds.bad_form", 400)
    reply = await r.call("hold", {"id": rid, "until": until, "reason": reason, "ref": ref})
    if reply.rc != 0:
        return r.refused(reply)
    data = reply.data or {}
    message = r.t("holds.placed", id=rid, until=r.time(data.get("until"), seconds=False), hold=data.get("hold_id"))
    return r.render("holds.html", message=message, rid=rid)


@page("/recordings/{id}/holds/{h}/release", (MANAGER,), ("POST",))
async def release(r: Req) -> Response:
    rid, h, reason = recording_id(r), number(r, "h"), r.form.get("reason", "").strip()
    if rid is None or h is None:
        return r.error("holds.bad_form", 400)
    if not reason or len(reason) > 1000:
        return r.error("holds.bad_release", 400)
    reply = await r.call("release", {"id": rid, "hold": h, "reason": reason})
    if reply.rc != 0:
        return r.refused(reply)
    return r.render("holds.html", message=r.t("holds.released", id=rid, hold=h), rid=rid)
