"""Wiring: config -> store -> capture pipeline, shared by replay, the live service and recorderctl."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from capture.encap import parse_config
from capture.pipeline import CapturePipeline
from capture.source import CaptureFile, CaptureFileError
from storage.spool import LIVE, RecordSizes, SpoolSink
from storage.spool_files import SpoolFiles
from storage.store import Store
from storage.volume import Volume, examine
from storage.worker import StoreWorker

from . import journal
from .config import Config, ConfigError, collectors_warning, direction_problem, load

log = logging.getLogger(__name__)

UMASK = 0o077


def start(prog: str, config_path: str, *, mode: str = "replay") -> Config | None:
    """What every entry point does first: umask 077, the config (an error is printed, naming the
    file, key and value: None), then logging at the configured level.

    ``mode``: ``service`` (the live service: it may not start without knowing which calls are inbound),
    ``replay`` (an analysis tool: the same, said in one warning line) or ``ctl`` (recorderctl: a
    broken DID file does not stop the commands that do not need it, the running service has its own)."""
    set_umask()
    try:
        config = load(config_path, dids_optional=mode == "ctl")
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr, flush=True)
        return None
    problem = direction_problem(config)
    if problem and mode == "service":
        print(f"{prog}: config error: {problem}", file=sys.stderr, flush=True)
        return None
    if problem and mode == "replay":
        print(f"{prog}: warning: capture.trunk_networks is empty: every call to a designated number is taken as "
              "inbound, internal and outbound ones too (the live service refuses this)", file=sys.stderr, flush=True)
    journal.setup(config["logging.level"])
    return config


def store_volume(config: Config) -> Volume | None:
    """What the store's volume is (None: the store cannot be reached from here)."""
    try:
        return examine(config.store_path)
    except OSError:
        return None


def status_warnings(config: Config, service: dict[str, Any]) -> list[str]:
    """What ``recorderctl status`` must say first: the service's standing conditions (from its
    status reply when it runs, else from the config), and a DID file on disk that is broken."""
    running = bool(service.get("running"))
    alerts = service.get("alerts") or ()
    notes = []
    if config.dids_error is not None:
        notes.append(f"the DID file on disk is broken ({config.dids_error}): " + (
            "the service runs on the previous list; fix the file (its reload is refused until then)" if running
            else "the service cannot start until it is fixed"))
    if "direction_unknown" in alerts if running else config["capture.direction"] == "unknown":
        notes.append("capture.direction: unknown: every call to a designated number is recorded, internal and "
                     "outbound ones too (Art. 2(1): inbound only); set capture.trunk_networks")
    elif not running and direction_problem(config):
        notes.append(f"the service will not start: {direction_problem(config)}")
    if running:
        unencrypted = "store_volume_unencrypted" in alerts
    else:
        volume = store_volume(config)
        unencrypted = volume is not None and not volume.encrypted
    if unencrypted:
        notes.append("the store is not on an encrypted volume" + (
            " (store.require_encrypted_volume: false)" if not config["store.require_encrypted_volume"]
            else ": the service will not start (put it on LUKS, or set store.require_encrypted_volume: false)"))
    return notes


def annotate_status(config: Config, reply: Any) -> Any:
    """``recorderctl status``'s reply with :func:`status_warnings` first (text) and as ``warnings`` (JSON)."""
    if getattr(reply, "rc", 1) != 0 or not isinstance(reply.data, dict):
        return reply
    notes = status_warnings(config, reply.data.get("service") or {})
    reply.data["warnings"] = notes
    if notes:
        reply.text = "\n".join([*(f"WARNING: {n}" for n in notes), reply.text])
    return reply


def open_store(config: Config) -> Store:
    return Store(
        config.store_path,
        tz=config.tz,
        retention_days=config["retention.days"],
        anchor=config["retention.anchor"],
        keep_pcap=config["store.keep_pcap"],
        key_file=config["vault.key_file"],
        credentials_dir=os.environ.get("CREDENTIALS_DIRECTORY"),
    )


def store_worker(config: Config) -> StoreWorker:
    """The store's own thread (keeping finished calls, retention), with its own store connection."""

    def open_in_worker() -> Store:
        store = open_store(config)
        store.open()
        return store

    worker = StoreWorker(open_in_worker)
    worker.start()
    return worker


def build_pipeline(config: Config, store: Store, keep: Callable[..., Any] | None = None,
                   files: SpoolFiles | None = None, sizes: RecordSizes = LIVE) -> CapturePipeline:
    warning = collectors_warning(config)
    if warning:
        log.warning("capture: %s", warning, extra={"EVENT": "capture-collectors-any"})
    return CapturePipeline(
        config.dids,
        SpoolSink(store, keep, files, sizes),  # keep: a StoreWorker's, off the capture thread (None: store.keeper.keep);
        # files: spool files made ahead (storage/spool_files.py; None: each made as its call starts);
        # sizes: how much of a recording waits in memory before it is written (storage/spool.py)
        trunk_networks=config["capture.trunk_networks"],
        ring_timeout=float(config["capture.ring_timeout_s"]),
        idle_timeout=float(config["capture.idle_timeout_s"]),
        max_calls=config["capture.max_calls"],
        encap=parse_config(config["capture.encapsulations"], config["capture.collectors"]),
    )


@dataclass
class ReplayResult:
    files: int = 0
    errors: list[str] = field(default_factory=list)
    packets: int = 0


def replay(pipeline: CapturePipeline, paths: Iterable[str]) -> ReplayResult:
    """Feed capture files through the pipeline in order, as if they came from the SPAN port, then
    end every call still open. A damaged file stops at the damage; what came before is kept."""
    result = ReplayResult()
    for path in paths:
        result.files += 1
        try:
            with CaptureFile(path) as source:
                try:
                    for batch in source.batches():
                        pipeline.feed(batch)
                finally:
                    result.packets += source.packets_read
        except CaptureFileError as exc:
            result.errors.append(str(exc))
            log.error("capture file damaged: %s (packets before the damage were processed)", exc,
                      extra={"EVENT": "capture-file-error"})
    pipeline.finish("capture-end")
    return result


def set_umask() -> None:
    os.umask(UMASK)
