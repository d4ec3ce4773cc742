"""The retention deadline (guideline Art. 5(1)).

``retain_until = 00:00 in the site's time zone on (D + days + 1)``, D being the local date of the
call's start (or end, with ``anchor: end``). A call on 1 Sep with 14 days is kept through 15 Sep and
erased from 16 Sep 00:00. Calls between 00:00 and 09:00 JST belong to the JST date, not the UTC one.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def retain_until(call_time: float, days: int, tz: ZoneInfo) -> float:
    """Epoch seconds from which a recording of a call at ``call_time`` must be gone."""
    local_date = datetime.fromtimestamp(call_time, tz).date()
    deadline = datetime.combine(local_date + timedelta(days=days + 1), time(0, 0), tzinfo=tz)
    return deadline.timestamp()


def iso(ts: float, tz: ZoneInfo) -> str:
    """ISO 8601 with the site's offset, to the millisecond."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")
