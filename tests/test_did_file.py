"""A broken DID file on disk (issue 16, items 5, 16, 17): recorderctl's commands that do not need the
list go on working and `status` says what is wrong; the service reads the file off its capture
thread. (The live service's side is in tests/integration/test_live_service.py.)"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, Site

from recorderd.watch import DidReloader

SHIFT_JIS = 'dids:\n  - {number: "044-200-3939", label: "サンキューコールかわさき"}\n'.encode("shift_jis")


@pytest.fixture
def broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    site = Site(tmp_path).init()
    assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 0
    (tmp_path / "dids.yaml").write_bytes(SHIFT_JIS)  # saved by a Windows editor
    capsys.readouterr()
    return site


def test_status_says_the_did_file_is_broken(broken: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert broken.ctl("status") == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == (
        "WARNING: the DID file on disk is broken (dids.yaml: not UTF-8 at byte 43 (line 2): save it as UTF-8 "
        "(Shift_JIS and UTF-16 are not read)): the service cannot start until it is fixed")
    assert "store: " in out.out and "Traceback" not in out.err
    assert broken.ctl("status", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["store"]["recordings"] == 1 and data["warnings"][0].startswith("the DID file on disk is broken")


def test_commands_that_do_not_need_the_list_work(broken: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert [r["call_id"] for r in broken.list(capsys)] == ["call-mulaw-1@203.0.113.5"]
    assert broken.ctl("audit", "verify") == 0
    assert broken.ctl("report", "--from", "2020-01-01", "--to", "2030-01-01") == 0


def test_the_notice_needs_the_list_and_says_why_it_cannot_be_made(broken: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert broken.ctl("notice") == 1
    err = capsys.readouterr().err
    assert "recorderctl: dids.yaml: not UTF-8 at byte 43" in err and "Traceback" not in err


def test_an_invalid_number_does_not_stop_recorderctl_either(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path).init()
    (tmp_path / "dids.yaml").write_text('dids:\n  - {number: "044-200-39x9", label: a}\n', encoding="utf-8")
    assert site.list(capsys) == []
    assert site.ctl("status") == 0
    assert 'WARNING: the DID file on disk is broken (dids.yaml: dids[0].number: "044-200-39x9" is not a phone number)' in capsys.readouterr().out


def test_the_reloader_reads_in_its_own_thread_and_hands_over_once(tmp_path: Path) -> None:
    path = tmp_path / "dids.yaml"
    path.write_text('dids:\n  - {number: "044-200-3939", label: a}\n', encoding="utf-8")
    readers: list[str] = []
    reloader = DidReloader(str(path), on_start=lambda: readers.append(threading.current_thread().name))
    reloader.start()
    try:
        assert reloader.take() is None
        reloader.request()
        outcome = _wait(reloader)
        assert outcome[1] is None and [d.label for d in outcome[0].dids] == ["a"]  # type: ignore[union-attr]
        assert readers == ["did-reload"] and reloader.take() is None  # once
        path.write_bytes(SHIFT_JIS)
        reloader.request()
        dids, error = _wait(reloader)
        assert dids is None and "dids.yaml: not UTF-8 at byte 43" in str(error)
    finally:
        reloader.stop()
    assert not reloader.alive


def test_a_slow_read_does_not_hold_up_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "dids.yaml"  # just under the 1 MiB bound: seconds of YAML parsing
    lines = ["dids:"] + [f'  - {{number: "044-{i // 10000 % 1000:03d}-{i % 10000:04d}", label: "l{i}"}}' for i in range(22_000)]
    path.write_text("\n".join(lines) + '\n  - {number: "044-200-39x9", label: broken}\n', encoding="utf-8")
    reloader = DidReloader(str(path))
    reloader.start()
    try:
        start = time.monotonic()
        reloader.request()
        polls = 0
        while reloader.take() is None:  # what the capture loop does between two blocks
            polls += 1
            assert time.monotonic() - start < 60
            time.sleep(0.01)
        assert polls > 20  # the caller went on while the file was read
    finally:
        reloader.stop()


def _wait(reloader: DidReloader):  # type: ignore[no-untyped-def]
    end = time.monotonic() + 10
    while time.monotonic() < end:
        outcome = reloader.take()
        if outcome is not None:
            return outcome
        time.sleep(0.01)
    raise AssertionError("the reloader gave nothing")
