"""The audit log (manager, auditor): the rows, filtered (from/to, user, action, recording id) and
paginated newest first; ``verify`` with its result; the export as a download (CSV or the daemon's
JSON lines, which carry the chain's anchor and head for checking), streamed from the daemon's
``audit-export`` to the browser without touching the disk.
"""
from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response, StreamingResponse

from recorderd import client, wire

from .. import i18n, labels
from ..download import Download
from ..web import AUDITOR, MANAGER, Req, page

PAGE_SIZE = 100
MAX_PAGE = 100  # 10,000 rows back: further, narrow the period
FILTERS = ("from", "to", "user", "action", "recording")
EXPORT_OUT = "console/audit-export.jsonl"  # the name the daemon audits; nothing is written there
CSV_COLUMNS = ("seq", "at", "user", "uid", "action", "recording_id", "result", "detail", "prev_hash", "hash")

i18n.add({
    "audit.title": ("監査ログ", "Audit log"),
    "audit.from": ("期間（から）", "From"),
    "audit.to": ("期間（まで）", "To"),
    "audit.user": ("利用者", "User"),
    "audit.action": ("操作", "Action"),
    "audit.recording": ("録音ID", "Recording id"),
    "audit.filter": ("絞り込む", "Filter"),
    "audit.clear": ("条件をクリア", "Clear"),
    "audit.seq": ("番号", "No."),
    "audit.at": ("日時", "When"),
    "audit.role": ("役割", "Role"),
    "audit.via": ("経路", "Through"),
    "audit.detail": ("詳細", "Detail"),
    "audit.result": ("結果", "Result"),
    "audit.none": ("該当する記録はありません。", "No row matches."),
    "audit.count": ("{first}–{last} 件目（新しい順）", "rows {first}–{last} (newest first)"),
    "audit.verify": ("改ざん検査", "Verify the chain"),
    "audit.verify.button": ("検査する", "Verify"),
    "audit.verify.ok": ("監査ログは改ざんされていません（{rows} 件）。", "The audit log's chain holds ({rows} rows)."),
    "audit.verify.failed": ("監査ログに {count} 件の問題があります。インシデント {incident} を記録しました。",
                            "The audit log has {count} problem(s): incident {incident} is recorded."),
    "audit.export": ("書き出し", "Export"),
    "audit.export.csv": ("CSV で書き出す", "Export as CSV"),
    "audit.export.json": ("JSON で書き出す（検証用）", "Export as JSON (for checking)"),
    "audit.bad_page": ("ページ番号が正しくありません。", "That page number is not valid."),
    "audit.bad_format": ("形式は csv か json です。", "The format is csv or json."),
    "audit.prev": ("新しい記録へ", "Newer"),
    "audit.next": ("古い記録へ", "Older"),
})


def _filters(r: Req) -> dict[str, str]:
    return {k: v.strip()[:100] for k, v in r.request.query_params.items() if k in FILTERS and v.strip()}


async def _show(r: Req, **context: Any) -> Response:
    filters = _filters(r)
    text = r.request.query_params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        return r.error("audit.bad_page", 400)
    number = int(text)
    reply = await r.call("audit-show", {**filters, "limit": number * PAGE_SIZE + 1})
    if reply.rc != 0:
        return r.refused(reply)
    newest_first = [row for row in reversed(reply.data or []) if isinstance(row, dict)]
    rows = newest_first[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    more = len(newest_first) > number * PAGE_SIZE
    for row in rows:
        detail = row.get("detail")
        row["summary"], row["full_detail"] = labels.summary(r.lang, detail), labels.full(detail)
        row["via"] = labels.word(r.lang, "via", detail.get("via")) if isinstance(detail, dict) and detail.get("via") else ""
        row["action_words"], row["result_words"] = labels.action(r.lang, row.get("action")), labels.result(r.lang, row.get("result"))

    def link(n: int) -> str:
        return "/audit?" + urlencode({**filters, "page": n})

    first = (number - 1) * PAGE_SIZE + 1
    return r.render("audit.html", rows=rows, filters=filters,
                    count=r.t("audit.count", first=first, last=first + len(rows) - 1) if rows else None,
                    prev=link(number - 1) if number > 1 else None, next=link(number + 1) if more else None,
                    export_query=urlencode({k: v for k, v in filters.items() if k in ("from", "to")}),
                    **context)


@page("/audit", (MANAGER, AUDITOR))
async def audit(r: Req) -> Response:
    return await _show(r)


@page("/audit/verify", (MANAGER, AUDITOR), ("POST",))
async def verify(r: Req) -> Response:
    reply = await r.call("audit-verify")
    data = reply.data if isinstance(reply.data, dict) else {}
    if reply.rc == 0:
        result, ok = r.t("audit.verify.ok", rows=data.get("rows", 0)), True
    elif data.get("problems"):
        result, ok = r.t("audit.verify.failed", count=len(data["problems"]), incident=data.get("incident", "?")), False
    else:
        return r.refused(reply)
    return await _show(r, verify_result=result, verify_ok=ok, problems=[str(p) for p in data.get("problems") or ()][:100])


# -- export -----------------------------------------------------------------------------------------


def csv_line(row: dict[str, Any], tz: Any) -> str:
    out = io.StringIO()
    at = row.get("at")
    when = datetime.fromtimestamp(at, tz).isoformat(timespec="milliseconds") if isinstance(at, (int, float)) else at
    values = {**row, "at": when, "detail": json.dumps(row.get("detail"), ensure_ascii=False, sort_keys=True)}
    csv.writer(out, lineterminator="\r\n").writerow(["" if values.get(c) is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()


@page("/audit/export", (MANAGER, AUDITOR))
async def export(r: Req) -> Response:
    fmt = r.request.query_params.get("format", "csv")
    if fmt not in ("csv", "json"):
        return r.error("audit.bad_format", 400)
    filters = _filters(r)
    args = {k: filters[k] for k in ("from", "to") if k in filters} | {"out": EXPORT_OUT}
    download = Download()
    sinks = {EXPORT_OUT: download.sink(EXPORT_OUT)}
    daemon, user, ip = r.app.daemon, r.user, r.ip

    def converse() -> None:
        try:
            reply: Any = daemon.call_sync("audit-export", args, user=user, ip=ip, sinks=sinks)
        except client.Busy:
            reply = "error.busy"
        except (client.Unreachable, OSError, wire.WireError):
            reply = "error.daemon"
        try:
            download.put("reply", reply)
        except Exception:  # noqa: BLE001  (the browser went away: nothing to tell)
            pass

    threading.Thread(target=converse, name="console-audit-export", daemon=True).start()
    first = await download.next()
    if first[0] == "reply":
        download.gone.set()
        reply = first[1]
        if isinstance(reply, str):
            return r.error(reply, 503)
        return r.refused(reply) if reply.rc != 0 else r.error("error.internal", 500)
    stamp = datetime.now(r.app.tz).strftime("%Y%m%d-%H%M%S")
    name = f"audit-{stamp}.{'csv' if fmt == 'csv' else 'jsonl'}"
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(_body(download, first, fmt, r.app.tz), media_type=media,
                             headers={"content-disposition": f'attachment; filename="{name}"'})


async def _body(download: Download, event: tuple[Any, ...], fmt: str, tz: Any) -> AsyncIterator[bytes]:
    """The export as it arrives: JSON lines as the daemon wrote them, or each row as a CSV line."""
    pending = b""
    try:
        if fmt == "csv":
            yield ("\ufeff" + ",".join(CSV_COLUMNS) + "\r\n").encode()  # BOM: a spreadsheet reads it as UTF-8
        while True:
            kind = event[0]
            if kind == "data":
                if fmt == "json":
                    yield event[2]
                else:
                    pending += event[2]
                    *lines, pending = pending.split(b"\n")
                    text = "".join(csv_line(row, tz) for row in map(json.loads, filter(None, lines)) if "seq" in row)
                    if text:
                        yield text.encode()
            elif kind == "end":
                event[2].set()
            elif kind == "abort":
                raise RuntimeError("the daemon abandoned the audit export")
            elif kind == "reply":
                reply = event[1]
                if isinstance(reply, str) or reply.rc != 0:
                    raise RuntimeError("the daemon did not complete the audit export")
                return
            event = await download.next()
    finally:
        download.gone.set()
