"""Config errors name the file, the key path and the bad value."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from recorderd.config import ConfigError, load


def write(tmp: Path, config: str, dids: str | None = None) -> Path:
    (tmp / "dids.yaml").write_text(dids if dids is not None else (ROOT / "config" / "dids.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    path = tmp / "recorderd.yaml"
    path.write_text(config, encoding="utf-8")
    return path


def test_bundled_config_loads() -> None:
    config = load(str(ROOT / "config" / "recorderd.yaml"))
    assert config["retention.days"] == 14
    assert str(config.tz) == "Asia/Tokyo"
    assert config.store_path == str(ROOT / "var" / "store")
    assert len(config.dids) == 11


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(str(write(tmp_path, "store: {path: s}\n")))
    assert config.store_path == str(tmp_path / "s")
    assert config["capture.interfaces"] == ["eth1"]
    assert config["dids_file"] == str(tmp_path / "dids.yaml")


@pytest.mark.parametrize("text,message", [
    ("store: {path: s}\nretention: {days: abc}\n", 'recorderd.yaml: retention.days: "abc" is not a whole number'),
    ("store: {path: s}\nretention: {days: 0}\n", "recorderd.yaml: retention.days: 0 is out of range"),
    ("store: {path: s}\nretention: {timezone: Mars/Olympus}\n", 'retention.timezone: "Mars/Olympus" is not a known time zone'),
    ("store: {path: s}\ncapture: {interface: eth0}\n", "recorderd.yaml: capture.interface: unknown setting"),
    ("capture: {interfaces: [eth0]}\n", "recorderd.yaml: store.path: is required"),
    ("store: {path: s}\ncapture: {trunk_networks: [10.0.0.300/8]}\n", 'capture.trunk_networks: "10.0.0.300/8" is not an IP network'),
    ("store: {path: s\n", "recorderd.yaml: not valid YAML at line 2"),
    ("- a\n- b\n", "recorderd.yaml: must be a mapping"),
])  # fmt: skip
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write(tmp_path, text)))
    assert message in str(info.value)


@pytest.mark.parametrize("dids,message", [
    ('dids:\n  - {number: "044-200-3939", label: a}\n  - {number: "044-200-39x9", label: b}\n',
     'dids.yaml: dids[1].number: "044-200-39x9" is not a phone number'),
    ("dids:\n  - {number: 0442003131, label: a}\n", "dids.yaml: dids[0].number: is unquoted (YAML read it as the integer 76023385)"),
    ('dids:\n  - {number: "0442003939", label: ""}\n', 'dids.yaml: dids[0].label: "" is not a non-empty label'),
    ('dids:\n  - {number: "0442003939", label: a}\n  - {number: "+81442003939", label: b}\n',
     'dids.yaml: dids[1].number: "+81442003939" repeats dids[0]'),
    ("dids: []\n", "dids.yaml: dids: must be a non-empty list"),
    ('dids:\n  - {number: "0442003939", lable: a}\n', "dids.yaml: dids[0].lable: unknown setting"),
    ('dids:\n  - {number: "0442003939", label: a, kind: fax}\n', 'dids.yaml: dids[0].kind: "fax" is not auto or user'),
])  # fmt: skip
def test_did_file_errors(tmp_path: Path, dids: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write(tmp_path, "store: {path: s}\n", dids)))
    assert message in str(info.value)


def test_cli_reports_config_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recorderd import cli

    path = write(tmp_path, "store: {path: s}\nretention: {days: -1}\n")
    assert cli.main(["replay", "x.pcap", "--config", str(path)]) == 2
    assert "recorderd.yaml: retention.days: -1 is out of range" in capsys.readouterr().err
