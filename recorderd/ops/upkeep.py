"""Upkeep of the store: ``init``, ``verify``, ``retention run``, ``decommission``.

- ``init`` needs no role, only the right to create the store (root or the service user), and runs
  directly; it makes the recorder's signing key if the store has none (never replacing one).
  ``decommission`` is the contractor's (technician, Art. 6(4)) and runs only directly, with the
  service stopped: it is not something to do to a store a running service writes to.
- ``verify`` (manager, technician, auditor) checks every recording and the audit chain; a failure
  opens an incident by itself (Art. 7).
- ``retention run`` (manager, technician) erases what is due, then deals with exported copies past
  their expiry: a copy it can reach whose bytes are still those exported is erased like a recording;
  every other one is reported, for its holder to destroy and confirm (``copies destroyed``). Then it
  removes audit rows older than ``audit.retention_days`` (a chained pruning row records it). When
  the clock jumped (storage/clock.py) it erases nothing and says so, until ``retention
  confirm-clock`` (manager) says the clock is right.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any

from storage import signing
from storage.audit import AuditEvent
from storage.clock import ClockGuard
from storage.decommission import decommission
from storage.erasure import Unreachable, erase_beside, erase_copy
from storage.policy import iso as iso_ms
from storage.retention import RetentionWorker
from storage.store import Actor

from ..roles import AUDITOR, MANAGER, TECHNICIAN
from .access import signing_key
from .casework import integrity_incident
from .framework import Args, Context, OpError, Reply, UsageError, action, iso

log = logging.getLogger(__name__)


@action("init", no_role=True, direct_only=True)
def init(ctx: Context, args: Args) -> Reply:
    created = args.flag("created")
    ctx.note(store=ctx.store.root, created=created)
    key, made = signing_key(ctx, own_row=False)
    key_id = key.public.key_id
    ctx.note(signing_key={**key.public.audited(), "created": made})
    return Reply(text=f"store {'created' if created else 'already initialised'} at {ctx.store.root}; "
                      f"signing key {key_id}",
                 data={"store": ctx.store.root, "created": created, "signing_key": key_id})


@action("verify", MANAGER, TECHNICIAN, AUDITOR)
def verify(ctx: Context, args: Args) -> Reply:
    rows = ctx.store.reading.recordings()
    problems, failed = [], []
    for row in rows:
        problem = ctx.store.integrity.check(row)
        if problem:
            problems.append(problem)
            failed.append(row.id)
    problems += [f"audit log: {p}" for p in ctx.store.audit_log().verify()]
    lines = [f"FAIL {p}" for p in problems]
    lines.append(f"verified {len(rows)} recording(s) and the audit log: "
                 + ("all hold" if not problems else f"{len(problems)} problem(s)"))
    ctx.note(recordings=len(rows), problems=len(problems), failed=failed)
    data: dict[str, Any] = {"recordings": len(rows), "problems": problems}
    if problems:
        incident, new = integrity_incident(ctx, problems, failed, "verify")
        lines.append(f"incident {incident} {'opened' if new else 'already open'} for these problems "
                     f"(recorderctl incident report {incident})")
        data["incident"] = incident
        ctx.result = f"failed: {len(problems)} problem(s)"
    return Reply(rc=1 if problems else 0, text="\n".join(lines), data=data)


def _copy_state(copy: dict[str, Any]) -> str | None:
    """Erase an expired copy if it can be reached and is unchanged; else say why not. The file is
    opened once, never through a link, and must be a regular file of the copy's holder: a FIFO
    serving the exported bytes with a link swapped in at the last moment erases nothing."""
    try:
        erase_copy(copy["out"], int(copy["uid"]), copy["sha256"])
    except Unreachable as exc:
        return str(exc)
    except FileNotFoundError:
        return "not found there (moved, or deleted without confirmation)"
    except OSError as exc:
        return f"cannot be reached from here ({exc.strerror or exc})"
    return None


def _erase_manifests(copy: dict[str, Any]) -> list[str]:
    """The erased copy's signed manifest and signature (beside it) go too, with the same care; one
    that is not there is fine, one that is not the holder's plain file is left, and said."""
    left = []
    for path in signing.manifest_paths(copy["out"]):
        try:
            erase_beside(path, int(copy["uid"]))
        except Unreachable as exc:
            left.append(f"{path} left: {exc}; its holder must delete it")
        except OSError as exc:
            left.append(f"{path} left: cannot be reached from here ({exc.strerror or exc}); its holder must delete it")
    return left


def sweep_copies(ctx: Context) -> tuple[list[int], list[str]]:
    erased, lines = [], []
    for copy in ctx.casework.copies(expired_by=ctx.now):
        why = _copy_state(copy)
        if why is None:
            ctx.casework.dispose_copy(copy["id"], ctx.now, "erased by retention run")
            erased.append(copy["id"])
            left = _erase_manifests(copy)  # on the copy's line: one line per expired copy
            lines.append(f"erased expired copy {copy['id']} of {copy['recording_id']} at {copy['out']}"
                         + "".join(f"; {note}" for note in left))
            continue
        hint = " (the service's sandbox hides home and temporary folders)" if ctx.caller.via == "socket" else ""
        lines.append(f"EXPIRED COPY {copy['id']} of {copy['recording_id']} ({copy['kind']} by {copy['user']}, "
                     f"expired {iso(copy['expires_at'], ctx)}) at {copy['out']}: {why}{hint}; its holder must destroy "
                     f"it and confirm with 'recorderctl copies destroyed {copy['id']}'")
    return erased, lines


def prune_audit(ctx: Context) -> int:
    """Remove audit rows (and counter snapshots) older than ``audit.retention_days``."""
    days = int(ctx.config["audit.retention_days"])
    cutoff = ctx.now - days * 86400
    who = {"role": ctx.role or "none", "via": ctx.caller.via}
    event = AuditEvent(ctx.now, ctx.caller.user, ctx.caller.uid, "audit-prune", None,
                       {**who, "retention_days": days, "before": iso(cutoff, ctx)}, "allowed")
    removed = ctx.store.audit_log().prune(cutoff, event)
    ctx.casework.prune_snapshots(cutoff)
    return removed


@action("retention-run", MANAGER, TECHNICIAN)
def retention_run(ctx: Context, args: Args) -> Reply:
    report = RetentionWorker(ctx.store).run()
    if report.clock_jump is not None:  # nothing erased by a clock in question: no recording, copy nor audit row
        jump = report.clock_jump
        ctx.note(clock_jump={"kind": jump.kind, "seconds": round(jump.seconds)})
        ctx.result = f"failed: clock jump ({jump.kind}, {jump.seconds:.0f} s): retention stopped"
        return Reply(rc=1, text=f"STOPPED: {jump.text(ctx.store.tz)}", error="retention stopped: the clock jumped",
                     data={"erased": [], "failures": [], "copies_erased": [], "copies_unreachable": 0,
                           "audit_rows_pruned": 0, "clock_jump": asdict(jump)})
    lines = []
    for e in report.erased:
        late = f", {e.late_s / 60:.0f} min late" if e.late_s > 60 else ""
        lines.append(f"erased {e.id} ({e.did_label}, call of {e.call_date}, "
                     f"due {iso_ms(e.retain_until, ctx.store.tz)}{late})")
    lines += [f"erased leftover file {name}" for name in report.orphans + report.spool_leftovers]
    copies_erased, copy_lines = sweep_copies(ctx)
    lines += copy_lines
    pruned = prune_audit(ctx)
    if pruned:
        lines.append(f"removed {pruned} audit row(s) older than {ctx.config['audit.retention_days']} days")
    lines += [f"FAILED {f}" for f in report.failures]
    lines.append(f"{len(report.erased)} recording(s) erased")
    unreachable = len(copy_lines) - len(copies_erased)
    ctx.note(erased=[e.id for e in report.erased], copies_erased=copies_erased, copies_unreachable=unreachable,
             audit_rows_pruned=pruned)
    if report.failures:
        ctx.result = "failed: " + "; ".join(report.failures)
    data = {"erased": [e.id for e in report.erased], "failures": report.failures, "copies_erased": copies_erased,
            "copies_unreachable": unreachable, "audit_rows_pruned": pruned}
    return Reply(rc=1 if report.failures else 0, text="\n".join(lines), data=data)


@action("retention-confirm-clock", MANAGER)
def retention_confirm_clock(ctx: Context, args: Args) -> Reply:
    """The manager has checked the clock (against a time signal, the PBX, a phone): retention goes by it
    again from now, and the jump it was stopped for is in the audit row."""
    jump = ClockGuard(ctx.store.db(), ctx.store.clock, ctx.store.steady, ctx.store.boot_id).confirm()
    now = iso(ctx.now, ctx)
    if jump is None:
        ctx.note(clock_jump=None, clock_now=now)
        return Reply(text=f"the clock was not in question; it reads {now} (retention goes on)",
                     data={"confirmed": None, "clock_now": now})
    ctx.note(clock_jump={"kind": jump.kind, "seconds": round(jump.seconds), "seen_at": iso(jump.seen_at, ctx)},
             clock_now=now)
    log.warning("clock confirmed by %s at %s after a jump %s of %.0f s: retention resumes", ctx.caller.user, now,
                jump.kind, abs(jump.seconds), extra={"EVENT": "clock-confirmed"})
    return Reply(text=f"clock confirmed as {now}: retention resumes and erases what is due by it at the next run",
                 data={"confirmed": asdict(jump), "clock_now": now})


@action("decommission", TECHNICIAN, direct_only=True)
def decommission_store(ctx: Context, args: Args) -> Reply:
    if not args.flag("confirm"):
        raise UsageError("decommission erases every recording, the index and the master key for good; "
                         "add --confirm to proceed")
    path = args.text("certificate")
    ctx.note(certificate=os.path.abspath(path))
    try:
        cert = decommission(ctx.store, Actor(ctx.caller.user, ctx.caller.uid), path)
    except ValueError as exc:
        raise OpError(str(exc)) from None
    passed = cert.verification.startswith("passed")
    if not passed:
        ctx.result = "failed: files remain"
    return Reply(rc=0 if passed else 1, text=cert.text().rstrip("\n"), data=asdict(cert))
