"""A full store (issue 16, item 18): status answers with the free space and says the store is full;
what needs the audit log written says so plainly instead of "disk I/O error" or "internal error";
with room again everything works. A real tmpfs filled to the last byte (needs root)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, small_tmpfs

from recorderd.config import load
from recorderd.control import ControlServer


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def ask(site: Site, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = site.ctl(*args)
    out, err = capsys.readouterr()
    return rc, out, err


def check_full_answers(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = ask(site, capsys, "status")
    assert rc == 0, err
    assert "FULL: below store.critical_free_mb, new calls are not recorded" in out
    assert "(this request is not in the audit log: the store's disk is full)" in out
    rc, out, err = ask(site, capsys, "status", "--json")
    store = json.loads(out)["store"]
    assert rc == 0 and store["full"] is True and store["free_bytes"] < 1 << 20 and store["recordings"] == 1
    rc, out, err = ask(site, capsys, "list")
    assert rc == 1 and "the store's disk is full, so the audit log cannot be written" in err
    assert "disk I/O error" not in err and "internal error" not in err and "09011112222" not in out


def test_status_and_list_on_a_full_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with small_tmpfs(tmp_path / "mnt", "8m") as mnt:
        site = Site(mnt, settings="store: {path: store, critical_free_mb: 2}\n").init()
        assert site.replay(FIXTURES / "inbound-mulaw.pcap") == 0
        filler = fill(site.store)
        check_full_answers(site, capsys)  # directly (the service stopped: no one holds the files open)

        service_store = site.open_store()  # as the running service does
        server = ControlServer(load(str(site.config)))
        assert server.start()
        try:
            check_full_answers(site, capsys)  # through the control socket
        finally:
            server.stop()
            service_store.close()

        assert site.replay(FIXTURES / "inbound-alaw.pcap") in (0, 1)  # a call on a full disk: not kept
        assert not [p for p in (site.store / "recordings").rglob("*") if p.is_file() and (p.name.endswith(".part") or p.stat().st_size == 0)]
        os.unlink(filler)
        rc, out, err = ask(site, capsys, "list", "--json")
        assert rc == 0 and len(json.loads(out)) >= 1, err
        rc, out, err = ask(site, capsys, "status")
        assert rc == 0 and "FULL" not in out and "not in the audit log" not in out, out
