"""The period report (Art. 6(3); manager, technician, auditor): what was recorded, not recorded,
accessed, copied, provided, held, erased late, and the casework of a period, as a page to print
(the print stylesheet drops the header, the navigation and the form)."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from starlette.responses import Response

from recorderd.counters import LABELS

from .. import i18n, labels
from ..web import AUDITOR, MANAGER, TECHNICIAN, Req, page

DEFAULT_DAYS = 7  # the period shown when none is asked for: the last seven days, today included

i18n.add({
    "report.title": ("期間報告", "Period report"),
    "report.subtitle": ("通話録音の運用状況（ガイドライン第6条第3項）", "How call recording was run (guideline Art. 6(3))"),
    "report.from": ("期間（から）", "From"),
    "report.to": ("期間（まで）", "To"),
    "report.show": ("表示", "Show"),
    "report.print": ("印刷にはブラウザーの印刷機能を使ってください。", "Use the browser's print command to print it."),
    "report.period": ("対象期間", "Period"),
    "report.default_period": ("（直近7日間。期間を指定して表示し直せます）", " (the last seven days: choose another period above)"),
    "report.generated": ("作成", "Generated"),
    "report.recorded": ("録音した通話（指定番号ごと）", "Calls recorded, per designated number"),
    "report.total": ("合計", "Total"),
    "report.not_recorded": ("録音しなかった通話", "Calls not recorded"),
    "report.capture": ("取込み", "Capture"),
    "report.unavailable": ("この期間の記録はありません（サービスのカウンターが保存されていません）。",
                           "Not available (no service counters kept for this period)."),
    "report.accesses": ("目的ごとの利用", "Accesses by purpose"),
    "report.denied": ("拒否された操作", "Refused attempts"),
    "report.exports": ("持出し", "Exports"),
    "report.with_approval": ("うち管理責任者の承認によるもの", "of which with a manager's approval"),
    "report.past_expiry": ("期限を過ぎて廃棄未確認の複製", "Copies past expiry, destruction not confirmed"),
    "report.provisions": ("外部への提供", "Provisions"),
    "report.holds": ("保全", "Holds"),
    "report.holds_counts": ("設定 {placed} 件、解除 {released} 件、現在有効 {now} 件",
                            "{placed} placed, {released} released, {now} in force now"),
    "report.erasures": ("消去", "Erasures"),
    "report.erasures_counts": ("期限どおり {on_time} 件、遅れ {late} 件", "{on_time} on time, {late} late"),
    "report.late": ("{id}（{label}）期限から {min} 分後に消去", "{id} ({label}): erased {min} min after its deadline"),
    "report.incidents": ("事故", "Incidents"),
    "report.incidents_counts": ("発生 {opened} 件（うち自動 {auto} 件）、対応中 {now} 件",
                                "{opened} opened ({auto} automatic), {now} open now"),
    "report.complaints": ("苦情", "Complaints"),
    "report.complaints_counts": ("受付 {received} 件、終了 {closed} 件、対応中 {now} 件",
                                 "{received} received, {closed} closed, {now} open now"),
    "report.disclosures": ("開示請求", "Disclosure requests"),
    "report.disclosures_counts": ("受付 {opened} 件", "{opened} opened"),
    "report.none": ("なし", "none"),
    "report.bad_period": ("期間を YYYY-MM-DD で指定してください（終わりは始まり以降）。",
                          "Give the period as YYYY-MM-DD (the end on or after the start)."),
})
i18n.add({f"report.key.{name}": words for name, words in LABELS.items()})  # recorderd/counters.py


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text and len(text) == 10 else None
    except ValueError:
        return None


@page("/report", (MANAGER, TECHNICIAN, AUDITOR))
async def report(r: Req) -> Response:
    """The last seven days ending today (Tokyo) unless a period is asked for (the query has dates
    only: nothing personal)."""
    today = datetime.now(r.app.tz).date()
    query = r.request.query_params
    default = not query.get("from") and not query.get("to")
    start = _day(query.get("from")) if query.get("from") else today - timedelta(days=DEFAULT_DAYS - 1)
    end = _day(query.get("to")) if query.get("to") else today
    if start is None or end is None or end < start or end - start > timedelta(days=3660):
        return r.render("report.html", status=400, error=r.t("report.bad_period"), start=query.get("from", "")[:10],
                        end=query.get("to", "")[:10], d=None)
    reply = await r.call("report", {"from": start.isoformat(), "to": end.isoformat()})
    if reply.rc != 0:
        return r.refused(reply)
    return r.render("report.html", d=reply.data or {}, start=start.isoformat(), end=end.isoformat(), default=default,
                    label=lambda key: labels.word(r.lang, "report.key", key), action=lambda name: labels.action(r.lang, name),
                    access=lambda key: labels.access(r.lang, key), reason=lambda key: labels.reason(r.lang, key),
                    outcome=lambda text: labels.result(r.lang, text))
