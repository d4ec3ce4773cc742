"""Search (manager, staff; a technician sees masked numbers and has no caller filter): the daemon's
``find``, newest first, 50 to a page.

The query is in the URL (a GET: the browser's back button and a bookmark work); the console's
access log never writes the query string, and the daemon audits a caller filter as its kind only.
A technician is never offered the caller field; one typed into the URL goes to the daemon, which
refuses it (and audits the refusal).
"""
from __future__ import annotations

import re
import time
import unicodedata
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from .. import i18n
from ..web import MANAGER, STAFF, TECHNICIAN, Req, page

PAGE_SIZE = 50
STATES = ("complete", "incomplete")
FIELDS = ("from", "to", "did", "caller", "match", "min_duration", "max_duration", "state", "on_hold")

i18n.add({
    "search.title": ("録音の検索", "Find a recording"),
    "search.from": ("開始日時（から）", "Started from"),
    "search.to": ("開始日時（まで）", "Started before"),
    "search.did": ("着信番号", "Number called"),
    "search.any": ("すべて", "any"),
    "search.caller": ("発信者番号", "Caller's number"),
    "search.match.exact": ("番号全体", "whole number"),
    "search.match.ends": ("下4桁以上", "last digits (4 or more)"),
    "search.duration": ("通話時間（秒）", "Duration (seconds)"),
    "search.min": ("以上", "at least"),
    "search.max": ("以下", "at most"),
    "search.state": ("状態", "State"),
    "state.complete": ("完了", "complete"),
    "state.incomplete": ("不完全", "incomplete"),
    "search.on_hold": ("保管延長中のみ", "on hold only"),
    "search.submit": ("検索", "Search"),
    "search.clear": ("条件をクリア", "Clear"),
    "search.count": ("{total} 件中 {first}–{last} 件目", "{first}–{last} of {total}"),
    "search.none": ("該当する録音はありません。", "No recording matches."),
    "search.start": ("開始日時", "Started"),
    "search.duration_col": ("通話時間", "Duration"),
    "search.holds": ("保管延長", "Hold"),
    "search.held": ("延長中", "on hold"),
    "search.part": ("通話の一部", "Part"),
    "search.part.mark": ("{part}/{parts}", "{part}/{parts}"),
    "search.part.title": ("一つの会話の第{part}部分（全{parts}部分）", "part {part} of {parts} of one conversation"),
    "search.open": ("開く", "Open"),
    "search.prev": ("前へ", "Previous"),
    "search.next": ("次へ", "Next"),
    "search.masked": ("技術担当者には発信者番号の一部のみ表示されます。", "Technicians see caller numbers masked."),
    "search.bad_page": ("ページ番号が正しくありません。", "That page number is not valid."),
})


def find_args(query: dict[str, str], technician: bool) -> dict[str, Any]:
    """The ``find`` arguments for the form's fields (each bounded; the daemon checks them again)."""
    args: dict[str, Any] = {}
    for key in ("from", "to"):  # datetime-local (Tokyo): 2026-12-01T09:30
        value = query.get(key, "").strip()[:40]
        if value:
            args[key] = value
    did = query.get("did", "").strip()[:100]
    if did:
        args["did"] = did
    caller = unicodedata.normalize("NFKC", query.get("caller", "")).strip()[:40]  # ０９０ as typed on a JIS keyboard: 090
    if caller:  # a technician's goes to the daemon too, which refuses it on the record
        key = "caller_ends" if query.get("match") == "ends" else "caller"
        args[key] = re.sub(r"[\s\-‐−ー()]", "", caller) if key == "caller_ends" else caller
    for key in ("min_duration", "max_duration"):
        value = query.get(key, "").strip()
        if value:
            try:
                args[key] = max(0, min(int(float(value)), 10**7))
            except ValueError:
                args[key] = value[:20]  # the daemon says what is wrong with it
    state = query.get("state", "")
    if state in STATES:
        args["state"] = state
    if query.get("on_hold") in ("1", "on", "true"):
        args["on_hold"] = True
    return args


def _page_number(text: str) -> int | None:
    if not text:
        return 1
    if not text.isdigit() or len(text) > 7:
        return None
    return max(1, int(text))


@page("/search", (MANAGER, STAFF, TECHNICIAN))
async def search(r: Req) -> Response:
    assert r.session is not None
    query = {k: v for k, v in r.request.query_params.items() if k in (*FIELDS, "page")}
    technician = not r.session.has(MANAGER, STAFF)
    number = _page_number(query.get("page", ""))
    if number is None:
        return r.error("search.bad_page", 400)
    args = find_args(query, technician)
    args.update(page=number, page_size=PAGE_SIZE)
    reply = await r.call("find", args)
    if reply.rc != 0:
        return r.refused(reply)
    data = reply.data or {}
    rows = [row for row in data.get("rows") or () if isinstance(row, dict)]
    total = int(data.get("total") or 0)
    first = (number - 1) * PAGE_SIZE + 1
    kept = {k: v for k, v in query.items() if k != "page" and v}

    def link(n: int) -> str:
        return "/search?" + urlencode({**kept, "page": n})

    labels = await _did_labels(r)
    return r.render(
        "search.html", query=query, rows=rows, total=total, duration=duration, technician=technician, labels=labels, states=STATES,
        count=r.t("search.count", total=total, first=first, last=first + len(rows) - 1) if rows else None,
        prev=link(number - 1) if number > 1 else None,
        next=link(number + 1) if first + len(rows) - 1 < total else None,
    )


_LABELS: list[Any] = [0.0, []]  # (when read, the labels): the list changes rarely; each read is an audit row
LABELS_FOR = 300.0


async def _did_labels(r: Req) -> list[str]:
    """The designated numbers' labels (from the notice's data: the list the public sees)."""
    if time.monotonic() - _LABELS[0] < LABELS_FOR and _LABELS[1]:
        return list(_LABELS[1])
    reply = await r.call("notice", {"lang": "ja"})
    numbers = (reply.data or {}).get("numbers") if reply.rc == 0 else None
    labels = [n["label"] for n in numbers or () if isinstance(n, dict) and isinstance(n.get("label"), str)]
    _LABELS[:] = [time.monotonic(), labels]
    return labels


def duration(seconds: Any) -> str:
    """1:02:03 / 4:05: how long a call was, as people say it."""
    if not isinstance(seconds, (int, float)):
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
