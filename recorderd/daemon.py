"""The service: live capture on the SPAN port, recording, retention, health — until SIGTERM.

Start order: umask, config (the trunk side named, or ``capture.direction: unknown`` chosen), logging,
store (must be initialised, key usable, on an encrypted volume unless the site opted out), the
signing key of its copies (made, and audited, if the store has none), crash
recovery of the spool, the store worker thread (keeping finished calls and retention: storage/worker.py), pipeline,
capture ring, DID-file reader and watcher, the control socket, the books (recorderd/books.py),
metrics, the spool-sync thread (every second), READY=1. Each part is entered in one
``contextlib.ExitStack`` as it starts: a part that cannot start (the capture, the metrics port
taken) stops and closes every part started before it, in the shutdown order, and the service exits
1; the control socket not bound is said and the service runs on. Every thread is a
:class:`storage.worker.Worker`: one that dies is logged (EVENT=worker-failed) and named first in
STATUS= and ``recorderctl status`` while the service runs on. The main
loop reads ring blocks and, between them, does the housekeeping on the wall clock: WATCHDOG/STATUS
every second, store health every 10 s, a retention run queued every minute, a stats line every
``logging.stats_interval_s``. SIGHUP or an edit of the DID file reloads the DID list: read and checked
in a thread of its own, swapped in by the loop between two blocks (an invalid file is refused and the
old list stays). Shutdown order (SIGTERM/SIGINT; the start's in reverse): STOPPING=1, stop
reading, stop the spool sync and metrics, the last counter snapshot and audit checkpoint, close the
control socket, stop the watcher and the DID reader, close the capture, end every call in progress
as ``incomplete`` keeping all audio so far, let the store worker keep them, sync the store's file
system, close the store, the signal handlers back. Live packet time is the
kernel's capture time, so while the port is silent the pipeline's clock is moved on with the wall
clock.
"""
from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import pwd
import signal
import time
from types import FrameType
from typing import Any

from capture import fast
from capture.live import RingSource
from capture.pipeline import CapturePipeline
from capture.unrecognised import LeftOut
from storage import signing
from storage.recovery import recover_spool
from storage.retention import PERIOD as RETENTION_PERIOD
from storage.spool_files import SpoolFiles
from storage.store import Actor, Store, StoreError
from storage.worker import StoreWorker, Worker

from . import service
from .books import Books
from .config import Config
from .control import ControlServer
from .counters import STATS_ALWAYS, STATS_NONZERO
from .health import StoreHealth
from .metrics import MetricsServer
from .notify import Notifier
from .watch import DidReloader, FileWatch

log = logging.getLogger(__name__)

HEALTH_PERIOD = 10.0
_libc = ctypes.CDLL(None, use_errno=True)


class Daemon:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.stop_requested = False
        self.reload_requested = False
        self.notifier = Notifier()
        self.started = time.time()
        self.alerts: dict[str, str] = {}  # standing conditions, by kind: first in STATUS=, and in recorderctl status
        self.left_out = LeftOut()  # frames the kernel's filter did not pass (not IP), per interface
        self.workers: list[Worker] = []  # the threads started, for the alert of one that died
        self.exit_status = 0  # 1 once an essential thread has failed (systemd starts the service again)

    # -- signals ------------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        config = service.start("recorderd", self.config_path, mode="service")
        if config is None:
            return 2
        self.config = config
        if config["capture.direction"] == "unknown":
            self.alerts["direction_unknown"] = "DIRECTION UNKNOWN: internal and outbound calls are recorded too"
            log.critical("capture.direction is unknown (no capture.trunk_networks): every call to a designated number "
                         "is recorded, internal and outbound ones too, where only inbound calls may be (Art. 2(1)); "
                         "set capture.trunk_networks", extra={"EVENT": "direction-unknown"})
        with contextlib.ExitStack() as stack:  # each part started is stopped, in the reverse order, however run ends
            parts = self._start(config, stack)
            if isinstance(parts, int):
                return parts
            try:
                self._loop(*parts)
            finally:
                self.notifier.stopping()
        if self.exit_status:
            return self.exit_status
        log.info("stopped: calls in progress were kept as incomplete", extra={"EVENT": "stopped"})
        return 0

    def _start(self, config: Config, stack: contextlib.ExitStack) -> (
            tuple[CapturePipeline, RingSource, StoreWorker, StoreHealth, MetricsServer | None] | int):
        """The parts in start order, each entered in ``stack``; or the exit status of a start that failed."""
        saved: dict[int, Any] = {}  # the signal handlers before ours: back once all else has stopped
        stack.callback(_restore_signals, saved)
        store = service.open_store(config)
        stack.callback(store.close)
        try:
            with self.notifier.extending("opening the store (an index migration may take minutes)"):
                store.open()
            store.check_key()
        except StoreError as exc:
            log.critical("%s", exc, extra={"EVENT": "store-unusable"})
            return 2
        if not self._volume_allowed(config):
            return 2
        self._signing_key(store)
        recovered = recover_spool(store)
        store_fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
        stack.callback(os.close, store_fd)
        stack.callback(_syncfs, store_fd)  # once the worker has kept the last calls
        worker = stack.enter_context(service.store_worker(config))  # keeping and retention, off the capture loop
        files = SpoolFiles(store.layout.spool_dir, old_pool=store.layout.pool_dir).start()  # a call's spool files made ahead, off the capture loop
        stack.callback(files.close)
        pipeline = service.build_pipeline(config, store, worker.keep, files)
        stack.callback(pipeline.finish, "shutdown")  # every call in progress, for the worker to keep
        try:
            source = capture_source(config)
        except (OSError, ValueError) as exc:
            log.critical("cannot open capture: %s", exc, extra={"EVENT": "capture-failed"})
            return 1
        stack.callback(source.close)
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop, signal.SIGHUP: self._on_hup}
        for signum, handler in handlers.items():
            saved[signum] = signal.signal(signum, handler)
        faulthandler.register(signal.SIGUSR1)  # a technician can dump the stacks: kill -USR1
        saved[signal.SIGUSR1] = faulthandler
        self.reloader = stack.enter_context(DidReloader(config["dids_file"], on_start=self.notifier.reloading))
        stack.callback(FileWatch(config["dids_file"], self.reloader.request).stop)
        health = StoreHealth(store, config["store.warn_free_percent"], config["store.critical_free_mb"])
        # own thread, own store connections; the alerts are read through, for recorderctl status
        control = ControlServer(config, pipeline=pipeline, health=health, alerts=self.alerts)
        books = stack.enter_context(Books(config, control.view))
        # stopped before the books (unwound in reverse): a request still being served at a stop has
        # its audit row in before the last checkpoint, which then names the log's true end
        stack.callback(control.stop)
        control.start()  # not bound: said, and the recorder runs on
        metrics = None
        if config["metrics.listen"]:
            try:
                metrics = stack.enter_context(MetricsServer(config["metrics.listen"]))
            except (OSError, ValueError) as exc:
                log.critical("metrics.listen %s cannot be listened on (%s): not starting", config["metrics.listen"],
                             getattr(exc, "strerror", None) or exc, extra={"EVENT": "metrics-failed"})
                return 1
        syncer = stack.enter_context(SpoolSync(store_fd))
        self.workers = [worker, self.reloader, control, books, syncer, *([metrics] if metrics else [])]
        log.info("recording %d designated numbers from %s (%d recording(s) recovered)", len(config.dids),
                 ", ".join(config["capture.interfaces"]), len(recovered), extra={"EVENT": "started"})
        if fast.MODE != "native":
            log.warning("the C fast path (capture/_fastpath.c) is not built: the capture loops run in Python, "
                        "about 4x slower; reinstall with a C compiler", extra={"EVENT": "slow-capture"})
        self.notifier.ready(self._status(pipeline, source, health))
        return pipeline, source, worker, health, metrics

    def _signing_key(self, store: Store) -> None:
        """A store made before signed copies gets its signing key at the service's first start
        (audited as the service), not at its first copy. Recording goes on without one."""
        try:
            key, made = signing.ensure(store.root, store.master_key())
        except (signing.SigningError, StoreError, OSError) as exc:
            log.error("the recorder's signing key cannot be made (%s): copies cannot be signed until it is",
                      getattr(exc, "strerror", None) or exc, extra={"EVENT": "signing-key-failed"})
            return
        if made:
            store.record(Actor(_user_name(), os.getuid()), "signing-key-created", None,
                         {"role": "none", "via": "service", "signing_key": key.public.audited()}, "allowed")
            log.info("the recorder's signing key %s was made (its public key: recorderctl pubkey)", key.public.key_id,
                     extra={"EVENT": "signing-key-created"})

    def _loop(self, pipeline: CapturePipeline, source: RingSource, worker: StoreWorker, health: StoreHealth,
              metrics: MetricsServer | None) -> None:
        stats_every = float(self.config["logging.stats_interval_s"])
        next_second = next_health = time.monotonic()
        next_retention = next_stats = time.monotonic() + 5.0
        sink = pipeline.tracker.sink
        health.check()
        sink.accepting = not health.full  # type: ignore[attr-defined]
        for batch in source.batches():
            if batch:
                pipeline.feed(batch)
            else:
                pipeline.advance(time.time())  # the port is silent: let timeouts run on wall time
            if self.stop_requested:
                return
            if self.reload_requested:
                self.reload_requested = False
                self.reloader.request()
            if self.reloader.result is not None:
                self._swap_dids(pipeline)
            now = time.monotonic()
            if now < next_second:
                continue
            next_second = now + 1.0
            self._capture_stats(pipeline, source)
            if self._workers_failed():
                self.exit_status = 1
                return
            pipeline.counters["erasures"] = worker.erased
            pipeline.counters["keep_failures"] = worker.failed
            self._unrecognised(pipeline)
            self.notifier.send(WATCHDOG=1, STATUS=self._status(pipeline, source, health))
            if metrics:
                metrics.publish(pipeline.counters, len(pipeline.tracker.calls), health)
            if now >= next_health:
                next_health = now + HEALTH_PERIOD
                health.check()
                sink.accepting = not health.full  # type: ignore[attr-defined]
            if now >= next_retention:
                next_retention = now + RETENTION_PERIOD
                worker.retention()  # queued: the store's thread runs it
            if now >= next_stats:
                next_stats = now + stats_every
                self._stats_line(pipeline)

    # -- housekeeping -------------------------------------------------------------------------

    def _volume_allowed(self, config: Config) -> bool:
        """The store on an encrypted volume, or the site's opt-out said loudly at each start."""
        volume = service.store_volume(config)
        if volume is not None and volume.encrypted:
            log.info("store volume: %s", volume.how, extra={"EVENT": "store-volume"})
            return True
        how = volume.how if volume is not None else "not readable"
        if config["store.require_encrypted_volume"]:
            log.critical("the store %s is not on an encrypted volume (%s): not starting. Put it on a LUKS volume "
                         "(cryptsetup luksFormat), or set store.require_encrypted_volume: false if the site has "
                         "decided otherwise", config.store_path, how, extra={"EVENT": "store-volume-unencrypted"})
            return False
        self.alerts["store_volume_unencrypted"] = "STORE VOLUME NOT ENCRYPTED"
        log.critical("the store %s is NOT on an encrypted volume (%s); running because store.require_encrypted_volume "
                     "is false", config.store_path, how, extra={"EVENT": "store-volume-unencrypted"})
        return True

    def _swap_dids(self, pipeline: CapturePipeline) -> None:
        """The reader thread's outcome: the new list in force at once, or the old one kept, said."""
        outcome = self.reloader.take()
        if outcome is None:
            return
        dids, error = outcome
        if error is not None:
            self.alerts["did_file_broken"] = f"DID FILE REFUSED: the previous list ({len(pipeline.tracker.dids)}) in force"
            log.error("DID list not reloaded, the previous list (%d numbers) stays in force: %s",
                      len(pipeline.tracker.dids), error, extra={"EVENT": "reload-failed"})
        elif dids is not None:
            self.alerts.pop("did_file_broken", None)
            pipeline.tracker.dids = dids  # one reference swap: calls in progress keep their DID
            log.info("DID list reloaded: %d designated numbers (%s)", len(dids),
                     ", ".join(d.label for d in dids.dids), extra={"EVENT": "reload"})
        self.notifier.send(READY=1)

    def _capture_stats(self, pipeline: CapturePipeline, source: RingSource) -> None:
        for st in source.stats():
            pipeline.counters["kernel_packets"] += st.packets
            left_out = self.left_out.frames(st.interface, st.packets)
            if left_out:
                pipeline.counters["kernel_filtered"] += left_out  # not understood (capture/unrecognised.py)
            if st.malformed:  # the kernel never writes one; a block that claims more than the ring holds
                pipeline.counters["ring_malformed"] += st.malformed
                log.warning("%d capture ring block(s) on %s led off the ring: their whole packets were kept",
                            st.malformed, st.interface, extra={"EVENT": "capture-ring-malformed"})
            if st.drops:
                pipeline.counters["kernel_drops"] += st.drops
                log.warning("the kernel dropped %d packets on %s (ring full): audio may be missing",
                            st.drops, st.interface, extra={"EVENT": "capture-drops"})

    def _workers_failed(self) -> bool:
        """A thread that died (logged once, EVENT=worker-failed): named first in STATUS= from then on.
        True when it is an essential one: the service then stops with exit status 1 (was: went on
        without it, so a dead store worker let every later call and retention run go unkept, unerased),
        and systemd (Restart=on-failure) starts it again; the spool's calls are recovered at that start."""
        failed = [w for w in self.workers if w.failure is not None]
        if not failed:
            return False
        self.alerts["worker_failed"] = "THREAD FAILED: " + ", ".join(w.name for w in failed) + " (journal: EVENT=worker-failed)"
        essential = [w.name for w in failed if w.essential]
        if essential:
            log.critical("the service stops (exit status 1) without its %s thread, to be started again by systemd; "
                         "the calls in the spool are recovered then", ", ".join(essential),
                         extra={"EVENT": "service-failed"})
        return bool(essential)

    def _unrecognised(self, pipeline: CapturePipeline) -> None:
        """Traffic not understood (capture/unrecognised.py logs it, in packet time): first in STATUS= while it lasts."""
        if pipeline.unrecognised.standing is not None:
            self.alerts["capture_unrecognised"] = "TRAFFIC NOT UNDERSTOOD (recorderctl status)"
        else:
            self.alerts.pop("capture_unrecognised", None)

    def _status(self, pipeline: CapturePipeline, source: RingSource, health: StoreHealth) -> str:
        c = pipeline.counters
        alerts = "".join(f"{text}; " for text in self.alerts.values())
        return (f"{alerts}{len(pipeline.tracker.calls)} active calls, {c['calls_recorded']} recorded, "
                f"{c['kernel_drops']} drops, store {health.free_text()} free")

    def _stats_line(self, pipeline: CapturePipeline) -> None:
        c = pipeline.counters
        encap = "".join(f" {k}={c[k]}" for k in STATS_NONZERO if c[k])  # remote SPAN, where a mirror sends it
        log.info("stats: %s%s", " ".join(f"{k}={c[k]}" for k in STATS_ALWAYS), encap, extra={"EVENT": "stats"})


def capture_source(config: Config) -> RingSource:
    """The SPAN interfaces' rings as the site configured them (``capture.snaplen``: a length below
    a full frame is said at start, EVENT=capture-snaplen)."""
    return RingSource(config["capture.interfaces"], ring_bytes=config["capture.ring_mb"] << 20,
                      block_timeout_ms=config["capture.block_timeout_ms"], promiscuous=config["capture.promiscuous"],
                      snaplen=config["capture.snaplen"])


class SpoolSync(Worker):
    """Syncs the store's file system every second, in a thread of its own (the call releases the
    GIL): what is in the spool survives a power cut, at most about a second is lost, and the
    capture loop never waits for the disk (at 300 k pkt/s it spent ~10 % blocked in syncfs)."""

    name = "spool-sync"

    def __init__(self, fd: int, period: float = 1.0) -> None:
        super().__init__()
        self.fd = fd
        self.period = period

    def run(self) -> None:
        while not self.stopping.wait(self.period):
            _syncfs(self.fd)


def _restore_signals(saved: dict[int, Any]) -> None:
    for signum, before in saved.items():
        if before is faulthandler:
            faulthandler.unregister(signum)
        else:
            signal.signal(signum, before)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _syncfs(fd: int) -> None:
    _libc.syncfs(fd)
