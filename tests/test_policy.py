"""storage/policy.py: the one way a time is written out, and that nothing else writes one
(the deadline itself is tested on every boundary in test_retention.py)."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from storage.policy import iso, retain_until

ROOT = Path(__file__).resolve().parent.parent
JST = ZoneInfo("Asia/Tokyo")
# The console is a client of the control socket and never imports storage: its audit CSV writes
# the times the service sent it on its own.
OUTSIDE_STORAGE = {"console/pages/audit.py"}


def test_iso_writes_the_site_offset_to_the_millisecond_or_the_second() -> None:
    ts = datetime(2026, 9, 1, 0, 30, 5, 123456, tzinfo=JST).timestamp()  # 15:30 UTC on 31 Aug
    assert iso(ts, JST) == "2026-09-01T00:30:05.123+09:00"
    assert iso(ts, JST, "seconds") == "2026-09-01T00:30:05+09:00"
    assert iso(retain_until(ts, 14, JST), JST) == "2026-09-16T00:00:00.000+09:00"


def test_no_other_module_formats_a_time_of_its_own() -> None:
    pattern = re.compile(r"fromtimestamp\([^)]*\)\s*\.isoformat\(")
    found = sorted(str(p.relative_to(ROOT)) for top in ("capture", "storage", "recorderd", "console")
                   for p in (ROOT / top).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8")))
    assert set(found) <= {"storage/policy.py", *OUTSIDE_STORAGE}, found
