"""Recordings: ``status``, ``list`` / ``search`` / ``find``, ``hold`` and ``release`` (guideline Art. 5(2)).

The searches run in SQL (``storage/search.py``): caller numbers through their keyed digests, only
the rows shown opened. ``list`` and ``search`` answer every match (oldest first, their JSON an array);
``find`` one page, newest first, with the total (the console's search).

One conversation kept in parts (a transfer, a codec change mid-call) is listed together, in part
order, each row saying "part N of M"; ``find --conversation TOKEN`` gives the parts of one.

Staff and managers see caller numbers; technicians see them masked (the last two digits), with the
Call-ID hidden, and may not search by caller number (that would answer "did this person call?").
A caller filter is audited as its kind (exact / last digits), never its value; a DID filter as the
label of the designated number it names (anything else is scrubbed by the audit log, like every
row). Hold reasons and references are kept scrubbed of phone numbers, in the index too.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import asdict
from typing import Any

from capture.dids import parse_did
from capture.encap import summary as encap_summary
from storage.clock import pending as pending_clock_jump
from storage.index import RecordingRow
from storage.keeping import one_way_audio
from storage.policy import iso as iso_ms_tz
from storage.scrub import scrub
from storage.search import MAX_PAGE_SIZE, MIN_SUFFIX, Filters
from storage.search import search as search_index

from ..counters import STATUS
from ..roles import AUDITOR, MANAGER, STAFF, TECHNICIAN, mask_number
from .framework import Args, Context, NotAllowed, Reply, UsageError, action, iso, parse_when

DEFAULT_PAGE_SIZE = 50


def recording_json(row: RecordingRow, ctx: Context, *, masked: bool = False, parts: int | None = None,
                   legs: int | None = None) -> dict[str, Any]:
    """The recording as ``list --json`` prints it; ``parts`` (of its conversation) and ``legs`` (linked
    legs) counted by :func:`rows_json` for many rows at once, or here for one."""
    index = ctx.store.db()
    if parts is None:
        parts = index.part_counts([row.conversation]).get(row.conversation, 1)
    if legs is None:
        legs = index.leg_counts([row.id]).get(row.id, 0)
    return {
        "id": row.id,
        "call_id": "(hidden)" if masked else row.call_id,
        "did": row.did,
        "did_label": row.did_label,
        "caller": mask_number(row.caller) if masked else row.caller,
        "started_at": iso_ms(row.started_at, ctx),
        "ended_at": iso_ms(row.ended_at, ctx),
        "duration_s": round(row.ended_at - row.started_at, 3),
        "codec": row.codec,
        "channels": row.channels,
        "frames": row.frames,
        "size": row.size,
        "sha256": row.sha256,
        "retain_until": iso_ms(row.retain_until, ctx),
        "state": row.state,
        "end_reason": row.end_reason,
        "holds": ctx.store.holding.in_force(row.id),
        "audio": row.audio,  # exact (G.711 bytes as on the wire) | transcoded (16-bit PCM) | not-decoded
        "transcoded": row.audio == "transcoded",
        "rate": row.rate,
        "evidence_pcap": bool(row.pcap_path),
        "one_way_audio": one_way_audio(row.streams),
        # quality per direction; DTMF digits (PINs, card numbers...) only for those who may hear the call
        "streams": [{k: v for k, v in s.items() if k != "dtmf"} for s in row.streams] if masked else row.streams,
        "conversation": row.conversation,  # the same token for every part of one conversation (not personal)
        "part": row.part,
        "parts": parts,
        "part_reason": row.part_reason,  # "" (the first part), transfer, codec-change
        "linked_legs": legs,  # other legs of the conversation seen and not recorded (show lists them)
    }


def rows_json(rows: list[RecordingRow], ctx: Context, *, masked: bool = False) -> list[dict[str, Any]]:
    index = ctx.store.db()
    parts = index.part_counts(r.conversation for r in rows)
    legs = index.leg_counts(r.id for r in rows)
    return [recording_json(r, ctx, masked=masked, parts=parts.get(r.conversation, 1), legs=legs.get(r.id, 0))
            for r in rows]


def iso_ms(ts: float, ctx: Context) -> str:
    """To the millisecond, as ``list --json`` always printed times."""
    return iso_ms_tz(ts, ctx.store.tz)


def _number(args: Args, key: str, *, whole: bool = False) -> float | None:
    """A number from the client: JSON number or its text ('' or absent: None)."""
    value = args.raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and len(value) <= 20:
        try:
            value = int(value) if whole else float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or not 0 <= value < 1e12:
        raise UsageError(f"--{key.replace('_', '-')}: expected a {'whole ' if whole else ''}number of at least 0")
    return value


def _yes_no(args: Args, key: str) -> bool | None:
    value = args.raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "true", "1", "no", "false", "0"):
        return value.lower() in ("yes", "true", "1")
    raise UsageError(f"--{key.replace('_', '-')}: expected yes or no")


def filters(ctx: Context, args: Args) -> tuple[Filters, dict[str, Any]]:
    """The search the request asks for, and its filters as the audit may show them (a caller
    filter as its kind, never its digits)."""
    start, end = args.opt("from"), args.opt("to")
    did, exact, ends = args.opt("did"), args.opt("caller", 40), args.opt("caller_ends", 20)
    state = args.opt("state", 20)
    conversation = args.opt("conversation", 40)
    shown: dict[str, Any] = {}
    if start:
        shown["from"] = start
    if end:
        shown["to"] = end
    did_key = None
    if did:
        dids = ctx.live.dids() if ctx.live else ctx.config.dids
        designated = dids.match(did) or next((d for d in dids.dids if d.label == did), None)
        shown["did"] = designated.label if designated else did
        try:
            did_key = parse_did(did)
        except ValueError:
            did_key = None  # a label, then
    if exact or ends:
        shown["caller"] = "exact" if exact else "last digits"
    ctx.note(filters=shown)  # before any refusal, so that it carries them too
    lo = parse_when(start, ctx, what="--from") if start else None
    hi = parse_when(end, ctx, end=True, what="--to") if end else None
    low, high = _number(args, "min_duration"), _number(args, "max_duration")
    on_hold = _yes_no(args, "on_hold")
    for key, value in (("min_duration", low), ("max_duration", high), ("state", state), ("on_hold", on_hold),
                       ("conversation", conversation)):
        if value is not None:
            shown[key] = value
    if state is not None and state not in ("complete", "incomplete"):
        raise UsageError(f"--state {state!r} is not one of complete, incomplete")
    if exact or ends:
        if ctx.role == TECHNICIAN:
            raise NotAllowed("technicians may not search by caller number (they never see caller numbers)")
        if ends is not None and (not ends.isdigit() or len(ends) < MIN_SUFFIX):
            raise UsageError(f"--caller-ends needs at least {MIN_SUFFIX} digits")
    wanted = Filters(start=lo, end=hi, did=did_key if did else None, did_label=did, caller=exact, caller_ends=ends,
                     min_duration=low, max_duration=high, state=state, on_hold=on_hold,
                     conversation=conversation)
    return wanted, shown


def select(ctx: Context, args: Args) -> tuple[list[RecordingRow], dict[str, Any]]:
    """The recordings matching the filters (oldest first, as ``list`` always printed them; the parts
    of one conversation together, in part order), and the filters as the audit may show them."""
    wanted, shown = filters(ctx, args)
    _, rows = search_index(ctx.store.db(), wanted, now=ctx.now, page_size=0)
    rows.sort(key=lambda r: (r.conversation_start, r.conversation_first, r.part, r.id))
    return rows, shown


def _listing(ctx: Context, args: Args) -> Reply:
    rows, shown = select(ctx, args)
    masked = ctx.role == TECHNICIAN
    ctx.note(count=len(rows), masked=masked, recordings=[r.id for r in rows][:200])
    data = rows_json(rows, ctx, masked=masked)
    return Reply(text=table(data), data=data)


@action("list", MANAGER, STAFF, TECHNICIAN)
def list_recordings(ctx: Context, args: Args) -> Reply:
    return _listing(ctx, args)


@action("search", MANAGER, STAFF, TECHNICIAN)
def search(ctx: Context, args: Args) -> Reply:
    if not any(args.opt(k) for k in ("from", "to", "did", "caller", "caller_ends")):
        raise UsageError("search needs at least one of --from, --to, --did, --caller, --caller-ends")
    return _listing(ctx, args)


@action("find", MANAGER, STAFF, TECHNICIAN)
def find(ctx: Context, args: Args) -> Reply:
    """One page of the recordings matching the filters, newest first, with how many match in all
    (the console's search). Technicians: masked, and no caller filter, as ``list``."""
    wanted, shown = filters(ctx, args)
    page, size = _number(args, "page", whole=True), _number(args, "page_size", whole=True)
    page, size = int(1 if page is None else page), int(DEFAULT_PAGE_SIZE if size is None else size)
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise UsageError(f"page starts at 1 and page_size is 1 to {MAX_PAGE_SIZE}")
    total, rows = search_index(ctx.store.db(), wanted, now=ctx.now, page=page, page_size=size)
    masked = ctx.role == TECHNICIAN
    ctx.note(count=total, page=page, page_size=size, masked=masked, recordings=[r.id for r in rows])
    data = rows_json(rows, ctx, masked=masked)
    last = max(1, -(-total // size))
    text = table(data) + f"\npage {page} of {last} ({total} recording{'s' if total != 1 else ''} in all)"
    return Reply(text=text, data={"total": total, "page": page, "page_size": size, "rows": data})


def table(rows: list[dict[str, Any]]) -> str:
    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    headers = ("id", "DID label", "start", "duration", "codec", "state", "part", "caller")
    lines = [(r["id"], r["did_label"], r["started_at"][:19].replace("T", " "), f"{r['duration_s']:.1f} s", r["codec"],
              r["state"] + (" (held)" if r["holds"] else ""), part_mark(r), r["caller"]) for r in rows]
    widths = [max([width(h)] + [width(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = ["  ".join(v + " " * (w - width(v)) for v, w in zip(line, widths, strict=True)).rstrip()
           for line in [headers, *lines]]
    out.append(f"({len(lines)} recording{'s' if len(lines) != 1 else ''})")
    return "\n".join(out)


def part_mark(r: dict[str, Any]) -> str:
    """"1/2" for a conversation kept in parts (with why a later part began), "" for one in one part."""
    parts = r.get("parts") or 1
    if parts <= 1 and (r.get("part") or 1) <= 1:
        return ""
    reason = f" {r['part_reason']}" if r.get("part_reason") else ""
    return f"{r.get('part')}/{parts}{reason}"


# -- status -------------------------------------------------------------------------------------


@action("status", MANAGER, STAFF, TECHNICIAN, AUDITOR)
def status(ctx: Context, args: Args) -> Reply:
    db = ctx.store.db().db
    now = ctx.now
    count, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM recordings").fetchone()
    held = db.execute("SELECT count(DISTINCT recording_id) FROM holds WHERE released_at IS NULL AND until > ?",
                      (now,)).fetchone()[0]
    last = db.execute("SELECT id, erased_at FROM erasures ORDER BY erased_at DESC LIMIT 1").fetchone()
    nxt = db.execute("SELECT min(retain_until) FROM recordings r WHERE NOT EXISTS (SELECT 1 FROM holds h WHERE "
                     "h.recording_id = r.id AND h.released_at IS NULL AND h.until > ?)",
                     (now,)).fetchone()[0]
    st = os.statvfs(ctx.store.root)
    data = {
        "service": ctx.live.status() if ctx.live else {"running": False},
        "store": {"path": ctx.store.root, "recordings": count, "bytes": size, "on_hold": held,
                  "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
                  "full": st.f_bavail * st.f_frsize < int(ctx.config["store.critical_free_mb"]) << 20},
        "retention": {"days": ctx.store.retention_days, "last_erasure": iso(last[1], ctx) if last else None,
                      "last_erased_id": last[0] if last else None, "next_due": iso(nxt, ctx),
                      "clock_jump": ({**asdict(jump), "text": jump.text(ctx.store.tz)}
                                     if (jump := pending_clock_jump(ctx.store.db())) else None)},
        "copies_past_expiry": len(ctx.casework.copies(expired_by=now)),
    }
    data["overview"] = _overview(data, ctx)
    return Reply(text=status_text(data), data=data)


def _overview(d: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """What the technician's page shows, in one flat place (counts and times; no audio, no numbers)."""
    svc, counters = d["service"], d["service"].get("counters", {})
    return {
        "capture_running": bool(svc.get("running")), "packets_per_s": svc.get("packets_per_s"),
        **{name: counters.get(name, 0) for name in STATUS},  # kernel_drops, calls_recorded, ... (recorderd/counters.py)
        "active_calls": svc.get("active_calls", 0),
        "store_free_bytes": d["store"]["free_bytes"], "store_total_bytes": d["store"]["total_bytes"],
        "store_full": d["store"]["full"], "last_erasure": d["retention"]["last_erasure"],
        "next_erasure": d["retention"]["next_due"],
        "alerts": svc.get("alerts", []), "capture_unrecognised": svc.get("unrecognised"),
        "recent_warnings": [{"kind": w["kind"], "count": w["count"], "last": iso(w["last"], ctx)}
                            for w in svc.get("recent_warnings", [])],
    }


def status_text(d: dict[str, Any]) -> str:
    svc, store, ret = d["service"], d["store"], d["retention"]
    if svc.get("running"):
        c = svc.get("counters", {})
        service = (f"service: running for {svc['uptime_s'] // 3600} h {svc['uptime_s'] % 3600 // 60} min; "
                   f"{svc['active_calls']} active call(s), {c.get('calls_recorded', 0)} recorded, "
                   f"{c.get('kernel_drops', 0)} kernel drop(s), store level {svc.get('store_level', '?')}")
        service += "\n" + encap_summary(c)
        if svc.get("unrecognised"):  # capture/unrecognised.py: counts only, no addresses
            service += f"\ncapture: {svc['unrecognised']}"
    else:
        service = "service: not running (no answer on the control socket)"
    free = 100 * store["free_bytes"] / store["total_bytes"] if store["total_bytes"] else 0
    return "\n".join([
        service,
        f"store: {store['path']}: {store['recordings']} recording(s), {store['bytes'] / 2**20:.1f} MiB, "
        f"{store['on_hold']} on hold; {_size(store['free_bytes'])} ({free:.0f}%) free"
        + ("; FULL: below store.critical_free_mb, new calls are not recorded (nothing kept is deleted to make "
           "room: free space on the store)" if store.get("full") else ""),
        f"retention: {ret['days']} days; last erasure {ret['last_erasure'] or 'none yet'}"
        + (f" ({ret['last_erased_id']})" if ret["last_erased_id"] else "") + f"; next due {ret['next_due'] or 'none'}",
        f"exported copies past expiry: {d['copies_past_expiry']}",
        *([f"RETENTION STOPPED: {ret['clock_jump']['text']}"] if ret.get("clock_jump") else []),
    ])


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# -- holds (Art. 5(2)) ---------------------------------------------------------------------------


def place_hold(ctx: Context, recording_id: str, until: float, reason: str, ref: str) -> int:
    """A hold on one recording (``hold`` and disclosure searches; each audits it)."""
    if until <= ctx.now:
        raise UsageError("a hold must end in the future")
    return ctx.store.holding.hold(recording_id, until=until, reason=scrub(reason), ref=scrub(ref), by=ctx.caller.user)


@action("hold", MANAGER)
def hold(ctx: Context, args: Args) -> Reply:
    rid, until_text = args.text("id", 100), args.text("until", 40)
    reason, ref = args.text("reason"), args.text("ref", 200)
    until = parse_when(until_text, ctx, end=True, what="--until")
    ctx.note(rid, until=until, until_local=iso(until, ctx), reason=reason, ref=ref)
    hold_id = place_hold(ctx, rid, until, reason, ref)
    ctx.note(hold_id=hold_id)
    return Reply(text=f"hold {hold_id} on {rid} until {until_text}",
                 data={"hold_id": hold_id, "until": iso(until, ctx)})


@action("release", MANAGER)
def release(ctx: Context, args: Args) -> Reply:
    rid, hold_id, reason = args.text("id", 100), args.int("hold"), args.text("reason")
    ctx.note(rid, hold_id=hold_id, reason=reason)
    ctx.store.holding.release(rid, hold_id)
    return Reply(text=f"hold {hold_id} on {rid} released", data={"hold_id": hold_id})
