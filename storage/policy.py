"""The retention policy (guideline Art. 5(1), 5(2)) and the one way times are written out.

``retain_until = 00:00 in the site's time zone on (D + days + 1)``, D being the local date of the
call's start (or end, with ``anchor: end``). A call on 1 Sep with 14 days is kept through 15 Sep and
erased from 16 Sep 00:00. Calls between 00:00 and 09:00 JST belong to the JST date, not the UTC one.

Every time the store, ``recorderctl`` or the console writes out is :func:`iso`: ISO 8601 with the
site's offset (``2026-09-16T00:00:00.000+09:00``), to the millisecond unless told otherwise. This
module imports nothing of the store, so whatever keeps or erases a recording can use it.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, tzinfo
from typing import Literal

Timespec = Literal["seconds", "milliseconds"]


def retain_until(call_time: float, days: int, tz: tzinfo) -> float:
    """Epoch seconds from which a recording of a call at ``call_time`` must be gone."""
    local_date = datetime.fromtimestamp(call_time, tz).date()
    deadline = datetime.combine(local_date + timedelta(days=days + 1), time(0, 0), tzinfo=tz)
    return deadline.timestamp()


def iso(ts: float, tz: tzinfo | None, timespec: Timespec = "milliseconds") -> str:
    """``ts`` (epoch seconds) in ISO 8601 with the offset of ``tz`` (None: the process's local time,
    without an offset)."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec=timespec)
