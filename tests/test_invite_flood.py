"""An INVITE flood to a designated number (issue 16, item 11), replayed through `recorderd replay`:
unanswered dialogs are bounded per source, oldest first, an answered call is never pushed out, the
genuine call is recorded byte for byte, and what was dropped is counted as over capacity."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Site
from generator import TRUNK, SipCall, udp_frame, write_pcap

from storage.wav import channel_bytes

T = 1_790_000_000.0
PBX_IP = "192.0.2.10"


def flood(source: str, count: int, start: float, every: float, tag: str) -> list[tuple[float, bytes]]:
    """``count`` INVITEs to 044-200-3939 from ``source``, each its own dialog with an SDP offer,
    that nobody answers (a SIPVicious-style scan, or a dialler gone wrong)."""
    template = SipCall(f"{tag}-000000@{source}", f"sip:0442003939@{PBX_IP}", f"sip:0442003939@{PBX_IP}",
                       "0312345678", start, sip_src=(source, 5060), caller_media=(source, 10000)).messages()[0][2]
    packets = []
    for i in range(count):
        payload = template.replace(b"%s-000000" % tag.encode(), b"%s-%06d" % (tag.encode(), i)).replace(
            b"m=audio 10000", b"m=audio %05d" % (10000 + 2 * (i % 25000)))
        packets.append((start + i * every, udp_frame(source, 5060, PBX_IP, 5060, payload)))
    return packets


def replay(site: Site, tmp: Path, packets: list[tuple[float, bytes]], capsys: pytest.CaptureFixture[str]) -> tuple[list[dict], str]:
    path = tmp / "flood.pcap"
    write_pcap(str(path), packets)
    capsys.readouterr()
    assert site.replay(path) == 0
    summary = capsys.readouterr().out
    return site.list(capsys), summary


def assert_exact(site: Site, rec: dict, c: SipCall) -> None:
    data = site.wav_bytes(rec)
    assert rec["state"] == "complete"
    assert [channel_bytes(data, 1), channel_bytes(data, 2)] == c.expected_channels()


@pytest.mark.parametrize("source", ["198.51.100.7", TRUNK[0]], ids=["other-source", "trunk-itself"])
def test_flood_of_unanswered_invites_does_not_lock_out_a_genuine_call(
        source: str, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 20,000 INVITEs over 100 s (the table holds 10,000; each would ring 180 s); the genuine call
    # comes 60 s in, after 12,000 of them, from the trunk (which may be the flood's source too).
    genuine = SipCall("genuine-1@203.0.113.5", f"sip:0442003939@{PBX_IP}", f"sip:0442003939@{PBX_IP}",
                      "09011112222", T + 60, talk=2.0, seed=5)
    recs, summary = replay(site, tmp_path, flood(source, 20_000, T, 0.005, "flood") + genuine.packets(), capsys)
    [rec] = recs
    assert rec["call_id"] == "genuine-1@203.0.113.5"
    assert_exact(site, rec, genuine)
    # a source keeps at most a quarter of the table unanswered: the 2,500 newest ring on to the end
    assert "1 recorded" in summary and "2500 unanswered" in summary and "17500 over capacity" in summary
    assert len(site.stored_files()) == 1 and site.spool_files() == []


def test_full_table_drops_an_unanswered_call_never_an_answered_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {max_calls: 4}\n").init()  # a source may keep 1 unanswered
    a = SipCall("answered-a", f"sip:0442003939@{PBX_IP}", f"sip:0442003939@{PBX_IP}", "09011110001", T,
                talk=5.0, seed=21)
    b = SipCall("answered-b", f"sip:0442002111@{PBX_IP}", f"sip:0442002111@{PBX_IP}", "09011110002", T + 1,
                talk=5.0, seed=22, caller_media=("203.0.113.21", 40002), pbx_media=("192.0.2.21", 20002))
    floods = flood("198.51.100.7", 50, T + 1.5, 0.02, "fa") + flood("198.51.100.8", 50, T + 1.51, 0.02, "fb")
    # the table is full now (a, b and one unanswered INVITE of each flooding source)
    c = SipCall("genuine-c", f"sip:0442003939@{PBX_IP}", f"sip:0442003939@{PBX_IP}", "09011110003", T + 3,
                talk=1.0, seed=23, caller_media=("203.0.113.23", 40004), pbx_media=("192.0.2.23", 20004))
    recs, summary = replay(site, tmp_path, a.packets() + b.packets() + floods + c.packets(), capsys)
    got = {r["call_id"]: r for r in recs}
    assert sorted(got) == ["answered-a", "answered-b", "genuine-c"]
    for call in (a, b, c):
        assert_exact(site, got[call.call_id], call)
    # 49 + 49 pushed out by their own source's newer INVITEs, 1 by the genuine call; 1 rings to the end
    assert "3 recorded" in summary and "1 unanswered" in summary and "99 over capacity" in summary


def test_ringing_calls_pick_the_largest_source_oldest_first() -> None:
    from capture.ringing import RingingCalls

    ringing: RingingCalls[str] = RingingCalls(per_source=10)
    for cid, source in [("a1", b"A"), ("b1", b"B"), ("a2", b"A"), ("a3", b"A"), ("b2", b"B")]:
        ringing.add(source, cid, cid)
    always = lambda call: True  # noqa: E731
    assert ringing.oldest_of_largest(always) == "a1"
    ringing.discard("a1")
    ringing.discard("a2")  # A holds 1 now, B 2
    assert ringing.oldest_of_largest(always) == "b1"
    assert ringing.oldest_of(b"A", lambda call: call != "a3") is None  # answered meanwhile: passed over, dropped
    assert ringing.count(b"A") == 0 and len(ringing) == 2
    ringing.discard("b1")
    ringing.discard("b2")
    assert ringing.oldest_of_largest(always) is None and len(ringing) == 0
