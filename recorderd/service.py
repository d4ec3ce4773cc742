"""Wiring: config -> store -> capture pipeline, shared by replay and (later) the live service."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from capture.pipeline import CapturePipeline
from capture.source import CaptureFile, CaptureFileError
from storage.store import Store
from storage.worker import StoreWorker

from . import journal
from .config import Config, ConfigError, load

log = logging.getLogger(__name__)

UMASK = 0o077


def start(prog: str, config_path: str) -> Config | None:
    """What every entry point does first: umask 077, the config (an error is printed, naming the
    file, key and value: None), then logging at the configured level."""
    set_umask()
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr, flush=True)
        return None
    journal.setup(config["logging.level"])
    return config


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

    return StoreWorker(open_in_worker).start()


def build_pipeline(config: Config, store: Store, keep: Callable[..., Any] | None = None) -> CapturePipeline:
    return CapturePipeline(
        config.dids,
        store.sink(keep),
        trunk_networks=config["capture.trunk_networks"],
        ring_timeout=float(config["capture.ring_timeout_s"]),
        idle_timeout=float(config["capture.idle_timeout_s"]),
        max_calls=config["capture.max_calls"],
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
