"""A codec change mid-call (issue 14): a re-INVITE from PCMU to PCMA or G.722 ends the recording's
part and begins another in the new codec, nothing lost or altered; a stray packet of another codec
while the SDP stays as it was, DTMF and comfort noise never do; the call's end ends the part in
progress; a flood of codec flips opens at most MAX_PARTS recordings, the last part keeping its codec's
audio to the end. A change nobody signalled begins a part only to a codec the SDP listed, from the
sender's own SSRC: forged RTP of another codec (a stranger's SSRC, or a codec the SDP never listed)
is counted, never a part, the genuine audio kept."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site
from frames import rtp_packet, udp_frames, write_pcap

from capture.call import MAX_PARTS, SWITCH_RUN
from capture.pipeline import CapturePipeline
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
           ) -> list[dict]:
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


def counters(packets: list[tuple[float, bytes]]) -> tuple[CapturePipeline, list]:  # type: ignore[type-arg]
    """The capture side alone, into a sink that keeps each part's CallInfo and end figures."""

    class Part:
        id = "part"
        keeps_packets = False

        def __init__(self, info: object) -> None:
            self.info, self.result = info, None

        def audio(self, channel: int, position: int, payload: bytes) -> None:
            pass

        def end(self, result: object) -> None:
            self.result = result

        def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
            return False  # capture's buffers declined: audio() gets every payload

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
        (whole.call_id, "PCMU", "complete"), (whole.call_id, "PCMA", "complete")]
    assert recs[0]["id"] != recs[1]["id"]  # (call_id, did, started_at): each part its own start, its own id
    assert recs[0]["end_reason"] == "codec-change" and recs[1]["end_reason"] == "bye"
    for rec, exp in zip(recs, expected(whole), strict=True):
        assert_audio(site, rec, exp)
        out = tmp_path / f"{rec['id']}.wav"
        assert site.ctl("export", rec["id"], "--out", str(out), "--purpose", "quality") == 0
        assert out.read_bytes() == site.wav_bytes(rec)  # export gives each part, as kept
    if "part" in recs[0]:  # the index keeps the parts of one conversation (helper S's side)
        assert [(r["part"], r["part_reason"]) for r in recs] == [(1, ""), (2, "codec-change")]
        assert recs[0]["conversation"] == recs[1]["conversation"]


def test_pcmu_to_g722_part_is_decoded_like_a_g722_call(site: Site, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    whole = codec_call("call-k-2", NUMBER, 92, ((1.5, "G722"),))
    recs = replay(site, tmp_path, whole.packets(), capsys)
    assert [(r["codec"], r["audio"]) for r in recs] == [("PCMU", "exact"), ("G722", "transcoded")]
    for rec, exp in zip(recs, expected(whole), strict=True):
        assert_audio(site, rec, exp)


def test_switch_back_is_a_third_part_and_late_old_codec_packet_is_counted() -> None:
    whole = codec_call("call-k-3", NUMBER, 93, ((1.0, "PCMA"), (2.0, "PCMU")), late_old=True)
    pipeline, parts = counters(whole.packets())
    assert [(p.info.part, p.info.part_reason, p.info.codec) for p in parts] == [
        (1, "", "PCMU"), (2, "codec-change", "PCMA"), (3, "codec-change", "PCMU")]
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


def _unsignalled(whole: CodecChangeCall, first: int, count: int, both: bool = True) -> list[tuple[float, bytes]]:
    """The call with ``count`` packets from ``first`` on (the caller's; the PBX's too when ``both``)
    sent as PCMA instead (same seq and ts, their own bytes), no re-INVITE: what senders may do when
    the answer listed both codecs (``whole`` made with ``listed=("PCMU", "PCMA")``)."""
    originals, changed = set(), []
    for d in whole.media()[: 2 if both else 1]:
        for t, seq, ts, payload, pt, ssrc, _ in d.packets[first : first + count]:
            originals.add(udp_frames(d.src[0], d.src[1], d.dst[0], d.dst[1], rtp_packet(pt, seq, ts, ssrc, payload))[0])
            changed.append((t, udp_frames(d.src[0], d.src[1], d.dst[0], d.dst[1],
                                          rtp_packet(8, seq, ts, ssrc,
                                                     bytes(b ^ 0x55 for b in payload)))[0]))
    return [p for p in whole.packets() if p[1] not in originals] + changed


def test_unsignalled_change_needs_three_packets_in_a_row_and_loses_none_of_them() -> None:
    whole = codec_call("call-k-10", NUMBER, 100, (), listed=("PCMU", "PCMA"))
    _pipeline, parts = counters(_unsignalled(whole, 40, SWITCH_RUN - 1))  # two PCMA packets each way, then PCMU
    assert [p.info.codec for p in parts] == ["PCMU"]
    assert [s.other_payload for s in parts[0].result.streams] == [SWITCH_RUN - 1] * 2
    _pipeline, parts = counters(_unsignalled(whole, 40, 110))  # PCMA both ways from packet 40 to the end
    assert [(p.info.codec, p.info.part_reason) for p in parts] == [("PCMU", ""), ("PCMA", "codec-change")]
    up = whole.media()[0]
    assert parts[1].info.started_at == up.packets[40][0]  # the part begins at the run's first packet
    assert [s.packets for s in parts[1].result.streams] == [110, 110]  # all of the run placed in it, both ways
    assert [s.packets for s in parts[0].result.streams] == [40, 40]


def test_one_side_on_a_codec_of_its_own_begins_no_part() -> None:
    """Asymmetric codecs (the caller PCMA, the PBX PCMU, no re-INVITE): one WAV holds one codec, so the
    recording stays in the part's codec and the other is counted (not flip-flopping parts)."""
    whole = codec_call("call-k-11", NUMBER, 101, (), listed=("PCMU", "PCMA"))
    _pipeline, parts = counters(_unsignalled(whole, 40, 110, both=False))
    assert [p.info.codec for p in parts] == ["PCMU"]
    assert [(s.packets, s.other_payload) for s in parts[0].result.streams] == [(40, 110), (150, 0)]


def test_dtmf_and_comfort_noise_after_the_reinvite_do_not_switch(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    for rec, exp in zip(recs, expected(whole), strict=True):
        assert_audio(site, rec, exp)  # the PCMA part begins at the first PCMA packet, as without them


def test_call_ending_without_bye_ends_the_part_in_progress(site: Site, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    whole = codec_call("call-k-6", NUMBER, 96, ((1.5, "PCMA"),))
    packets = [p for p in whole.packets() if b"BYE " not in p[1] and b" BYE\r\n" not in p[1]]
    recs = replay(site, tmp_path, packets, capsys)
    assert [(r["codec"], r["state"], r["end_reason"]) for r in recs] == [
        ("PCMU", "complete", "codec-change"), ("PCMA", "incomplete", "capture-end")]
    for rec, exp in zip(recs, expected(whole), strict=True):
        assert_audio(site, rec, exp)


def test_a_flood_of_codec_flips_opens_at_most_max_parts(caplog: pytest.LogCaptureFixture) -> None:
    flips = tuple((0.04 * (i + 1), "PCMA" if i % 2 == 0 else "PCMU") for i in range(MAX_PARTS + 10))
    whole = dataclasses.replace(codec_call("call-k-7", NUMBER, 97, ()), changes=flips)
    pipeline, parts = counters(whole.packets())
    assert len(parts) == MAX_PARTS == pipeline.counters["calls_recorded"]
    assert [p.info.part for p in parts] == list(range(1, MAX_PARTS + 1))
    assert pipeline.counters["recording_parts_capped"] == 1
    # the last part keeps every packet of its codec to the call's end; the other codec's are counted
    first, codec = whole.switches()[MAX_PARTS - 1]
    pt = 8 if codec == "PCMA" else 0
    for d, s in zip(whole.media(), parts[-1].result.streams, strict=False):
        rest = [p[4] for p in d.packets[first:]]
        assert (s.packets, s.other_payload) == (rest.count(pt), len(rest) - rest.count(pt))
    capped = [r for r in caplog.records if getattr(r, "EVENT", "") == "call-parts-capped"]
    assert len(capped) == 1 and "part" in capped[0].getMessage()  # once per call, with the recording's id
    assert whole.caller not in capped[0].getMessage() and NUMBER not in capped[0].getMessage()


def _forged(whole: CodecChangeCall, pt: int, ssrc: int, at: float, flips: int) -> list[tuple[float, bytes]]:
    """The call with ``flips`` bursts of 3 forged packets each way of payload type ``pt`` (sequence
    numbers in a row, SSRC ``ssrc``), 0.02 s apart from ``at`` s into the talk, from each sender's own
    address (spoofed): what someone on the mirrored network may inject."""
    out = whole.packets()
    t = whole.media_start + at
    for k in range(flips):
        for d in whole.media():
            for j in range(SWITCH_RUN):
                data = rtp_packet(pt, 100 + 10 * k + j, 1000 + 160 * j, ssrc, bytes([0x55]) * 160)
                out += [(t + j * 0.001, f) for f in udp_frames(d.src[0], d.src[1], d.dst[0], d.dst[1], data)]
        t += 0.02
    return out


def test_forged_rtp_of_a_codec_the_sdp_did_not_list_opens_no_part_and_loses_no_audio(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = codec_call("call-k-13", NUMBER, 103, ())  # the SDP lists PCMU alone
    recs = replay(site, tmp_path, _forged(whole, 8, 0xBAD, 1.001, 1), capsys)
    assert [(r["codec"], r["end_reason"]) for r in recs] == [("PCMU", "bye")]
    assert_audio(site, recs[0], expected(whole)[0])
    _pipeline, parts = counters(_forged(whole, 8, 0xBAD, 0.501, MAX_PARTS + 10))  # a flood of them
    assert [p.info.codec for p in parts] == ["PCMU"]
    genuine = [len(d.packets) for d in whole.media()]
    assert [(s.packets, s.other_payload) for s in parts[0].result.streams] == [
        (n, (MAX_PARTS + 10) * SWITCH_RUN) for n in genuine]


def test_forged_rtp_of_another_codec_before_the_first_packet_does_not_open_the_recording(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Forged PCMA (not listed) just before the genuine audio: the recording opens on the genuine
    PCMU, byte for byte (was: opened as PCMA by the forged packet, the call's audio then lost)."""
    whole = codec_call("call-k-16", NUMBER, 106, ())
    recs = replay(site, tmp_path, _forged(whole, 8, 0xBAD, -0.01, 1), capsys)  # 10 ms before the first packet
    assert [(r["codec"], r["end_reason"]) for r in recs] == [("PCMU", "bye")]
    assert_audio(site, recs[0], expected(whole)[0])


def test_forged_rtp_of_a_listed_codec_from_a_strangers_ssrc_opens_no_part() -> None:
    whole = codec_call("call-k-14", NUMBER, 104, (), listed=("PCMU", "PCMA"))
    _pipeline, parts = counters(_forged(whole, 8, 0xBAD, 0.501, MAX_PARTS + 10))
    assert [p.info.codec for p in parts] == ["PCMU"]
    genuine = [len(d.packets) for d in whole.media()]
    assert [s.packets for s in parts[0].result.streams] == genuine


def test_an_unsignalled_change_to_a_codec_the_sdp_did_not_list_opens_no_part() -> None:
    whole = codec_call("call-k-15", NUMBER, 105, ())  # PCMU alone listed; the sender's own SSRC
    _pipeline, parts = counters(_unsignalled(whole, 40, 110))
    assert [p.info.codec for p in parts] == ["PCMU"]
    assert [(s.packets, s.other_payload) for s in parts[0].result.streams] == [(40, 110)] * 2


def test_fixture_json_names_each_part() -> None:
    for name in ("codec-change-alaw", "codec-change-g722", "codec-change-offer-both", "codec-change-back"):
        recs = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["recordings"]
        assert [r["part"] for r in recs] == list(range(1, len(recs) + 1))
        assert len({r["call_id"] for r in recs}) == 1


def test_each_part_has_its_own_evidence_the_new_one_beginning_with_the_reinvite(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from capture.source import CaptureFile

    whole = codec_call("call-k-8", NUMBER, 98, ((1.0, "PCMA"), (2.0, "PCMU")), late_old=True)
    recs = replay(site, tmp_path, whole.packets(), capsys)
    assert [r["codec"] for r in recs] == ["PCMU", "PCMA", "PCMU"]
    store = site.open_store()
    frames = []
    for rec in recs:
        path = tmp_path / f"{rec['id']}.pcap"
        path.write_bytes(b"".join(store.reading.plaintext(store.reading.get(rec["id"]), pcap=True)))
        frames.append([f for b in CaptureFile(path).batches() for _, _, f in b])
    store.close()
    rtp = [[f[43] & 0x7F for f in part if f[42] & 0xC0 == 0x80] for part in frames]
    # part 1: its PCMU; part 2: its PCMA and the caller's PCMU packet that came late (kept as evidence, not audio)
    assert (rtp[0].count(0), rtp[1].count(8), rtp[1].count(0), rtp[2].count(0)) == (99, 100, 1, 100)
    assert set(rtp[0]) == {0} and set(rtp[2]) == {0}
    for n, part in enumerate(frames[1:], start=1):  # the re-INVITE that negotiated the part's codec, its 200 and ACK
        sip = b"".join(f for f in part if b"SIP/2.0" in f)
        assert f"CSeq: {n} INVITE".encode() in sip and f"CSeq: {n} ACK".encode() in sip


def test_store_full_at_the_codec_change_keeps_the_first_part_and_counts_the_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from zoneinfo import ZoneInfo

    from storage.spool import SpoolSink
    from storage.store import Store

    whole = codec_call("call-k-9", NUMBER, 99, ((1.5, "PCMA"),))
    store = Store(str(tmp_path / "store"), tz=ZoneInfo("Asia/Tokyo"), retention_days=14, key_file=str(tmp_path / "k"))
    store.init()
    store.open()
    sink = SpoolSink(store)
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), sink)
    switch = whole.media()[0].packets[whole.switches()[1][0]][0]
    packets = [(t, 1, f) for t, f in sorted(whole.packets(), key=lambda p: p[0])]
    pipeline.feed([p for p in packets if p[0] < switch])
    sink.accepting = False  # as the service does when the store is critically full
    pipeline.feed([p for p in packets if p[0] >= switch])
    pipeline.finish("capture-end")
    rows = store.db().all()
    assert [(r.codec, r.state, r.end_reason) for r in rows] == [("PCMU", "complete", "codec-change")]
    data = b"".join(store.reading.plaintext(rows[0]))
    exp = expected(whole)[0]
    for chan in exp["channels"]:
        assert hashlib.sha256(channel_bytes(data, chan["channel"])).hexdigest() == chan["sha256"]
    store.close()
    assert (pipeline.counters["calls_recorded"], pipeline.counters["calls_lost_store_full"]) == (1, 1)
    assert any(r.levelname == "CRITICAL" and getattr(r, "EVENT", "") == "call-lost" for r in caplog.records)


def test_replay_summary_counts_each_part_kept(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert site.replay(FIXTURES / "codec-change-back.pcap") == 0
    out = capsys.readouterr().out
    assert ": 3 recorded, 0 not designated," in out and "could not be kept" not in out, out


def test_export_of_the_conversation_gives_every_codec_part(site: Site, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    whole = codec_call("call-k-12", NUMBER, 102, ((1.0, "PCMA"), (2.0, "G722")))
    recs = replay(site, tmp_path, whole.packets(), capsys)
    assert [(r["codec"], r["part"], r["parts"], r["part_reason"]) for r in recs] == [
        ("PCMU", 1, 3, ""), ("PCMA", 2, 3, "codec-change"), ("G722", 3, 3, "codec-change")]
    folder = tmp_path / "copies"
    folder.mkdir()
    capsys.readouterr()
    assert site.ctl("export", recs[1]["id"], "--conversation", "--out", str(folder), "--purpose", "quality") == 0
    for rec, exp in zip(recs, expected(whole), strict=True):
        wav = (folder / f"{rec['id']}.wav").read_bytes()
        assert wav == site.wav_bytes(rec)
        info = read_info(wav)
        assert info.frames == exp["frames"]
        for chan in exp["channels"]:
            assert hashlib.sha256(channel_bytes(wav, chan["channel"])).hexdigest() == chan["sha256"]
        manifest = json.loads((folder / f"{rec['id']}.wav.manifest.json").read_text())
        assert (manifest["conversation"]["part"], manifest["conversation"]["part_reason"]) == (rec["part"],
                                                                                               rec["part_reason"])
