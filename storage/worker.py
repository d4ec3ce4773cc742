"""The store's own thread: keeping finished recordings and running retention, off the capture loop.

Keeping a call (encrypt its WAV and evidence pcap, fsync them and their folder, index it, erase the
spool copies) costs ~10-30 ms of waiting on the disk per call; a retention run that erases a day of
recordings costs seconds, and the hourly sweep of a store of 100,000 recordings as much. Done in the
capture loop, each is a stall in which the SPAN port's packets pile up in the ring (64 MiB hold
~0.7 s at 300 k pkt/s). Here they run in one thread of their own, in order, with the store opened
in that thread (its own SQLite connections); the capture loop only queues the work.

The queue is bounded: a store that falls far behind (a failing disk) slows the capture loop down
rather than growing memory without bound. A keep that fails (a full disk) is logged CRITICAL and
tried again at each retention run; its spool files stay meanwhile (and a restart recovers them).

:class:`Worker` is the base of every thread of the service (this one, and recorderd's metrics,
did-reload, spool-sync, control and books): it lives here because storage/ may import nothing of
recorderd/ and the store worker is one of them; it knows nothing of either.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Self

from .retention import RetentionWorker
from .store import Store

log = logging.getLogger(__name__)

MAX_PENDING = 256  # keeps queued before the capture loop waits
MAX_RETRIES = 1000  # failed keeps held for another try
MAX_BATCH = 64  # keeps queued taken at once (their fsyncs shared: Keeper.keep_many)
_STOP = object()
_RETENTION = object()


class Worker:
    """A thread of the service. ``start()`` starts it once (again: nothing more); ``stop()`` asks it
    to end and waits up to ``join_timeout`` (None: until it has), any number of times, before
    ``start()`` too. ``run()`` is the loop: it ends when ``stopping`` is set (``wake()`` interrupts
    a wait that ``stopping`` does not). What escapes ``run()`` is logged CRITICAL (``EVENT=
    worker-failed``, with the thread's name), ``failure`` says what for the service to show, and
    ``after_failure()`` runs; the service stops where the thread is ``essential``."""

    name = "worker"
    join_timeout: float | None = 5.0
    # A thread the service cannot go on without (keeping calls, retention, the books, the control
    # socket, the DID list, the spool's syncs): when it fails the service stops with exit status 1, so
    # that systemd starts it again and the spool's calls are recovered. Not essential: metrics.
    essential = True

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.failure: str | None = None  # what escaped run(), once it has
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    def start(self) -> bool:
        """Start the thread, once. False: it will not run (stopped before it started)."""
        with self._lifecycle:
            if self._thread is None and not self.stopping.is_set():
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
            return self._thread is not None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        with self._lifecycle:
            first = not self.stopping.is_set()
            self.stopping.set()
            thread = self._thread
        if thread is None:
            return
        if first and thread.is_alive():
            self.wake()
        if thread is not threading.current_thread():
            thread.join(self.join_timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        """Interrupt the loop's wait (called once, by the first ``stop()``, while it runs)."""

    def after_failure(self) -> None:
        """What the thread still owes once ``run()`` has raised (in the thread)."""

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # said, never a thread gone without a word
            self.failure = type(exc).__name__
            then = "the service stops, to be started again" if self.essential else "the service goes on without it"
            log.critical("the %s thread failed (%s); %s", self.name, self.failure, then,
                         exc_info=True, extra={"EVENT": "worker-failed", "WORKER": self.name})
            self.after_failure()


class StoreWorker(Worker):
    name = "store-worker"
    join_timeout = None  # everything queued is kept first

    def __init__(self, open_store: Callable[[], Store], *, max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self._open_store = open_store  # called in the worker thread: SQLite connections stay in it
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        self._retention_queued = False
        self._retry: list[dict[str, Any]] = []
        self.kept = 0
        self.erased = 0  # recordings erased by retention runs (read by the service for its counters)
        self.failed = 0  # keeps that failed at least once

    def keep(self, recording_id: str, wav_path: str | None, call: Any, **final: Any) -> None:
        """:meth:`Keeper.keep` (``store.keeper.keep``), queued (the sink's ``keep``)."""
        self._queue.put({"recording_id": recording_id, "wav_path": wav_path, "call": call, **final})

    def retention(self) -> None:
        """Ask for a retention run (one is queued at a time)."""
        if not self._retention_queued:
            self._retention_queued = True
            self._queue.put(_RETENTION)

    def drain(self) -> None:
        """Wait until everything queued so far is done."""
        self._queue.join()

    def wake(self) -> None:
        """``stop()``: everything queued before is kept, then the thread ends."""
        self._queue.put(_STOP)

    # -- the thread ---------------------------------------------------------------------------

    def after_failure(self) -> None:
        """The loop died (a bug): the capture loop must not wait on a queue nobody reads, so what is
        queued is let go, its spool files left to the next start's recovery."""
        self._discard()

    def _discard(self) -> None:
        while not (self.stopping.is_set() and self._queue.empty()):  # (a _STOP may have gone with the loop)
            job = self._queue.get()
            self._queue.task_done()
            if job is _STOP:
                return

    def run(self) -> None:
        try:
            store = self._open_store()
        except Exception as exc:  # noqa: BLE001  (anything: the queue must still drain)
            log.critical("the store worker cannot open the store (%s): finished calls stay in the spool "
                         "and are recovered at the next start", exc, extra={"EVENT": "store-unusable"})
            self._discard()
            return
        retention = RetentionWorker(store)
        store.keeper.defer_spool_sync = True  # the spool folder fsynced once the queue is empty, not per keep
        try:
            while True:
                job = self._queue.get()
                try:
                    if job is _STOP:
                        break
                    if job is _RETENTION:
                        self._retention_queued = False
                        self._run_retention(retention)
                        self._retry_failed(store)
                    else:
                        self._keep(store, job)
                    if self._queue.empty():
                        self._sync_spool(store)
                finally:
                    self._queue.task_done()
        finally:
            self._sync_spool(store)
            store.close()

    def _sync_spool(self, store: Store) -> None:
        try:
            store.keeper.sync_spool()
        except OSError as exc:  # the keeps are in the index: a spool name a crash brings back is discarded then
            log.error("the spool folder could not be synced (%s)", exc, extra={"EVENT": "spool-sync-failed"})

    def _keep(self, store: Store, job: dict[str, Any], *, retry: bool = False) -> bool:
        """Keep ``job`` and, unless it is a retry, the keeps queued right behind it (up to
        ``MAX_BATCH``) as one batch (:meth:`Keeper.keep_many`: their fsyncs shared), each kept or
        failed as on its own. Whether ``job`` was kept."""
        jobs = [job]
        while not retry and len(jobs) < MAX_BATCH:
            with self._queue.mutex:  # a look at the next job (this thread alone takes jobs out)
                nxt = self._queue.queue[0] if self._queue.queue else _STOP
            if nxt is _STOP or nxt is _RETENTION:
                break
            jobs.append(self._queue.get_nowait())
        try:
            try:
                results = store.keeper.keep_many(jobs)
            except Exception as exc:  # noqa: BLE001  (a failing disk, a bug: each job said, and retried)
                results = [exc] * len(jobs)
            outcomes = [self._kept(j, r if isinstance(r, Exception) else None, retry=retry)
                        for j, r in zip(jobs, results, strict=True)]
        finally:
            for _ in jobs[1:]:  # (the first one's: the loop's)
                self._queue.task_done()
        return outcomes[0]

    def _kept(self, job: dict[str, Any], exc: Exception | None, *, retry: bool = False) -> bool:
        if exc is not None:
            if not retry:
                self.failed += 1
                retried = len(self._retry) < MAX_RETRIES
                if retried:
                    self._retry.append(job)
                log.critical("recording %s could not be kept (%s): its spool files stay; %srecovered at the "
                             "next start", job["recording_id"], exc, "tried again each minute, and " if retried else "",
                             extra={"EVENT": "keep-failed", "RECORDING_ID": job["recording_id"],
                                    "DID_LABEL": getattr(job["call"], "did_label", "")})
            return False
        self.kept += 1
        return True

    def _retry_failed(self, store: Store) -> None:
        jobs, self._retry = self._retry, []
        for n, job in enumerate(jobs):
            if not self._keep(store, job, retry=True):
                self._retry.extend(jobs[n:])  # still failing: the rest waits for the next run
                return
            log.warning("recording %s kept after an earlier failure", job["recording_id"],
                        extra={"EVENT": "keep-retried", "RECORDING_ID": job["recording_id"]})

    def _run_retention(self, retention: RetentionWorker) -> None:
        try:
            report = retention.run()
        except Exception:  # noqa: BLE001  (the worker must not take the recorder down with it)
            log.exception("retention run failed", extra={"EVENT": "retention-failed"})
            return
        self.erased += len(report.erased)
