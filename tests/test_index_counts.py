"""storage/index.py: the parts of each conversation and the linked legs of each recording, counted in
one chunked query each (more values than one query's chunk, repeats, unknown ones)."""
from __future__ import annotations

import os
from pathlib import Path

from storage import index as index_module
from storage import vault
from storage.index import Index, RecordingRow

N = index_module.COUNT_CHUNK * 2 + 1  # three chunks


def _row(rid: str, conversation: str, part: int, master: bytes, data_key: bytes, at: float) -> RecordingRow:
    return RecordingRow(id=rid, call_id=f"{rid}@pbx", did="0442003999", did_label="soudan", caller="09012345678",
                        started_at=at, ended_at=at + 60, codec="PCMU", channels=2, frames=480_000, size=960_044,
                        sha256="ab" * 32, retain_until=at + 86400 * 15, state="complete", end_reason="bye",
                        path=f"2026/09/21/{rid}.rdv", streams=[], created_at=at + 61,
                        wrapped_key=vault.wrap(master, data_key, rid), conversation=conversation,
                        part=part)


def test_part_and_leg_counts_over_several_chunks(tmp_path: Path) -> None:
    master = os.urandom(32)
    index = Index(str(tmp_path / "index.sqlite"))
    index.create()
    index.master = lambda: master
    key = vault.new_data_key()
    conversations, ids = [], []
    for n in range(N):  # conversation c<n> has 1 part, or 2 for every third; recording r<n>a has n % 4 legs
        conv = f"{n:016x}"  # a token as capture makes them
        conversations.append(conv)
        parts = 2 if n % 3 == 0 else 1
        for part in range(1, parts + 1):
            rid = f"r{n:05d}{'ab'[part - 1]}"
            legs = [(f"leg-{n}-{k}@pbx", "address") for k in range(n % 4)] if part == 1 else []
            index.add(_row(rid, conv, part, master, key, 1_790_000_000.0 + n * 100 + part), key, legs)
            ids.append(rid)
    asked = conversations + conversations[:10] + ["f" * 16]
    parts_of = index.part_counts(asked)
    assert parts_of == {c: 2 if n % 3 == 0 else 1 for n, c in enumerate(conversations)}
    legs_of = index.leg_counts(ids + ["r-unknown"])
    assert legs_of == {f"r{n:05d}a": n % 4 for n in range(N) if n % 4}  # those with none left out
    assert index.part_counts([]) == {} and index.leg_counts(iter(())) == {}
