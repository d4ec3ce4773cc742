"""Status (everyone; the technician's page) and the public notice (Art. 4(1)).

The status page shows what the daemon's ``status`` says about capture and the store, each figure
under a readable label (never a raw key), and nothing personal: no caller number, no audio, no
recording's metadata beyond the id of the last erasure. Packets per second come from the daemon
when it says them, else from two of its packet counts this console saw a moment apart.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from starlette.responses import Response

from .. import i18n
from ..web import EVERYONE, Req, page

i18n.add({
    "nav.copies": ("複製", "Copies"),  # the header's links to W2's pages (base.html is this module's)
    "nav.complaints": ("苦情", "Complaints"),
    "status.capture": ("録音（キャプチャ）", "Capture"),
    "status.running": ("稼働中（{hours} 時間 {minutes} 分）", "running (for {hours} h {minutes} min)"),
    "status.stopped": ("停止中（録音されていません）", "not running (nothing is being recorded)"),
    "status.packets_per_s": ("受信パケット数／秒", "Packets per second"),
    "status.kernel_drops": ("取りこぼしパケット数（カーネル）", "Packets dropped by the kernel"),
    "status.active_calls": ("通話中の件数", "Calls in progress"),
    "status.recorded": ("録音した通話（起動後）", "Calls recorded (since start)"),
    "status.store_free": ("保存領域の空き", "Store free space"),
    "status.store_full": ("保存領域が一杯です。新しい通話は録音されません。", "The store is full: new calls are not recorded."),
    "status.recordings": ("保管中の録音", "Recordings kept"),
    "status.on_hold": ("保管延長中", "On hold"),
    "status.last_erasure": ("前回の消去", "Last erasure"),
    "status.next_erasure": ("次回の消去予定", "Next erasure due"),
    "status.none": ("なし", "none"),
    "status.keep_failures": ("保存に失敗した通話", "Calls that could not be kept"),
    "status.lost_store_full": ("保存領域不足で失われた通話", "Calls lost (store full)"),
    "status.copies_past_expiry": ("期限を過ぎた持出し複製", "Exported copies past expiry"),
    "status.encapsulations": ("リモートミラーの受信（開封したパケット）", "Remote mirror packets opened"),
    "status.encap_none": ("なし", "none"),
    "status.encap_not_opened": ("開封しなかったもの {n} 件（無効、または収集元以外から）",
                                "{n} not opened (not enabled, or not from a collector)"),
    "status.encap_malformed": ("壊れていたもの {n} 件", "{n} malformed"),
    "status.warnings": ("最近24時間の警告", "Warnings in the last 24 hours"),
    "status.no_warnings": ("警告はありません。", "No warnings."),
    "status.unknown": ("—", "—"),
    "status.clock_jump": ("時計のずれを検出したため、消去を止めています（管理責任者の確認が必要です）。",
                          "Erasure is stopped: the clock jumped (a manager must confirm it)."),
    "alert.direction_unknown": ("着信・発信の区別ができません（trunk_networks が未設定）。",
                                "Call direction unknown (capture.trunk_networks is not set)."),
    "alert.store_volume_unencrypted": ("保存領域が暗号化ボリューム上にありません。", "The store is not on an encrypted volume."),
    "alert.did_file_broken": ("対象番号ファイルが受け付けられず、前の一覧で録音しています。",
                              "The designated-number file was refused: the previous list is in force."),
    "alert.capture_unrecognised": ("受信している通信を解釈できません（録音できない形式です）。",
                                   "Traffic not understood: recorderctl status has the counts."),
    "alert.other": ("その他の警告（{kind}）", "Other warning ({kind})"),
    "warn.capture-drops": ("パケットの取りこぼし", "Packets dropped at capture"),
    "warn.capture-failed": ("キャプチャを開けません", "Capture could not be opened"),
    "warn.capture-file-error": ("キャプチャファイルの破損", "A damaged capture file"),
    "warn.keep-failed": ("通話を保存できませんでした", "A call could not be kept"),
    "warn.keep-retried": ("通話の保存を再試行しました", "Keeping a call was retried"),
    "warn.call-lost": ("通話が失われました", "A call was lost"),
    "warn.clock-jump": ("時計のずれ", "The clock jumped"),
    "warn.erasure-failed": ("消去に失敗しました", "An erasure failed"),
    "warn.erasure-late": ("消去が期限より遅れました", "An erasure was late"),
    "warn.store-read-only": ("保存領域が読み取り専用です", "The store is read-only"),
    "warn.store-unusable": ("保存領域が使えません", "The store is unusable"),
    "warn.spool-write-failed": ("一時領域への書き込みに失敗しました", "Writing to the spool failed"),
    "warn.audit-failed": ("監査ログに書き込めません", "The audit log could not be written"),
    "warn.control-refused": ("操作要求を断りました（混雑・時間切れ）", "Requests refused (busy or too slow)"),
    "warn.reload-failed": ("対象番号の再読み込みに失敗しました", "Reloading the designated numbers failed"),
    "warn.slow-capture": ("高速処理部が組み込まれていません", "The C fast path is not built"),
    "warn.one-way-audio": ("片通話の通話", "A call with one-way audio"),
    "warn.rtp-other-source": ("想定外の送信元からの音声", "Audio from an unexpected source"),
    "warn.direction-unknown": ("着信・発信の区別ができません", "Call direction unknown"),
    "warn.store-volume-unencrypted": ("保存領域が暗号化されていません", "The store is not encrypted"),
    "warn.audio-not-decoded": ("音声を変換できない通話", "A call whose audio cannot be decoded"),
    "warn.recovery-failed": ("通話の復旧に失敗しました", "Recovering a call failed"),
    "warn.duplicate-recording": ("重複した録音", "A duplicate recording"),
    "warn.capture-unrecognised": ("解釈できない通信", "Traffic not understood"),
    "warn.other": ("その他（{kind}）", "Other ({kind})"),
    "status.warn_count": ("{label}：{count} 件（最後 {last}）", "{label}: {count} (last {last})"),
    "notice.english": ("英語", "English"),
    "notice.japanese": ("日本語", "Japanese"),
})

# the remote SPAN counters of status (capture/encap.py KINDS), as the page names them
ENCAPSULATIONS = (("encap_erspan1", "ERSPAN I"), ("encap_erspan2", "ERSPAN II"), ("encap_erspan3", "ERSPAN III"),
                  ("encap_gretap", "gretap"), ("encap_vxlan", "VXLAN"), ("encap_tzsp", "TZSP"))

_RATE_LOCK = threading.Lock()
_LAST_COUNT: dict[str, tuple[float, int]] = {}  # pid -> (when, packets) last seen: for packets per second


def packets_per_s(service: dict[str, Any], now: float | None = None) -> float | None:
    """The daemon's own figure if it gives one, else the rate between this and the previous look."""
    for key in ("packets_per_s", "packets_per_second"):
        if isinstance(service.get(key), (int, float)):
            return float(service[key])
    counters = service.get("counters") or {}
    packets = counters.get("kernel_packets") or counters.get("packets")
    if not isinstance(packets, int):
        return None
    now = time.monotonic() if now is None else now
    key = str(service.get("pid"))
    with _RATE_LOCK:
        before = _LAST_COUNT.get(key)
        _LAST_COUNT.clear()  # one service at a time: nothing grows
        _LAST_COUNT[key] = (now, packets)
    if before is None or now - before[0] < 0.5 or packets < before[1]:
        return None
    return (packets - before[1]) / (now - before[0])


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _alert(r: Req, kind: str, prefix: str = "alert") -> str:
    key = f"{prefix}.{kind}"
    return r.t(key) if key in i18n.MESSAGES else r.t(f"{prefix}.other", kind=kind[:60])


def _encapsulations(r: Req, counters: dict[str, Any]) -> str | None:
    """What a remote mirror sent (outer packets opened per kind, those not opened or malformed), or
    None when the service opened and saw none (a plain SPAN port: no row)."""
    def n(key: str) -> int:
        value = counters.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    opened = [f"{name} {n(key):,}" for key, name in ENCAPSULATIONS if n(key)]
    others = [r.t(f"status.{what}", n=f"{n(key):,}") for key, what in (("encap_not_opened", "encap_not_opened"),
                                                                      ("encap_malformed", "encap_malformed")) if n(key)]
    if not opened and not others:
        return None
    return "; ".join([", ".join(opened) or r.t("status.encap_none"), *others])


def status_rows(r: Req, data: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, value) rows and the warnings, from ``status`` data: labels, counts and times only."""
    svc, store, ret = data.get("service") or {}, data.get("store") or {}, data.get("retention") or {}
    counters = svc.get("counters") or {}
    unknown = r.t("status.unknown")

    def count(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else unknown

    rows: list[tuple[str, str]] = []
    if svc.get("running"):
        up = int(svc.get("uptime_s") or 0)
        rows.append((r.t("status.capture"), r.t("status.running", hours=up // 3600, minutes=up % 3600 // 60)))
        rate = packets_per_s(svc)
        rows.append((r.t("status.packets_per_s"), f"{rate:,.0f}" if rate is not None else unknown))
        rows.append((r.t("status.kernel_drops"), count(counters.get("kernel_drops", 0))))
        rows.append((r.t("status.active_calls"), count(svc.get("active_calls"))))
        rows.append((r.t("status.recorded"), count(counters.get("calls_recorded", 0))))
        encapsulations = _encapsulations(r, counters)
        if encapsulations is not None:
            rows.append((r.t("status.encapsulations"), encapsulations))
    else:
        rows.append((r.t("status.capture"), r.t("status.stopped")))
    free, total = store.get("free_bytes"), store.get("total_bytes")
    if isinstance(free, int) and isinstance(total, int) and total > 0:
        rows.append((r.t("status.store_free"), f"{_size(free)} ({100 * free / total:.0f}%)"))
    rows.append((r.t("status.recordings"), count(store.get("recordings"))))
    rows.append((r.t("status.on_hold"), count(store.get("on_hold"))))
    rows.append((r.t("status.last_erasure"), r.time(ret.get("last_erasure")) or r.t("status.none")))
    rows.append((r.t("status.next_erasure"), r.time(ret.get("next_due")) or r.t("status.none")))
    rows.append((r.t("status.keep_failures"), count(counters.get("keep_failures", 0))))
    rows.append((r.t("status.lost_store_full"), count(counters.get("calls_lost_store_full", 0))))
    rows.append((r.t("status.copies_past_expiry"), count(data.get("copies_past_expiry"))))

    warnings: list[str] = []
    if store.get("full"):
        warnings.append(r.t("status.store_full"))
    if ret.get("clock_jump"):
        warnings.append(r.t("status.clock_jump"))
    for kind in svc.get("alerts") or ():
        if isinstance(kind, str):
            warnings.append(_alert(r, kind))
    for w in svc.get("recent_warnings") or ():  # the last day's warnings by kind: {kind, count, last}
        if isinstance(w, dict) and isinstance(w.get("kind"), str):
            last = r.time(w.get("last")) if isinstance(w.get("last"), (str, int, float)) else ""
            warnings.append(r.t("status.warn_count", label=_alert(r, w["kind"], "warn"), count=w.get("count", 1), last=last))
    return rows, warnings


@page("/status", EVERYONE)
async def status(r: Req) -> Response:
    reply = await r.call("status")
    if reply.rc != 0:
        return r.refused(reply)
    rows, warnings = status_rows(r, reply.data or {})
    return r.render("status.html", rows=rows, warnings=warnings)


@page("/notice", EVERYONE)
async def notice(r: Req) -> Response:
    """The notice in Japanese; in English, the Japanese text (the one posted) with the English beside."""
    reply = await r.call("notice", {"lang": "ja"})
    if reply.rc != 0:
        return r.refused(reply)
    english = None
    if r.lang == "en":
        en = await r.call("notice", {"lang": "en"})
        english = en.text if en.rc == 0 else None
    return r.render("notice.html", japanese=reply.text, english=english)
