"""tests/README.md stays true: every test file it names exists, every test file on disk is named in
it, every module of the packages has its row in the map and no row names a module that is gone, and
what it says about how `make test` splits the suite is what the Makefile does. A name marked
*(moving: X)* is being added or moved by another change now and may be absent until it lands."""
from __future__ import annotations

import re

from conftest import ROOT

TESTS = ROOT / "tests"
README = (TESTS / "README.md").read_text(encoding="utf-8")
PACKAGES = ("capture", "storage", "recorderd", "console")
MOVING = r"\s*\*\(moving"
TEST_FILE = re.compile(r"`((?:(?:integration|console)/)?test_\w+\.py|appliance/run\.py)`")
MODULE = re.compile(r"`((?:" + "|".join(PACKAGES) + r")/[\w/]+\.py)`")


def _named_test_files() -> dict[str, bool]:
    """Each test file the page names -> whether every mention of it is marked moving."""
    named: dict[str, bool] = {}
    for match in TEST_FILE.finditer(README):
        moving = re.match(MOVING, README[match.end():]) is not None
        named[match.group(1)] = named.get(match.group(1), True) and moving
    return named


def _map_rows() -> dict[str, bool]:
    """Each module named in the first cell of a row of the map -> whether that cell marks it moving."""
    rows: dict[str, bool] = {}
    for line in README.splitlines():
        if not line.startswith("| `") and not line.startswith("| the "):
            continue
        first = line.split("|")[1]
        for match in MODULE.finditer(first):
            rows[match.group(1)] = "*(moving" in first
    return rows


def test_every_test_file_named_exists() -> None:
    missing = sorted(name for name, moving in _named_test_files().items() if not moving and not (TESTS / name).is_file())
    assert missing == [], f"tests/README.md names test files that do not exist: {missing}"


def test_every_test_file_is_named() -> None:
    on_disk = {str(p.relative_to(TESTS)) for p in TESTS.glob("test_*.py")}
    for group in ("integration", "console"):
        on_disk |= {str(p.relative_to(TESTS)) for p in (TESTS / group).glob("test_*.py")}
    unnamed = sorted(on_disk - set(_named_test_files()))
    assert unnamed == [], f"test files not in tests/README.md's map (add them where they belong): {unnamed}"


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    rows = _map_rows()
    modules = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    assert sorted(modules - set(rows)) == [], "modules without a row in tests/README.md's map"
    gone = sorted(m for m, moving in rows.items() if not moving and m not in modules)
    assert gone == [], f"tests/README.md's map names modules that are gone: {gone}"


def test_the_checks_find_what_they_check() -> None:
    """The patterns above read this page as it is written (so a change of its form cannot make
    every check pass on nothing)."""
    named = set(_named_test_files())
    assert {"test_sip.py", "integration/test_live_service.py", "console/test_browser.py", "appliance/run.py"} <= named
    rows = _map_rows()
    assert {"capture/tracker.py", "storage/spool.py", "recorderd/daemon.py", "console/__main__.py"} <= set(rows)
    assert len(rows) >= 100


def test_what_it_says_make_test_does_is_what_the_makefile_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    serial = re.search(r"^SERIAL_TESTS\s*:=\s*(.+)$", makefile, re.MULTILINE)
    workers = re.search(r"^TEST_WORKERS\s*\?=\s*(\d+)$", makefile, re.MULTILINE)
    assert serial is not None and workers is not None
    assert serial.group(1).split() == ["tests/console", "tests/test_make_run.py"]
    assert f"-n {workers.group(1)} --dist loadfile" in makefile.replace("$(TEST_WORKERS)", workers.group(1))
    assert f"`-n {workers.group(1)} --dist loadfile`" in README
    assert "`tests/console` and `test_make_run.py` in one process" in README
