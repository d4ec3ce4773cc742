"""``recorderctl``: what managers, staff, technicians and auditors do with the store.

It acts for the calling Unix user. In this version it opens the store directly (root or the
service user can); every access to a recording is written to the audit log.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pwd
import sys
import unicodedata
from typing import Any

from storage.decommission import decommission
from storage.index import RecordingRow
from storage.retention import RetentionWorker, iso
from storage.store import Actor, Store, StoreError

from . import journal, service
from .config import Config, ConfigError, load

PURPOSES = ("quality", "suspicious_call")


def actor() -> Actor:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid-{uid}"
    return Actor(name, uid)


def recording_json(row: RecordingRow, store: Store) -> dict[str, Any]:
    tz = store.tz
    return {
        "id": row.id,
        "call_id": row.call_id,
        "did": row.did,
        "did_label": row.did_label,
        "caller": row.caller,
        "started_at": iso(row.started_at, tz),
        "ended_at": iso(row.ended_at, tz),
        "duration_s": round(row.ended_at - row.started_at, 3),
        "codec": row.codec,
        "channels": row.channels,
        "frames": row.frames,
        "size": row.size,
        "sha256": row.sha256,
        "retain_until": iso(row.retain_until, tz),
        "state": row.state,
        "end_reason": row.end_reason,
        "holds": store.holds(row.id),
        "streams": row.streams,
    }


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("id", "DID label", "start", "duration", "codec", "state")
    lines = [
        (r["id"], r["did_label"], r["started_at"][:19].replace("T", " "), f"{r['duration_s']:.1f} s", r["codec"], r["state"])
        for r in rows
    ]
    widths = [max([_width(h)] + [_width(line[i]) for line in lines]) for i, h in enumerate(headers)]
    print("  ".join(_pad(h, w) for h, w in zip(headers, widths)).rstrip())
    for line in lines:
        print("  ".join(_pad(v, w) for v, w in zip(line, widths)).rstrip())
    print(f"({len(lines)} recording{'s' if len(lines) != 1 else ''})")


def cmd_init(config: Config, store: Store, args: argparse.Namespace) -> int:
    created = store.init()
    print(f"store {'created' if created else 'already initialised'} at {store.root}")
    store.check_key()
    return 0


def cmd_list(config: Config, store: Store, args: argparse.Namespace) -> int:
    rows = [recording_json(r, store) for r in store.recordings()]
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print_table(rows)
    return 0


def cmd_export(config: Config, store: Store, args: argparse.Namespace) -> int:
    row = store.export(args.id, args.out, purpose=args.purpose, actor=actor())
    print(f"exported {row.id} to {args.out} (SHA-256 {row.sha256})")
    return 0


def cmd_verify(config: Config, store: Store, args: argparse.Namespace) -> int:
    rows = store.recordings()
    problems = store.verify()
    store.record(actor(), "verify", None, {"recordings": len(rows), "problems": len(problems)},
                 "allowed" if not problems else f"failed: {len(problems)} problem(s)")  # fmt: skip
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"verified {len(rows)} recording(s) and the audit log: "
          + ("all hold" if not problems else f"{len(problems)} problem(s)"))  # fmt: skip
    return 0 if not problems else 1


def cmd_retention(config: Config, store: Store, args: argparse.Namespace) -> int:
    report = RetentionWorker(store).run()
    store.record(actor(), "retention-run", None, {"erased": [e.id for e in report.erased]},
                 "allowed" if not report.failures else "failed: " + "; ".join(report.failures))  # fmt: skip
    for e in report.erased:
        late = f", {e.late_s / 60:.0f} min late" if e.late_s > 60 else ""
        print(f"erased {e.id} ({e.did_label}, call of {e.call_date}, due {iso(e.retain_until, store.tz)}{late})")
    for name in report.orphans + report.spool_leftovers:
        print(f"erased leftover file {name}")
    for failure in report.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"{len(report.erased)} recording(s) erased")
    return 0 if not report.failures else 1


def parse_until(text: str, tz: Any) -> float:
    """A hold's end: a date (the hold lasts through that local day) or an ISO date-time."""
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text) + datetime.timedelta(days=1)
            return datetime.datetime.combine(day, datetime.time(0), tzinfo=tz).timestamp()
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise StoreError(f"--until {text!r} is not a date (YYYY-MM-DD) or ISO date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def cmd_hold(config: Config, store: Store, args: argparse.Namespace) -> int:
    hold_id = store.hold(args.id, until=parse_until(args.until, store.tz), reason=args.reason, ref=args.ref, actor=actor())
    print(f"hold {hold_id} on {args.id} until {args.until}")
    return 0


def cmd_release(config: Config, store: Store, args: argparse.Namespace) -> int:
    store.release(args.id, args.hold, reason=args.reason, actor=actor())
    print(f"hold {args.hold} on {args.id} released")
    return 0


def cmd_decommission(config: Config, store: Store, args: argparse.Namespace) -> int:
    if not args.confirm:
        print("recorderctl: decommission erases every recording, the index and the master key for good; "
              "add --confirm to proceed", file=sys.stderr)  # fmt: skip
        return 2
    try:
        cert = decommission(store, actor(), args.certificate)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    print(cert.text())
    return 0 if cert.verification.startswith("passed") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recorderctl", description="Work with recorderd's recordings.")
    parser.add_argument("--config", default="/etc/recorderd/recorderd.yaml", help="site config")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the store (idempotent)")
    lp = sub.add_parser("list", help="list kept recordings")
    lp.add_argument("--json", action="store_true", help="print a JSON array")
    ep = sub.add_parser("export", help="write a recording's WAV to a file (audited)")
    ep.add_argument("id")
    ep.add_argument("--out", required=True)
    ep.add_argument("--purpose", required=True, choices=PURPOSES)
    sub.add_parser("verify", help="decrypt and check every recording, and the audit chain")
    rp = sub.add_parser("retention", help="retention: erase every recording due now")
    rp.add_argument("action", choices=["run"])
    hp = sub.add_parser("hold", help="keep a recording past its deadline (Art. 5(2))")
    hp.add_argument("id")
    hp.add_argument("--until", required=True, help="YYYY-MM-DD (through that day) or an ISO date-time")
    hp.add_argument("--reason", required=True)
    hp.add_argument("--ref", required=True, help="reference number of the decision")
    lp2 = sub.add_parser("release", help="end a hold")
    lp2.add_argument("id")
    lp2.add_argument("--hold", type=int, required=True)
    lp2.add_argument("--reason", required=True)
    dp = sub.add_parser("decommission", help="erase everything at contract end (Art. 6(4))")
    dp.add_argument("--confirm", action="store_true")
    dp.add_argument("--certificate", required=True, help="where to write the erasure certificate (.json and .txt)")
    args = parser.parse_args(argv)
    service.set_umask()
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"recorderctl: config error: {exc}", file=sys.stderr)
        return 2
    journal.setup(config["logging.level"])
    store = service.open_store(config)
    handler = {
        "init": cmd_init, "list": cmd_list, "export": cmd_export, "verify": cmd_verify,
        "retention": cmd_retention, "hold": cmd_hold, "release": cmd_release, "decommission": cmd_decommission,
    }[args.command]  # fmt: skip
    try:
        if args.command != "init":
            store.open()
        return handler(config, store, args)
    except (StoreError, OSError) as exc:
        print(f"recorderctl: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
