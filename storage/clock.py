"""The clock that retention trusts: a step of the wall clock stops erasure until a manager confirms.

Erasure cannot be undone, so the wall clock is not taken on its word. At each retention run the
wall time is compared with where it should be: the wall time of the last run plus the time the
kernel's boot clock (``CLOCK_BOOTTIME``, which a clock step does not move) says has passed since,
and with the start of the newest recording. A jump forward of more than ``FORWARD_BOUND`` (the
clock set 20 days ahead would erase recordings seconds old; smaller steps count together, since the
machine started or the clock was last confirmed) or any step back (recordings would be
kept past their deadline without a word) is a *clock jump*: it is kept in the store (``store_meta``),
logged CRITICAL once (``EVENT=clock-jump``), shown by ``recorderctl status``, and no recording, copy
or audit row is erased by the clock until a manager runs ``recorderctl retention confirm-clock``.

Across a restart of the machine the boot clock starts again, and the time the box was off cannot
be measured: a wall clock earlier than the last run is still a step back, and one more than
``UNSEEN_GAP`` after it needs the same confirmation. The reference (wall, boot clock, boot id) is
kept in the store, so a step taken while the service was stopped is seen too.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .policy import iso

if TYPE_CHECKING:
    from .index import Index

log = logging.getLogger(__name__)

FORWARD_BOUND = 3600.0  # s the wall clock may run ahead of the boot clock before erasure stops
BACK_TOLERANCE = 2.0  # s: any step back beyond this (plus NTP's slewing, below) stops erasure
SLEW = 1e-3  # NTP slews the clock by at most 500 ppm: allowed over the time measured
UNSEEN_GAP = 86400.0  # s since the last run, across a reboot, before a confirmation is needed
REFERENCE = "clock_reference"  # store_meta keys
JUMP = "clock_jump"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_clock() -> float:
    """Seconds since boot, suspend included; a step of the wall clock does not move it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    try:
        with open(_BOOT_ID, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ClockJump:
    kind: str  # "forward" | "back"
    seconds: float  # how far the wall clock is from where it should be (+ ahead, - behind)
    seen_at: float  # the wall time when it was seen (by the clock in question)
    why: str  # what it was measured against

    def text(self, tz: ZoneInfo) -> str:
        when = iso(self.seen_at, tz, "seconds")
        return (f"the clock jumped {_span(abs(self.seconds))} {'forward' if self.kind == 'forward' else 'back'} "
                f"({self.why}; seen at {when} by the clock as it then was): retention is stopped, nothing is erased "
                "until a manager checks the clock and runs 'recorderctl retention confirm-clock'")


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def pending(index: Index) -> ClockJump | None:
    """The clock jump waiting for a manager's confirmation, if any."""
    raw = index.meta(JUMP)
    if raw is None:
        return None
    try:
        return ClockJump(**json.loads(raw))
    except (ValueError, TypeError):  # an unreadable record is still a jump nobody confirmed
        return ClockJump("unknown", 0.0, 0.0, "the record of an earlier clock jump is unreadable")


class ClockGuard:
    """Decides, for one retention run, whether the wall clock can be trusted."""

    def __init__(self, index: Index, wall: Callable[[], float], steady: Callable[[], float] = boot_clock,
                 boot: Callable[[], str] = boot_id) -> None:
        self.index = index
        self.wall = wall
        self.steady = steady
        self.boot = boot
        self.ahead = 0.0  # s the wall clock was stepped forward in all (see _measure)

    def check(self) -> ClockJump | None:
        """None: the clock holds, and the reference moves on to now. Else the jump (found now, or
        found earlier and not yet confirmed): erase nothing."""
        waiting = pending(self.index)
        if waiting is not None:
            return waiting
        now, mono, boot = self.wall(), self.steady(), self.boot()
        jump = self._measure(now, mono, boot)
        if jump is None:
            self._set_reference(now, mono, boot, ahead=self.ahead)
            return None
        self._save(JUMP, asdict(jump))
        log.critical("clock jump: the wall clock is %.0f s %s where it should be (%s): retention is stopped until "
                     "a manager confirms the clock (recorderctl retention confirm-clock)", abs(jump.seconds),
                     "ahead of" if jump.seconds > 0 else "behind", jump.why, extra={"EVENT": "clock-jump"})
        return jump

    def confirm(self) -> ClockJump | None:
        """A manager says the clock is right now: the jump (if any) is cleared and measured from here."""
        waiting = pending(self.index)
        self.index.delete_meta(JUMP)
        # Recordings kept while the clock was wrong keep their times: the newest of them is not a
        # new step back once the manager has said the clock is right.
        self._set_reference(self.wall(), self.steady(), self.boot(), accepted=self.index.newest_start())
        return waiting

    def _set_reference(self, now: float, mono: float, boot: str, accepted: float | None = None,
                       ahead: float = 0.0) -> None:
        if accepted is None:
            accepted = (self._reference() or {}).get("accepted")
        self._save(REFERENCE, {"wall": now, "steady": mono, "boot": boot, "accepted": accepted, "ahead": ahead})

    def _save(self, key: str, value: dict[str, Any]) -> None:
        try:
            self.index.set_meta(key, json.dumps(value))
        except sqlite3.Error as exc:  # a full disk: this run still goes by what was measured
            log.warning("the clock's %s could not be recorded in the store (%s)", key.replace("_", " "), exc)

    def _reference(self) -> dict[str, Any] | None:
        raw = self.index.meta(REFERENCE)
        try:
            ref = json.loads(raw) if raw else None
            return ref if ref and all(isinstance(ref.get(k), (int, float)) for k in ("wall", "steady")) else None
        except ValueError:
            return None

    def _measure(self, now: float, mono: float, boot: str) -> ClockJump | None:
        """The jump, if any; ``self.ahead`` is how far the wall clock was stepped in all since the
        machine started or a manager last confirmed the clock (steps each under the bound add up)."""
        ref = self._reference()
        self.ahead = 0.0
        if ref is not None:
            if boot and ref.get("boot") == boot and mono >= ref["steady"]:
                elapsed = mono - ref["steady"]
                drift = now - (ref["wall"] + elapsed)
                before = ref.get("ahead")
                self.ahead = (before if isinstance(before, (int, float)) else 0.0) + drift
                if drift > FORWARD_BOUND:
                    return ClockJump("forward", drift, now, f"{_span(elapsed)} passed since the last retention run "
                                     f"by the boot clock, {_span(now - ref['wall'])} by the wall clock")
                if self.ahead > FORWARD_BOUND:
                    return ClockJump("forward", self.ahead, now, "steps of the wall clock, each smaller, add up to "
                                     "that since the machine started or the clock was last confirmed")
                if drift < -(BACK_TOLERANCE + SLEW * elapsed):
                    return ClockJump("back", drift, now, f"{_span(elapsed)} passed since the last retention run by "
                                     "the boot clock, the wall clock moved less")
            elif now < ref["wall"] - BACK_TOLERANCE:
                return ClockJump("back", now - ref["wall"], now, "earlier than the last retention run, across a restart")
            elif now - ref["wall"] > UNSEEN_GAP:
                return ClockJump("forward", now - ref["wall"], now, "since the last retention run, across a restart of "
                                 "the machine: the time between cannot be measured")
        newest = self.index.newest_start()
        accepted = (ref or {}).get("accepted")
        known = isinstance(accepted, (int, float)) and newest is not None and newest <= accepted
        if newest is not None and now < newest - BACK_TOLERANCE and not known:
            return ClockJump("back", now - newest, now, "earlier than the start of the newest recording")
        return None
