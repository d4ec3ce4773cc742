"""Searching the index in SQL: filters, newest first, one page at a time, and keyed caller digests.

The caller's number is never a column: it is sealed under the recording's own data key
(``storage/index.py``). What can be searched is its keyed digests (HMAC-SHA256 under
``keys.derive(master, "caller-digest")``, first 16 bytes), in ``caller_digests``:

- ``exact``: the whole number, normalised as :func:`caller_key` does (E.164 when it is one, else its
  digits), so 03-1234-5678, 0312345678 and +81 3 1234 5678 are one number;
- ``ends``: its last 4, 5, ... :data:`MAX_SUFFIX` digits, one digest per length.

A suffix longer than ``MAX_SUFFIX`` is looked up by its last ``MAX_SUFFIX`` digits and the few rows
found are confirmed by opening their sealed number. The digests tell whoever reads the file without
the key one thing: which rows share a number (or its last digits); never the number.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .index import Index, RecordingRow

MIN_SUFFIX = 4
MAX_SUFFIX = 8
DIGEST_BYTES = 16
MAX_PAGE_SIZE = 200
# The same reading of a number as capture/dids.py to_e164 (storage does not import capture):
# tests/test_search.py checks that the two agree.
COUNTRY_CODE = "81"
INTERNATIONAL_PREFIX = "010"
_VISUAL = re.compile(r"[\s\-.()]")


def _e164(text: str) -> str | None:
    digits = _VISUAL.sub("", text)
    if not digits:
        return None
    if digits.startswith("+"):
        rest = digits[1:]
        return "+" + rest if rest.isdigit() and 8 <= len(rest) <= 15 else None
    if not digits.isdigit():
        return None
    if digits.startswith(INTERNATIONAL_PREFIX) and len(digits) > 5:
        rest = digits[len(INTERNATIONAL_PREFIX) :]
        return "+" + rest if 8 <= len(rest) <= 15 else None
    if digits.startswith("0") and not digits.startswith("00") and len(digits) in (10, 11):
        return "+" + COUNTRY_CODE + digits[1:]
    return None


def caller_key(text: str) -> str:
    """The number as exact search compares it: its E.164 form, else its digits."""
    return _e164(text) or re.sub(r"\D", "", text)


def _mac(key: bytes, kind: str, value: str) -> bytes:
    return hmac.new(key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()[:DIGEST_BYTES]


def exact_digest(key: bytes, number: str) -> bytes | None:
    k = caller_key(number)
    return _mac(key, "exact", k) if k else None


def suffix_digest(key: bytes, digits: str) -> bytes:
    """The digest of the last ``min(len(digits), MAX_SUFFIX)`` digits."""
    return _mac(key, "ends", digits[-MAX_SUFFIX:])


def caller_digests(key: bytes, caller: str) -> list[bytes]:
    """Every digest of one caller number (none for a caller without digits: anonymous, a SIP name)."""
    out = [d] if (d := exact_digest(key, caller)) else []
    digits = re.sub(r"\D", "", caller)
    out += [_mac(key, "ends", digits[-n:]) for n in range(MIN_SUFFIX, min(len(digits), MAX_SUFFIX) + 1)]
    return out


@dataclass(frozen=True, slots=True)
class Filters:
    """What a search asks; None is "any". Times are epoch seconds; ``did`` is a number or a label."""

    start: float | None = None  # started_at >= start
    end: float | None = None  # started_at < end
    did: str | None = None  # the DID as the index holds it (E.164) ...
    did_label: str | None = None  # ... or its label
    caller: str | None = None  # exact number
    caller_ends: str | None = None  # last digits (at least MIN_SUFFIX)
    min_duration: float | None = None
    max_duration: float | None = None
    state: str | None = None  # complete | incomplete
    on_hold: bool | None = None  # a hold in force (not released, its end in the future)
    conversation: str | None = None  # the parts of one conversation (its token)


def _where(f: Filters, digest_key: Callable[[], bytes], now: float,
           span: Callable[[], float] | None = None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    # For the rows in order (``span`` given), a start-time filter is also said of conversation_start,
    # which no part precedes and which precedes none by more than the index's conversation span: the
    # same rows, found through the index they are ordered by (no sort of every match); ``+`` keeps
    # SQLite off started_at's index. The count keeps to started_at's (its index covers it).
    hint = "+" if span is not None else ""
    if f.start is not None:
        clauses.append(f"{hint}r.started_at >= ?")
        params.append(f.start)
        if span is not None and (widen := span()) != float("inf"):
            clauses.append("r.conversation_start >= ?")
            params.append(f.start - widen)
    if f.end is not None:
        clauses.append(f"{hint}r.started_at < ?")
        params.append(f.end)
        if span is not None:
            clauses.append("r.conversation_start < ?")
            params.append(f.end)
    if f.did is not None or f.did_label is not None:
        clauses.append("(r.did = ? OR r.did_label = ?)")
        params += [f.did, f.did_label]
    if f.min_duration is not None:
        clauses.append("r.ended_at - r.started_at >= ?")
        params.append(f.min_duration)
    if f.max_duration is not None:
        clauses.append("r.ended_at - r.started_at <= ?")
        params.append(f.max_duration)
    if f.state is not None:
        clauses.append("r.state = ?")
        params.append(f.state)
    if f.on_hold is not None:
        clauses.append("r.id " + ("" if f.on_hold else "NOT ") + "IN (SELECT h.recording_id FROM holds h "
                       "WHERE h.released_at IS NULL AND h.until > ?)")
        params.append(now)
    if f.conversation is not None:
        clauses.append("r.conversation = ?")
        params.append(f.conversation)
    if f.caller is not None:
        d = exact_digest(digest_key(), f.caller)
        clauses.append("r.id IN (SELECT recording_id FROM caller_digests WHERE digest = ?)")
        params.append(d or b"")
    if f.caller_ends is not None:
        clauses.append("r.id IN (SELECT recording_id FROM caller_digests WHERE digest = ?)")
        params.append(suffix_digest(digest_key(), f.caller_ends))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def search(index: Index, f: Filters, *, now: float, page: int = 1,
           page_size: int = 50) -> tuple[int, list[RecordingRow]]:
    """``(total, rows)``: how many recordings match, and the page asked for, newest first (only the
    rows of the page are opened). ``page_size=0``: all of them. The parts of one conversation come
    together, in part order, where its first part's start puts them."""
    if f.caller_ends is not None and (not f.caller_ends.isdigit() or len(f.caller_ends) < MIN_SUFFIX):
        raise ValueError(f"the last digits need at least {MIN_SUFFIX} digits")
    where, params = _where(f, index.digest_key, now, index.conversation_span)
    counted, count_params = _where(f, index.digest_key, now)
    # the index recordings_conversations_newest gives this order
    order = " ORDER BY r.conversation_start DESC, r.conversation_first DESC, r.part, r.id"
    db = index.db
    if f.caller_ends is not None and len(f.caller_ends) > MAX_SUFFIX:
        # the digest finds those ending in the same MAX_SUFFIX digits; their sealed numbers say which end in all
        ids = [i for (i,) in db.execute(f"SELECT r.id FROM recordings r{where}{order}", params)]
        rows = [r for r in index.rows(ids) if re.sub(r"\D", "", r.caller).endswith(f.caller_ends)]
        first = (page - 1) * page_size
        return len(rows), rows if not page_size else rows[first : first + page_size]
    total = int(db.execute(f"SELECT count(*) FROM recordings r{counted}", count_params).fetchone()[0])
    if page_size:
        ids = [i for (i,) in db.execute(f"SELECT r.id FROM recordings r{where}{order} LIMIT ? OFFSET ?",
                                         [*params, page_size, (page - 1) * page_size])]
    else:
        ids = [i for (i,) in db.execute(f"SELECT r.id FROM recordings r{where}{order}", params)]
    return total, index.rows(ids)

