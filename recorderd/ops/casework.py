"""Casework: disclosure requests (Art. 10), incidents (Art. 7), complaints (Art. 8).

A disclosure request goes: ``open`` (requester type: the person, a legal representative or an
appointed agent, APPI Art. 76(2)) -> ``search`` (the caller's number and a time window; every
recording found is held at once, so none is erased while the request is handled) -> ``check`` (each
identity check made: document type, who checked, when, what it was matched with; never an image or
a copy of the document) -> ``decide`` (disclosing needs at least one identity check, and for a
representative or agent also a check of their authority) -> ``release`` (the holds end).
"""
from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

from storage.search import Filters
from storage.search import search as search_index

from ..roles import MANAGER, STAFF
from .framework import Args, Context, NotAllowed, OpError, Reply, UsageError, action, iso, parse_when
from .records import place_hold

REQUESTERS = ("self", "legal-representative", "appointed-agent")
IDENTITY_DOCUMENTS = ("my-number-card", "driving-licence", "passport", "residence-card", "health-insurance-card",
                      "other-photo-id", "other-document")
AUTHORITY_DOCUMENTS = ("power-of-attorney", "family-register", "guardianship-registration")
DECISIONS = ("disclose", "partial", "refuse", "no-record")
DISCLOSURE_HOLD_DAYS = 30
INCIDENT_KINDS = ("leak", "theft", "loss", "other")
CHANNELS = ("phone", "letter", "email", "counter", "web", "other")


def _request(ctx: Context, args: Args) -> dict[str, Any]:
    request_id = args.int("request")
    ctx.note(request=request_id)
    return ctx.casework.disclosure(request_id)


@action("disclosure-open", MANAGER)
def disclosure_open(ctx: Context, args: Args) -> Reply:
    kind, ref, note = args.choice("requester_type", REQUESTERS), args.text("ref", 200), args.opt("note") or ""
    ctx.note(requester_type=kind, ref=ref)
    request_id = ctx.casework.open_disclosure(kind, ref, note, ctx.caller.user, ctx.now)
    ctx.note(request=request_id)
    return Reply(text=f"disclosure request {request_id} opened ({kind}, ref {ref})", data={"request": request_id})


@action("disclosure-search", MANAGER)
def disclosure_search(ctx: Context, args: Args) -> Reply:
    request = _request(ctx, args)
    number, start, end = args.text("caller", 40), args.text("from", 40), args.text("to", 40)
    lo, hi = parse_when(start, ctx, what="--from"), parse_when(end, ctx, end=True, what="--to")
    hold_text = args.opt("hold_until", 40)
    until = (parse_when(hold_text, ctx, end=True, what="--hold-until") if hold_text
             else ctx.now + DISCLOSURE_HOLD_DAYS * 86400)
    ctx.note(filters={"caller": "exact", "from": start, "to": end})
    if request["state"] != "open":
        raise OpError(f"disclosure request {request['id']} is {request['state']}: searches belong to open requests")
    _, found = search_index(ctx.store.db(), Filters(start=lo, end=hi, caller=number), now=ctx.now, page_size=0)
    found.reverse()  # oldest first, as the candidates were always listed
    held = []
    for row in found:
        hold_id = place_hold(ctx, row.id, until, f"disclosure request {request['id']}", request["ref"])
        ctx.casework.add_candidate(request["id"], row.id, hold_id, ctx.now)
        ctx.audit("hold", row.id, {"hold_id": hold_id, "until": until, "reason": f"disclosure request {request['id']}",
                                   "ref": request["ref"], "request": request["id"]})
        held.append({"id": row.id, "hold_id": hold_id, "did_label": row.did_label,
                     "started_at": iso(row.started_at, ctx)})
    ctx.note(recordings=[h["id"] for h in held], count=len(held))
    lines = [f"{h['id']} ({h['did_label']}, {h['started_at']}): hold {h['hold_id']}" for h in held]
    lines.append(f"{len(held)} candidate recording(s) found for request {request['id']} "
                 f"and held until {iso(until, ctx)}")
    return Reply(text="\n".join(lines),
                 data={"request": request["id"], "candidates": held, "held_until": iso(until, ctx)})


@action("disclosure-check", MANAGER)
def disclosure_check(ctx: Context, args: Args) -> Reply:
    request = _request(ctx, args)
    document = args.choice("document", IDENTITY_DOCUMENTS + AUTHORITY_DOCUMENTS)
    checked_by, on = args.text("checked_by", 100), args.text("date", 10)
    matched = args.opt("matched_with", 300) or ""
    try:
        date.fromisoformat(on)
    except ValueError:
        raise UsageError(f"--date {on!r} is not a date (YYYY-MM-DD)") from None
    ctx.note(document=document, checked_by=checked_by, checked_on=on)
    if request["state"] == "closed":
        raise OpError(f"disclosure request {request['id']} is closed")
    check = ctx.casework.add_identity_check(request["id"], document=document, checked_by=checked_by, checked_on=on,
                                            matched_with=matched, recorded_by=ctx.caller.user,
                                            recorded_at=ctx.now)
    return Reply(text=f"identity check {check} recorded for request {request['id']}: {document}, checked by "
                      f"{checked_by} on {on}", data={"check": check})


@action("disclosure-decide", MANAGER)
def disclosure_decide(ctx: Context, args: Args) -> Reply:
    request = _request(ctx, args)
    decision, reason = args.choice("decision", DECISIONS), args.text("reason")
    ctx.note(decision=decision)
    if request["state"] != "open":
        raise OpError(f"disclosure request {request['id']} is already {request['state']}")
    if decision in ("disclose", "partial"):
        docs = [c["document"] for c in request["identity_checks"]]
        if not any(d in IDENTITY_DOCUMENTS for d in docs):
            raise NotAllowed(f"request {request['id']} has no identity check recorded (guideline Art. 10): record one "
                             "with 'recorderctl disclosure check' before disclosing")
        if request["requester_type"] != "self" and not any(d in AUTHORITY_DOCUMENTS for d in docs):
            raise NotAllowed(f"request {request['id']} is by a {request['requester_type']}: record the check of their "
                             f"authority ({', '.join(AUTHORITY_DOCUMENTS)}) before disclosing")
    ctx.casework.decide_disclosure(request["id"], decision, reason, ctx.caller.user, ctx.now)
    ctx.note(recordings=[c["recording_id"] for c in request["candidates"]])
    return Reply(text=f"disclosure request {request['id']}: {decision}",
                 data={"request": request["id"], "decision": decision})


@action("disclosure-release", MANAGER)
def disclosure_release(ctx: Context, args: Args) -> Reply:
    request = _request(ctx, args)
    reason = args.text("reason")
    if request["state"] == "closed":
        raise OpError(f"disclosure request {request['id']} is already closed")
    released = []
    for c in request["candidates"]:
        if (c["released_at"] is None and c["hold_id"] is not None
                and ctx.store.db().release_hold(c["recording_id"], c["hold_id"], ctx.now)):
            ctx.audit("release", c["recording_id"],
                      {"hold_id": c["hold_id"], "reason": reason, "request": request["id"]})
            released.append(c["recording_id"])
    ctx.casework.release_candidates(request["id"], ctx.now)
    ctx.casework.close_disclosure(request["id"], ctx.caller.user, ctx.now)
    ctx.note(recordings=released, reason=reason)
    return Reply(text=f"disclosure request {request['id']} closed: {len(released)} hold(s) released",
                 data={"request": request["id"], "released": released})


def disclosure_text(r: dict[str, Any], ctx: Context) -> str:
    lines = [f"disclosure request {r['id']} ({r['requester_type']}, ref {r['ref']}): {r['state']}, opened by "
             f"{r['opened_by']} {iso(r['opened_at'], ctx)}"]
    for c in r.get("candidates", []):
        lines.append(f"  candidate {c['recording_id']} (hold {c['hold_id']}{', released' if c['released_at'] else ''})")
    for c in r.get("identity_checks", []):
        lines.append(f"  identity check {c['id']}: {c['document']} checked by {c['checked_by']} on {c['checked_on']}"
                     + (f", matched with {c['matched_with']}" if c["matched_with"] else ""))
    if r["decision"]:
        lines.append(f"  decision: {r['decision']} by {r['decided_by']} {iso(r['decided_at'], ctx)}: "
                     f"{r['decision_reason']}")
    return "\n".join(lines)


@action("disclosure-show", MANAGER)
def disclosure_show(ctx: Context, args: Args) -> Reply:
    request = _request(ctx, args)
    return Reply(text=disclosure_text(request, ctx), data=request)


@action("disclosure-list", MANAGER)
def disclosure_list(ctx: Context, args: Args) -> Reply:
    rows = ctx.casework.disclosures()
    ctx.note(count=len(rows))
    return Reply(text="\n".join([disclosure_text(r, ctx) for r in rows] + [f"({len(rows)} request(s))"]), data=rows)


# -- incidents (Art. 7) ------------------------------------------------------------------------------


def integrity_incident(ctx: Context, problems: list[str], recordings: list[str], source: str) -> tuple[int, bool]:
    """Open (once per set of problems) the incident a failed verification calls for."""
    fingerprint = hashlib.sha256("\n".join(sorted(problems)).encode()).hexdigest()
    existing = ctx.casework.open_incident_with(fingerprint)
    if existing is not None:
        return existing, False
    summary = f"integrity check failed ({source}): {len(problems)} problem(s): " + "; ".join(problems[:5])
    incident = ctx.casework.open_incident("other", summary, ctx.now, recordings,
                                          f"recorderctl {source} ({ctx.caller.user})",
                                          ctx.now, automatic=True, fingerprint=fingerprint)
    ctx.audit("incident-new", None,
              {"incident": incident, "kind": "other", "automatic": True, "recordings": recordings})
    return incident, True


@action("incident-new", MANAGER)
def incident_new(ctx: Context, args: Args) -> Reply:
    kind, summary = args.choice("kind", INCIDENT_KINDS), args.text("summary", 4000)
    recordings, occurred = args.ids("recordings"), args.opt("occurred", 40)
    action_text = args.opt("action", 4000)
    when = parse_when(occurred, ctx, what="--occurred") if occurred else ctx.now
    ctx.note(kind=kind, recordings=recordings)
    incident = ctx.casework.open_incident(kind, summary, when, recordings, ctx.caller.user, ctx.now)
    if action_text:
        ctx.casework.add_incident_action(incident, action_text, ctx.caller.user, ctx.now)
    ctx.note(incident=incident)
    return Reply(text=f"incident {incident} opened ({kind})", data={"incident": incident})


@action("incident-action", MANAGER)
def incident_action(ctx: Context, args: Args) -> Reply:
    incident, text = args.int("incident"), args.text("text", 4000)
    ctx.note(incident=incident)
    ctx.casework.add_incident_action(incident, text, ctx.caller.user, ctx.now)
    if args.flag("close"):
        ctx.casework.close_incident(incident)
    return Reply(text=f"incident {incident}: action recorded" + (", closed" if args.flag("close") else ""))


def incident_json(i: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {**i, "occurred_at": iso(i["occurred_at"], ctx), "opened_at": iso(i["opened_at"], ctx),
            "automatic": bool(i["automatic"]),
            "actions": [{**a, "at": iso(a["at"], ctx)} for a in i["actions"]]}


@action("incident-list", MANAGER)
def incident_list(ctx: Context, args: Args) -> Reply:
    rows = [incident_json(i, ctx) for i in ctx.casework.incidents()]
    ctx.note(count=len(rows))
    lines = [f"incident {i['id']}: {i['kind']}, {i['state']}, opened {i['opened_at']} by {i['opened_by']}: "
             f"{i['summary'][:100]}" for i in rows]
    return Reply(text="\n".join(lines + [f"({len(rows)} incident(s))"]), data=rows)


@action("incident-report", MANAGER)
def incident_report(ctx: Context, args: Args) -> Reply:
    incident = args.int("incident")
    ctx.note(incident=incident)
    i = incident_json(ctx.casework.incident(incident), ctx)
    ctx.note(recordings=i["recordings"])
    lines = [
        f"Incident report {i['id']} (guideline Art. 7: to the director and the bureau chief)",
        "",
        f"Kind:        {i['kind']}{' (opened automatically by an integrity check)' if i['automatic'] else ''}",
        f"Occurred:    {i['occurred_at']}",
        f"Opened:      {i['opened_at']} by {i['opened_by']}",
        f"State:       {i['state']}",
        f"What:        {i['summary']}",
        f"Recordings:  {', '.join(i['recordings']) or 'none named'}",
        "Actions:",
        *([f"  {a['at']} {a['by']}: {a['text']}" for a in i["actions"]] or ["  none recorded yet"]),
    ]
    return Reply(text="\n".join(lines), data=i)


# -- complaints (Art. 8) -----------------------------------------------------------------------------


@action("complaint-new", MANAGER, STAFF)
def complaint_new(ctx: Context, args: Args) -> Reply:
    summary, channel = args.text("summary", 4000), args.opt("channel") or "phone"
    if channel not in CHANNELS:
        raise UsageError(f"--channel {channel!r} is not one of {', '.join(CHANNELS)}")
    received = args.opt("received", 40)
    when = parse_when(received, ctx, what="--received") if received else ctx.now
    recordings = args.ids("recordings")
    for rid in recordings:
        ctx.store.reading.get(rid)
    ctx.note(channel=channel, recordings=recordings)
    complaint = ctx.casework.open_complaint(summary, channel, when, recordings, ctx.caller.user, ctx.now)
    ctx.note(complaint=complaint)
    return Reply(text=f"complaint {complaint} recorded", data={"complaint": complaint})


@action("complaint-list", MANAGER, STAFF)
def complaint_list(ctx: Context, args: Args) -> Reply:
    rows = [c for c in ctx.casework.complaints() if not args.flag("open") or c["state"] == "open"]
    data = [{**c, "received_at": iso(c["received_at"], ctx), "opened_at": iso(c["opened_at"], ctx),
             "closed_at": iso(c["closed_at"], ctx)} for c in rows]
    ctx.note(count=len(data))
    lines = [f"complaint {c['id']}: {c['state']}, received {c['received_at']} ({c['channel']}): {c['summary'][:100]}"
             + (f" -> {c['outcome']}" if c["outcome"] else "") for c in data]
    return Reply(text="\n".join(lines + [f"({len(data)} complaint(s))"]), data=data)


@action("complaint-close", MANAGER, STAFF)
def complaint_close(ctx: Context, args: Args) -> Reply:
    complaint, outcome = args.int("complaint"), args.text("outcome", 4000)
    ctx.note(complaint=complaint)
    row = ctx.casework.complaint(complaint)
    if row["state"] == "closed":
        raise OpError(f"complaint {complaint} is already closed")
    ctx.casework.close_complaint(complaint, outcome, ctx.caller.user, ctx.now)
    ctx.note(recordings=row["recordings"])
    return Reply(text=f"complaint {complaint} closed", data={"complaint": complaint})
