"""Store health: free space, checked every few seconds by the service.

Below ``warn_free_percent`` a WARNING, below ``critical_free_mb`` a CRITICAL and the store stops
taking new calls (they are counted as lost and each is reported): recordings already kept are never
deleted to make room. Repeated every ten minutes while it lasts, and once when it clears.
"""
from __future__ import annotations

import logging
import os
import time

from storage.store import Store

log = logging.getLogger(__name__)

REPEAT = 600.0


class StoreHealth:
    def __init__(self, store: Store, warn_free_percent: int, critical_free_mb: int) -> None:
        self.store = store
        self.warn_percent = warn_free_percent
        self.critical_bytes = critical_free_mb << 20
        self.level = "ok"
        self.free_bytes = 0
        self.total_bytes = 0
        self._last_said = 0.0

    @property
    def full(self) -> bool:
        return self.level == "critical"

    def free_text(self) -> str:
        if not self.total_bytes:
            return "?"
        return f"{self.free_bytes / 2**30:.1f} GiB ({100 * self.free_bytes / self.total_bytes:.0f}%)"

    def check(self) -> str:
        st = os.statvfs(self.store.root)
        self.free_bytes = st.f_bavail * st.f_frsize
        self.total_bytes = st.f_blocks * st.f_frsize
        percent = 100 * self.free_bytes / self.total_bytes if self.total_bytes else 100.0
        level = "critical" if self.free_bytes < self.critical_bytes else "low" if percent < self.warn_percent else "ok"
        now = time.monotonic()
        if level != self.level or (level != "ok" and now - self._last_said >= REPEAT):
            self._say(level)
            self._last_said = now
        self.level = level
        return level

    def _say(self, level: str) -> None:
        extra = {"EVENT": f"store-{level}" if level != "ok" else "store-ok"}
        if level == "critical":
            log.critical("store almost full (%s free, below %d MiB): NEW CALLS ARE NOT BEING RECORDED; "
                         "no kept recording is deleted to make room", self.free_text(), self.critical_bytes >> 20,
                         extra=extra)
        elif level == "low":
            log.warning("store space low: %s free (warning below %d%%)", self.free_text(), self.warn_percent, extra=extra)
        else:
            log.info("store space back to normal: %s free", self.free_text(), extra=extra)
