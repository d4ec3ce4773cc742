"""Retention (guideline Art. 5(1), 5(2), 5(7)): the worker that erases on time (the deadline it
keeps is :func:`storage.policy.retain_until`).

For each due recording (past its deadline, no hold in force) the worker: marks the erasure begun and
destroys the wrapped data key (crypto-erase), overwrites the file with random bytes, fsyncs,
unlinks, fsyncs the directory, confirms it is gone, then replaces the index row by a minimal
deletion record (id, DID label, date, when, how, SHA-256) and checkpoints the WAL so no erased row
or key lingers in it. Every step is idempotent: an erasure interrupted anywhere (kill -9, power
loss) is finished by the next run.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import clock
from .clock import ClockGuard, ClockJump
from .erasure import erase_file
from .policy import iso

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

METHOD = "crypto-erase (AES-256-GCM data key destroyed) + random overwrite + unlink, verified"
LATE_AFTER = 3600.0  # s past the deadline before a recording still present is CRITICAL
PERIOD = 60.0  # s between runs in the daemon
REMIND_PERIOD = 3600.0  # s between CRITICAL reminders while a clock jump waits for confirmation
SWEEP_PERIOD = 3600.0  # s between walks of the store for files with no index row
_ONE_RUN_AT_A_TIME = threading.Lock()


@dataclass(frozen=True, slots=True)
class Erased:
    id: str
    did_label: str
    call_date: str
    retain_until: float
    erased_at: float
    bytes_overwritten: int

    @property
    def late_s(self) -> float:
        return max(0.0, self.erased_at - self.retain_until)


@dataclass
class RunReport:
    erased: list[Erased]
    orphans: list[str]  # files in the store with no index row, erased
    spool_leftovers: list[str]
    failures: list[str]
    clock_jump: ClockJump | None = None  # set: the clock is in question and nothing was erased


class RetentionWorker:
    """Erases due recordings; the daemon calls :meth:`run` every ``PERIOD`` seconds, and
    ``recorderctl retention run`` calls it once."""

    def __init__(self, store: Store, clock: Callable[[], float] | None = None,
                 steady: Callable[[], float] | None = None) -> None:
        self.store = store
        self.clock = clock or store.clock
        self.steady = steady or store.steady
        self.last_sweep = float("-inf")
        self.reminded = float("-inf")  # boot clock of the last reminder of a clock jump

    def run(self) -> RunReport:
        with _ONE_RUN_AT_A_TIME:  # the service's minute and a `recorderctl retention run` over its socket
            return self._run()

    def _run(self) -> RunReport:
        index = self.store.db()
        report = RunReport([], [], [], [])
        waiting = clock.pending(index) is not None
        jump = ClockGuard(index, self.clock, self.steady, self.store.boot_id).check()
        if jump is not None:  # erasing by a clock that jumped cannot be undone: wait for a manager
            report.clock_jump = jump
            mono = self.steady()
            if not waiting:  # just found (and logged CRITICAL by the guard)
                self.reminded = mono
            elif mono - self.reminded >= REMIND_PERIOD:
                self.reminded = mono
                log.critical("retention is still stopped: %s", jump.text(self.store.tz), extra={"EVENT": "clock-jump"})
            return report
        now = self.clock()
        for row in index.due(now):
            try:
                report.erased.append(self._erase(row, now))
            except OSError as exc:
                report.failures.append(f"{row.id}: {exc}")
                log.critical("erasure of recording %s failed: %s", row.id, exc,
                             extra={"EVENT": "erasure-failed", "RECORDING_ID": row.id, "DID_LABEL": row.did_label})
        if report.erased:
            index.checkpoint()
        if now - self.last_sweep >= SWEEP_PERIOD:  # leftovers are rare: an hourly walk of the tree is enough
            self.last_sweep = now
            report.orphans = self._sweep_orphans(now)
            report.spool_leftovers = self._sweep_spool(now)
        self._warn_late(now)
        return report

    def _erase(self, row, now: float) -> Erased:  # type: ignore[no-untyped-def]
        index = self.store.db()
        index.begin_erasure(row.id, now)  # the wrapped key is gone from here on: crypto-erased
        overwritten = sum(erase_file(path) for path in self.store.layout.files(row))
        erased_at = self.clock()
        call_date = self.store.layout.local_date(row.started_at)
        index.finish_erasure(row, call_date, erased_at, METHOD)
        late = erased_at - row.retain_until
        log.info("recording %s erased (retention ended %s, %.0f s after the deadline)", row.id,
                 iso(row.retain_until, self.store.tz), max(0.0, late),
                 extra={"EVENT": "recording-erased", "RECORDING_ID": row.id, "DID_LABEL": row.did_label})
        return Erased(row.id, row.did_label, call_date, row.retain_until, erased_at, overwritten)

    def _sweep_orphans(self, now: float) -> list[str]:
        """Files in the recordings tree with no index row (e.g. a crash between store and index):
        unreadable without their key; erased once older than the retention period."""
        known = self.store.db().paths()
        horizon = now - (self.store.retention_days + 1) * 86400
        swept = []
        for dirpath, _dirs, files in os.walk(self.store.recordings_dir):
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self.store.recordings_dir)
                if rel in known or os.stat(path).st_mtime > horizon:
                    continue
                erase_file(path)
                swept.append(rel)
                log.warning("erased a file with no index row: %s", rel, extra={"EVENT": "orphan-erased"})
        return swept

    def _sweep_spool(self, now: float) -> list[str]:
        """Spool files no call has touched for longer than the retention period."""
        horizon = now - (self.store.retention_days + 1) * 86400
        swept = []
        for name in sorted(os.listdir(self.store.spool_dir)):
            path = os.path.join(self.store.spool_dir, name)
            if os.stat(path).st_mtime <= horizon:
                erase_file(path)
                swept.append(name)
                log.warning("erased an abandoned spool file: %s", name, extra={"EVENT": "spool-erased"})
        return swept

    def _warn_late(self, now: float) -> None:
        for row in self.store.db().due(now):
            if now - row.retain_until > LATE_AFTER:
                log.critical("recording %s is still stored %.0f min after its retention deadline", row.id,
                             (now - row.retain_until) / 60,
                             extra={"EVENT": "erasure-late", "RECORDING_ID": row.id,
                                    "DID_LABEL": row.did_label})
