"""An SBC with two faces (capture/legs.py): one recording per conversation with the other face
linked, a doubt never costs audio (both recorded, linked as unsure), near misses stay two calls."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, Site, public_capture

from capture.assembler import StreamAssembler
from capture.pipeline import CapturePipeline
from capture.source import CaptureFile
from recorderd.config import load_dids


class Handle:
    keeps_packets = False

    def __init__(self, sink: Sink, info) -> None:  # type: ignore[no-untyped-def]
        self.sink, self.info, self.links, self.payloads = sink, info, [], 0

    def audio(self, channel: int, position: int, payload: bytes) -> None:
        self.payloads += 1

    def use_buffers(self, lanes, records) -> bool:  # type: ignore[no-untyped-def]
        return False  # capture's buffers declined: audio() gets every payload

    def link_leg(self, call_id: str, how: str) -> None:
        self.links.append((call_id, how))

    def end(self, result) -> None:  # type: ignore[no-untyped-def]
        self.sink.ended[self.info.call_id] = self


class Sink:
    def __init__(self) -> None:
        self.ended: dict[str, Handle] = {}

    def call_started(self, info):  # type: ignore[no-untyped-def]
        return Handle(self, info)


def replay(path: Path, dids: Path = ROOT / "config" / "dids.yaml", **options: object) -> tuple[CapturePipeline, Sink]:
    sink = Sink()
    pipeline = CapturePipeline(load_dids(str(dids)), sink, **options)
    with CaptureFile(path) as source:
        for batch in source.batches():
            pipeline.feed(batch)
    pipeline.finish("capture-end")
    return pipeline, sink


def write(tmp: Path, calls: list) -> Path:  # type: ignore[type-arg]
    from frames import write_pcap

    path = tmp / "capture.pcap"
    write_pcap(str(path), sorted((p for c in calls for p in c.packets()), key=lambda p: p[0]))
    return path


def test_the_sbcs_inside_face_is_linked_not_recorded(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, sink = replay(FIXTURES / "sbc-two-faces.pcap")
    assert sorted(sink.ended) == ["sbc-outside-1@203.0.113.5"]  # the earlier leg, the carrier's
    assert sink.ended["sbc-outside-1@203.0.113.5"].links == [("sbc-inside-1@198.51.100.2", "rtp-relay")]
    assert pipeline.counters["calls_other_leg"] == 1 and pipeline.counters["calls_designated"] == 1
    assert site.replay(FIXTURES / "sbc-two-faces.pcap") == 0
    (rec,) = site.list(capsys)
    assert rec["call_id"] == "sbc-outside-1@203.0.113.5" and rec["linked_legs"] == 1


def test_fax_t38_through_an_sbc_is_one_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its inside face's RTP is not in the capture: nothing to compare, nothing of it to keep."""
    path = public_capture("fax-t38-reinvite.pcap")
    site = Site(tmp_path, [{"number": "061963177", "label": "test-061963177", "kind": "user"}]).init()
    assert site.replay(path) == 0
    (rec,) = site.list(capsys)
    assert rec["call_id"] == "00e9d4a500e9d48-0015-0001-0000-0000@10.35.40.25"
    assert rec["linked_legs"] == 1
    assert sorted(s["ssrcs"][0] for s in rec["streams"]) == [0x0EAF0EAF, 0x17D90134]  # both ways, whole
    dids = tmp_path / "fax-dids.yaml"
    dids.write_text('dids:\n  - {number: "061963177", label: "test", kind: "user"}\n', encoding="utf-8")
    pipeline, sink = replay(path, dids)
    (handle,) = sink.ended.values()
    assert handle.links == [("SD4909701-9ff11bf72eb4a347c92974d8fbbc2668-ao8o3i1", "unsure")]
    assert pipeline.counters["calls_other_leg"] == 1 and pipeline.counters["calls_recorded"] == 1


def test_a_lookalike_not_relayed_is_recorded_too_and_linked_as_unsure() -> None:
    pipeline, sink = replay(FIXTURES / "sbc-lookalike.pcap")
    assert sink.ended["sbc-outside-3@203.0.113.5"].links == [("sbc-inside-3@198.51.100.2", "unsure")]
    assert sink.ended["sbc-inside-3@198.51.100.2"].links == [("sbc-outside-3@203.0.113.5", "unsure")]
    assert pipeline.counters["calls_other_leg_unsure"] == 1 and pipeline.counters["calls_other_leg"] == 0
    # (the held packets went into its recording: tests/test_fixtures.py checks both WAVs byte for byte)
    assert sink.ended["sbc-inside-3@198.51.100.2"].payloads == 300


def test_silence_relayed_proves_nothing(tmp_path: Path) -> None:
    """Two legs that carry only silence at the same instants: the payloads are identical, yet no
    proof (every call's silence is the same bytes): both recorded."""
    import fx_legs

    @dataclasses.dataclass
    class Silent(fx_legs.SipCall):
        def media(self):  # type: ignore[no-untyped-def]
            up, down = super().media()
            for d in (up, down):
                d.packets = [(t, s, ts, b"\xff" * len(p), pt, ss, a) for t, s, ts, p, pt, ss, a in d.packets]
            return up, down

    outside = fx_legs.outside("silent-outside@203.0.113.5", "09055550000", fx_legs.T, 91)
    outside = Silent(**{f.name: getattr(outside, f.name) for f in dataclasses.fields(fx_legs.SipCall)})
    inside = fx_legs.inside("silent-inside@198.51.100.2", outside, "09055550000", fx_legs.T + 0.002, 92)
    pipeline, sink = replay(write(tmp_path, [outside, inside]))
    assert sorted(sink.ended) == ["silent-inside@198.51.100.2", "silent-outside@203.0.113.5"]
    assert pipeline.counters["calls_other_leg_unsure"] == 1


def test_near_misses_stay_two_calls() -> None:
    """The same caller to the same number a minute later; two callers at the same instant."""
    pipeline, sink = replay(FIXTURES / "sbc-near-misses.pcap")
    assert len(sink.ended) == 4 and all(h.links == [] for h in sink.ended.values())
    assert pipeline.counters["calls_other_leg"] == pipeline.counters["calls_other_leg_unsure"] == 0


def test_the_probe_ends_and_the_first_leg_goes_back_to_the_fast_path() -> None:
    """The comparison runs on the slow path only while it lasts: once proven, no probe is left and
    the recorded leg's streams are plain StreamAssemblers again."""
    sink = Sink()
    pipeline = CapturePipeline(load_dids(str(ROOT / "config" / "dids.yaml")), sink)
    tracker = pipeline.tracker
    probed_at = []
    with CaptureFile(FIXTURES / "sbc-two-faces.pcap") as source:
        for batch in source.batches():
            for packet in batch:
                pipeline.feed([packet])
                if tracker.faces.probes:
                    probed_at.append(packet[0])
                elif probed_at and "sbc-outside-1@203.0.113.5" in tracker.calls:
                    call = tracker.calls["sbc-outside-1@203.0.113.5"]
                    assert [type(s) for s in call.streams] == [StreamAssembler, StreamAssembler]
                    assert call.leg_probe is None
    pipeline.finish("capture-end")
    # from the inside face's INVITE to the proof: its first few packets (media begins 0.45 s in)
    assert probed_at and probed_at[-1] - 1_790_003_600.0 < 0.5
    assert "sbc-inside-1@198.51.100.2" in tracker.ignored


def test_with_trunk_networks_the_inside_face_is_not_inbound() -> None:
    pipeline, sink = replay(FIXTURES / "sbc-two-faces.pcap", trunk_networks=["203.0.113.0/24"])
    assert sorted(sink.ended) == ["sbc-outside-1@203.0.113.5"]
    assert pipeline.counters["calls_not_inbound"] == 1


def test_a_flood_of_lookalikes_holds_a_bounded_number_and_loses_nothing(tmp_path: Path) -> None:
    """70 callers, each at once through both 'faces' with audio that is not relayed: at most
    MAX_PROBES comparisons hold media at a time; every call is recorded with all its packets."""
    import fx_legs

    from capture.legs import MAX_PROBES

    calls = []
    for i in range(70):
        caller = f"0905555{i:04d}"
        first = dataclasses.replace(fx_legs.outside(f"flood-{i}-a@203.0.113.5", caller, fx_legs.T, 1000 + 2 * i), talk=1.0)
        calls += [first, fx_legs.inside(f"flood-{i}-b@198.51.100.2", first, caller, fx_legs.T + 0.002, 1001 + 2 * i,
                                        relay=False, talk=1.0)]
    pipeline, sink = replay(write(tmp_path, calls))
    assert len(sink.ended) == 140 and all(h.payloads == 100 for h in sink.ended.values())
    assert pipeline.counters["calls_other_leg_unsure"] == MAX_PROBES and pipeline.counters["calls_other_leg"] == 0


def test_a_b2buas_second_leg_is_linked_by_address() -> None:
    """The B2BUA whose second leg starts where the first one went (pcap_fixtures/b2bua): not
    recorded again, and now linked to the recording (how "address")."""
    pipeline, sink = replay(FIXTURES / "b2bua.pcap")
    (handle,) = sink.ended.values()
    assert handle.links == [(handle.info.call_id + "-leg2", "address")]
    assert pipeline.counters["calls_second_leg"] == 1


def _on_hold(call_id: str, caller: str, start: float, seed: int, trunk: str, pbx: str):  # type: ignore[no-untyped-def]
    """A designated call whose contact-centre side plays the PBX's one music-on-hold source: the
    same payload bytes at the same instant to every caller on hold."""
    import hashlib

    import fx_legs

    @dataclasses.dataclass
    class OnHold(fx_legs.SipCall):
        def media(self):  # type: ignore[no-untyped-def]
            up, down = super().media()
            down.packets = [(t, s, ts, hashlib.sha256(b"moh%d" % round(t / 0.02)).digest() * 5, pt, ss, a)
                            for t, s, ts, _p, pt, ss, a in down.packets]
            return up, down

    return OnHold(call_id, f"sip:0442003939@{pbx}", f"sip:0442003939@{pbx}", caller, start, talk=6.0, seed=seed,
                  sip_src=(trunk, 5060), sip_dst=(pbx, 5060), caller_media=(trunk[:-1] + "20", 40000 + seed),
                  pbx_media=("192.0.2.20", 20000 + seed))


def test_shared_music_on_hold_does_not_make_a_second_call_an_sbcs_face(tmp_path: Path) -> None:
    """Two calls from one company's main number (the same caller) 2 s apart over two trunks into
    two PBX interfaces, both hearing the same music on hold: what the contact centre sends proves
    nothing (only the caller's voice is the caller's own). Both are recorded, linked as unsure."""
    a = _on_hold("moh-a@203.0.113.5", "0311112222", 1_790_003_600.0, 41, "203.0.113.5", "192.0.2.10")
    b = _on_hold("moh-b@198.51.100.5", "0311112222", 1_790_003_602.0, 42, "198.51.100.5", "192.0.2.11")
    pipeline, sink = replay(write(tmp_path, [a, b]))
    assert sorted(sink.ended) == ["moh-a@203.0.113.5", "moh-b@198.51.100.5"]
    assert sink.ended["moh-a@203.0.113.5"].links == [("moh-b@198.51.100.5", "unsure")]
    assert pipeline.counters["calls_other_leg"] == 0 and pipeline.counters["calls_other_leg_unsure"] == 1
    assert sink.ended["moh-b@198.51.100.5"].payloads == sink.ended["moh-a@203.0.113.5"].payloads == 600


@pytest.mark.parametrize("caller", ["anonymous", "Anonymous", "unknown", "RESTRICTED", ""])
def test_callers_that_name_no_one_are_never_an_sbcs_faces(tmp_path: Path, caller: str) -> None:
    """Two calls without a caller's number have nothing in common but the missing number: even with
    the caller's audio relayed, neither is taken for the other's face; both are recorded, unlinked."""
    import fx_legs

    outside = fx_legs.outside("anon-outside@203.0.113.5", caller, fx_legs.T, 93)
    inside = fx_legs.inside("anon-inside@198.51.100.2", outside, caller, fx_legs.T + 0.002, 94)
    pipeline, sink = replay(write(tmp_path, [outside, inside]))
    assert sorted(sink.ended) == ["anon-inside@198.51.100.2", "anon-outside@203.0.113.5"]
    assert [h.links for h in sink.ended.values()] == [[], []]
    assert pipeline.counters["calls_other_leg"] == 0 and pipeline.counters["calls_designated"] == 2
