"""Reports: the period report (Art. 6(3)), the audit log (``audit show|verify|export``) and the
public notice (Art. 4(1)).

``audit export`` writes the rows as JSON lines with their seals, the anchor and the head, so that
someone outside the box can check the chain's order (and, given the audit-seal key, its seals).
``audit verify`` recomputes the seals, and with the journal's checkpoints (read by recorderctl, as
its user) checks that each is still a row of the chain. A failed ``audit verify`` opens an incident.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from storage.reports import period_report

from ..counters import REPORT
from ..roles import AUDITOR, MANAGER, STAFF, TECHNICIAN
from .casework import integrity_incident
from .framework import Args, Context, Reply, UsageError, action, iso, parse_when

HEX64 = re.compile(r"[0-9a-f]{64}")
KEY_ID = re.compile(r"[0-9a-f]{32}")


def _period(ctx: Context, args: Args) -> tuple[float | None, float | None]:
    start, end = args.opt("from", 40), args.opt("to", 40)
    lo = parse_when(start, ctx, what="--from") if start else None
    hi = parse_when(end, ctx, end=True, what="--to") if end else None
    if lo is not None and hi is not None and hi <= lo:
        raise UsageError("--to must come after --from")
    ctx.note(period={"from": start, "to": end})
    return lo, hi


@action("report", MANAGER, TECHNICIAN, AUDITOR)
def report(ctx: Context, args: Args) -> Reply:
    start, end = args.text("from", 40), args.text("to", 40)
    lo, hi = parse_when(start, ctx, what="--from"), parse_when(end, ctx, end=True, what="--to")
    if hi <= lo:
        raise UsageError("--to must come after --from")
    ctx.note(period={"from": start, "to": end})
    data = {"period": {"from": iso(lo, ctx), "to": iso(hi, ctx)}, "generated_at": iso(ctx.now, ctx),
            "generated_by": ctx.caller.user, **period_report(ctx.store, ctx.casework, lo, hi, REPORT)}
    return Reply(text=report_text(data), data=data)


def _counts(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if d else "none"


def report_text(d: dict[str, Any]) -> str:
    acc, exp, er, inc = d["accesses"], d["exports"], d["erasures"], d["incidents"]
    lines = [
        f"recorderd period report {d['period']['from']} to {d['period']['to']} (guideline Art. 6(3))",
        f"generated {d['generated_at']} by {d['generated_by']}",
        "",
        "Calls recorded, per designated number:",
        *([f"  {label}: {n}" for label, n in d["recorded_per_did"].items()] or ["  none"]),
        f"  total: {sum(d['recorded_per_did'].values())}",
        "Calls not recorded: " + (_counts(d["not_recorded"]) if d["not_recorded"] is not None
                                  else "not available (no service counters kept for this period)"),
        "Capture: " + (_counts(d["capture"]) if d["capture"] is not None else "not available"),
        "Accesses by purpose:",
        *([f"  {k}: {_counts(v)}" for k, v in acc["by_purpose"].items()] or ["  none"]),
        f"Refused attempts: {_counts(acc['denied_by_action'])}",
        f"Exports: {exp['total']} ({_counts(exp['by_purpose'])}); {exp['with_manager_approval']} with a manager's "
        f"approval; copies past expiry not yet destroyed: {exp['copies_past_expiry_not_destroyed']}",
        f"Provisions: {d['provisions']['total']} ({_counts(d['provisions']['by_basis'])})",
        f"Holds: {d['holds']['placed']} placed, {d['holds']['released']} released, {d['holds']['in_force_now']} in force now",
        f"Erasures: {er['on_time']} on time, {er['late']} late",
        *[f"  late: {r['id']} ({r['did_label']}), {r['late_s'] // 60} min after its deadline" for r in er["late_recordings"]],
        f"Incidents: {inc['opened']} opened ({_counts(inc['by_kind'])}; {inc['automatic']} automatic), "
        f"{inc['open_now']} open now",
        f"Complaints: {d['complaints']['received']} received, {d['complaints']['closed']} closed, "
        f"{d['complaints']['open_now']} open now",
        f"Disclosure requests: {d['disclosures']['opened']} opened; decided: {_counts(d['disclosures']['decided'])}",
    ]
    return "\n".join(lines)


# -- the audit log ---------------------------------------------------------------------------------


def row_json(row: tuple[int, Any, str, str], ctx: Context) -> dict[str, Any]:
    seq, e, prev_hash, digest = row
    return {"seq": seq, "at": iso(e.at, ctx), "user": e.user, "uid": e.uid, "role": e.detail.get("role"),
            "action": e.action, "recording_id": e.recording_id, "detail": e.detail, "result": e.result,
            "prev_hash": prev_hash, "hash": digest}


@action("audit-show", MANAGER, AUDITOR)
def audit_show(ctx: Context, args: Args) -> Reply:
    lo, hi = _period(ctx, args)
    limit = args.int("limit") if args.raw.get("limit") is not None else 100
    rows = ctx.store.audit_log().select(lo, hi, user=args.opt("user", 64), action=args.opt("action", 64),
                                        recording_id=args.opt("recording", 100), limit=max(1, min(limit, 100_000)))
    data = [row_json(r, ctx) for r in rows]
    ctx.note(count=len(data))
    skip = {"role", "via", "roles"}
    lines = [f"{r['seq']:>6} {r['at']} {r['user']}({r['uid']}) {r['role']} {r['action']} {r['recording_id'] or '-'} "
             f"{r['result']} " + json.dumps({k: v for k, v in r["detail"].items() if k not in skip}, ensure_ascii=False)
             for r in data]
    return Reply(text="\n".join(lines + [f"({len(data)} row(s))"]), data=data)


MAX_CHECKPOINTS = 10_000  # within a request (1 MiB); recorderctl sends at most 6,000 (recorderd/journal.py)


def _checkpoints(args: Args) -> list[tuple[int, str, str, str]] | None:
    """The journal's checkpoints recorderctl read, as [seq, seal hex, when, key id] (None: not asked for)."""
    raw = args.raw.get("checkpoints")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_CHECKPOINTS:
        raise UsageError(f"checkpoints: expected a list of at most {MAX_CHECKPOINTS}")
    out = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 4 or isinstance(item[0], bool) or not isinstance(item[0], int)
                or item[0] < 0 or not isinstance(item[1], str) or not HEX64.fullmatch(item[1])
                or not isinstance(item[2], str) or len(item[2]) > 40
                or not isinstance(item[3], str) or not KEY_ID.fullmatch(item[3])):
            raise UsageError("checkpoints: each is [row, 64 hex digits of its seal, when, 32 hex digits of the key id]")
        out.append((item[0], item[1], item[2], item[3]))
    return out


@action("audit-verify", MANAGER, AUDITOR)
def audit_verify(ctx: Context, args: Args) -> Reply:
    audit = ctx.store.audit_log()
    checkpoints = _checkpoints(args)
    problems = audit.verify()
    count = audit.db.execute("SELECT count(*) FROM audit").fetchone()[0]
    anchor = audit.anchor()
    lines = [f"FAIL {p}" for p in problems] + [f"NOTE {n}" for n in audit.notes]
    start = f"from row {anchor[0] + 1} (older rows pruned)" if anchor else "from row 1"
    lines.append(f"audit log: {count} row(s) {start}: " + ("the chain holds" if not problems else f"{len(problems)} problem(s)"))
    data: dict[str, Any] = {"rows": count, "problems": problems, "notes": audit.notes}
    if checkpoints is not None:
        source = args.opt("journal", 200) or "the journal"
        against, counts = audit.check_checkpoints(checkpoints)
        lines += [f"FAIL {p}" for p in against]
        if counts["pruned"]:
            lines.append(f"NOTE {counts['pruned']} checkpoint(s) from before the pruning anchor: not checked")
        if counts["other_key"]:
            lines.append(f"NOTE {counts['other_key']} checkpoint(s) of another audit log (another key: a store made "
                         "before on this box, or before init replaced the key): not checked")
        lines.append(f"against {source}: {counts['checked']} checkpoint(s) checked: "
                     + ("each is a row of the chain, with its seal" if not against else "the log no longer holds what they say"))
        problems = problems + against
        data["checkpoints"] = {"source": source, **counts, "problems": against}
        ctx.note(checkpoints=counts)
    ctx.note(rows=count, problems=len(problems))
    if problems:
        incident, new = integrity_incident(ctx, [f"audit log: {p}" for p in problems], [], "audit verify")
        lines.append(f"incident {incident} {'opened' if new else 'already open'} (recorderctl incident report {incident})")
        data["incident"] = incident
        ctx.result = f"failed: {len(problems)} problem(s)"
    return Reply(rc=1 if problems else 0, text="\n".join(lines), data=data)


@action("audit-export", MANAGER, AUDITOR)
def audit_export(ctx: Context, args: Args) -> Reply:
    out = args.text("out", 4000)
    lo, hi = _period(ctx, args)
    ctx.note(out=out)
    audit = ctx.store.audit_log()
    sink = ctx.outputs(out)
    digest = hashlib.sha256()
    count = 0
    try:
        anchor, head = audit.anchor(), audit.head()
        lines: list[dict[str, Any]] = [{"recorderd_audit_export": 1, "anchor": {"seq": anchor[0], "hash": anchor[1]} if anchor else None,
                  "head": {"seq": head[0], "hash": head[1]} if head else None}]
        for seq, e, prev_hash, h in audit.select(lo, hi):
            lines.append({"seq": seq, "at": e.at, "user": e.user, "uid": e.uid, "action": e.action,
                          "recording_id": e.recording_id, "detail": e.detail, "result": e.result,
                          "prev_hash": prev_hash, "hash": h})
            count += 1
        for line in lines:
            data = (json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n").encode()
            digest.update(data)
            sink.write(data)
    except BaseException:
        sink.abort()
        raise
    sink.commit(digest.hexdigest())
    ctx.note(rows=count, sha256=digest.hexdigest())
    return Reply(text=f"{count} audit row(s) written to {out} (SHA-256 {digest.hexdigest()})",
                 data={"rows": count, "out": out, "sha256": digest.hexdigest()})


# -- the public notice (Art. 4(1)) ---------------------------------------------------------------------


@action("notice", MANAGER, STAFF, TECHNICIAN, AUDITOR)
def notice(ctx: Context, args: Args) -> Reply:
    lang = args.opt("lang") or "ja"
    if lang not in ("ja", "en"):
        raise UsageError(f"--lang {lang!r} is not ja or en")
    dids = ctx.live.dids() if ctx.live else ctx.config.dids
    days = int(ctx.config["retention.days"])
    numbers = [{"label": d.label, "number": d.number} for d in dids.dids]
    ctx.note(lang=lang, numbers=len(numbers))
    text = notice_ja(numbers, days) if lang == "ja" else notice_en(numbers, days)
    return Reply(text=text, data={"numbers": numbers, "retention_days": days,
                                  "purposes": ["quality", "suspicious_call"], "text": text})


def notice_ja(numbers: list[dict[str, str]], days: int) -> str:
    return "\n".join([
        "通話録音についてのお知らせ",
        "",
        "川崎市コンタクトセンターでは、オペレーターの応対品質の向上及び不審な電話への対応のため、",
        "次の電話番号宛てにいただいたお電話の通話内容を録音しています。",
        "",
        *[f"  {n['label']}　{n['number']}" for n in numbers],
        "",
        f"録音した通話は、録音した日の翌日から起算して{days}日後まで保管し、その後、復元できない方法で",
        "確実に消去します。特に必要がある場合に限り、保管の期間を別に定めることがあります。",
        "録音は編集・加工せず、上記の目的以外に複製・持ち出しをせず、個人情報の保護に関する法律",
        "第69条第2項各号に該当する場合を除き、市以外の者に提供しません。",
        "録音された御自身の通話についての開示等の請求は、本人確認の上で受け付けます。",
    ])


def notice_en(numbers: list[dict[str, str]], days: int) -> str:
    return "\n".join([
        "Notice: calls are recorded",
        "",
        "The Kawasaki City contact centre records calls made to the numbers below, to improve how",
        "operators respond and to deal with suspicious or threatening calls.",
        "",
        *[f"  {n['label']}  {n['number']}" for n in numbers],
        "",
        f"Recordings are kept until {days} days counted from the day after the call, then erased so that",
        "they cannot be restored; only where especially needed is a recording kept longer.",
        "Recordings are not edited, not copied or taken out beyond these purposes, and not provided to",
        "anyone outside the city except in the cases of Article 69(2) of the Act on the Protection of",
        "Personal Information. Requests for disclosure of your own recorded call are accepted after",
        "your identity has been verified.",
    ])
