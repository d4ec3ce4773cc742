"""Caller numbers out of kept free text: the one scrubber for the audit log, casework and holds.

Whatever a person types (a reason, a complaint summary, a search filter, an id that was really a
number) is kept for a year or more; a caller's number must not be. :func:`scrub` replaces every run
of 7 or more digits, however separated, with ``[number removed]``:

- it looks at each character's NFKC form (full-width ``０９０`` is ``090``, ``＋`` is ``+``) and treats
  kanji digits (``〇一二...九``) as digits; what is not masked is left exactly as written;
- between digits it allows up to three separators: white space, ``. , 、 _ ~ 〜 - ( ) / : ・``, every dash
  (U+2010-U+2015, U+2212, ``ー``, ``－``); invisible characters (format controls such as U+200B,
  combining marks) do not count at all, so they cannot split a number, and the escapes of a
  Python repr (``\\u200b``, ``\\u3000``: error texts quote what was typed) are read as characters;
- a run may start with ``+`` or ``(`` (``+81 90 ...``, ``(090)...``).

Seven digits is a local number without its area code (``200-3939``); Japanese numbers are 10-11
digits, or ``+81`` and 9-10. Kept as written, because they are not numbers: recording ids
(``20261201-100409-3f9a0c12b4``), dates (``2026-12-01``, ``2026/12/01``) and times (``10:04:09``),
ISO date-times with an offset, and year-based references glued to letters (``K-2026-0012``), where
they start a run of digits or follow another kept one (``2026-12-01 - 2026-12-05``, recording ids
in a list); a date right
after other digits is part of their run, and masked with it. None of these can be a Japanese
number: those start with ``0`` or ``+``, these with ``19``/``20`` or a time (``HH:MM``).

:func:`scrub_tree` does the same through dicts and lists (keys too); a value under a hash key is
kept only when it is a hex digest.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Any

MASK = "[number removed]"
MIN_DIGITS = 7
HASH_KEYS = frozenset({"sha256", "recording_sha256", "through_hash", "fingerprint", "hash", "prev_hash"})
ADDRESS_KEYS = frozenset({"client_ip"})  # the console's browser address: kept when it is an IP literal

_KANJI_DIGITS = dict(zip("〇一二三四五六七八九", "0123456789", strict=True))
_SEPARATORS = " .,、_~〜-()/:・\u2010\u2011\u2012\u2013\u2014\u2015\u2212ー"  # after NFKC: － is -, ， is ,, ～ is ~
_SEP = "[" + re.escape(_SEPARATORS) + r"\s]"
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?"
_DAY = r"(?:0?[1-9]|1[0-2])%s(?:0?[1-9]|[12]\d|3[01])"
_DAY_SLASH, _DAY_DOT = _DAY % "/", _DAY % "\\."
_DATE = rf"(?:19|20)\d\d(?:-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])|/{_DAY_SLASH}|\.{_DAY_DOT})"
_KEEP = (
    r"(?:19|20)\d\d[01]\d[0-3]\d-[0-2]\d[0-5]\d[0-5]\d-[0-9a-f]{10}(?![0-9A-Za-z])"  # a recording id
    rf"|{_DATE}(?:[T ]{_TIME}(?:Z|[+-][01]\d:?[0-5]\d)?)?(?!\d)"  # a date, maybe with its time and offset
    rf"|{_TIME}(?:Z|[+-][01]\d:[0-5]\d)?(?![:\d])"  # a time
    r"|(?<=[A-Za-z]-)(?:19|20)\d\d-\d{1,6}(?!\d)"  # a reference: K-2026-0012
)
# A kept form starts a run (no digit up to three separators before it); what follows it is judged
# on its own, and a date after other digits is part of their run.
_STARTS_RUN = rf"(?<!\d)(?<!\d{_SEP})(?<!\d{_SEP}{_SEP})(?<!\d{_SEP}{_SEP}{_SEP})"
_DIGITS = rf"\d(?:{_SEP}{{0,3}}\d)*"
_TOKEN = re.compile(rf"{_STARTS_RUN}(?P<keep>{_KEEP})|(?P<run>(?:[(]?\+|[(])(?!{_KEEP}){_DIGITS}|{_DIGITS})")
_ONLY_KEPT = re.compile(rf"(?:{_KEEP})(?:{_SEP}{{1,3}}(?:{_KEEP}))*")  # "2026-12-01 2026-12-05" after a kept one
_KEPT_FORM = re.compile(_KEEP)
_GAP = re.compile(rf"{_SEP}{{1,3}}")


_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[tnr])")


def _normal_view(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` with each character in its NFKC form (invisible ones dropped, the escapes of a
    Python repr such as ``\\u200b`` read as the character), and for each character of that view where
    in ``text`` the character it came from starts and ends."""
    view: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    while i < len(text):
        ch, start = text[i], i
        i += 1
        if ch == "\\" and (escape := _ESCAPE.match(text, start)):
            i = escape.end()
            code = escape.group()[1:]
            ch = " " if code in "tnr" else chr(min(int(code[1:], 16), 0x10FFFF))
        if ch.isascii():
            form = ch
        elif unicodedata.category(ch) in ("Cf", "Mn", "Me"):
            continue
        else:
            form = _KANJI_DIGITS.get(ch) or unicodedata.normalize("NFKC", ch)
        view.append(form)
        starts.extend([start] * len(form))
        ends.extend([i] * len(form))
    return "".join(view), starts, ends


def scrub(text: str) -> str:
    """``text`` with every phone-number-like digit run replaced by :data:`MASK`."""
    if not any(ch.isdigit() or ch in _KANJI_DIGITS or not ch.isascii() for ch in text):
        return text  # no digit of any kind: nothing to look at
    view, starts, ends = _normal_view(text)
    cuts: list[tuple[int, int]] = []
    pos, kept_end = 0, -1
    while (m := _TOKEN.search(view, pos)) is not None:
        pos = m.end()
        run = m.group("run")
        if run is None:
            kept_end = pos
            continue
        if kept_end >= 0 and _GAP.fullmatch(view, kept_end, m.start()) and (kept := _KEPT_FORM.match(view, m.start())):
            pos = kept_end = kept.end()  # a kept form right after another (ids in a list): kept, the rest judged anew
            continue
        if sum(ch.isdigit() for ch in run) >= MIN_DIGITS and not _ONLY_KEPT.fullmatch(run):
            cuts.append((starts[m.start()], ends[m.end() - 1]))
    if not cuts:
        return text
    out, at = [], 0
    for start, end in cuts:
        out.append(text[at:start])
        out.append(MASK)
        at = end
    out.append(text[at:])
    return "".join(out)


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_address(text: str) -> bool:
    try:
        return len(text) <= 45 and "%" not in text and str(ipaddress.ip_address(text)) == text
    except ValueError:
        return False


def scrub_tree(value: Any, key: str | None = None) -> Any:
    """``value`` (a JSON-like tree) with every string scrubbed, dict keys included; numbers,
    booleans and None as they are; a hex digest under a hash key as it is, and an IP address
    (in its normal form) under ``client_ip``."""
    if isinstance(value, str):
        if key in HASH_KEYS and _DIGEST.fullmatch(value):
            return value
        if key in ADDRESS_KEYS and _is_address(value):
            return value
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v) for v in value]
    return value
