"""``recorderd --config PATH``: the service (live capture, see ``daemon``), and
``recorderd replay PCAP... --config PATH``: the same pipeline fed from capture files."""
from __future__ import annotations

import argparse
import sys

from capture.encap import summary as encap_summary
from storage import spool
from storage.spool_files import SpoolFiles
from storage.store import StoreError

from . import VersionAction, service
from .counters import ENCAP

DEFAULT_CONFIG = "/etc/recorderd/recorderd.yaml"
LINKED = (("calls_second_leg", "second legs"), ("calls_other_leg", "other faces"),
          ("calls_transferred_in", "transferred in"))  # designated calls not recorded, said when any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recorderd", description="Passive call recorder for designated numbers.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="site config (default %(default)s)")
    parser.add_argument("--version", action=VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command")
    rp = sub.add_parser("replay", help="feed capture files through the pipeline, as if from the SPAN port")
    rp.add_argument("pcaps", nargs="+", metavar="PCAP")
    rp.add_argument("--config", default=argparse.SUPPRESS, help="site config")
    pf = sub.add_parser("preflight", help="say what is missing before the service may capture (exit 1 then)")
    pf.add_argument("--config", default=argparse.SUPPRESS, help="site config")
    args = parser.parse_args(argv)
    if args.command == "preflight":
        from . import preflight

        return preflight.main(args.config)
    if args.command != "replay":
        from .daemon import Daemon

        return Daemon(args.config).run()
    config = service.start("recorderd", args.config)
    if config is None:
        return 2
    store = service.open_store(config)
    try:
        store.open()
        store.check_key()
    except StoreError as exc:
        print(f"recorderd: {exc}", file=sys.stderr)
        return 2
    worker = service.store_worker(config)  # encryption and fsyncs overlap the parsing of what follows
    files = SpoolFiles(store.layout.spool_dir, old_pool=store.layout.pool_dir).start()  # the calls' spool files made ahead, beside the parsing
    try:
        pipeline = service.build_pipeline(config, store, worker.keep, files, spool.IMPORT)  # records of ~4 s
        result = service.replay(pipeline, args.pcaps)
    finally:
        files.close()
        worker.stop()  # every finished call kept before the summary
        store.close()
    c = pipeline.counters
    not_kept = c["calls_recorded"] - worker.kept  # failed keeps, or a worker that could not open the store
    print(
        f"replayed {result.packets} packets from {result.files} file(s): {worker.kept} recorded, "
        + (f"{not_kept} could not be kept (left in the spool), " if not_kept else "")
        + (f"{c['calls_lost_store_full']} lost (store full), " if c["calls_lost_store_full"] else "")
        + f"{c['calls_not_designated']} not designated, "
        f"{c['calls_not_inbound']} not inbound, {c['calls_unanswered']} unanswered, "
        f"{c['calls_codec_unsupported']} without G.711 audio, {c['calls_over_capacity']} over capacity"
        + "".join(f", {c[k]} {words}" for k, words in LINKED if c[k])  # (every call seen is in one bucket)
        + "; "
        f"malformed: {c['sip_malformed']} SIP, {c['rtp_malformed']} RTP"
        + (f"; {encap_summary(c)}" if any(c[k] for k in ENCAP) else "")  # a remote mirror's packets
        + (f"; {len(result.errors)} damaged file(s)" if result.errors else "")
    )
    for error in result.errors:
        print(f"recorderd: damaged capture: {error}", file=sys.stderr)
    if not_kept:
        print(f"recorderd: {not_kept} recording(s) could not be kept (see the log): their spool files "
              "stay, and are recovered at the next start", file=sys.stderr)
    if c["calls_lost_store_full"]:
        print(f"recorderd: {c['calls_lost_store_full']} designated call(s) could not be recorded: the store "
              "(its spool) is full", file=sys.stderr)
    return 1 if result.errors or not_kept or c["calls_lost_store_full"] else 0


if __name__ == "__main__":
    sys.exit(main())
