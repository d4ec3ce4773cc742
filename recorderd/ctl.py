"""``recorderctl``: what managers, staff, technicians and auditors do with the recordings.

It acts for the calling Unix user. When the service runs, the request goes over its control socket
and the service knows the caller from the kernel (SO_PEERCRED). When nothing answers there, and the
caller can open the store (root or the service user), it works on the store directly, as its own
uid, and when it appended audit rows it sends the log's head to the journal as the service's
checkpoints are (``EVENT=audit-checkpoint``, ``SYSLOG_IDENTIFIER=recorderctl``; where there is a
journald). Either way the same operations run (:mod:`recorderd.ops`), with the same role checks and
the same audit. ``init`` always works directly.

Exit status: 0 done, 1 failed (e.g. an integrity problem, a copy that could not be put in place),
2 usage or config error, 3 not allowed (refused, and the refusal audited), 4 the service is not
running and the store cannot be opened, 5 the service is busy (every request slot taken, or this
user's share of them): nothing was done, try again.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import sqlite3
import sys
from typing import Any

from storage import signing
from storage.policy import iso
from storage.search import MAX_PAGE_SIZE
from storage.store import StoreError

from . import VersionAction, client, journal, ops, roles, service, wire
from .config import Config
from .ops.access import part_path
from .ops.records import DEFAULT_PAGE_SIZE

UNREACHABLE = 4
BUSY = client.BUSY
OUTPUT_ACTIONS = ("export", "provide", "audit-export")
JOURNAL_CHECKPOINTS = journal.SENT  # at most, per key id those of the highest rows (a sealed chain holding one holds all before it)
SIGNED_ACTIONS = ("export", "provide")  # their copy comes with a signed manifest beside it


def _sub(sub: Any, name: str, action: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.set_defaults(op=action)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from", help="calls from this date (YYYY-MM-DD) or ISO date-time")
    p.add_argument("--to", help="calls up to this date (inclusive) or date-time")
    p.add_argument("--did", help="a designated number (any written form) or its label")
    p.add_argument("--caller", help="the caller's number, exact (any written form); not for technicians")
    p.add_argument("--caller-ends", help="the last digits of the caller's number (4 or more)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recorderctl", description="Work with recorderd's recordings (audited).")
    parser.add_argument("--config", default="/etc/recorderd/recorderd.yaml", help="site config")
    parser.add_argument("--version", action=VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    _sub(sub, "init", "init", "create the store (idempotent; root or the service user)")
    _sub(sub, "status", "status", "capture, drops, active calls, store use, last erasure, next due")
    _filters(_sub(sub, "list", "list", "list kept recordings (optionally filtered)"))
    _filters(_sub(sub, "search", "search", "find recordings by time, number called, caller"))
    p = _sub(sub, "find", "find", "one page of the search, newest first, with how many match in all")
    _filters(p)
    p.add_argument("--min-duration", help="calls of at least this many seconds")
    p.add_argument("--max-duration", help="calls of at most this many seconds")
    p.add_argument("--state", help="complete | incomplete")
    p.add_argument("--on-hold", choices=("yes", "no"), help="only calls on hold (yes) or not (no)")
    p.add_argument("--conversation", help="the parts of one conversation (its token, as show prints it)")
    p.add_argument("--page", type=int, help="the page (from 1; default 1)")
    p.add_argument("--page-size", type=int, help=f"recordings a page (1 to {MAX_PAGE_SIZE}; default {DEFAULT_PAGE_SIZE})")
    p = _sub(sub, "show", "show", "a recording: details, quality per direction, DTMF, holds, access history (staff, manager)")
    p.add_argument("id")
    p = _sub(sub, "export", "export", "write a recording's WAV to a file (staff, manager)")
    p.add_argument("id", nargs="?", help="the recording (not with --request)")
    p.add_argument("--out", required=True)
    p.add_argument("--purpose", help="quality | suspicious_call | other (with a manager's approval); not with --request")
    p.add_argument("--request", type=int, help="the copy of your export request N, once a manager approved it")
    p.add_argument("--approved-by", help="the manager who approved an out-of-purpose copy")
    p.add_argument("--approval-ref", help="the reference of that approval")
    p.add_argument("--format", default="wav", help="wav (as recorded) | pcm (16-bit PCM, for players lacking G.711) | pcap (the call's evidence pcap)")
    p.add_argument("--conversation", action="store_true",
                   help="every part of the recording's conversation, each with its manifest, into the folder --out")
    p = _sub(sub, "export-request", "export-request", "ask for a copy for another purpose (staff, manager; a second manager decides)")
    p.add_argument("id")
    p.add_argument("--purpose", required=True, help="what the copy is for (not quality nor suspicious_call: those need no request)")
    p.add_argument("--reason", required=True, help="why, for the manager who decides")
    p = _sub(sub, "export-requests", "export-requests", "export requests (manager: all; staff: their own), newest first")
    p.add_argument("--state", choices=("pending", "approved", "refused", "exporting", "used"))
    p = _sub(sub, "export-decide", "export-decide", "approve or refuse an export request (manager, not the one who asked)")
    p.add_argument("--request", type=int, required=True)
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--refuse", action="store_true")
    p.add_argument("--reason", required=True)
    copies = sub.add_parser("copies", help="exported copies and their expiry").add_subparsers(dest="sub", required=True)
    _sub(copies, "list", "copies-list", "list copies (staff: their own)")
    p = _sub(copies, "destroyed", "copies-destroyed", "confirm a copy destroyed")
    p.add_argument("copy", type=int)
    p.add_argument("--note")
    p = _sub(sub, "hold", "hold", "keep a recording past its deadline (manager, Art. 5(2))")
    p.add_argument("id")
    p.add_argument("--until", required=True, help="YYYY-MM-DD (through that day) or an ISO date-time")
    p.add_argument("--reason", required=True)
    p.add_argument("--ref", required=True, help="reference number of the decision")
    p = _sub(sub, "release", "release", "end a hold (manager)")
    p.add_argument("id")
    p.add_argument("--hold", type=int, required=True)
    p.add_argument("--reason", required=True)
    p = _sub(sub, "provide", "provide", "provide a recording to an outside party (manager, Art. 5(6))")
    p.add_argument("id")
    p.add_argument("--to", required=True, help="the recipient")
    p.add_argument("--basis", help="APPI Art. 69 basis: law, consent, to-subject, internal, public-body, "
                                   "statistics, clear-benefit, special-reason")
    p.add_argument("--out", required=True)
    p.add_argument("--note")
    p.add_argument("--format", default="wav")
    p.add_argument("--conversation", action="store_true",
                   help="every part of the recording's conversation, each its own provision with its manifest, into the folder --out")
    _disclosure(sub)
    _casework(sub)
    p = _sub(sub, "report", "report", "the period report (manager, technician, auditor)")
    p.add_argument("--from", dest="from", required=True)
    p.add_argument("--to", required=True)
    audit = sub.add_parser("audit", help="the audit log (auditor, manager)").add_subparsers(dest="sub", required=True)
    p = _sub(audit, "show", "audit-show", "show audit rows")
    for name in ("--from", "--to", "--user", "--action", "--recording"):
        p.add_argument(name, dest=name[2:])
    p.add_argument("--limit", type=int, default=100)
    p = _sub(audit, "verify", "audit-verify", "check the sealed chain; name every row that fails")
    p.add_argument("--against-journal", action="store_true",
                   help="and check that every audit checkpoint in the journal is still a row of the chain")
    p.add_argument("--journal-file", help="the checkpoints from this file (journalctl -o json lines) instead")
    p = _sub(audit, "export", "audit-export", "write the rows with their hashes as JSON lines")
    p.add_argument("--out", required=True)
    p.add_argument("--from", dest="from")
    p.add_argument("--to")
    p = _sub(sub, "notice", "notice", "the public notice text from the live config (Art. 4(1))")
    p.add_argument("--lang", default="ja", choices=("ja", "en"))
    _sub(sub, "verify", "verify", "decrypt and check every recording, and the audit chain")
    p = _sub(sub, "verify-export", "verify-export", "check a copy against its signed manifest (FILE.manifest.json, .sig)")
    p.add_argument("file")
    p.add_argument("--pubkey", help="the recorder's public key (PEM, as 'recorderctl pubkey' prints it): checks "
                                    "without the store, a config or an account; default: the store's key")
    _sub(sub, "pubkey", "pubkey", "the recorder's public key (PEM) and key id, which check its signed copies (any role)")
    retention = sub.add_parser("retention", help="retention: erasure when it is due").add_subparsers(dest="sub", required=True)
    _sub(retention, "run", "retention-run", "erase every recording due now")
    _sub(retention, "confirm-clock", "retention-confirm-clock",
         "the clock was checked and is right: retention, stopped by a clock jump, resumes (manager)")
    p = _sub(sub, "decommission", "decommission", "erase everything at contract end (technician, Art. 6(4))")
    p.add_argument("--confirm", action="store_true")
    p.add_argument("--certificate", required=True, help="where to write the erasure certificate (.json and .txt)")
    return parser


def _disclosure(sub: Any) -> None:
    d = sub.add_parser("disclosure", help="disclosure requests (manager, Art. 10)").add_subparsers(dest="sub", required=True)
    p = _sub(d, "open", "disclosure-open", "open a request")
    p.add_argument("--requester-type", required=True, choices=("self", "legal-representative", "appointed-agent"))
    p.add_argument("--ref", required=True, help="the request's reference number")
    p.add_argument("--note")
    p = _sub(d, "search", "disclosure-search", "find the caller's recordings in a time window and hold them")
    p.add_argument("request", type=int)
    p.add_argument("--caller", required=True)
    p.add_argument("--from", dest="from", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--hold-until", help="default: 30 days from now")
    p = _sub(d, "check", "disclosure-check", "record an identity check (never an image of the document)")
    p.add_argument("request", type=int)
    p.add_argument("--document", required=True)
    p.add_argument("--checked-by", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--matched-with", help="what else it was matched with (e.g. address on the request form)")
    p = _sub(d, "decide", "disclosure-decide", "record the decision")
    p.add_argument("request", type=int)
    p.add_argument("--decision", required=True, choices=("disclose", "partial", "refuse", "no-record"))
    p.add_argument("--reason", required=True)
    p = _sub(d, "release", "disclosure-release", "release the request's holds and close it")
    p.add_argument("request", type=int)
    p.add_argument("--reason", required=True)
    _sub(d, "show", "disclosure-show", "show a request").add_argument("request", type=int)
    _sub(d, "list", "disclosure-list", "list requests")


def _casework(sub: Any) -> None:
    i = sub.add_parser("incident", help="incidents (manager, Art. 7)").add_subparsers(dest="sub", required=True)
    p = _sub(i, "new", "incident-new", "record an incident")
    p.add_argument("--kind", required=True, choices=("leak", "theft", "loss", "other"))
    p.add_argument("--summary", required=True)
    p.add_argument("--recordings", help="affected recording ids, separated by commas")
    p.add_argument("--occurred", help="when it happened (default: now)")
    p.add_argument("--action", help="action taken")
    _sub(i, "list", "incident-list", "list incidents")
    _sub(i, "report", "incident-report", "the report for the director and bureau chief").add_argument("incident", type=int)
    p = _sub(i, "action", "incident-action", "record an action taken")
    p.add_argument("incident", type=int)
    p.add_argument("--text", required=True)
    p.add_argument("--close", action="store_true", help="and close the incident")
    c = sub.add_parser("complaint", help="complaints (staff, manager, Art. 8)").add_subparsers(dest="sub", required=True)
    p = _sub(c, "new", "complaint-new", "record a complaint")
    p.add_argument("--summary", required=True)
    p.add_argument("--channel", default="phone")
    p.add_argument("--received", help="when it was received (default: now)")
    p.add_argument("--recordings", help="related recording ids, separated by commas")
    _sub(c, "list", "complaint-list", "list complaints").add_argument("--open", action="store_true")
    p = _sub(c, "close", "complaint-close", "close a complaint")
    p.add_argument("complaint", type=int)
    p.add_argument("--outcome", required=True)


def request_args(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: v for k, v in vars(args).items() if k not in ("config", "json", "op", "command", "sub", "run")}
    if isinstance(out.get("out"), str):
        out["out"] = os.path.abspath(out["out"])
    return out


def _store_unreachable(config: Config) -> str | None:
    """Why this user cannot open the store (None: it can, or it does not exist yet)."""
    try:
        os.stat(config.store_path)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        return exc.strerror
    return None if os.access(config.store_path, os.R_OK | os.W_OK | os.X_OK) else "permission denied"


def direct(config: Config, action: str, request: dict[str, Any], socket_path: str) -> ops.Reply:
    caller = roles.resolve(os.getuid(), config, via="direct", pid=os.getpid())
    why = _store_unreachable(config)
    if why is not None:
        return ops.Reply(UNREACHABLE, error=f"recorderd is not running (nothing answers on {socket_path}) and "
                         f"{caller.user} cannot open the store at {config.store_path} ({why}): ask a technician "
                         "to start the service (systemctl start recorderd)")
    try:
        with ops.session(config, caller, wire.FileSink) as ctx:
            audit = ctx.store.audit_log()
            opened_at = audit.tip()
            try:
                return ops.run(ctx, action, request)
            finally:
                journal.checkpoint_if_appended(audit, opened_at)
    except StoreError as exc:
        return ops.Reply(1, error=str(exc))
    except sqlite3.Error as exc:
        return ops.Reply(1, error=f"cannot open the store at {config.store_path}: {exc}")


def _init(config: Config, request: dict[str, Any], socket_path: str) -> ops.Reply:
    store = service.open_store(config)
    try:
        request["created"] = store.init()
        store.check_key()
    except PermissionError as exc:
        return ops.Reply(UNREACHABLE, error=f"cannot create the store at {config.store_path}: {exc.strerror} "
                                            "(run init as root or as the service user)")
    except StoreError as exc:  # e.g. a store whose recordings need the master key that is missing
        return ops.Reply(1, error=str(exc))
    return direct(config, "init", request, socket_path)


def perform(config: Config, action: str, request: dict[str, Any]) -> ops.Reply:
    path = client.socket_path(config)
    if action == "init":
        return _init(config, request, path)
    sinks: dict[str, wire.FileSink] = {}
    out = request.get("out")
    if action in OUTPUT_ACTIONS and isinstance(out, str):
        paths = [out, *signing.manifest_paths(out)] if action in SIGNED_ACTIONS else [out]
        if action in ("export", "provide") and request.get("conversation"):  # a folder: each part's copy and manifest
            files = [part_path(out, pid, request.get("format") or "wav") for pid in request.get("parts") or ()]
            paths = [p for f in files for p in (f, *signing.manifest_paths(f))]
        for target in paths:
            try:
                sinks[target] = wire.FileSink(target)  # before asking: a copy that cannot be written is not made
            except OSError as exc:
                for sink in sinks.values():
                    sink.abort()
                return ops.Reply(1, error=f"cannot write {target}: {exc.strerror}")
    try:
        return client.call(path, action, request, sinks)
    except client.Busy:
        return ops.Reply(BUSY, error="recorderd is busy: try again in a moment (nothing was done)")
    except client.Unreachable:
        for sink in sinks.values():
            sink.abort()
        sinks = {}
        return direct(config, action, request, path)
    except PermissionError as exc:
        return ops.Reply(UNREACHABLE, error=f"cannot reach recorderd at {path}: {exc.strerror}")
    except (wire.WireError, OSError) as exc:
        return ops.Reply(1, error=f"the conversation with recorderd broke off: {exc}")
    finally:
        for sink in sinks.values():
            sink.abort()  # a copy not committed leaves nothing behind


def verify_export(args: argparse.Namespace, config: Config | None) -> int:
    """Check a copy and its manifest here, in this process: with ``--pubkey`` against that key (no
    store, config nor role needed: the police check what they were given), else against the store's
    (asked for through ``pubkey``, so the request is audited like any other)."""
    if args.pubkey:
        try:
            with open(args.pubkey, "rb") as f:
                public = signing.PublicKey.from_pem(f.read(1 << 16))
        except (OSError, ValueError) as exc:
            print(f"recorderctl: --pubkey {args.pubkey}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return 2
    else:
        if config is None:
            return 2
        reply = perform(config, "pubkey", {})
        if reply.rc != 0:
            print(f"recorderctl: cannot get the recorder's public key: {reply.error}", file=sys.stderr)
            return reply.rc
        public = signing.PublicKey.from_pem(str(reply.data["public_key"]).encode())
    verdict = signing.verify_export(os.path.abspath(args.file), public)
    m = verdict.manifest or {}
    if args.json:
        json.dump({"file": verdict.path, "ok": verdict.ok, "key_id": verdict.key_id, "sha256": verdict.sha256,
                   "problems": verdict.problems, "manifest": m}, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0 if verdict.ok else 1
    for problem in verdict.problems:
        print(f"FAIL {problem}")
    if verdict.ok:
        print(f"OK {verdict.path}: signed by the recorder's key {verdict.key_id} (copy {m.get('copy_id')} of "
              f"recording {m.get('recording_id')}, made by {(m.get('signer') or {}).get('user')} at "
              f"{m.get('created_at')}); SHA-256 {verdict.sha256} is the manifest's")
        return 0
    print(f"recorderctl: {args.file} does not verify: {len(verdict.problems)} problem(s)", file=sys.stderr)
    return 1


def _dtmf(event: dict[str, Any]) -> str:
    e = event.get("event")
    if isinstance(e, list) and len(e) >= 2:  # [seconds into the call, digit, duration ms]
        return f"{e[1]} at {e[0]} s (channel {event.get('channel')})"
    return f"{event.get('digit', e)} (channel {event.get('channel')})"


def show_text(data: dict[str, Any], tz: Any = None) -> str:
    """``show`` as text: the recording, its quality per direction, DTMF, holds and who did what with it."""
    r = data.get("recording") or {}
    lines = [f"{r.get('id')}  {r.get('did_label')} ({r.get('did')})  {r.get('state')}",
             f"  call      {r.get('started_at')} to {r.get('ended_at')} ({r.get('duration_s')} s), ended: {r.get('end_reason')}",
             f"  caller    {r.get('caller')}",
             f"  audio     {r.get('codec')}, {r.get('channels')} channel(s), {r.get('rate')} Hz, {r.get('audio')}, "
             f"{r.get('size')} bytes, SHA-256 {r.get('sha256')}",
             f"  kept      until {r.get('retain_until')}"]
    for q in data.get("quality") or []:
        loss = "-" if q.get("loss_pct") is None else f"{q['loss_pct']}%"
        lines.append(f"  channel {q.get('channel')} {q.get('packets')} packets, lost {q.get('lost')} ({loss}), duplicates "
                     f"{q.get('duplicates')}, jitter {q.get('jitter_ms')} ms, longest gap {q.get('max_gap_ms')} ms"
                     + (f", cut short by the capture {q['truncated']} (rest silence)" if q.get("truncated") else "")
                     + (f", mirror copies dropped {q['mirror_duplicates']}" if q.get("mirror_duplicates") else ""))
    if data.get("one_way_audio"):
        lines.append("  ONE-WAY AUDIO: one direction carried no audio")
    dtmf = data.get("dtmf") or []
    if dtmf:
        lines.append(f"  DTMF      {len(dtmf)} event(s): " + ", ".join(_dtmf(e) for e in dtmf))
    conversation = data.get("conversation") or {}
    parts = [p for p in conversation.get("parts") or () if isinstance(p, dict)]
    if len(parts) > 1:
        others = ", ".join(f"{p.get('id')} (part {p.get('part')}{', ' + p['part_reason'] if p.get('part_reason') else ''}, "
                           f"{p.get('duration_s')} s)" for p in parts if p.get("id") != r.get("id"))
        lines.append(f"  part      {r.get('part')} of {len(parts)} of conversation {conversation.get('token')}"
                     + (f" (began: {r['part_reason']})" if r.get("part_reason") else "") + f"; other parts: {others}")
    elif conversation.get("token"):
        lines.append(f"  part      the whole conversation ({conversation.get('token')})")
    legs = [g for g in data.get("linked_legs") or () if isinstance(g, dict)]
    if legs:
        lines.append(f"  legs      {len(legs)} other leg(s) of the conversation, not recorded: "
                     + "; ".join(f"{g.get('how')}: {g.get('call_id')}" for g in legs))
    for h in data.get("holds") or []:
        until = h.get("until")
        until = iso(until, tz, "seconds") if isinstance(until, (int, float)) else until
        lines.append(f"  hold {h.get('hold_id')} until {until} by {h.get('created_by')}: {h.get('reason')} (ref {h.get('ref')})")
    history = data.get("history") or []
    lines.append(f"access history ({len(history)}, newest first):")
    for e in history:
        extra = "".join(f" {k}={e[k]}" for k in ("purpose", "basis", "format", "copy", "hold", "request", "decision") if e.get(k) is not None)
        lines.append(f"  {e.get('at')}  {e.get('user')} ({e.get('role')}, via {e.get('via')})  {e.get('action')}  "
                     f"{e.get('result')}{extra}")
    return "\n".join(lines)


def _conversation_parts(config: Config, request: dict[str, Any], op: str = "export") -> tuple[int, str] | None:
    """``export ID --conversation`` (or ``provide``): the parts of ID's conversation (asked for with ``show``, which
    audits the look), into ``request["parts"]``, so that the copies' files are made beforehand here
    like any copy's. Returns (exit status, why) when it cannot be done."""
    if request.get("request") is not None or not request.get("id"):
        return 2, f"{op} --conversation needs the recording's id (not --request)"
    if not os.path.isdir(request["out"]):
        return 2, f"{op} --conversation: --out {request['out']} must be an existing folder (each part goes into it)"
    shown = perform(config, "show", {"id": request["id"]})
    parts = ((shown.data or {}).get("conversation") or {}).get("parts") if isinstance(shown.data, dict) else None
    if shown.rc != 0 or not isinstance(parts, list):
        return shown.rc or 1, shown.error or "the recording's conversation could not be read"
    request["parts"] = [str(p.get("id")) for p in parts if isinstance(p, dict)]
    return None


def _me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


SERVICE_USER = "recorderd"  # the package's (debian/recorderd.sysusers; User= of debian/recorderd.service)


def service_user(config: Config) -> int | str:
    """The uid the service's checkpoints come from: the store's owner, when this user may look at
    the store (root, the service's user); else the package's service user, whom the store belongs
    to (a manager or an auditor may not even look into /var/lib/recorderd, which is 0700). Why it
    cannot be told, as text."""
    try:
        return os.stat(config.store_path).st_uid
    except PermissionError as exc:
        try:
            return pwd.getpwnam(SERVICE_USER).pw_uid
        except KeyError:
            return (f"the store {config.store_path}: {exc.strerror}, and there is no user {SERVICE_USER} "
                    "(the package's service user)")
    except OSError as exc:
        return f"the store {config.store_path}: {exc.strerror}"


def _journal_checkpoints(config: Config, request: dict[str, Any]) -> str | None:
    """Read the journal's audit checkpoints here, as the person who runs recorderctl (who must be
    allowed to read the system journal), into ``request``: for each key id those of the highest
    rows, at most ``JOURNAL_CHECKPOINTS`` (:func:`journal.read_checkpoints`). Returns why it cannot
    be done."""
    path = request.pop("journal_file", None)
    owner = service_user(config)
    if isinstance(owner, str):  # not known, so no entry can be told to be the service's
        return f"cannot tell the service's user ({owner}); the audit log was not checked against the journal"
    try:
        if path:
            with open(path, encoding="utf-8", errors="replace") as f:
                found, left = journal.read_checkpoints(f, owner, total=JOURNAL_CHECKPOINTS)
        else:
            found, left = journal.read_checkpoints(journal.journal_lines(owner), owner, total=JOURNAL_CHECKPOINTS)
    except OSError as exc:
        return f"cannot read the journal file {path}: {exc.strerror}"
    except journal.JournalUnavailable as exc:
        return f"{exc}; the audit log was not checked against the journal"
    source = f"the journal file {os.path.abspath(path)}" if path else "the journal"
    if not found:
        ignored = (f" ({left['untrusted']} sent by another user than root or the service's, ignored)"
                   if left["untrusted"] else "")
        return (f"{source} holds no audit checkpoint of recorderd{ignored}: nothing to check against (is the "
                f"journal kept, and may {_me()} read the system journal? root, or the "
                "groups adm and systemd-journal may)")
    tz = config.tz
    request["checkpoints"] = [[c.seq, c.head, iso(c.when, tz, "seconds"), c.key_id] for c in found]
    request["journal"] = source
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.op == "export" and args.request is None and (not args.id or not args.purpose):
        parser.error("export needs the recording's id and --purpose (or --request N, an approved export request)")
    if args.op == "export" and args.request is not None and (args.approved_by or args.approval_ref):
        parser.error("export --request N: the request's deciding manager is the approval (no --approved-by)")
    if args.op == "verify-export" and args.pubkey:
        return verify_export(args, None)
    config = service.start("recorderctl", args.config, mode="ctl")  # a broken DID file stops only what needs it
    if config is None:
        return 2
    if args.op == "verify-export":
        return verify_export(args, config)
    request = request_args(args)
    if args.op == "audit-verify" and (request.pop("against_journal", False) or request.get("journal_file")):
        why = _journal_checkpoints(config, request)
        if why is not None:
            print(f"recorderctl: {why}", file=sys.stderr)
            return 1
    request.pop("journal_file", None)
    if args.op in ("export", "provide") and args.conversation:
        failed = _conversation_parts(config, request, args.op)
        if failed is not None:
            print(f"recorderctl: {failed[1]}", file=sys.stderr)
            return failed[0]
    reply = perform(config, args.op, request)
    if args.op == "status":
        reply = service.annotate_status(config, reply)
    if args.json and reply.data is not None:
        json.dump(reply.data, sys.stdout, ensure_ascii=False, indent=2)
        print()
    elif args.op == "show" and isinstance(reply.data, dict):
        print(show_text(reply.data, config.tz))
    elif reply.text:
        print(reply.text)
    if reply.error:
        print(f"recorderctl: {reply.error}", file=sys.stderr)
    return reply.rc


if __name__ == "__main__":
    sys.exit(main())
