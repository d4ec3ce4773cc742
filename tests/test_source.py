"""The capture-file reader: pcap (both byte orders, us/ns), pcapng, and damage named by offset."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import FIXTURES, PUBLIC

from capture.source import LINKTYPE_ETHERNET, CaptureFile, CaptureFileError


def read_all(path: Path) -> list[tuple[float, int, bytes]]:
    with CaptureFile(path) as f:
        return [p for batch in f.batches() for p in batch]


def pcap(records: list[tuple[float, bytes]], *, big: bool = False, nano: bool = False, linktype: int = 1) -> bytes:
    bo = ">" if big else "<"
    out = struct.pack(bo + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for ts, data in records:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out += struct.pack(bo + "IIII", sec, frac, len(data), len(data)) + data
    return out


def pcapng(records: list[tuple[int, bytes]], *, tsresol: int | None = None) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = b""
    if tsresol is not None:
        opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    out += block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0) + opts)
    for ts, data in records:
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data)
    return out


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, big: bool, nano: bool) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap([(1.5, b"abc"), (2.25, b"defg")], big=big, nano=nano))
    got = read_all(path)
    assert [(round(t, 6), lt, d) for t, lt, d in got] == [(1.5, 1, b"abc"), (2.25, 1, b"defg")]


def test_pcapng_with_and_without_tsresol(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng([(1_500_000, b"abc")]))
    assert read_all(path) == [(1.5, 1, b"abc")]
    path.write_bytes(pcapng([(1_500_000_000, b"abc")], tsresol=9))
    assert read_all(path) == [(1.5, 1, b"abc")]


def test_pcap_truncated_anywhere_names_the_offset_and_keeps_earlier_packets(tmp_path: Path) -> None:
    data = pcap([(1.0, b"A" * 40), (2.0, b"B" * 40)])
    second = 24 + 16 + 40
    for cut in range(1, len(data)):
        path = tmp_path / "cut.pcap"
        path.write_bytes(data[:cut])
        got: list[bytes] = []
        try:
            with CaptureFile(path) as f:
                for batch in f.batches():
                    got += [d for _, _, d in batch]
        except CaptureFileError as exc:
            assert str(path) in str(exc)
            expected_offset = 0 if cut < 24 else 24 if cut < second else second
            assert exc.offset == expected_offset, cut
            assert got == ([b"A" * 40] if cut > second else [])
        else:
            assert cut in (24, second), f"cut at {cut} read without error"


def test_pcapng_truncated_block_is_reported(tmp_path: Path) -> None:
    data = pcapng([(1, b"abc"), (2, b"defgh")])
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-5])
    with pytest.raises(CaptureFileError, match="truncated pcapng block") as info:
        read_all(path)
    assert info.value.offset > 0


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello world, not a capture")
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng file"):
        read_all(path)
    with pytest.raises(CaptureFileError, match="cannot open"):
        CaptureFile(tmp_path / "missing.pcap")


def test_generated_fixture_reads_completely() -> None:
    got = read_all(FIXTURES / "inbound-mulaw.pcap")
    assert len(got) == json.loads((FIXTURES / "inbound-mulaw.json").read_text())["packets"]
    assert all(lt == 1 for _, lt, _ in got)
    assert [t for t, _, _ in got] == sorted(t for t, _, _ in got)


@pytest.mark.parametrize("name,linktype,count", [
    ("ipv6-frag-sip-sll.pcap", 113, 34),
    ("rtp-opus-rawip-nosip.pcap", 101, 1390),
    ("g711u-proxy-simple.pcapng", 1, 613),
])
def test_public_captures_packet_counts(name: str, linktype: int, count: int) -> None:
    path = PUBLIC / name
    if not path.exists():
        pytest.skip("public captures absent")
    got = read_all(path)
    assert len(got) == count  # the counts capinfos gives in MANIFEST.md
    assert {lt for _, lt, _ in got} == {linktype}
