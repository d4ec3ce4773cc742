"""The service's threads (storage/worker.py ``Worker``): each of the five starts one thread however
often it is started, stops any number of times (before it started too), and one that dies is said
(EVENT=worker-failed, with its name) and shown, the service going on; the store worker that died
no longer holds the capture loop up. And the books (recorderd/books.py): counter snapshots, audit
pruning and journal checkpoints in a thread of their own, at their intervals, the last at the stop.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Site
from test_audit_seal import Checkpoints

from recorderd.books import Books
from recorderd.config import load
from recorderd.control import ControlServer
from recorderd.daemon import Daemon, SpoolSync
from recorderd.metrics import MetricsServer
from recorderd.ops import CASEWORK_FILE
from recorderd.service import build_pipeline
from recorderd.watch import DidReloader
from storage.audit import AuditEvent
from storage.casework import Casework
from storage.worker import StoreWorker, Worker


def threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


@contextlib.contextmanager
def the_five(site: Site) -> Iterator[dict[str, Callable[[], Worker]]]:
    """A maker for each of the service's threads, as the service makes them (real store, socket, port, file)."""
    config = load(str(site.config))
    fd = os.open(site.store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield {
            "store-worker": lambda: StoreWorker(site.open_store),
            "metrics": lambda: MetricsServer("127.0.0.1:0"),
            "did-reload": lambda: DidReloader(str(site.root / "dids.yaml")),
            "spool-sync": lambda: SpoolSync(fd),
            "control": lambda: ControlServer(config),
            "books": lambda: Books(config),
        }
    finally:
        os.close(fd)


NAMES = ["store-worker", "metrics", "did-reload", "spool-sync", "control", "books"]


@pytest.mark.parametrize("name", NAMES)
def test_started_twice_one_thread_stopped_twice_fine(tmp_path: Path, name: str) -> None:
    site = Site(tmp_path).init()
    with the_five(site) as make:
        worker = make[name]()
        assert threads(name) == []
        assert worker.start() and worker.start()  # the second: nothing more
        time.sleep(0.05)
        assert len(threads(name)) == 1 and worker.alive
        worker.stop()
        worker.stop()
        assert threads(name) == [] and not worker.alive
        assert worker.failure is None
    if name == "control":
        assert not (site.root / "control.sock").exists()


@pytest.mark.parametrize("name", NAMES)
def test_stopped_before_it_started_is_fine_and_it_never_runs(tmp_path: Path, name: str) -> None:
    site = Site(tmp_path).init()
    with the_five(site) as make:
        worker = make[name]()
        worker.stop()
        worker.stop()
        assert not worker.start()  # stopped: it will not run
        assert threads(name) == [] and not worker.alive
    if name == "control":
        assert not (site.root / "control.sock").exists()


def test_what_escapes_a_thread_is_logged_with_its_name_and_shown_in_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The DID reader's loop raising (here: the notifier's call before each read) was a thread gone
    with a traceback on stderr and nothing in the journal's fields; the DID file was never read again."""
    (tmp_path / "dids.yaml").write_text('dids:\n  - {number: "044-200-3939", label: a}\n', encoding="utf-8")

    def broken() -> None:
        raise RuntimeError("the notify socket went away")

    reloader = DidReloader(str(tmp_path / "dids.yaml"), on_start=broken)
    with caplog.at_level(logging.INFO):
        reloader.start()
        reloader.request()
        deadline = time.monotonic() + 5
        while reloader.alive and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not reloader.alive and reloader.failure == "RuntimeError"
    [record] = [r for r in caplog.records if getattr(r, "EVENT", None) == "worker-failed"]
    assert record.levelname == "CRITICAL" and record.WORKER == "did-reload"  # type: ignore[attr-defined]
    assert record.getMessage() == "the did-reload thread failed (RuntimeError); the service stops, to be started again"
    assert record.exc_info is not None  # the traceback, for the technician
    reloader.stop()  # after a failure: fine

    daemon = Daemon(str(tmp_path / "unused.yaml"))
    daemon.workers = [reloader, SpoolSync(-1)]
    assert daemon._workers_failed() is True  # essential: the service stops, systemd starts it again
    assert daemon.alerts["worker_failed"] == "THREAD FAILED: did-reload (journal: EVENT=worker-failed)"
    assert [r for r in caplog.records if getattr(r, "EVENT", None) == "service-failed"]


def test_a_failed_metrics_thread_does_not_stop_the_service(tmp_path: Path) -> None:
    """The Prometheus endpoint is the one thread the service records on without."""
    assert MetricsServer.essential is False and SpoolSync.essential and StoreWorker.essential

    class Endpoint(Worker):  # as MetricsServer, without binding a port here
        name, essential = "metrics", False

    metrics = Endpoint()
    metrics.failure = "OSError"  # as _main sets it when run() raises
    daemon = Daemon(str(tmp_path / "unused.yaml"))
    daemon.workers = [metrics, SpoolSync(-1)]
    assert daemon._workers_failed() is False
    assert daemon.alerts["worker_failed"] == "THREAD FAILED: metrics (journal: EVENT=worker-failed)"


class Buggy(StoreWorker):
    """A store worker whose loop has a bug: its first keep raises out of the loop."""

    def _keep(self, store, job, *, retry=False):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")


class Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_store_worker_that_died_does_not_hold_up_the_capture_loop(tmp_path: Path) -> None:
    """Its queue was no longer read: after 4 more keeps (the bound here) the capture loop waited for ever."""
    site = Site(tmp_path).init()
    worker = Buggy(site.open_store, max_pending=4)
    worker.start()
    done = threading.Event()

    def capture_loop() -> None:
        for n in range(50):
            worker.keep(f"rec-{n}", None, None)
        worker.drain()
        done.set()

    said = Said()
    logging.getLogger("storage.worker").addHandler(said)  # (the site's set-up replaced the root's handlers)
    try:
        feeder = threading.Thread(target=capture_loop, daemon=True)
        feeder.start()
        feeder.join(10)
    finally:
        logging.getLogger("storage.worker").removeHandler(said)
    assert done.is_set(), "the capture loop is stuck on the dead worker's queue"
    assert [r.WORKER for r in said.records if getattr(r, "EVENT", None) == "worker-failed"] == ["store-worker"]  # type: ignore[attr-defined]
    worker.stop()
    worker.stop()
    assert threads("store-worker") == []


# -- the books ---------------------------------------------------------------------------------------


def audit_actions(site: Site) -> list[str]:
    with contextlib.closing(sqlite3.connect(site.store / "audit.sqlite")) as db:
        return [r[0] for r in db.execute("SELECT action FROM audit ORDER BY seq")]


def test_the_books_snapshot_prune_and_checkpoint_at_their_intervals_and_at_the_stop(tmp_path: Path) -> None:
    """Without any control socket: snapshots of the counters while they change, one at the stop;
    the audit pruned at its interval (an audit-prune row for each old row found); a checkpoint with each."""
    site = Site(tmp_path).init()
    config = load(str(site.config))
    store = site.open_store()
    pipeline = build_pipeline(config, store)
    view = ControlServer(config, pipeline=pipeline).view  # never started: no socket
    assert view is not None
    logger = logging.getLogger("recorderd.journal")
    taken, level = Checkpoints(), logger.level
    logger.addHandler(taken)
    logger.setLevel(logging.INFO)

    def old_row() -> None:  # a row past audit.retention_days (365)
        store.audit_log().append(AuditEvent(time.time() - 400 * 86400, "someone", 1000, "list", None, {}, "allowed"))

    books = Books(config, view, snapshot_period=0.2, prune_period=0.6, first_prune=0.6)
    try:
        old_row()
        assert books.start()
        started = time.monotonic()
        deadline = time.monotonic() + 20
        for _ in range(2):  # the first pruning, and the next one, an interval later
            while "list" in audit_actions(site):
                assert time.monotonic() < deadline, "no audit pruning"
                pipeline.counters["calls_recorded"] += 1  # the counters change between two snapshots
                time.sleep(0.1)
            assert audit_actions(site)[-1] == "audit-prune"
            pruned_at = time.monotonic()
            old_row()
        assert pruned_at - started >= 0.6 + 0.6 * 0.9
        pipeline.counters["calls_recorded"] += 1
        books.stop()
        stopped = len(taken.records)
        books.stop()
        assert len(taken.records) == stopped  # the last one once
    finally:
        books.stop()
        logger.removeHandler(taken)
        logger.setLevel(level)
        store.close()
    assert not (site.root / "control.sock").exists() and threads("books") == []
    casework = Casework(str(site.store / CASEWORK_FILE))
    try:
        snapshots = casework.counter_snapshots()
    finally:
        casework.close()
    counts = [s[2]["calls_recorded"] for s in snapshots]
    assert len(snapshots) >= 3 and {s[0] for s in snapshots} == {view.started}  # one run of the service
    assert counts[-1] == pipeline.counters["calls_recorded"]  # the last, at the stop
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # only when they changed
    assert audit_actions(site) == ["audit-prune", "list"]  # the second pruning, then the old row added after it
    assert stopped >= len(snapshots)  # a checkpoint with each
