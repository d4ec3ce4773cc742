"""Property tests: every parser on arbitrary and mutated bytes either returns a value or raises
ValueError (never anything else, never hangs); the whole pipeline survives arbitrary frames.

The default run is small; `make fuzz` runs each at least 100,000 examples (the ``fuzz`` profile of
conftest.py, for these and the fragment and TCP reassembly properties)."""
from __future__ import annotations

import os
from collections import Counter

from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sdp import OFFER
from test_sip import INVITE

from capture.decode import decode_udp
from capture.pipeline import CapturePipeline
from capture.rtp import parse_rtp
from capture.sdp import SessionDescription
from capture.sip import SipMessage, name_addr, split_list, uri_user
from recorderd.config import load_dids


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed with a few bytes flipped, cut, or spliced: near-valid input reaches deep code."""
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 6))):
            i = draw(st.integers(0, max(0, len(data) - 1)))
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip" and data:
                data[i] = draw(st.integers(0, 255))
            elif op == "cut":
                del data[i : i + draw(st.integers(1, 40))]
            else:
                data[i:i] = draw(st.binary(max_size=20))
        return bytes(data)

    return build()


def raises_only_value_error(fn, data) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(data)
    except ValueError:
        pass


@given(st.one_of(st.binary(max_size=2000), mutated(INVITE)))
def test_sip_parser(data: bytes) -> None:
    try:
        msg = SipMessage.parse(data)
    except ValueError:
        return
    assert msg.size <= len(data)
    raises_only_value_error(lambda m: m.cseq, msg)


@given(st.text(max_size=200))
def test_address_helpers(text: str) -> None:
    raises_only_value_error(name_addr, text)
    assert isinstance(uri_user(text), str)
    assert isinstance(split_list(text), list)


@given(st.one_of(st.binary(max_size=2000), mutated(OFFER)))
def test_sdp_parser(data: bytes) -> None:
    raises_only_value_error(SessionDescription.parse, data)


@given(st.binary(max_size=300))
def test_rtp_parser(data: bytes) -> None:
    raises_only_value_error(parse_rtp, data)


@given(st.sampled_from([1, 101, 113, 276, 228, 229, 0, 147]), st.binary(max_size=300))
def test_decoder(linktype: int, frame: bytes) -> None:
    got = decode_udp(linktype, frame)
    assert isinstance(got, (str, tuple))


DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))


class NullSink:
    id = "null"
    keeps_packets = False

    def call_started(self, call):  # type: ignore[no-untyped-def]
        return self

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        assert channel in (1, 2) and position >= 0

    def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
        return False  # capture's buffers declined: audio() gets every payload

    def link_leg(self, call_id: str, how: str) -> None:
        pass  # (capture/sink.py RecordingHandle: another leg of the conversation, not recorded)

    def end(self, result) -> None:  # type: ignore[no-untyped-def]
        pass


@settings(max_examples=int(os.environ.get("PIPELINE_EXAMPLES", "100")))
@given(st.lists(st.tuples(st.floats(0, 1e6), st.sampled_from([1, 101, 113]), st.binary(max_size=400)), max_size=40))
def test_pipeline_survives_arbitrary_frames(packets: list[tuple[float, int, bytes]]) -> None:
    pipeline = CapturePipeline(DIDS, NullSink())
    pipeline.feed(packets)
    pipeline.finish("capture-end")
    assert isinstance(pipeline.counters, Counter)
    assert len(pipeline.media) == 0 and not pipeline.tracker.calls


DISPLAY_NAME = st.binary(max_size=60).filter(lambda b: not any(c in b for c in b'"\r\n'))


@given(DISPLAY_NAME)
def test_any_display_name_bytes_keep_the_message(name: bytes) -> None:
    """Shift_JIS, EUC-JP, stray bytes, a trailing backslash: the message parses, the From address
    and tag read as without it, and a line that is not UTF-8 is counted."""
    line = b'From: "' + name + b'" <sip:09011112222@203.0.113.5>;tag=1928301774'
    msg = SipMessage.parse(INVITE.replace(b'From: "Taro" <sip:09011112222@203.0.113.5>;tag=1928301774', line))
    assert msg.call_id == "a84b4c76e66710@203.0.113.5" and msg.cseq == (314159, "INVITE")
    assert name_addr(msg.header("from")) == ("sip:09011112222@203.0.113.5", {"tag": "1928301774"})  # type: ignore[arg-type]
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        assert msg.not_utf8 == 1
    else:
        assert msg.not_utf8 == 0


@given(st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_any_header_value_bytes_parse_or_say_why(value: bytes) -> None:
    """Arbitrary bytes in a header value never raise anything but ValueError, and never cost the
    message its Call-ID."""
    msg = SipMessage.parse(INVITE.replace(b"Max-Forwards: 70", b"Subject: " + value))
    assert msg.call_id == "a84b4c76e66710@203.0.113.5"
    raises_only_value_error(name_addr, msg.header("subject") or "")
    assert isinstance(split_list(msg.header("subject") or ""), list)


@settings(max_examples=int(os.environ.get("PIPELINE_EXAMPLES", "100")))
@given(DISPLAY_NAME)
def test_a_designated_call_is_never_lost_for_its_display_name(name: bytes) -> None:
    from generator import SipCall

    class Named(SipCall):
        def _message(self, *args, **kw):  # type: ignore[no-untyped-def]
            return super()._message(*args, **kw).replace(b'"Caller"', b'"' + name + b'"')

    packets = Named("prop-name", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                    1_790_000_000.0, talk=0.2).packets()
    pipeline = CapturePipeline(DIDS, NullSink())
    pipeline.feed([(ts, 1, frame) for ts, frame in sorted(packets, key=lambda p: p[0])])
    pipeline.finish("capture-end")
    assert pipeline.counters["calls_recorded"] == 1 and pipeline.counters["sip_malformed"] == 0


def _call_packets() -> list[tuple[float, bytes]]:
    from generator import SipCall

    return SipCall("prop-1", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10", "09011112222",
                   1_790_000_000.0, talk=0.4).packets()


CALL = sorted(_call_packets(), key=lambda p: p[0])


@settings(max_examples=int(os.environ.get("PIPELINE_EXAMPLES", "100")))
@given(st.data())
def test_pipeline_survives_a_mangled_real_call(data: st.DataObject) -> None:
    """A real designated call whose frames are dropped, duplicated, reordered and corrupted."""
    frames = []
    for ts, frame in CALL:
        action = data.draw(st.sampled_from(["keep", "keep", "keep", "drop", "dup", "corrupt", "shift"]))
        if action == "drop":
            continue
        if action == "corrupt":
            frame = data.draw(mutated(frame))
        if action == "shift":
            ts += data.draw(st.floats(-2.0, 2.0))
        frames.append((ts, 1, frame))
        if action == "dup":
            frames.append((ts, 1, frame))
    pipeline = CapturePipeline(DIDS, NullSink())
    pipeline.feed(frames)
    pipeline.finish("capture-end")
    assert not pipeline.tracker.calls and not pipeline.tracker.closing and len(pipeline.media) == 0
