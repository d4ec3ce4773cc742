"""The service's start and stop (recorderd/daemon.py ``Daemon.run``), in this process, capturing on
a real veth link: a part that cannot start (the metrics port taken) leaves no thread, no open store
file, no control socket behind it; a control socket that cannot be bound still leaves the books
kept (the counter snapshots, the audit checkpoints). Root and ip(8) are needed for the link.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site

from recorderd.daemon import Daemon
from recorderd.ops import CASEWORK_FILE
from storage.casework import Casework

VETH = ("w15svc0", "w15svc1")  # helper W's names
THREADS = {"store-worker", "metrics", "did-reload", "spool-sync", "control", "books"}


@pytest.fixture
def link() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a veth link and a packet socket")
    subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True, check=False)  # left by a run that died
    subprocess.run(["ip", "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]], check=True)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # the service sets logging up for itself
    try:
        for name in VETH:
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield VETH[1]
    finally:
        subprocess.run(["ip", "link", "del", VETH[0]], capture_output=True, check=False)
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def site_for(tmp_path: Path, interface: str, extra: str = "") -> Site:
    return Site(tmp_path, settings=f"capture: {{interfaces: [{interface}], ring_mb: 4, block_timeout_ms: 20, "
                                   f"trunk_networks: [203.0.113.0/24]}}\n{extra}").init()


def open_under(path: Path) -> list[str]:
    """The files this process holds open under ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                found.append(target)
    return found


def service_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name in THREADS and t.is_alive())


def test_a_part_that_cannot_start_stops_every_part_started_before_it(
        tmp_path: Path, link: str, capfd: pytest.CaptureFixture[str]) -> None:
    """The metrics port taken: the service says so and exits 1, its store worker, DID reader,
    control socket and books stopped, the socket file gone, the store closed (was: the OSError
    went up through Daemon.run, every thread and the store left as they were)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    site = site_for(tmp_path, link, f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
    assert service_threads() == []
    sigterm = signal_handler()
    try:
        capfd.readouterr()
        assert Daemon(str(site.config)).run() == 1
    finally:
        taken.close()
    err = capfd.readouterr().err
    assert f"metrics.listen 127.0.0.1:{port} cannot be listened on (Address already in use): not starting" in err
    assert "EVENT=metrics-failed" in err and "EVENT=control-listening" in err  # the socket was up before
    assert service_threads() == []
    assert not (site.root / "control.sock").exists()
    assert open_under(site.store) == []  # index, audit, casework, the store folder: all closed
    assert signal_handler() == sigterm  # the handlers as they were


def test_a_store_worker_that_fails_stops_the_service_for_systemd_to_start_it_again(
        tmp_path: Path, link: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The store worker's loop raising (a bug): the service stops with exit status 1 within a few
    seconds, every part stopped, so that systemd (Restart=on-failure) starts it again and the spool's
    calls are recovered (was: it recorded on, every later call and retention run let go unkept)."""
    from storage.worker import StoreWorker

    def broken(self: StoreWorker) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StoreWorker, "run", broken)
    site = site_for(tmp_path, link)
    daemon = Daemon(str(site.config))
    stopper = threading.Timer(30, lambda: setattr(daemon, "stop_requested", True))  # a loop that went on: 0
    stopper.start()
    capfd.readouterr()
    try:
        started = time.monotonic()
        assert daemon.run() == 1
        assert time.monotonic() - started < 25
    finally:
        stopper.cancel()
    err = capfd.readouterr().err
    assert "the store-worker thread failed (RuntimeError); the service stops, to be started again" in err
    assert "EVENT=service-failed" in err and "EVENT=stopped" not in err
    assert service_threads() == []
    assert open_under(site.store) == []


def test_the_books_are_kept_when_the_control_socket_cannot_be_bound(
        tmp_path: Path, link: str, capfd: pytest.CaptureFixture[str]) -> None:
    """recorderctl cannot reach the service, and the service records on; its counter snapshots for
    the period report and the audit checkpoints in the journal go on too (was: kept by the control
    socket's accept loop, so none at all)."""
    site = site_for(tmp_path, link, "control: {socket: no-such-folder/control.sock}\n")
    daemon = Daemon(str(site.config))
    casework_path = str(site.store / CASEWORK_FILE)

    def stop_when_snapshotted() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not daemon.stop_requested:
            time.sleep(0.2)
            with contextlib.suppress(Exception):
                casework = Casework(casework_path)
                try:
                    if casework.counter_snapshots():
                        break
                finally:
                    casework.close()
        daemon.stop_requested = True

    stopper = threading.Thread(target=stop_when_snapshotted, daemon=True)
    capfd.readouterr()
    stopper.start()
    assert daemon.run() == 0
    stopper.join()
    err = capfd.readouterr().err
    assert "EVENT=control-failed" in err
    casework = Casework(casework_path)
    try:
        snapshots = casework.counter_snapshots()
    finally:
        casework.close()
    assert len(snapshots) >= 2  # at the start, and the last at the stop
    assert err.count("EVENT=audit-checkpoint") >= 2
    assert service_threads() == [] and open_under(site.store) == []


def signal_handler() -> object:
    import signal

    return signal.getsignal(signal.SIGTERM)
