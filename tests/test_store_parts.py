"""The store's parts (storage/layout.py, master_key.py, keeping.py, reading.py, integrity.py,
holds.py): none reaches back into the Store that hands them out, and each sees the store's clock as
it is set when it acts (the service and the tests swap ``store.clock``; a part that kept the clock it
was built with would date holds and kept calls by another one)."""
from __future__ import annotations

import ast
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import FIXTURES, ROOT

from capture.pipeline import CapturePipeline
from recorderd.config import load_dids
from recorderd.service import replay
from storage.errors import StoreError
from storage.spool import SpoolSink
from storage.store import Store

PARTS = ("errors", "layout", "master_key", "keeping", "reading", "integrity", "holds")
TZ = ZoneInfo("Asia/Tokyo")
T0 = 1_790_000_000.0  # 2026-09-22 JST


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("part", PARTS)
def test_a_part_of_the_store_never_imports_the_store(part: str) -> None:
    imported = _imports(ROOT / "storage" / f"{part}.py")
    assert not imported & {".store", "storage.store"}, f"storage/{part}.py imports the Store that holds it"
    assert not any(name.startswith(("recorderd", "capture", "console")) for name in imported)


def _store(tmp_path: Path) -> Store:
    store = Store(str(tmp_path / "store"), tz=TZ, retention_days=14, key_file=str(tmp_path / "master.key"))
    store.init()
    return store.open()


def test_the_parts_act_on_the_clock_the_store_has_now(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        store.clock = lambda: T0
        replay(CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), SpoolSink(store)),
               [str(FIXTURES / "inbound-mulaw.pcap")])
        [row] = store.reading.recordings()
        assert row.created_at == T0  # kept by store.keeper, dated by the clock set after it was built
        with pytest.raises(StoreError, match="a hold must end in the future"):
            store.holding.hold(row.id, until=T0 - 1, reason="苦情対応", ref="K-1", by="manager")
        hold = store.holding.hold(row.id, until=T0 + 86400, reason="苦情対応", ref="K-1", by="manager")
        assert [(h["hold_id"], h["created_at"]) for h in store.holding.in_force(row.id)] == [(hold, T0)]
        store.clock = lambda: T0 + 2 * 86400  # the hold has ended by this clock
        assert store.holding.in_force(row.id) == []
        assert store.integrity.verify() == []
    finally:
        store.close()
