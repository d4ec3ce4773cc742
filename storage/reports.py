"""The period report (guideline Art. 6(3)): what the contractor reports to the manager.

Everything is counted from what the store already keeps: the index (recordings kept, erasure
records, holds in force), the audit log (accesses, exports, holds, refusals), the casework file
(copies, provisions, disclosure requests, incidents, complaints) and the service's counter snapshots
(calls not recorded, kernel drops). No caller number is read or produced.

An erased recording keeps only its local call date, so it is counted in a period by that date; a
recording still kept is counted by its start time. An erasure is *on time* when it happened within
``LATE_AFTER`` of its effective deadline (the retention deadline, or the end of the last hold on it,
taken from the audit log): the same threshold at which the service logs it CRITICAL.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .retention import LATE_AFTER

if TYPE_CHECKING:
    from .audit import AuditEvent
    from .casework import Casework
    from .store import Store

ACCESS_ACTIONS = ("list", "search", "export", "provide")


def _within(ts: float | None, start: float, end: float) -> bool:
    return ts is not None and start <= ts < end


def _local_dates(start: float, end: float, store: Store) -> tuple[str, str]:
    """[first, last] local dates whose midnight-to-midnight falls in [start, end)."""
    first = datetime.fromtimestamp(start, store.tz)
    last = datetime.fromtimestamp(end, store.tz) - timedelta(microseconds=1)
    return first.date().isoformat(), last.date().isoformat()


def recorded_per_did(store: Store, start: float, end: float) -> dict[str, int]:
    db = store.db().db
    counts: Counter[str] = Counter()
    for label, n in db.execute("SELECT did_label, count(*) FROM recordings WHERE started_at >= ? AND started_at < ? "
                               "GROUP BY did_label", (start, end)):
        counts[label] += n
    first, last = _local_dates(start, end, store)
    for label, n in db.execute("SELECT did_label, count(*) FROM erasures WHERE call_date >= ? AND call_date <= ? "
                               "GROUP BY did_label", (first, last)):
        counts[label] += n
    return dict(sorted(counts.items()))


def _outcome(result: str) -> str:
    return "allowed" if result == "allowed" else result.split(":", 1)[0]


def accesses(events: list[AuditEvent]) -> dict[str, Any]:
    """Accesses to recordings by action and purpose (or legal basis), with refusals apart."""
    by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    denied: Counter[str] = Counter()
    for e in events:
        if e.result.startswith("denied"):
            denied[e.action] += 1
        if e.action not in ACCESS_ACTIONS:
            continue
        key = {"export": f"export: {e.detail.get('purpose', '?')}", "provide": f"provide: {e.detail.get('basis', '?')}"}
        by_purpose[key.get(e.action, e.action)][_outcome(e.result)] += 1
    return {"by_purpose": {k: dict(v) for k, v in sorted(by_purpose.items())},
            "denied_by_action": dict(sorted(denied.items()))}


def erasures(store: Store, holds: list[AuditEvent], start: float, end: float) -> dict[str, Any]:
    ends: dict[str, dict[int, float]] = defaultdict(dict)  # recording -> hold id -> effective end
    for e in holds:
        hold_id = e.detail.get("hold_id")
        if e.recording_id is None or not isinstance(hold_id, int) or e.result != "allowed":
            continue
        if e.action == "hold":
            ends[e.recording_id][hold_id] = float(e.detail.get("until", 0))
        elif e.action == "release" and hold_id in ends[e.recording_id]:
            ends[e.recording_id][hold_id] = min(ends[e.recording_id][hold_id], e.at)
    on_time, late = 0, []
    for rec in store.db().erasures():
        if not _within(rec["erased_at"], start, end):
            continue
        due = max([rec["retain_until"], *ends.get(rec["id"], {}).values()])
        delay = rec["erased_at"] - due
        if delay <= LATE_AFTER:
            on_time += 1
        else:
            late.append({"id": rec["id"], "did_label": rec["did_label"], "late_s": round(delay)})
    return {"on_time": on_time, "late": len(late), "late_recordings": late}


def counter_deltas(snapshots: list[tuple[float, float, dict[str, int]]], start: float,
                   end: float) -> dict[str, int] | None:
    """The service's counters over [start, end), summed over its runs (None: no snapshot there)."""
    runs: dict[float, list[tuple[float, dict[str, int]]]] = defaultdict(list)
    for run, at, counters in snapshots:
        runs[run].append((at, counters))
    total: Counter[str] = Counter()
    seen = False
    for run, snaps in runs.items():
        if run >= end or snaps[-1][0] < start:
            continue
        upto = [c for at, c in snaps if at < end]
        if not upto:
            continue
        seen = True
        before = [c for at, c in snaps if at < start] if run < start else []
        low = before[-1] if before else {}
        for key, value in upto[-1].items():
            total[key] += value - low.get(key, 0)
    return dict(total) if seen else None


def period_report(store: Store, casework: Casework, start: float, end: float,
                  sections: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``sections``: the counters of each counts section ("not_recorded", "capture"), named by the
    service's table of counters (recorderd/counters.py; storage does not import it)."""
    audit = store.audit_log()
    events = [e for _, e, _, _ in audit.select(start, end)]
    holds = [e for _, e, _, _ in audit.select() if e.action in ("hold", "release")]
    exports = [e for e in events if e.action == "export" and e.result == "allowed"]
    provisions = [p for p in casework.provisions() if _within(p["provided_at"], start, end)]
    incidents = [i for i in casework.incidents() if _within(i["opened_at"], start, end)]
    complaints = casework.complaints()
    disclosures = casework.disclosures()
    counters = counter_deltas(casework.counter_snapshots(), start, end)
    now = store.clock()
    return {
        "recorded_per_did": recorded_per_did(store, start, end),
        **{section: {k: counters.get(k, 0) for k in names} if counters is not None else None
           for section, names in sections.items()},
        "accesses": accesses(events),
        "exports": {
            "total": len(exports),
            "by_purpose": dict(Counter(str(e.detail.get("purpose")) for e in exports)),
            "with_manager_approval": sum(1 for e in exports if e.detail.get("approved_by")),
            "copies_past_expiry_not_destroyed": len(casework.copies(expired_by=min(end, now))),
        },
        "provisions": {"total": len(provisions), "by_basis": dict(Counter(p["basis"] for p in provisions))},
        "holds": {
            "placed": sum(1 for e in holds if e.action == "hold" and _within(e.at, start, end)),
            "released": sum(1 for e in holds if e.action == "release" and _within(e.at, start, end)),
            "in_force_now": store.db().db.execute(
                "SELECT count(*) FROM holds WHERE released_at IS NULL AND until > ?", (now,)).fetchone()[0],
        },
        "erasures": erasures(store, holds, start, end),
        "incidents": {
            "opened": len(incidents),
            "by_kind": dict(Counter(i["kind"] for i in incidents)),
            "automatic": sum(1 for i in incidents if i["automatic"]),
            "open_now": sum(1 for i in casework.incidents() if i["state"] == "open"),
            "ids": [i["id"] for i in incidents],
        },
        "complaints": {
            "received": sum(1 for c in complaints if _within(c["opened_at"], start, end)),
            "closed": sum(1 for c in complaints if _within(c["closed_at"], start, end)),
            "open_now": sum(1 for c in complaints if c["state"] == "open"),
        },
        "disclosures": {
            "opened": sum(1 for d in disclosures if _within(d["opened_at"], start, end)),
            "decided": dict(Counter(d["decision"] for d in disclosures if _within(d["decided_at"], start, end))),
        },
    }
