"""The capture-to-storage contract (capture/sink.py): what capture may use on a recording is declared
as Protocols, capture (Python and the C fast path) uses no other name on a handle, storage's
recording satisfies them, and a handle with none of the direct buffers still records every fixture
byte for byte through audio() alone."""
from __future__ import annotations

import ast
import hashlib
import json
import re
import typing
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site

from capture.sink import CallEnd, CallInfo, EvidenceBuffer, LaneBuffers, RecordingHandle, StreamStats
from storage.recorder import SpoolSink

PROTOCOLS = (RecordingHandle, LaneBuffers, EvidenceBuffer)


def declared(protocol: type) -> set[str]:
    """The names a Protocol declares (annotations and methods, its own)."""
    own = set(protocol.__dict__.get("__annotations__", {}))
    own |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return own


def test_the_protocols_declare_what_the_c_core_and_call_py_need() -> None:
    assert declared(RecordingHandle) == {"id", "keeps_packets", "figures", "evidence", "audio", "packet", "end",
                                         "link_leg"}  # fmt: skip
    assert declared(LaneBuffers) == {"lanes", "frontier", "lane_limit", "silence_byte", "flush_lanes"}
    assert declared(EvidenceBuffer) == {"buf", "linktype", "flush_bytes", "flush"}
    # the two capture checks with isinstance are runtime-checkable; the handle itself is only declared
    assert getattr(LaneBuffers, "_is_runtime_protocol", False) and getattr(EvidenceBuffer, "_is_runtime_protocol", False)
    assert set(typing.get_type_hints(RecordingHandle)) == {"id", "keeps_packets", "figures", "evidence"}


def c_attribute_names(source: str) -> set[str]:
    """Every attribute or method name capture/_fastpath.c fetches from a Python object."""
    names = set(re.findall(r'PyUnicode_InternFromString\("(\w+)"\)', source))
    names |= set(re.findall(r'PyObject_(?:GetAttrString|SetAttrString|HasAttrString)\(\s*\w+\s*,\s*"(\w+)"', source))
    names |= set(re.findall(r'PyObject_CallMethod\w*\(\s*[\w>-]+\s*,\s*"(\w+)"', source))
    return names


def test_every_name_the_c_core_fetches_is_declared() -> None:
    source = (ROOT / "capture" / "_fastpath.c").read_text(encoding="utf-8")
    names = c_attribute_names(source)
    assert {"frontier", "flush_lanes", "audio", "buf", "flush_bytes", "linktype", "flush"} <= names  # the grep works
    undeclared = names - set().union(*map(declared, PROTOCOLS))
    assert not undeclared, f"_fastpath.c uses names capture/sink.py does not declare: {sorted(undeclared)}"
    # and it fetches them only through the interned names (no string built per packet)
    assert "GetAttrString" not in source and "CallMethod(" not in source


HANDLES = {"handle", "direct"}  # what call.py and assembler.py name a recording handle


def handle_uses(path: Path) -> tuple[set[str], list[str]]:
    """The attribute names used on a handle in ``path`` (``handle.X``, ``self.handle.X``,
    ``call.handle.X``, ``direct.X``), and any getattr/hasattr/setattr on one (refused)."""

    def is_handle(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in HANDLES) or (
            isinstance(node, ast.Attribute) and node.attr == "handle"
        )

    names: set[str] = set()
    dynamic: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and is_handle(node.value):
            names.add(node.attr)
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr") and node.args and is_handle(node.args[0])
        ):  # fmt: skip
            dynamic.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return names, dynamic


def test_call_py_and_assembler_py_use_only_declared_names_on_a_handle() -> None:
    everything = set().union(*map(declared, PROTOCOLS))
    seen: set[str] = set()
    for name in ("call.py", "assembler.py"):
        names, dynamic = handle_uses(ROOT / "capture" / name)
        assert not dynamic, f"a handle's names looked up by string: {dynamic}"
        assert not names - everything, f"{name} uses undeclared names on a handle: {sorted(names - everything)}"
        seen |= names
    assert {"audio", "keeps_packets", "packet", "figures", "evidence", "lanes", "lane_limit", "silence_byte"} <= seen


def info(codec: str = "PCMU", rate: int = 8000) -> CallInfo:
    return CallInfo("contract-1@203.0.113.5", "+81442003939", "contract", "09012345678", 1790000000.0, codec, rate,
                    conversation="c0ffee", part=1)  # fmt: skip


def kinds_match(obj: object, protocol: type) -> None:
    """Every name the Protocol declares is on ``obj``, a method where it declares a method, data where
    it declares data, of the declared type where capture reads it."""
    hints = typing.get_type_hints(protocol)
    for name in declared(protocol):
        assert hasattr(obj, name), f"{type(obj).__name__} has no {name} ({protocol.__name__})"
        value = getattr(obj, name)
        if name in hints:
            if name != "figures":  # (a callable set by capture; None until then)
                assert not callable(value), f"{name} is data in {protocol.__name__}"
        else:
            assert callable(value), f"{name} is a method in {protocol.__name__}"


def test_storages_recording_satisfies_the_protocols(tmp_path: Path) -> None:
    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        sink = SpoolSink(store)
        rec = sink.call_started(info())  # G.711: the C core places into its lanes and evidence buffer
        assert isinstance(rec, LaneBuffers)
        kinds_match(rec, RecordingHandle)
        kinds_match(rec, LaneBuffers)
        assert isinstance(rec.id, str) and rec.id and rec.keeps_packets is True  # store.keep_pcap is on by default
        assert rec.lanes is not None and all(type(lane) is bytearray for lane in rec.lanes) and len(rec.lanes) == 2
        assert type(rec.frontier) is int and type(rec.lane_limit) is int and rec.lane_limit > 0
        assert rec.silence_byte == 0xFF  # PCMU's silence
        assert isinstance(rec.evidence, EvidenceBuffer)
        kinds_match(rec.evidence, EvidenceBuffer)
        assert type(rec.evidence.buf) is bytearray and type(rec.evidence.flush_bytes) is int
        assert rec.evidence.linktype is None  # until its first frame
        other = sink.call_started(info("G722"))  # decoded by storage: audio() (no lanes), its evidence direct
        kinds_match(other, RecordingHandle)
        assert isinstance(other.evidence, EvidenceBuffer)
        assert not isinstance(other, LaneBuffers) or other.lanes is None
        for r in (rec, other):
            stats = tuple(StreamStats(ch, (), 0, 0, 0, 0, 0, (), 0.0) for ch in (1, 2))
            r.end(CallEnd(1790000001.0, True, "bye", stats))
    finally:
        store.close()


class PlainHandle:
    """A recording handle that implements RecordingHandle only (no lanes, no evidence buffer): it
    places each G.711 payload at its position itself, a later payload for the same samples winning,
    gaps silence, as storage's writer does."""

    def __init__(self, sink: PlainSink, call: CallInfo, keeps_packets: bool) -> None:
        self.sink, self.call = sink, call
        self.id = f"plain-{call.call_id}-{call.part}"
        self.keeps_packets = keeps_packets
        self.figures: typing.Callable[[], tuple[StreamStats, ...]] | None = None
        self.evidence: EvidenceBuffer | None = None  # packet() is all there is
        self.channels = (bytearray(), bytearray())
        self.frames: list[tuple[float, int, bytes]] = []
        self.legs: list[tuple[str, str]] = []
        self.silence = 0xFF if call.codec == "PCMU" else 0xD5

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        buf = self.channels[channel - 1]
        if position > len(buf):
            buf += bytes([self.silence]) * (position - len(buf))
        buf[position : position + len(payload)] = payload

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        self.frames.append((ts, linktype, frame))

    def end(self, result: CallEnd) -> None:
        longest = max(map(len, self.channels))
        for buf in self.channels:
            buf += bytes([self.silence]) * (longest - len(buf))
        self.figures = None
        self.sink.ended.append(self)

    def link_leg(self, call_id: str, how: str) -> None:
        self.legs.append((call_id, how))


class PlainSink:
    def __init__(self, keeps_packets: bool) -> None:
        self.keeps_packets = keeps_packets
        self.ended: list[PlainHandle] = []

    def call_started(self, call: CallInfo) -> PlainHandle:
        return PlainHandle(self, call, self.keeps_packets)


def g711_fixtures() -> list[str]:
    """The fixtures whose every recording is G.711 kept as it came ("exact")."""
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        recordings = json.loads(path.read_text(encoding="utf-8"))["recordings"]
        if recordings and all(r["audio"] == "exact" and r["codec"] in ("PCMU", "PCMA") for r in recordings):
            out.append(path.stem)
    return out


@pytest.mark.parametrize("keeps_packets", [False, True], ids=["audio-only", "with-packet"])
@pytest.mark.parametrize("name", g711_fixtures())
def test_a_handle_without_direct_buffers_records_byte_for_byte(name: str, keeps_packets: bool) -> None:
    """Without lanes the C core (where built) calls audio() itself; a handle that keeps packets
    without an evidence buffer leaves the call to Python: either way every channel is the fixture's."""
    from capture.fast import fastpath
    from capture.pipeline import CapturePipeline
    from capture.source import CaptureFile
    from recorderd.config import load_dids

    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    sink = PlainSink(keeps_packets)
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), sink)
    with CaptureFile(FIXTURES / f"{name}.pcap") as source:
        for batch in source.batches():
            pipeline.feed(batch)
    pipeline.finish("capture-end")
    got = {(handle.call.call_id, handle.call.part): handle for handle in sink.ended}
    assert len(got) == len(sink.ended)
    want = {(r["call_id"], r.get("part", 1)): r for r in expected["recordings"]}
    assert sorted(got) == sorted(want)
    for key, exp in want.items():
        handle = got[key]
        assert handle.call.codec == exp["codec"]
        for chan in exp["channels"]:
            audio = bytes(handle.channels[chan["channel"] - 1])
            assert (len(audio), hashlib.sha256(audio).hexdigest()) == (chan["length"], chan["sha256"]), (key, chan)
        if keeps_packets:
            assert handle.frames, key  # its frames came to packet()
    handled = pipeline.media.table.handled if pipeline.media.table is not None else 0
    if fastpath is not None and not keeps_packets and name in ("inbound-mulaw", "loss-reorder"):
        assert handled > 100  # C did place these calls' steady case, through audio()
    if keeps_packets:
        assert handled == 0  # packet() without a buffer: C left every packet to Python
