"""The capture-to-storage contract (capture/sink.py): what capture may use on a recording is declared
as Protocols, capture uses no other name on a handle, the C kernel fetches no attribute of and calls
no method on anything it is handed (it writes capture's own buffers, capture/lanes.py), storage's
recording satisfies the handle and uses only the declared names of capture's buffers, and a handle
that takes the buffers, or declines them, records every fixture byte for byte."""
from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import struct
import typing
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site

from capture.sink import AudioLanes, CallEnd, CallInfo, EvidenceRecords, RecordingHandle, StreamStats

PROTOCOLS = (RecordingHandle, AudioLanes, EvidenceRecords)


def declared(protocol: type) -> set[str]:
    """The names a Protocol declares (annotations and methods, its own)."""
    own = set(protocol.__dict__.get("__annotations__", {}))
    own |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return own


def test_the_protocols_declare_what_capture_and_storage_use() -> None:
    assert declared(RecordingHandle) == {"id", "keeps_packets", "figures", "use_buffers", "flush_buffers", "audio",
                                         "packet", "end", "link_leg"}
    assert declared(AudioLanes) == {"bufs", "frontier", "limit", "silence", "interleaved"}
    assert declared(EvidenceRecords) == {"buf", "limit", "linktype"}
    assert set(typing.get_type_hints(RecordingHandle)) == {"id", "keeps_packets", "figures"}


def test_capture_s_buffers_are_what_the_protocols_declare_in_c_and_in_python() -> None:
    """The C types' members and their Python twins' slots: exactly the declared names."""
    from capture import lanes
    from capture.fast import fastpath

    for c_name, twin, protocol in (("Lanes", lanes.PyLanes, AudioLanes), ("Records", lanes.PyRecords, EvidenceRecords)):
        methods = {n for n in declared(protocol) if callable(getattr(protocol, n, None))}
        assert set(twin.__slots__) | methods == declared(protocol)
        assert all(callable(getattr(twin, n)) for n in methods)
        made = twin()
        assert all(type(b) is bytearray for b in (made.bufs if c_name == "Lanes" else (made.buf,)))  # type: ignore[attr-defined]
        if fastpath is not None:
            ctype = getattr(fastpath, c_name)
            assert {n for n in dir(ctype) if not n.startswith("_")} == declared(protocol)
            c = ctype()
            for name in declared(protocol) - methods:
                assert type(getattr(c, name)) is type(getattr(made, name)), name
                if name not in ("bufs", "buf"):
                    assert getattr(c, name) == getattr(made, name), name


def test_the_lanes_frames_are_the_same_in_c_and_in_python() -> None:
    """``interleaved``: every size (each remainder of the C's 16- and 4-frame steps), with and
    without the next frame's channel 1 byte, the same bytes from both twins and the frames a WAV
    holds (channel 1's byte, then channel 2's); what the buffers do not hold refused by both."""
    from capture import lanes
    from capture.fast import fastpath

    if fastpath is None:
        pytest.skip("capture/_fastpath.c is not built")
    rnd = random.Random(11)
    c, py = fastpath.Lanes(), lanes.PyLanes()
    one, two = rnd.randbytes(5000), rnd.randbytes(4999)
    for made in (c, py):
        made.bufs[0].extend(one)
        made.bufs[1].extend(two)
    for size in [*range(70), 4095, 4096, 4097, 4998, 4999]:
        for extra in (0, 1):
            frames = c.interleaved(size, extra)
            assert type(frames) is bytearray and frames == py.interleaved(size, extra), (size, extra)
            assert frames[: 2 * size : 2] == one[:size] and frames[1 : 2 * size : 2] == two[:size]
            assert frames[2 * size :] == one[size : size + extra]
    for size, extra in ((5000, 0), (4999, 2), (-1, 0), (10, -1), (5000, 1)):
        for made in (c, py):
            with pytest.raises(ValueError):
                made.interleaved(size, extra)
    assert bytes(c.bufs[0]) == one and bytes(c.bufs[1]) == two  # read, not consumed


C_LOOKUPS = re.compile(r"PyObject_(?:GetAttr|SetAttr|HasAttr|CallMethod|Call|CallObject|CallFunction|VectorcallMethod)"
                       r"\w*\(|PyUnicode_InternFromString|_PyObject_LookupAttr|PyObject_GenericGetAttr")


def test_the_c_kernel_fetches_nothing_from_what_it_is_handed() -> None:
    """No attribute fetched, set or called by name, no Python callable called: the kernel writes
    its own objects' structs (Lanes, Records, StreamCore, FastPath) and reads the frames."""
    source = (ROOT / "capture" / "_fastpath.c").read_text(encoding="utf-8")
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # (comments may name them)
    assert not C_LOOKUPS.findall(code), sorted(set(C_LOOKUPS.findall(code)))
    assert C_LOOKUPS.search("PyObject_GetAttr(x, y) PyObject_CallMethodNoArgs(")  # the pattern works


HANDLES = {"handle"}  # what call.py and assembler.py name a recording handle


def attribute_uses(path: Path, names: set[str], attrs: set[str]) -> tuple[set[str], list[str]]:
    """The attribute names used in ``path`` on a variable named one of ``names`` or an attribute
    named one of ``attrs`` (``handle.X``, ``self.handle.X``, ``call.handle.X``), and any
    getattr/hasattr/setattr on one (refused)."""

    def is_it(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in names) or (
            isinstance(node, ast.Attribute) and node.attr in attrs
        )

    used: set[str] = set()
    dynamic: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and is_it(node.value):
            used.add(node.attr)
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "isinstance") and node.args and is_it(node.args[0])
        ):
            dynamic.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return used, dynamic


def test_call_py_and_assembler_py_use_only_declared_names_on_a_handle() -> None:
    everything = declared(RecordingHandle)
    seen: set[str] = set()
    for name in ("call.py", "assembler.py", "legs.py", "tracker.py", "pipeline.py"):
        names, dynamic = attribute_uses(ROOT / "capture" / name, HANDLES, {"handle"})
        assert not dynamic, f"a handle probed or looked up by string: {dynamic}"
        assert not names - everything, f"{name} uses undeclared names on a handle: {sorted(names - everything)}"
        seen |= names
    assert {"audio", "keeps_packets", "packet", "figures", "use_buffers", "flush_buffers"} <= seen


def test_storage_uses_only_the_declared_names_of_capture_s_buffers() -> None:
    """storage/spool.py and storage/evidence.py on ``lanes``/``records`` (structural typing: storage
    does not import capture)."""
    lanes, records = declared(AudioLanes), declared(EvidenceRecords)
    seen: set[str] = set()
    for name in ("spool.py", "evidence.py"):
        text = (ROOT / "storage" / name).read_text(encoding="utf-8")
        assert "capture" not in {n.split(".")[0] for n in re.findall(r"^(?:from|import) ([\w.]+)", text, re.M)}
        used, dynamic = attribute_uses(ROOT / "storage" / name, {"lanes"}, {"lanes"})
        assert not dynamic and used <= lanes, (name, sorted(used - lanes))
        seen |= used
        used, dynamic = attribute_uses(ROOT / "storage" / name, {"records"}, {"records"})
        assert not dynamic and used <= records, (name, sorted(used - records))
        seen |= used
    assert {"bufs", "frontier", "limit", "silence", "buf", "linktype"} <= seen


def info(codec: str = "PCMU", rate: int = 8000) -> CallInfo:
    return CallInfo("contract-1@203.0.113.5", "+81442003939", "contract", "09012345678", 1790000000.0, codec, rate,
                    conversation="c0ffee", part=1)


def kinds_match(obj: object, protocol: type) -> None:
    """Every name the Protocol declares is on ``obj``, a method where it declares a method, data where
    it declares data."""
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
    from capture.lanes import Lanes, Records
    from storage.spool import SpoolSink

    site = Site(tmp_path).init()
    store = site.open_store()
    try:
        sink = SpoolSink(store)
        rec = sink.call_started(info())  # G.711: it takes capture's buffers
        kinds_match(rec, RecordingHandle)
        assert isinstance(rec.id, str) and rec.id and rec.keeps_packets is True  # store.keep_pcap is on by default
        lanes, records = Lanes(), Records()
        bufs = lanes.bufs
        assert rec.use_buffers(lanes, None) is False  # it keeps packets: without a records buffer, declined
        assert rec.use_buffers(lanes, records) is True
        assert lanes.bufs is bufs and all(type(b) is bytearray and not b for b in bufs)
        assert (lanes.silence, lanes.frontier) == (0xFF, 0) and lanes.limit > 0  # PCMU's silence
        assert records.limit > 0 and records.linktype == -1  # until its first frame
        rec.packet(1790000000.5, 1, b"\x00" * 60)
        assert records.linktype == 1 and len(records.buf) == 24 + 16 + 60  # the pcap header and the record, there
        rec.audio(1, 10, b"\x01\x02")
        assert bytes(bufs[0]) == b"\xff" * 10 + b"\x01\x02" and not bufs[1]  # its audio() places into them too
        bufs[1].extend(b"\x7f" * lanes.limit)  # as the kernel fills a buffer, then says so
        rec.flush_buffers()
        assert lanes.frontier > 0 and len(bufs[1]) < lanes.limit  # written out, the frontier moved on
        other = sink.call_started(info("G722"))  # decoded by storage: audio() and packet() alone
        kinds_match(other, RecordingHandle)
        assert other.use_buffers(Lanes(), Records()) is False
        for r in (rec, other):
            stats = tuple(StreamStats(ch, (), 0, 0, 0, 0, 0, (), 0.0) for ch in (1, 2))
            r.end(CallEnd(1790000001.0, True, "bye", stats))
    finally:
        store.close()


class PlainHandle:
    """A recording handle that declines capture's buffers: it places each G.711 payload at its
    position itself, a later payload for the same samples winning, gaps silence, as storage's
    writer does."""

    def __init__(self, sink: PlainSink, call: CallInfo, keeps_packets: bool) -> None:
        self.sink, self.call = sink, call
        self.id = f"plain-{call.call_id}-{call.part}"
        self.keeps_packets = keeps_packets
        self.figures: typing.Callable[[], tuple[StreamStats, ...]] | None = None
        self.channels = (bytearray(), bytearray())
        self.frames: list[tuple[float, int, bytes]] = []
        self.legs: list[tuple[str, str]] = []
        self.silence = 0xFF if call.codec == "PCMU" else 0xD5

    def use_buffers(self, lanes: AudioLanes, records: EvidenceRecords | None) -> bool:
        return False

    def flush_buffers(self) -> None:
        raise AssertionError("its buffers were never taken")

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


class BufferHandle(PlainHandle):
    """A handle that takes capture's buffers (the way storage's recording does, written afresh): its
    audio() places into them, flush_buffers() writes everything in them out (to ``channels``) and
    moves the frontier; a payload before the frontier is patched into what was written out. Its
    frames, taken through ``records``, are read back out of the pcap records at the end."""

    def __init__(self, sink: PlainSink, call: CallInfo, keeps_packets: bool) -> None:
        super().__init__(sink, call, keeps_packets)
        self.lanes: AudioLanes | None = None
        self.records: EvidenceRecords | None = None
        self.pcap = bytearray()
        self.flushes = 0

    def use_buffers(self, lanes: AudioLanes, records: EvidenceRecords | None) -> bool:
        if self.call.codec not in ("PCMU", "PCMA") or (records is None) == self.keeps_packets:
            return False
        lanes.silence, lanes.limit = self.silence, 800  # (storage's are 8000 and 16 KiB: more flushes here)
        self.lanes, self.records = lanes, records
        if records is not None:
            records.limit = 4096
        return True

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        if self.lanes is None:
            return super().audio(channel, position, payload)
        frontier = self.lanes.frontier
        if position < frontier:  # its place is written out: patched there
            head = payload[: frontier - position]
            self.channels[channel - 1][position : position + len(head)] = head
            payload, position = payload[len(head) :], frontier
        buf = self.lanes.bufs[channel - 1]
        rel = position - frontier
        if rel > len(buf):
            buf += bytes([self.silence]) * (rel - len(buf))
        buf[rel : rel + len(payload)] = payload

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        if self.records is None:
            return super().packet(ts, linktype, frame)
        if self.records.linktype < 0:
            self.records.linktype = linktype
        sec = int(ts)
        self.records.buf.extend(struct.pack("<IIII", sec, int((ts - sec) * 1e9), len(frame), len(frame)) + frame)

    def flush_buffers(self) -> None:
        self.flushes += 1
        if self.lanes is not None:
            bufs = self.lanes.bufs
            n = max(map(len, bufs))
            for buf, out in zip(bufs, self.channels, strict=False):
                out += buf + bytes([self.silence]) * (n - len(buf))
                del buf[:]
            self.lanes.frontier += n
        if self.records is not None:
            self.pcap += self.records.buf
            del self.records.buf[:]

    def end(self, result: CallEnd) -> None:
        if self.lanes is not None or self.records is not None:
            self.flush_buffers()
        if self.records is not None:
            off = 0
            while off < len(self.pcap):
                sec, nsec, n, _ = struct.unpack_from("<IIII", self.pcap, off)
                self.frames.append((sec + nsec / 1e9, self.records.linktype, bytes(self.pcap[off + 16 : off + 16 + n])))
                off += 16 + n
        super().end(result)


class PlainSink:
    def __init__(self, keeps_packets: bool, handle: type[PlainHandle] = PlainHandle) -> None:
        self.keeps_packets = keeps_packets
        self.handle = handle
        self.ended: list[PlainHandle] = []

    def call_started(self, call: CallInfo) -> PlainHandle:
        return self.handle(self, call, self.keeps_packets)


def g711_fixtures() -> list[str]:
    """The fixtures whose every recording is G.711 kept as it came ("exact")."""
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        recordings = json.loads(path.read_text(encoding="utf-8"))["recordings"]
        if recordings and all(r["audio"] == "exact" and r["codec"] in ("PCMU", "PCMA") for r in recordings):
            out.append(path.stem)
    return out


@pytest.mark.parametrize("handle", [PlainHandle, BufferHandle], ids=["declines", "takes"])
@pytest.mark.parametrize("keeps_packets", [False, True], ids=["audio-only", "with-packet"])
@pytest.mark.parametrize("name", g711_fixtures())
def test_a_handle_records_byte_for_byte_whether_it_takes_the_buffers_or_not(
    name: str, keeps_packets: bool, handle: type[PlainHandle]
) -> None:
    """A handle that declines capture's buffers gets every packet through audio() and packet() (the
    kernel leaves its calls to Python); one that takes them gets the kernel's steady case in them
    and flush_buffers() when one is full: either way every channel is the fixture's, and every
    frame of the call is the same."""
    from capture.fast import fastpath
    from capture.pipeline import CapturePipeline
    from capture.source import CaptureFile
    from recorderd.config import load_dids

    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    runs = {}
    for kind in {PlainHandle, handle}:
        sink = PlainSink(keeps_packets, kind)
        pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), sink)
        with CaptureFile(FIXTURES / f"{name}.pcap") as source:
            for batch in source.batches():
                pipeline.feed(batch)
        pipeline.finish("capture-end")
        runs[kind] = sink, (pipeline.media.table.handled if pipeline.media.table is not None else 0)
    sink, handled = runs[handle]
    got = {(h.call.call_id, h.call.part): h for h in sink.ended}
    assert len(got) == len(sink.ended)
    want = {(r["call_id"], r.get("part", 1)): r for r in expected["recordings"]}
    assert sorted(got) == sorted(want)
    plain = {(h.call.call_id, h.call.part): h for h in runs[PlainHandle][0].ended}
    for key, exp in want.items():
        h = got[key]
        assert h.call.codec == exp["codec"]
        for chan in exp["channels"]:
            audio = bytes(h.channels[chan["channel"] - 1])
            assert (len(audio), hashlib.sha256(audio).hexdigest()) == (chan["length"], chan["sha256"]), (key, chan)
        if keeps_packets:
            assert h.frames, key  # its frames came to packet() or into its records
            assert h.frames == plain[key].frames, key  # the same frames, in the same order, either way
    if handle is PlainHandle or fastpath is None:
        assert handled == 0  # declined (or no C): every packet through Python
    elif name in ("inbound-mulaw", "loss-reorder"):
        assert handled > 100  # C did place these calls' steady case, into the handle's buffers
        assert all(h.flushes > 1 for h in sink.ended if isinstance(h, BufferHandle))  # and said when they were full
