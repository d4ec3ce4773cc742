"""Holds (guideline Art. 5(2)): a recording kept past its deadline, with a reason and a reference
number, until a date in the future; holds stack. This is the mechanism only: who may place or
release one, and the audit of it, are recorderctl's (recorderd/ops/records.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import StoreError
from .index import Index, RecordingRow


class Holds:
    """The holds ``db()`` keeps; ``get`` refuses a recording not in the store, ``clock`` says now."""

    def __init__(self, *, db: Callable[[], Index], get: Callable[[str], RecordingRow], clock: Callable[[], float]) -> None:
        self.db = db
        self.get = get
        self.clock = clock

    def in_force(self, recording_id: str) -> list[dict[str, Any]]:
        return self.db().holds(recording_id, self.clock())

    def hold(self, recording_id: str, *, until: float, reason: str, ref: str, by: str) -> int:
        """Keep a recording past its deadline until ``until`` (holds stack)."""
        self.get(recording_id)
        if not reason.strip() or not ref.strip():
            raise StoreError("a hold needs a reason and a reference number")
        if until <= self.clock():
            raise StoreError("a hold must end in the future")
        return self.db().add_hold(recording_id, until, reason, ref, by, self.clock())

    def release(self, recording_id: str, hold_id: int) -> None:
        """End a hold now; a recording past its deadline with no other hold goes at the next run."""
        if not self.db().release_hold(recording_id, hold_id, self.clock()):
            raise StoreError(f"recording {recording_id} has no hold {hold_id} in force")
