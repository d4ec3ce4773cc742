"""`recorderd preflight`: what systemd runs before each start (ExecCondition=). Exit 1 with one line
per missing thing (the start is skipped and `systemctl status` shows the lines), exit 0 when ready.
Real config files, a real store, the box's real interfaces (`lo` is on every Linux box)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, Site

from recorderd import cli, config


def _preflight(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = cli.main(["preflight", "--config", str(site.config)])
    captured = capsys.readouterr()
    return rc, (captured.err + captured.out).splitlines()


def test_no_span_interface_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: []}\n").init()
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert any("no SPAN interface named: set capture.interfaces in" in line for line in lines)
    assert lines[-1].endswith("then: systemctl start recorderd")


def test_an_interface_the_box_does_not_have(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo, nosuchspan9]}\n").init()
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert [line for line in lines if "not an interface" in line] == [
        line for line in lines if "'nosuchspan9' is not an interface on this box" in line
    ]
    assert len([line for line in lines if "not an interface" in line]) == 1  # lo is there: not named


def test_store_not_initialised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo], trunk_networks: [203.0.113.0/24]}\n")
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert any("is not initialised: run 'sudo -u recorderd recorderctl --config" in line and "init'" in line
               for line in lines)
    assert not (tmp_path / "store").exists()  # the check creates nothing


def test_unreadable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo], trunk_networks: [203.0.113.0/24]}\n").init()
    (tmp_path / "master.key").chmod(0o644)  # readable by others: refused by the vault
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert any(line.startswith("recorderd: not starting: the master key is not usable") for line in lines)


def test_config_error_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo], trunk_networks: [203.0.113.0/24]}\n").init()
    site.config.write_text(site.config.read_text().replace("capture:\n", "capture:\n  ring_mb: many\n"))
    rc, lines = _preflight(site, capsys)
    assert rc == 1  # 1, not 2: ExecCondition skips the start rather than failing the unit
    assert any('capture.ring_mb: "many" is not a whole number' in line for line in lines)


def test_ready(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo], trunk_networks: [203.0.113.0/24]}\n").init()
    rc, lines = _preflight(site, capsys)
    assert (rc, lines) == (0, ["recorderd: ready to record"])


def test_no_trunk_networks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {interfaces: [lo]}\n").init()
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert any("capture.trunk_networks: is empty" in line for line in lines)


def test_store_not_on_an_encrypted_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The test's temporary folder is on no dm-crypt volume: without the site's opt-out the daemon
    would refuse to start and systemd retry it; the preflight says why and the start is skipped."""
    site = Site(tmp_path, settings="capture: {interfaces: [lo], trunk_networks: [203.0.113.0/24]}\n"
                                   "store: {path: store, require_encrypted_volume: true}\n").init()
    rc, lines = _preflight(site, capsys)
    assert rc == 1
    assert any("is not on an encrypted volume" in line and "require_encrypted_volume: false" in line for line in lines)


def test_shipped_config_names_no_span_port(tmp_path: Path) -> None:
    """The config the package puts in /etc/recorderd must not name a real interface: a box whose
    management port is eth1 would otherwise start capturing on it before the technician said so."""
    shutil.copy(ROOT / "systemd" / "recorderd.yaml", tmp_path / "recorderd.yaml")
    shutil.copy(ROOT / "config" / "dids.yaml", tmp_path / "dids.yaml")
    loaded = config.load(str(tmp_path / "recorderd.yaml"))
    assert loaded["capture.interfaces"] == []
