"""``recorderd replay`` on a full store (issue 16, item 18): the summary says how many calls were
kept and how many could not be, never that calls were recorded when none were kept."""
from __future__ import annotations

import re

import pytest
from conftest import FIXTURES, Site, resize_tmpfs, small_tmpfs


def replay(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = site.replay(FIXTURES / "overlapping.pcap")  # two designated calls
    out, err = capsys.readouterr()
    return rc, out, err


def test_full_recordings_volume_the_summary_says_none_were_kept(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with small_tmpfs(site.store / "recordings", "16k") as recordings:
        rc, out, err = replay(site, capsys)
        assert rc == 1
        assert re.search(r": 0 recorded, 2 could not be kept \(left in the spool\), 0 not designated,", out), out
        assert "2 recording(s) could not be kept" in err
        resize_tmpfs(recordings, "64m")
        assert site.list(capsys) == []


def test_full_spool_the_summary_counts_the_calls_lost(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with small_tmpfs(site.store / "spool", "8k"):
        rc, out, err = replay(site, capsys)
    recorded = int(re.search(r": (\d+) recorded", out).group(1))  # type: ignore[union-attr]
    assert recorded == len(site.list(capsys)), out  # "recorded" is what the store holds
    assert rc == 1 and ("could not be kept" in out or "lost (store full)" in out), out


def test_a_store_with_room_keeps_the_summary_as_it_was(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = replay(site, capsys)
    assert rc == 0 and ": 2 recorded, 0 not designated," in out and "kept" not in out
