"""Console search: how fast ``storage.search.search`` answers on a large index (issue 13).

``python bench/console_search.py [ROWS]`` (default 200,000; JSON out) builds a temporary store with
``Store.init`` and ``ROWS`` recordings indexed by the real ``Index.add`` (each with its own data key
wrapped by the master key, its caller number, Call-ID and DTMF sealed, its caller digests made),
spread over 60 days, 11 DIDs, 40,000 caller numbers (so a number calls a few times), 3% incomplete
and 1% on hold. No audio files: the search reads the index alone. It then times a set of typical
console queries (each run ``REPEAT`` times, first page of 50 with the total count, rows opened) and
reports p50 and p95 per query and over all of them, in milliseconds. The target: p95 <= 100 ms.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage import vault  # noqa: E402
from storage.index import RecordingRow  # noqa: E402
from storage.policy import retain_until  # noqa: E402
from storage.search import Filters, search  # noqa: E402
from storage.store import Store  # noqa: E402

TZ = ZoneInfo("Asia/Tokyo")
DAY = 86400.0
END = 1_790_000_000.0  # 2026-09-22 (JST), the newest call
DAYS = 60
DIDS = [("+81442003939", "サンキューコールかわさき"), ("+81442002111", "本庁舎代表"), ("+81442013113", "川崎区役所"),
        ("+81442710130", "大師支所"), ("+81443221960", "田島支所"), ("+81445566666", "幸区役所"),
        ("+81447443113", "中原区役所"), ("+81448613113", "高津区役所"), ("+81448563113", "宮前区役所"),
        ("+81449353113", "多摩区役所"), ("+81449655100", "麻生区役所")]
REPEAT = 20


def callers(n: int, rng: random.Random) -> list[str]:
    """Mobile and Kawasaki numbers, national or E.164, as From headers carry them."""
    prefixes = ("090", "080", "044", "+8170")
    return [p + "".join(rng.choice("0123456789") for _ in range(7 if p == "044" else 8))
            for p in (rng.choice(prefixes) for _ in range(n))]


def other_form(number: str) -> str:
    return "0" + number[3:] if number.startswith("+81") else "+81 " + number[1:]


def fill(store: Store, rows: int, seed: int = 1) -> list[RecordingRow]:
    """``rows`` recordings in ``store``'s index through ``Index.add``; the rows (with their callers)."""
    rng = random.Random(seed)
    numbers = callers(max(rows // 5, 10), rng)
    index = store.db()
    index.db.execute("PRAGMA synchronous = OFF")  # a bench store: the sync per row is not what is measured
    master = store.master_key()
    made = []
    for i in range(rows):
        started = END - rng.random() * DAYS * DAY
        did, label = rng.choice(DIDS)
        rid = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started + 9 * 3600))}-{i:010x}"
        data_key = vault.new_data_key()
        duration = rng.expovariate(1 / 180)
        row = RecordingRow(
            id=rid, call_id=f"{rng.getrandbits(64):016x}@203.0.113.5", did=did, did_label=label,
            caller=rng.choice(numbers), started_at=started, ended_at=started + duration, codec="PCMU", channels=2,
            frames=int(duration * 8000), size=int(duration * 16000) + 58, sha256="0" * 64,
            retain_until=retain_until(started, 90, TZ), state="incomplete" if rng.random() < 0.03 else "complete",
            end_reason="bye", path=f"x/{rid}.rdv", streams=[{"channel": 1, "packets": 1, "dtmf": []},
                                                           {"channel": 2, "packets": 1, "dtmf": []}],
            created_at=started + duration, wrapped_key=vault.wrap(master, data_key, rid),
        )
        index.add(row, data_key)
        if rng.random() < 0.01:
            index.add_hold(rid, END + 365 * DAY, "bench", "B-1", "bench", started)
        made.append(row)
    index.db.execute("PRAGMA synchronous = FULL")
    return made


def queries(made: list[RecordingRow], rng: random.Random) -> dict[str, Filters]:
    some = rng.choice(made)
    digits = "".join(c for c in some.caller if c.isdigit())
    week = END - 7 * DAY
    return {
        "newest (no filter)": Filters(),
        "one day": Filters(start=END - 3 * DAY, end=END - 2 * DAY),
        "last week, one DID": Filters(start=week, did=DIDS[0][0], did_label=DIDS[0][0]),
        "DID by label": Filters(did_label=DIDS[3][1]),
        "caller exact": Filters(caller=some.caller),
        "caller exact, other form": Filters(caller=other_form(some.caller)),
        "caller last 4 digits": Filters(caller_ends=digits[-4:]),
        "caller last 8 digits, a month": Filters(caller_ends=digits[-8:], start=END - 30 * DAY),
        "caller last 10 digits": Filters(caller_ends=digits[-10:]),
        "longer than 10 min": Filters(min_duration=600),
        "short calls, last week": Filters(max_duration=10, start=week),
        "incomplete": Filters(state="incomplete"),
        "on hold": Filters(on_hold=True),
        "page 100 of everything": Filters(),
    }


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    tmp = tempfile.mkdtemp(prefix="bench-search-")
    try:
        store = Store(tmp, tz=TZ, retention_days=90)
        store.init()
        store.open()
        t0 = time.perf_counter()
        made = fill(store, rows)
        build_s = time.perf_counter() - t0
        index = store.db()
        index.db.execute("ANALYZE")
        rng = random.Random(2)
        results = {}
        every = []
        for name, f in queries(made, rng).items():
            page = 100 if name.startswith("page 100") else 1
            times, total = [], 0
            for _ in range(REPEAT):
                t = time.perf_counter()
                total, found = search(index, f, now=END, page=page, page_size=50)
                times.append((time.perf_counter() - t) * 1000)
            every += times
            results[name] = {"total": total, "p50_ms": round(statistics.median(times), 2),
                             "p95_ms": round(statistics.quantiles(times, n=20)[18], 2)}
        size = os.path.getsize(store.index_path)
        store.close()
        print(json.dumps({
            "rows": rows, "build_s": round(build_s, 1), "index_bytes": size, "repeat": REPEAT,
            "p50_ms": round(statistics.median(every), 2), "p95_ms": round(statistics.quantiles(every, n=20)[18], 2),
            "queries": results, "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        }, ensure_ascii=False, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
