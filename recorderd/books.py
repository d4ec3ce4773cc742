"""The books the period report needs, kept by a thread of the service's own (``books``).

A snapshot of the capture counters every ``SNAPSHOT_PERIOD`` when they changed (what ``recorderctl
report`` counts, :data:`SNAPSHOT_KEYS`), and the audit log's pruning (``audit.retention_days``) every
``PRUNE_PERIOD``, the first a minute after the start; with each, the audit chain's head goes to the
journal (a checkpoint: at the start, at least every 10 minutes, and at a clean stop, with a last
snapshot). Each run opens its own store and casework connections, as the service (audited as the
service's user, ``via`` "service").

These ran on the control socket's accept loop's timeout until issue 15: a socket that could not be
bound kept no books at all (no snapshots for the report, no pruning, no checkpoints), and a long
prune held up every connection meanwhile.
"""
from __future__ import annotations

import logging
import os
import pwd
import time
from collections.abc import Callable
from typing import Any

from storage.store import Store
from storage.worker import Worker

from . import journal, ops, roles, service
from .config import Config
from .counters import SNAPSHOT
from .ops import upkeep

log = logging.getLogger(__name__)

SNAPSHOT_PERIOD = 590.0  # under 10 minutes, with the audit checkpoint: at least one every 10 minutes
PRUNE_PERIOD = 3600.0
FIRST_PRUNE = 60.0  # s after the start
SNAPSHOT_KEYS = SNAPSHOT  # what the period report counts (recorderd/counters.py)


class Books(Worker):
    """``view``: the running service's (:class:`recorderd.control.ServiceView`: its counters and start
    time); None keeps the audit books only."""

    name = "books"
    join_timeout = 30.0  # a prune in progress is let finish

    def __init__(self, config: Config, view: Any = None, *, open_store: Callable[[Config], Store] = service.open_store,
                 snapshot_period: float = SNAPSHOT_PERIOD, prune_period: float = PRUNE_PERIOD,
                 first_prune: float = FIRST_PRUNE) -> None:
        super().__init__()
        self.config, self.view, self.open_store = config, view, open_store
        self.snapshot_period, self.prune_period, self.first_prune = snapshot_period, prune_period, first_prune
        self.caller = roles.Caller(_user_name(os.getuid()), os.getuid(), (), "service", os.getpid())
        self._last_counters: dict[str, int] | None = None

    def run(self) -> None:
        now = time.monotonic()
        next_snapshot, next_prune = now, now + self.first_prune
        while True:
            now = time.monotonic()
            if now >= next_snapshot or now >= next_prune:
                prune = now >= next_prune
                next_snapshot = now + self.snapshot_period
                next_prune = now + self.prune_period if prune else next_prune
                self.keep(prune=prune)
            if self.stopping.wait(max(0.0, min(next_snapshot, next_prune) - time.monotonic())):
                return

    def stop(self) -> None:
        """The last snapshot and checkpoint, once the thread has ended (if it ran)."""
        started, first = self._thread is not None, not self.stopping.is_set()
        super().stop()
        if started and first:
            self.keep(final=True)

    def keep(self, *, prune: bool = False, final: bool = False) -> None:
        counters = None
        if self.view is not None:
            current = self.view.counters()
            counters = {k: int(current.get(k, 0)) for k in SNAPSHOT_KEYS}
            if counters == self._last_counters and not final:
                counters = None
        try:
            store = self.open_store(self.config)
            with ops.session(self.config, self.caller, _no_output, self.view, store=store) as ctx:
                if counters is not None and self.view is not None:
                    ctx.casework.snapshot_counters(self.view.started, time.time(), counters)
                    self._last_counters = counters
                if prune:
                    ctx.role = "service"
                    upkeep.prune_audit(ctx)
                audit = ctx.store.audit_log()
                journal.audit_checkpoint(*audit.tip(), audit.key_id())
        except Exception:
            log.exception("keeping the books failed (counter snapshot, audit pruning or checkpoint)",
                          extra={"EVENT": "books-failed"})


def _no_output(path: str) -> ops.Output:
    raise ops.OpError("no output here")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"
