"""A codec change mid-call (issue 14): a re-INVITE from PCMU to PCMA or G.722 ends the recording's
part and begins another in the new codec, nothing lost or altered; a stray packet of another codec
while the SDP stays as it was, DTMF and comfort noise never do; the call's end ends the part in
progress; a flood of codec flips opens at most MAX_PARTS recordings."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site

from capture.call import MAX_PARTS
from capture.pipeline import CapturePipeline
from frames import rtp_packet, udp_frames, write_pcap
from recorderd.config import load_dids
from storage.wav import channel_bytes, read_info

sys.path.insert(0, str(FIXTURES))
from fx_codec import CodecChangeCall, codec_call  # noqa: E402
from make_fixtures import DIDS  # noqa: E402

NUMBER = "0442003939"


def expected(whole: CodecChangeCall) -> list[dict]:
    did = DIDS.match(NUMBER)
    assert did is not None
    return [part.expected_recording(did.key, did.label) for part in whole.parts()]


def replay(site: Site, tmp_path: Path, packets: list[tuple[float, bytes]], capsys: pytest.CaptureFixture[str]
           ) -> list[dict]:  # fmt: skip
    pcap = tmp_path / "call.pcap"
    write_pcap(str(pcap), packets)
    assert site.replay(pcap) == 0
    return sorted(site.list(capsys), key=lambda r: r["started_at"])


def assert_audio(site: Site, rec: dict, exp: dict) -> None:
    data = site.wav_bytes(rec)
    info = read_info(data)
    assert (rec["codec"], info.frames) == (exp["codec"], exp["frames"])
    for chan in exp["channels"]:
        assert hashlib.sha256(channel_bytes(data, chan["channel"])).hexdigest() == chan["sha256"], rec["codec"]


def counters(packets: list[tuple[float, bytes]]) -> tuple[CapturePipeline, list]:
    """The capture side alone, into a sink that keeps each part's CallInfo and end figures."""

    class Part:
        keeps_packets = False

        def __init__(self, info: object) -> None:
            self.info, self.result = info, None

        def audio(self, channel: int, position: int, payload: bytes) -> None:
            pass

        def end(self, result: object) -> None:
            self.result = result

    parts: list[Part] = []

    class Sink:
        def call_started(self, info: object) -> Part:
            parts.append(Part(info))
            return parts[-1]

    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), Sink())
    pipeline.feed([(t, 1, frame) for t, frame in sorted(packets, key=lambda p: p[0])])
    pipeline.finish("capture-end")
    return pipeline, parts


def test_pcmu_to_pcma_gives_two_parts_listed_and_exported_byte_for_byte(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = codec_call("call-k-1", NUMBER, 91, ((1.5, "PCMA"),))
    recs = replay(site, tmp_path, whole.packets(), capsys)
    assert [(r["call_id"], r["codec"], r["state"]) for r in recs] == [
        (whole.call_id, "PCMU", "complete"), (whole.call_id, "PCMA", "complete")]  # fmt: skip
    assert recs[0]["id"] != recs[1]["id"]  # (call_id, did, started_at): each part its own start, its own id
    assert recs[0]["end_reason"] == "codec-change" and recs[1]["end_reason"] == "bye"
    for rec, exp in zip(recs, expected(whole)):
        assert_audio(site, rec, exp)
        out = tmp_path / f"{rec['id']}.wav"
        assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality") == 0
        assert out.read_bytes() == site.wav_bytes(rec)  # export gives each part, as kept
    if "part" in recs[0]:  # the index keeps the parts of one conversation (helper S's side)
        assert [(r["part"], r["part_reason"]) for r in recs] == [(1, ""), (2, "codec-change")]
        assert recs[0]["conversation"] == recs[1]["conversation"]


def test_pcmu_to_g722_part_is_decoded_like_a_g722_call(site: Site, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    whole = codec_call("call-k-2", NUMBER, 92, ((1.5, "G722"),))
    recs = replay(site, tmp_path, whole.packets(), capsys)
    assert [(r["codec"], r["audio"]) for r in recs] == [("PCMU", "exact"), ("G722", "transcoded")]
    for rec, exp in zip(recs, expected(whole)):
        assert_audio(site, rec, exp)


def test_switch_back_is_a_third_part_and_late_old_codec_packet_is_counted() -> None:
    whole = codec_call("call-k-3", NUMBER, 93, ((1.0, "PCMA"), (2.0, "PCMU")), late_old=True)
    pipeline, parts = counters(whole.packets())
    assert [(p.info.part, p.info.part_reason, p.info.codec) for p in parts] == [
        (1, "", "PCMU"), (2, "codec-change", "PCMA"), (3, "codec-change", "PCMU")]  # fmt: skip
    assert len({p.info.conversation for p in parts}) == 1 and {p.info.call_id for p in parts} == {whole.call_id}
    # the caller's last PCMU packet of part 1 came after part 2 began: dropped, counted there
    assert [s.other_payload for s in parts[1].result.streams] == [1, 0]
    assert [s.packets for s in parts[0].result.streams] == [49, 50]
    assert [p.result.reason for p in parts] == ["codec-change", "codec-change", "bye"]
    assert pipeline.counters["calls_recorded"] == 3 and pipeline.counters["recording_parts_codec_change"] == 2
    # each part's positions from its own start: the first packets are anchored at 0 (caller) and 24 (3 ms)
    assert [a[2] for s in parts[2].result.streams for a in s.anchors] == [0, 24]


def _stray(whole: CodecChangeCall, index: int, pt: int, payload: bytes) -> list[tuple[float, bytes]]:
    """The call with the caller's packet ``index`` sent as payload type ``pt`` instead (same seq, ts)."""
    up = whole.media()[0]
    t, seq, ts, _payload, _pt, ssrc, _ = up.packets[index]
    frame = udp_frames(up.src[0], up.src[1], up.dst[0], up.dst[1], rtp_packet(pt, seq, ts, ssrc, payload))[0]
    original = udp_frames(up.src[0], up.src[1], up.dst[0], up.dst[1], rtp_packet(_pt, seq, ts, ssrc, _payload))[0]
    return [p for p in whole.packets() if p[1] != original] + [(t, frame)]


def test_stray_packet_of_another_codec_without_sdp_change_opens_no_part() -> None:
    whole = codec_call("call-k-4", NUMBER, 94, ())  # no re-INVITE: PCMU all along
    _pipeline, parts = counters(_stray(whole, 40, 8, b"\xd5" * 160))  # one PCMA packet (statically mapped)
    assert [p.info.codec for p in parts] == ["PCMU"]
    assert [s.other_payload for s in parts[0].result.streams] == [1, 0]


def test_dtmf_and_comfort_noise_after_the_reinvite_do_not_switch(site: Site, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    whole = codec_call("call-k-5", NUMBER, 95, ((1.5, "PCMA"),))
    up = whole.media()[0]
    k = whole.switches()[1][0]
    extra = []
    for n, (pt, payload) in enumerate(((101, bytes([1, 0x0A, 0, 160])), (13, b"\x40"))):  # after the ACK, before PCMA
        t = up.packets[k][0] - 0.005 + n * 0.001
        data = rtp_packet(pt, 60000 + n, 0, 0x7777, payload)
        extra.append((t, udp_frames(up.src[0], up.src[1], up.dst[0], up.dst[1], data)[0]))
    recs = replay(site, tmp_path, whole.packets() + extra, capsys)
    assert [r["codec"] for r in recs] == ["PCMU", "PCMA"]
    for rec, exp in zip(recs, expected(whole)):
        assert_audio(site, rec, exp)  # the PCMA part begins at the first PCMA packet, as without them


def test_call_ending_without_bye_ends_the_part_in_progress(site: Site, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    whole = codec_call("call-k-6", NUMBER, 96, ((1.5, "PCMA"),))
    packets = [p for p in whole.packets() if b"BYE " not in p[1] and b" BYE\r\n" not in p[1]]
    recs = replay(site, tmp_path, packets, capsys)
    assert [(r["codec"], r["state"], r["end_reason"]) for r in recs] == [
        ("PCMU", "complete", "codec-change"), ("PCMA", "incomplete", "capture-end")]  # fmt: skip
    for rec, exp in zip(recs, expected(whole)):
        assert_audio(site, rec, exp)


def test_a_flood_of_codec_flips_opens_at_most_max_parts() -> None:
    flips = tuple((0.04 * (i + 1), "PCMA" if i % 2 == 0 else "PCMU") for i in range(MAX_PARTS + 10))
    whole = dataclasses.replace(codec_call("call-k-7", NUMBER, 97, ()), changes=flips)
    pipeline, parts = counters(whole.packets())
    assert len(parts) == MAX_PARTS == pipeline.counters["calls_recorded"]
    assert [p.info.part for p in parts] == list(range(1, MAX_PARTS + 1))
    assert sum(s.other_payload for s in parts[-1].result.streams) > 0  # the rest: counted, not new recordings


def test_fixture_json_names_each_part() -> None:
    for name in ("codec-change-alaw", "codec-change-g722", "codec-change-back"):
        recs = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["recordings"]
        assert [r["part"] for r in recs] == list(range(1, len(recs) + 1))
        assert len({r["call_id"] for r in recs}) == 1
