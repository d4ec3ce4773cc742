"""Every capture in pcap_fixtures/ replays to exactly the recordings its JSON expects: the same
calls, each WAV channel byte for byte, and nothing at all for the calls that must not be recorded."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT, Site

from storage.wav import channel_bytes, read_info

CASES = sorted(p.stem for p in FIXTURES.glob("*.pcap"))


def test_every_fixture_has_its_expected_results() -> None:
    assert CASES, "no fixtures found"
    for name in CASES:
        assert (FIXTURES / f"{name}.json").exists(), f"{name}.pcap has no {name}.json"
    for sidecar in FIXTURES.glob("*.json"):
        assert (FIXTURES / f"{sidecar.stem}.pcap").exists(), f"{sidecar.name} has no capture"


def test_committed_fixtures_are_what_the_generator_makes() -> None:
    result = subprocess.run([sys.executable, str(FIXTURES / "make_fixtures.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", CASES)
def test_replay_gives_expected_recordings(name: str, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert site.replay(FIXTURES / f"{name}.pcap") == 0
    got = by_part(site.list(capsys))
    want = {(r["call_id"], r.get("part", 1)): r for r in expected["recordings"]}
    assert sorted(got) == sorted(want)
    for (call_id, part), exp in want.items():
        rec = got[(call_id, part)]
        for key in ("did", "did_label", "caller", "codec", "state", "audio"):
            assert rec[key] == exp[key], f"{call_id}: {key}"
        if "conversation" in exp:  # a part of a conversation (a transfer's next call): its token and part
            assert (rec["conversation"], rec["part"]) == (exp["conversation"], exp["part"]), call_id
        if "part_reason" in exp and "part_reason" in rec:  # a call kept in parts: each says why it began
            assert rec["part_reason"] == exp["part_reason"], call_id
            assert len({r["conversation"] for (c, _), r in got.items() if c == call_id}) == 1, call_id
        if exp["audio"] == "not-decoded":  # the recording is the call's RTP, frame for frame
            evidence = site.root / f"{rec['id']}.pcap"
            store = site.open_store()
            evidence.write_bytes(b"".join(store.reading.plaintext(store.reading.get(rec["id"]), pcap=True)))
            store.close()
            from capture.pipeline import CapturePipeline  # noqa: F401  (the reader below is the project's)
            from capture.source import CaptureFile

            frames = [f for b in CaptureFile(evidence).batches() for _, _, f in b]
            assert sum(1 for f in frames if f[42] & 0xC0 == 0x80) == exp["rtp_packets"]
            continue
        assert rec["frames"] == exp["frames"] and rec["channels"] == 2
        data = site.wav_bytes(rec)
        info = read_info(data)
        wav_codec = exp["codec"] if exp["audio"] == "exact" else "PCM"
        assert (info.codec, info.channels, info.rate, info.frames) == (wav_codec, 2, exp["rate"], exp["frames"])
        for chan in exp["channels"]:
            audio = channel_bytes(data, chan["channel"])
            assert len(audio) == chan["length"]
            assert hashlib.sha256(audio).hexdigest() == chan["sha256"], f"{call_id}: channel {chan['channel']}"
        assert hashlib.sha256(data).hexdigest() == rec["sha256"]
        assert [s["lost"] for s in rec["streams"]] == exp["lost"]
        assert [e[1] for e in rec["streams"][0]["dtmf"]] == exp["dtmf"]  # digits kept, in order
    # Nothing of a call that must not be recorded: no file, no index row, no trace in the index.
    assert len(site.stored_files()) == sum(1 for w in want.values() if w["audio"] != "not-decoded")
    assert site.spool_files() == []
    index = (site.store / "index.sqlite").read_bytes()
    for call_id in expected["not_recorded"]:
        assert call_id.encode() not in index
    with sqlite3.connect(site.store / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM recordings").fetchone()[0] == len(want)


def by_part(recordings: list[dict]) -> dict[tuple[str, int], dict]:
    """Recordings by (Call-ID, part): the part the index names, else the order the call's parts began
    (one call kept in parts by a codec change has one Call-ID)."""
    out: dict[tuple[str, int], dict] = {}
    for rec in sorted(recordings, key=lambda r: (r["call_id"], r["started_at"])):
        out[(rec["call_id"], rec.get("part") or 1 + sum(1 for c, _ in out if c == rec["call_id"]))] = rec
    return out


REQUIRED = {  # what a SPAN port carries (issues 2 and 3): each must have its fixture
    "inbound-mulaw", "inbound-e164", "inbound-alaw", "not-designated", "outbound-presenting-did", "overlapping",
    "cancelled", "fragmented-invite", "qinq", "ipv6", "tcp-split", "tcp-coalesced", "hold", "nat", "ssrc-change",
    "wrap-around", "loss-reorder", "b2bua", "forking", "srtp-offer", "dtmf", "multipart-sdp", "g722", "g729",
}


def test_every_required_case_has_a_fixture() -> None:
    assert REQUIRED <= set(CASES), sorted(REQUIRED - set(CASES))


class NullSink:
    """A RecordingSink whose one handle (itself) keeps nothing."""

    id = "null"
    keeps_packets = False

    def call_started(self, call):  # type: ignore[no-untyped-def]
        return self

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        pass

    def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
        return False  # capture's buffers declined: audio() gets every payload

    def link_leg(self, call_id: str, how: str) -> None:
        pass  # (capture/sink.py RecordingHandle: another leg of the conversation, not recorded)

    def end(self, result) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.mark.parametrize("name", CASES)
def test_fixture_counters(name: str) -> None:
    from capture.pipeline import CapturePipeline
    from capture.source import CaptureFile
    from recorderd.config import load_dids

    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), NullSink())
    with CaptureFile(FIXTURES / f"{name}.pcap") as source:
        for batch in source.batches():
            pipeline.feed(batch)
    pipeline.finish("capture-end")
    for key, value in expected.get("counters", {}).items():
        assert pipeline.counters[key] == value, key
    assert pipeline.counters["calls_recorded"] == len(expected["recordings"])
    assert pipeline.counters["sip_malformed"] == 0 and pipeline.counters["rtp_malformed"] == 0


def test_replaying_the_same_capture_twice_keeps_one_copy(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    capture = FIXTURES / "overlapping.pcap"
    assert site.replay(capture) == 0
    first = site.list(capsys)
    assert site.replay(capture) == 0
    assert site.list(capsys) == first
    assert len(site.stored_files()) == 2
    assert site.spool_files() == []
