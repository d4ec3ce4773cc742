"""Japanese first, English beside it: one catalogue, a message per key in both languages.

The language is the ``lang`` cookie (``ja`` unless the person chose ``en``); dates and times are
shown in Asia/Tokyo (the site's ``retention.timezone``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

LANGS = ("ja", "en")

MESSAGES: dict[str, tuple[str, str]] = {
    "app.title": ("通話録音システム", "Call recorder"),
    "nav.search": ("検索", "Search"),
    "nav.status": ("稼働状況", "Status"),
    "nav.notice": ("公表文", "Notice"),
    "nav.audit": ("監査ログ", "Audit log"),
    "nav.requests": ("持出し申請", "Export requests"),
    "nav.casework": ("開示・事故・苦情", "Disclosures, incidents, complaints"),
    "nav.report": ("期間報告", "Period report"),
    "nav.signout": ("サインアウト", "Sign out"),
    "lang.switch": ("English", "日本語"),
    "signin.title": ("サインイン", "Sign in"),
    "signin.user": ("ユーザー名", "User name"),
    "signin.password": ("パスワード", "Password"),
    "signin.submit": ("サインイン", "Sign in"),
    "signin.failed": ("ユーザー名またはパスワードが違います。", "The user name or password is wrong."),
    "signin.locked": ("失敗が続いたため、しばらくサインインできません。時間をおいてやり直してください。",
                      "Too many failures: sign-in is locked for a while. Try again later."),
    "signin.norole": ("このシステムを使う権限がありません。管理責任者に連絡してください。",
                      "You have no role in this system. Ask the manager."),
    "signin.expired": ("一定時間操作がなかったため、サインアウトしました。", "You were signed out after a time without use."),
    "signin.signedout": ("サインアウトしました。", "You are signed out."),
    "error.forbidden": ("この操作を行う権限がありません。", "You are not allowed to do this."),
    "error.notfound": ("ページが見つかりません。", "Page not found."),
    "error.csrf": ("画面の有効期限が切れました。もう一度操作してください。", "This form has expired. Please try again."),
    "error.daemon": ("録音サービスに接続できません。技術担当者に連絡してください。",
                     "The recording service cannot be reached. Tell the technician."),
    "error.internal": ("エラーが発生しました。技術担当者に連絡してください。", "Something went wrong. Tell the technician."),
    "error.busy": ("録音サービスが混み合っています。少し待ってやり直してください。", "The recording service is busy. Try again shortly."),
    "role.manager": ("管理責任者", "Manager"),
    "role.staff": ("担当者", "Staff"),
    "role.technician": ("技術担当者", "Technician"),
    "role.auditor": ("監査担当者", "Auditor"),
    "status.title": ("稼働状況", "Status"),
    "notice.title": ("公表文", "Public notice"),
}


def lang_of(cookie: str | None) -> str:
    return cookie if cookie in LANGS else "ja"


def t(key: str, lang: str, **values: Any) -> str:
    """The message in ``lang`` (the key itself when it is missing, so a gap shows and a test finds it)."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    text = pair[0] if lang == "ja" else pair[1]
    return text.format(**values) if values else text


def add(messages: dict[str, tuple[str, str]]) -> None:
    """A page module's own messages (each key once in the whole console)."""
    clash = set(messages) & set(MESSAGES)
    if clash:
        raise ValueError(f"message keys defined twice: {sorted(clash)}")
    MESSAGES.update(messages)


def local_time(value: str | float | None, tz: ZoneInfo, *, seconds: bool = True) -> str:
    """An ISO 8601 time (or epoch seconds) as the staff read it: 2026-09-21 23:13:22 in Tokyo."""
    if value is None or value == "":
        return ""
    when = datetime.fromtimestamp(value, tz) if isinstance(value, (int, float)) else datetime.fromisoformat(value).astimezone(tz)
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
