"""The audit log's names in words: actions, ways in, purposes and legal bases, results, and a row's
detail as a short summary (the audit page, the recording's access history, the period report).

One message per name; a name the console does not know is shown as it is (never a message key).
"""
from __future__ import annotations

import json
from typing import Any

from . import i18n

FIRST_IDS = 3  # recording ids a summary shows before "+N more"
MAX_TEXT = 80  # characters of one value in a summary

ACTIONS: dict[str, tuple[str, str]] = {
    "show": ("閲覧", "viewed"),
    "play": ("再生", "played"),
    "play-audio": ("再生（音声）", "playback (audio)"),
    "play-check": ("再生（完全性の確認）", "playback (integrity check)"),
    "waveform": ("波形の表示", "waveform shown"),
    "export": ("持出し", "exported"),
    "provide": ("提供", "provided"),
    "hold": ("保全", "held"),
    "release": ("保全の解除", "hold released"),
    "export-request": ("持出し申請", "export requested"),
    "export-requests": ("持出し申請の一覧", "export requests listed"),
    "export-decide": ("持出し申請の判断", "export request decided"),
    "find": ("検索", "searched"),
    "search": ("検索（全件）", "searched (every match)"),
    "list": ("一覧", "listed"),
    "copies-list": ("複製の一覧", "copies listed"),
    "copies-destroyed": ("複製の廃棄の確認", "copy's destruction confirmed"),
    "audit-show": ("監査ログの閲覧", "audit log viewed"),
    "audit-export": ("監査ログの書き出し", "audit log exported"),
    "audit-verify": ("監査ログの改ざん検査", "audit log verified"),
    "audit-prune": ("監査ログの整理", "audit log pruned"),
    "audit-migrated": ("監査ログの形式の更新", "audit log format upgraded"),
    "audit-rekeyed": ("監査ログの鍵の更新", "audit log re-keyed"),
    "console-signin": ("画面へのサインイン", "console sign-in"),
    "console-signout": ("画面からのサインアウト", "console sign-out"),
    "complaint-new": ("苦情の受付", "complaint received"),
    "complaint-close": ("苦情の終了", "complaint closed"),
    "complaint-list": ("苦情の一覧", "complaints listed"),
    "disclosure-open": ("開示請求の受付", "disclosure request opened"),
    "disclosure-search": ("開示請求の録音の検索", "searched for a disclosure request"),
    "disclosure-check": ("開示請求の本人確認", "disclosure requester checked"),
    "disclosure-decide": ("開示請求の決定", "disclosure request decided"),
    "disclosure-release": ("開示請求の保全の解除", "disclosure request's holds released"),
    "disclosure-show": ("開示請求の閲覧", "disclosure request viewed"),
    "disclosure-list": ("開示請求の一覧", "disclosure requests listed"),
    "incident-new": ("事故の記録", "incident recorded"),
    "incident-action": ("事故への措置の記録", "incident action recorded"),
    "incident-list": ("事故の一覧", "incidents listed"),
    "incident-report": ("事故の報告書", "incident report"),
    "report": ("期間報告", "period report"),
    "status": ("稼働状況の表示", "status shown"),
    "notice": ("公表文の表示", "notice shown"),
    "verify": ("録音の完全性の検査", "recordings verified"),
    "pubkey": ("署名用公開鍵の表示", "signing key shown"),
    "signing-key-created": ("署名鍵の作成", "signing key created"),
    "index-migrated": ("索引の形式の更新", "index upgraded"),
    "init": ("保存領域の初期化", "store initialised"),
    "retention-run": ("保存期間による消去", "retention run"),
    "retention-confirm-clock": ("時計の確認（保存期間）", "clock confirmed for retention"),
    "decommission": ("装置の廃棄", "decommissioned"),
}

i18n.add({f"action.{name}": words for name, words in ACTIONS.items()})
i18n.add({
    "via.console": ("画面", "console"),
    "via.socket": ("コマンド", "recorderctl"),
    "via.direct": ("コマンド（直接）", "recorderctl (direct)"),
    "purpose.quality": ("応対品質の向上", "Quality of response"),
    "purpose.suspicious_call": ("不審な電話への対応", "Suspicious call"),
    "basis.law": ("法令に基づく場合（第69条第1項）", "Based on laws and regulations (Art. 69(1))"),
    "basis.consent": ("本人の同意がある場合（第69条第2項第1号）", "With the person's consent (Art. 69(2)(i))"),
    "basis.to-subject": ("本人に提供する場合（第69条第2項第1号）", "To the person themself (Art. 69(2)(i))"),
    "basis.internal": ("所掌事務の遂行に必要な内部利用（第69条第2項第2号）", "Internal use for the organ's duties (Art. 69(2)(ii))"),
    "basis.public-body": ("他の行政機関等への提供（第69条第2項第3号）", "To another public body for its duties (Art. 69(2)(iii))"),
    "basis.statistics": ("統計・学術研究（第69条第2項第4号）", "Statistics or academic research (Art. 69(2)(iv))"),
    "basis.clear-benefit": ("明らかに本人の利益になる場合（第69条第2項第4号）", "Clearly in the person's interest (Art. 69(2)(iv))"),
    "basis.special-reason": ("その他特別の理由（第69条第2項第4号）", "Other special reason (Art. 69(2)(iv))"),
    "result.allowed": ("許可", "allowed"),
    "result.denied": ("拒否", "refused"),
    "result.failed": ("失敗", "failed"),
    "detail.purpose": ("目的", "purpose"),
    "detail.basis": ("根拠", "basis"),
    "detail.filters": ("条件", "filters"),
    "detail.no_filter": ("なし", "none"),
    "detail.count": ("{n} 件", "{n} found"),
    "detail.recordings": ("録音", "recordings"),
    "detail.more": ("ほか {n} 件", "+{n} more"),
    "detail.client_ip": ("接続元", "from"),
    "detail.full": ("すべての詳細（JSON）", "Full detail (JSON)"),
    "detail.key.request": ("申請番号", "request"),
    "detail.key.reason": ("理由", "reason"),
    "detail.key.incident": ("事故番号", "incident"),
    "detail.key.complaint": ("苦情番号", "complaint"),
    "detail.key.copy": ("複製番号", "copy"),
    "detail.key.hold": ("保全番号", "hold"),
    "detail.key.hold_id": ("保全番号", "hold"),
    "detail.key.provision": ("提供番号", "provision"),
    "detail.key.until": ("期限", "until"),
    "detail.key.decision": ("決定", "decision"),
    "detail.key.kind": ("種類", "kind"),
    "detail.key.format": ("形式", "format"),
    "detail.key.out": ("出力先", "output"),
    "detail.key.rows": ("行数", "rows"),
    "detail.key.period": ("期間", "period"),
    "detail.key.recipient": ("提供先", "recipient"),
    "detail.key.approved_by": ("承認者", "approved by"),
    "detail.key.expires": ("廃棄期限", "expires"),
    "detail.key.note": ("備考", "note"),
    "filter.from": ("期間（から）", "from"),
    "filter.to": ("期間（まで）", "to"),
    "filter.did": ("着信番号", "number called"),
    "filter.caller": ("発信者番号", "caller's number"),
    "filter.min_duration": ("通話時間（以上）", "min. duration"),
    "filter.max_duration": ("通話時間（以下）", "max. duration"),
    "filter.state": ("状態", "state"),
    "filter.on_hold": ("保全中", "on hold"),
    "filter.caller.exact": ("完全一致", "exact"),
    "filter.caller.last digits": ("下桁", "last digits"),
})

# Keys a summary says in its own way (or not at all: they have their own column or are paging).
_SAID = ("purpose", "basis", "filters", "count", "recordings", "client_ip", "via", "role", "roles", "page", "page_size", "masked")


def word(lang: str, prefix: str, value: Any) -> str:
    """The message ``prefix.value`` in ``lang``, or the value as it is when there is none."""
    key = f"{prefix}.{value}"
    return i18n.t(key, lang) if key in i18n.MESSAGES else ("" if value is None else str(value))


def action(lang: str, name: Any) -> str:
    return word(lang, "action", name)


def reason(lang: str, value: Any) -> str:
    """A purpose or a legal basis in words (a request's own purpose, free text, as written)."""
    key = f"basis.{value}"
    return i18n.t(key, lang) if key in i18n.MESSAGES else word(lang, "purpose", value)


def result(lang: str, text: Any) -> str:
    """``allowed`` / ``denied: why`` / ``failed: why`` with the outcome in words (the why as the daemon said it)."""
    outcome, sep, why = str(text or "").partition(":")
    return word(lang, "result", outcome) + (sep + why if sep else "")


def access(lang: str, key: str) -> str:
    """A key of the report's accesses by purpose (``export: quality``, ``provide: law``, ``list``)."""
    name, sep, why = key.partition(": ")
    return action(lang, name) + ("：" if lang == "ja" else ": ") + reason(lang, why) if sep else action(lang, name)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _ids(lang: str, ids: list[Any]) -> str:
    shown = ", ".join(_short(i) for i in ids[:FIRST_IDS])
    return shown + (" " + i18n.t("detail.more", lang, n=len(ids) - FIRST_IDS) if len(ids) > FIRST_IDS else "")


def summary(lang: str, detail: Any) -> str:
    """A row's detail in a line or two: purpose or basis, the filters as their kinds, the count, the
    first few recording ids and the other values shortened (the full JSON is beside it)."""
    if not isinstance(detail, dict):
        return ""
    sep = "、" if lang == "ja" else ", "
    colon = "：" if lang == "ja" else ": "
    parts = []
    for key in ("purpose", "basis"):
        if detail.get(key) not in (None, ""):
            parts.append(i18n.t(f"detail.{key}", lang) + colon + _short(reason(lang, detail[key])))
    filters = detail.get("filters")
    if isinstance(filters, dict):
        kind = "（{}）" if lang == "ja" else " ({})"
        kinds = [word(lang, "filter", k) + (kind.format(word(lang, "filter.caller", v)) if k == "caller" else "") for k, v in filters.items()]
        parts.append(i18n.t("detail.filters", lang) + colon + (("・" if lang == "ja" else " / ").join(kinds) or i18n.t("detail.no_filter", lang)))
    if isinstance(detail.get("count"), int):
        parts.append(i18n.t("detail.count", lang, n=detail["count"]))
    if isinstance(detail.get("recordings"), list) and detail["recordings"]:
        parts.append(i18n.t("detail.recordings", lang) + colon + _ids(lang, detail["recordings"]))
    for key, value in detail.items():
        if key in _SAID or value in (None, "", [], {}):
            continue
        parts.append(word(lang, "detail.key", key) + colon + (_ids(lang, value) if isinstance(value, list) else _short(value)))
    if detail.get("client_ip"):
        parts.append(i18n.t("detail.client_ip", lang) + colon + _short(detail["client_ip"]))
    return sep.join(parts)


def full(detail: Any) -> str:
    """The detail as JSON (without the role and the way in: they have their own columns), a list of
    plain values on one line (a search's fifty recording ids: one line, not fifty)."""
    if not isinstance(detail, dict):
        return ""
    return _json({k: v for k, v in detail.items() if k not in ("role", "via", "roles")}, "")


def _json(value: Any, indent: str) -> str:
    """``json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1)``, but a list holding no
    list or object written on one line, its items separated by ", "."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "{\n" + ",\n".join(f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_json(v, inner)}"
                                   for k, v in items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + _json(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)
