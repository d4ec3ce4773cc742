"""Export requests (guideline Art. 5(5), four eyes): a copy for a purpose other than quality or a
suspicious call is asked for, decided by a manager who is not the one asking, then made once.

- ``export-request ID --purpose P --reason TEXT`` (manager, staff): for quality / suspicious_call
  a plain ``export`` is allowed at once, so those are refused here.
- ``export-requests`` (manager: every request; staff: their own), newest first.
- ``export-decide --request N --approve|--refuse --reason TEXT`` (manager, never the requester).
- ``export --request N --out FILE`` (the requester, once the request is approved; once): the copy
  of the request's recording for the request's purpose, made and registered by ``export`` itself
  (expiry, signed manifest) with ``approved_by`` the deciding manager and ``approval_ref``
  "export request N".

Through the console, ``export`` for another purpose is only this way: a console request naming its
own ``--approved-by`` is refused (that form stays for ``recorderctl``, where the manager's approval
was given on paper). Every step is audited (the outcome row carries the recording id, the request
number and the purpose; never the reason's text, which casework keeps scrubbed).
"""
from __future__ import annotations

from typing import Any

from ..roles import MANAGER, STAFF
from .access import PURPOSES
from .framework import ACTIONS, Args, Context, NotAllowed, OpError, Reply, UsageError, action, iso

_plain_export = ACTIONS["export"].fn  # access.export, as registered by access.py


def _request_json(ctx: Context, r: dict[str, Any]) -> dict[str, Any]:
    mine = r["requested_by"] == ctx.caller.user and r["requested_uid"] == ctx.caller.uid
    return {
        "id": r["id"], "recording_id": r["recording_id"], "purpose": r["purpose"], "reason": r["reason"],
        "requested_by": r["requested_by"], "requested_at": iso(r["requested_at"], ctx), "state": r["state"],
        "decided_by": r["decided_by"], "decided_at": iso(r["decided_at"], ctx), "decision_reason": r["decision_reason"],
        "copy": r["copy_id"], "used_at": iso(r["used_at"], ctx),
        "mine": mine,
        "can_decide": r["state"] == "pending" and ctx.role == MANAGER and not mine,
        "can_download": r["state"] == "approved" and mine,
    }


def _request_number(args: Args) -> int:
    value = args.raw.get("request")
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 31:
        raise UsageError("--request: expected the number of an export request")
    return value


@action("export-request", MANAGER, STAFF)
def export_request(ctx: Context, args: Args) -> Reply:
    rid, purpose = args.text("id", 100), args.text("purpose", 100)
    ctx.note(rid, purpose=purpose)
    reason = args.text("reason", 2000)
    if purpose in PURPOSES:
        raise UsageError(f"a copy for {purpose} needs no request: export it at once (export {rid} --purpose {purpose})")
    row = ctx.store.reading.get(rid)
    n = ctx.casework.add_export_request(row.id, purpose, reason, ctx.caller.user, ctx.caller.uid, ctx.now)
    ctx.note(request=n)
    text = f"export request {n} for {row.id} ({purpose}): waiting for a manager other than you to approve it"
    return Reply(text=text, data=_request_json(ctx, ctx.casework.export_request(n)))


@action("export-requests", MANAGER, STAFF)
def export_requests(ctx: Context, args: Args) -> Reply:
    state = args.opt("state", 20)
    rows = ctx.casework.export_requests(requested_by=None if ctx.role == MANAGER else ctx.caller.user)
    if ctx.role != MANAGER:
        rows = [r for r in rows if r["requested_uid"] == ctx.caller.uid]
    if state is not None:
        rows = [r for r in rows if r["state"] == state]
    items = [_request_json(ctx, r) for r in rows]
    lines = [f"{r['id']:>5}  {r['state']:<9} {r['recording_id']}  {r['purpose']}  by {r['requested_by']}"
             + (f", decided by {r['decided_by']}" if r["decided_by"] else "") for r in items]
    return Reply(text="\n".join(lines) or "no export requests", data={"requests": items})


@action("export-decide", MANAGER)
def export_decide(ctx: Context, args: Args) -> Reply:
    n = _request_number(args)
    ctx.note(request=n)
    decision = args.opt("decision", 10)
    approve, refuse = args.flag("approve") or decision == "approve", args.flag("refuse") or decision == "refuse"
    if approve == refuse:
        raise UsageError("say --approve or --refuse (one of them)")
    ctx.note(decision="approve" if approve else "refuse")
    reason = args.text("reason", 2000)
    r = ctx.casework.export_request(n)
    ctx.note(r["recording_id"], purpose=r["purpose"])
    if r["requested_by"] == ctx.caller.user or r["requested_uid"] == ctx.caller.uid:
        raise NotAllowed(f"export request {n} is your own: another manager must decide it "
                         "(four eyes, guideline Art. 5(5))")
    if not ctx.casework.decide_export_request(n, approve, reason, ctx.caller.user, ctx.caller.uid, ctx.now):
        raise OpError(f"export request {n} was decided already ({r['state']})")
    text = f"export request {n} {'approved' if approve else 'refused'}: {r['requested_by']} " + (
        "may now download the copy once" if approve else "is told it was refused")
    return Reply(text=text, data=_request_json(ctx, ctx.casework.export_request(n)))


@action("export", MANAGER, STAFF)
def export(ctx: Context, args: Args) -> Reply:
    """``export`` as access.py makes it, and ``export --request N`` by the requester."""
    if args.raw.get("request") is not None:
        return _export_requested(ctx, args)
    if ctx.caller.via == "console" and (args.raw.get("approved_by") or args.raw.get("approval_ref")):
        ctx.note(args.raw.get("id") if isinstance(args.raw.get("id"), str) else None)
        raise NotAllowed("through the console, a copy for another purpose is asked for with an export request, "
                         "which a second person (a manager) approves")
    return _plain_export(ctx, args)


def _export_requested(ctx: Context, args: Args) -> Reply:
    n = _request_number(args)
    ctx.note(request=n)
    out = args.text("out", 4000)
    r = ctx.casework.export_request(n)
    ctx.note(r["recording_id"], purpose=r["purpose"])
    if r["requested_by"] != ctx.caller.user or r["requested_uid"] != ctx.caller.uid:
        raise NotAllowed(f"export request {n} is {r['requested_by']}'s: only the one who asked may download it")
    if r["state"] != "approved":
        why = {"pending": "is waiting for a manager's decision", "refused": "was refused",
               "used": f"was used already (copy {r['copy_id']})", "exporting": "is being downloaded now"}
        raise NotAllowed(f"export request {n} {why.get(r['state'], r['state'])}")
    if not ctx.casework.claim_export_request(n):
        raise NotAllowed(f"export request {n} is being downloaded or was used already")
    inner = Args({"id": r["recording_id"], "out": out, "purpose": r["purpose"], "format": args.opt("format") or "wav",
                  "approved_by": r["decided_by"], "approval_ref": f"export request {n}"})
    copy_id = None
    try:
        reply = _plain_export(ctx, inner)
        copy_id = (reply.data or {}).get("copy") if isinstance(reply.data, dict) else None
    finally:
        ctx.casework.finish_export_request(n, copy_id, ctx.now)
    if isinstance(reply.data, dict):
        reply.data["request"] = n
    return reply
