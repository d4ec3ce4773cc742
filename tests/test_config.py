"""Config errors name the file, the key path and the bad value."""
from __future__ import annotations

import os
import time
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
])
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
])
def test_did_file_errors(tmp_path: Path, dids: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write(tmp_path, "store: {path: s}\n", dids)))
    assert message in str(info.value)


def test_cli_reports_config_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recorderd import cli

    path = write(tmp_path, "store: {path: s}\nretention: {days: -1}\n")
    assert cli.main(["replay", "x.pcap", "--config", str(path)]) == 2
    assert "recorderd.yaml: retention.days: -1 is out of range" in capsys.readouterr().err


# -- a DID file from a Windows editor, keys given twice, files too large (issue 16, items 5, 15, 17) --

LABEL = "サンキューコールかわさき"
ENTRY = f'dids:\n  - {{number: "044-200-3939", label: "{LABEL}"}}\n'


@pytest.mark.parametrize("data,message", [
    (ENTRY.encode("shift_jis"), "dids.yaml: not UTF-8 at byte 43 (line 2): save it as UTF-8"),
    (ENTRY.encode("cp932"), "dids.yaml: not UTF-8 at byte 43 (line 2)"),
    (ENTRY.encode("utf-16"), "dids.yaml: is UTF-16 (byte-order mark at byte 0), not UTF-8: save it as UTF-8"),
    (ENTRY.encode("utf-16-be"), "dids.yaml: not UTF-8 text: a NUL byte at byte 0 (UTF-16 without a byte-order mark?)"),
    (b"\xef\xbb\xbf" + ENTRY.encode("shift_jis"), "dids.yaml: not UTF-8 at byte 46 (line 2)"),  # offset as on disk
])
def test_did_file_not_in_utf8_is_a_config_error_with_the_byte_offset(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, "store: {path: s}\n")
    (tmp_path / "dids.yaml").write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value).startswith(message)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "store: {path: s}\n")
    (tmp_path / "dids.yaml").write_bytes(b"\xef\xbb\xbf" + ENTRY.encode())
    (tmp_path / "recorderd.yaml").write_bytes(b"\xef\xbb\xbf" + b"store: {path: s}\n")
    config = load(str(path))
    assert [d.label for d in config.dids.dids] == [LABEL]


def test_replay_with_a_shift_jis_did_file_says_so_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recorderd import cli

    path = write(tmp_path, "store: {path: s}\n")
    (tmp_path / "dids.yaml").write_bytes(ENTRY.encode("shift_jis"))
    assert cli.main(["replay", "x.pcap", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "recorderd: config error: dids.yaml: not UTF-8 at byte 43" in err and "Traceback" not in err


@pytest.mark.parametrize("config,dids,message", [
    ("store: {path: s}\nretention: {days: 14}\nretention: {days: 1}\n", None,
     "recorderd.yaml: retention: is given twice (lines 2 and 3)"),
    ("store: {path: s, path: /elsewhere}\n", None, "recorderd.yaml: store.path: is given twice (lines 1 and 1)"),
    ("store: {path: s}\ncapture:\n  trunk_networks: [10.0.0.0/8]\n  trunk_networks: []\n", None,
     "recorderd.yaml: capture.trunk_networks: is given twice (lines 3 and 4): YAML would silently keep the last one"),
    ("store: {path: s}\n", 'dids:\n  - {number: "044-200-3939", label: a, number: "044-200-2111"}\n',
     "dids.yaml: dids[0].number: is given twice"),
    ("store: {path: s}\n", 'dids:\n  - {number: "044-200-3939", label: a}\ndids:\n  - {number: "044-200-2111", label: b}\n',
     "dids.yaml: dids: is given twice (lines 1 and 3)"),
])
def test_a_key_given_twice_is_refused_with_its_path(tmp_path: Path, config: str, dids: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write(tmp_path, config, dids)))
    assert message in str(info.value)


def test_aliases_are_not_duplicates_and_a_yaml_bomb_stays_cheap(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=False))  # 9^9 leaves
    path = write(tmp_path, "store: {path: s}\nextra: 1\n")
    (tmp_path / "recorderd.yaml").write_text("store: {path: s}\n" + "bombs:\n" + "".join("  " + line + "\n" for line in bomb.splitlines()))
    start = time.monotonic()
    with pytest.raises(ConfigError, match="bombs.a: unknown setting"):
        load(str(path))
    assert time.monotonic() - start < 2


def test_nesting_too_deep_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "store: {path: s}\n", "[" * 100_000)
    with pytest.raises(ConfigError, match="dids.yaml: not read: nested too deeply"):
        load(str(path))


def test_a_did_file_past_1_mib_is_refused_without_being_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "store: {path: s}\n")
    with open(tmp_path / "dids.yaml", "w", encoding="utf-8") as f:  # 100 MB of valid YAML (minutes to parse)
        f.write(ENTRY)
        f.write(("# " + "x" * 97 + "\n") * 1_000_000)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert "dids.yaml: is 100000082 bytes, more than a config file may be (1 MiB)" in str(info.value)
    assert time.monotonic() - start < 1


def test_a_did_file_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    path = write(tmp_path, "store: {path: s}\n")
    (tmp_path / "dids.yaml").unlink()
    os.mkfifo(tmp_path / "dids.yaml")
    with pytest.raises(ConfigError, match="dids.yaml: is not a regular file"):
        load(str(path))


# -- the direction rule (issue 16, item 9) -------------------------------------------------------


def test_direction_unknown_beside_trunk_networks_is_contradictory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='capture.direction: "unknown" while capture.trunk_networks names the trunk'):
        load(str(write(tmp_path, "store: {path: s}\ncapture: {direction: unknown, trunk_networks: [203.0.113.0/24]}\n")))
    with pytest.raises(ConfigError, match='capture.direction: "outbound" is not one of inbound, unknown'):
        load(str(write(tmp_path, "store: {path: s}\ncapture: {direction: outbound}\n")))


def test_the_live_service_refuses_to_start_without_the_trunk_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recorderd import cli

    path = write(tmp_path, "store: {path: s}\n")
    assert cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert ("recorderd: config error: recorderd.yaml: capture.trunk_networks: is empty, so inbound calls cannot be "
            "told from internal and outbound ones") in err
    assert "set capture.direction: unknown" in err
    assert not (tmp_path / "s").exists()  # nothing opened


def test_replay_without_the_trunk_side_warns_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import FIXTURES, Site

    from recorderd import cli

    site = Site(tmp_path).init()
    capsys.readouterr()
    assert cli.main(["replay", str(FIXTURES / "inbound-mulaw.pcap"), "--config", str(site.config)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["recorderd: warning: capture.trunk_networks is empty: every call to a designated number is "
                        "taken as inbound, internal and outbound ones too (the live service refuses this)"]


def test_the_demo_config_names_the_trunk_side_of_the_bundled_captures(tmp_path: Path) -> None:
    from recorderd import demo

    out = tmp_path / "demo.yaml"
    assert demo.main([str(ROOT / "config" / "recorderd.yaml"), str(out)]) == 0
    config = load(str(out))
    assert config["capture.trunk_networks"] == ["203.0.113.0/24", "2001:db8:5::/48"]
