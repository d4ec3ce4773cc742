"""``recorderctl``: what managers, staff, technicians and auditors do with the store.

It acts for the calling Unix user. In this version it opens the store directly (root or the
service user can); every access to a recording is written to the audit log.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import unicodedata
from typing import Any

from storage.index import RecordingRow
from storage.retention import iso
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
    args = parser.parse_args(argv)
    service.set_umask()
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"recorderctl: config error: {exc}", file=sys.stderr)
        return 2
    journal.setup(config["logging.level"])
    store = service.open_store(config)
    handler = {"init": cmd_init, "list": cmd_list, "export": cmd_export}[args.command]
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
