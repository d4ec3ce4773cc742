"""Which calls are recorded, end to end through `recorderd replay`: the called number in its
several headers, the trunk side, auth challenges, endings, and what stays out of the store."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import Site
from generator import PBX, TRUNK, SipCall, udp_frame, write_pcap

T = 1_790_000_000.0


def call(**kw: object) -> SipCall:
    base = {"call_id": "sel-1@203.0.113.5", "called": "sip:0442003939@192.0.2.10", "to": "sip:0442003939@192.0.2.10",
                "caller": "09011112222", "start": T, "talk": 1.0, "seed": 7}
    base.update(kw)
    return SipCall(**base)  # type: ignore[arg-type]


def replay(site: Site, tmp: Path, packets: list[tuple[float, bytes]], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    path = tmp / "case.pcap"
    write_pcap(str(path), packets)
    capsys.readouterr()
    assert site.replay(path) == 0
    captured = capsys.readouterr()
    site.summary, site.log = captured.out, captured.err  # type: ignore[attr-defined]
    return site.list(capsys)


def test_called_number_from_p_called_party_id(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called="sip:pbx-trunk-7@192.0.2.10", to="sip:pbx-trunk-7@192.0.2.10",
             extra_headers=("P-Called-Party-ID: <tel:+81-44-200-2111>",))
    [rec] = replay(site, tmp_path, c.packets(), capsys)
    assert (rec["did"], rec["did_label"]) == ("+81442002111", "本庁舎代表")


def test_called_number_from_diversion(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called="sip:3001@192.0.2.10", to="sip:3001@192.0.2.10",
             extra_headers=("Diversion: <sip:0445566666@192.0.2.10>;reason=unconditional;counter=1",))
    [rec] = replay(site, tmp_path, c.packets(), capsys)
    assert rec["did"] == "+81445566666"


def test_designated_number_only_as_caller_id_is_not_recorded(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called="sip:09055556666@203.0.113.5", to="sip:09055556666@203.0.113.5", caller="0442003939",
             sip_src=PBX, sip_dst=TRUNK)
    assert replay(site, tmp_path, c.packets(), capsys) == []
    assert "1 not designated" in site.summary  # type: ignore[attr-defined]
    assert site.stored_files() == [] and site.spool_files() == []


def test_trunk_networks_make_internal_calls_not_inbound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {trunk_networks: [203.0.113.0/24]}\n").init()
    internal = call(call_id="internal-1", sip_src=("192.0.2.50", 5060), seed=8)
    inbound = call(call_id="inbound-1", start=T + 5, seed=9, caller_media=("203.0.113.30", 41000))
    recs = replay(site, tmp_path, internal.packets() + inbound.packets(), capsys)
    assert [r["call_id"] for r in recs] == ["inbound-1"]
    assert "1 recorded" in site.summary and "1 not inbound" in site.summary  # type: ignore[attr-defined]
    assert len(site.stored_files()) == 1


def test_invite_challenged_for_auth_then_retried_is_recorded(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call()
    packets = c.packets()
    invite_t, invite = packets[0]
    challenge = invite.replace(b"INVITE sip:0442003939@192.0.2.10 SIP/2.0", b"SIP/2.0 407 Proxy Authentication Required", 1)
    # the 407 travels PBX -> trunk; only the direction of the SIP matters little here, the tracker keys on Call-ID
    retried = invite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
    early = [(invite_t - 0.2, invite), (invite_t - 0.15, challenge)]
    recs = replay(site, tmp_path, early + [(invite_t, retried)] + packets[1:], capsys)
    assert len(recs) == 1 and recs[0]["state"] == "complete"


def test_late_invite_retransmission_after_the_end_opens_nothing(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call()
    packets = c.packets()
    recs = replay(site, tmp_path, packets + [(c.end_time + 1.0, packets[0][1])], capsys)
    assert len(recs) == 1


def test_call_cut_by_capture_end_is_kept_incomplete(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(talk=2.0)
    packets = [p for p in c.packets() if p[0] < c.end_time]  # no BYE in the capture
    [rec] = replay(site, tmp_path, packets, capsys)
    assert rec["state"] == "incomplete" and rec["end_reason"] == "capture-end"
    assert rec["streams"][0]["packets"] == 100


def test_silent_call_ends_after_idle_timeout_in_packet_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = Site(tmp_path, settings="capture: {idle_timeout_s: 60}\n").init()
    c = call(talk=1.0)
    packets = [p for p in c.packets() if p[0] < c.end_time]
    other = call(call_id="later-1", start=T + 200, seed=10, caller_media=("203.0.113.31", 41002))
    recs = replay(site, tmp_path, packets + other.packets(), capsys)
    first = next(r for r in recs if r["call_id"] == c.call_id)
    assert first["end_reason"] == "timeout" and first["state"] == "incomplete"
    assert first["ended_at"] < "2026-09-21T23:16"  # ended by the timeout, long before the later call


def test_reinvite_moving_media_keeps_recording(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(talk=1.0)
    packets = [p for p in c.packets() if p[0] < c.end_time]
    moved = dataclasses.replace(c, pbx_media=("192.0.2.21", 22000), start=c.end_time + 0.5, seed=70)  # new SSRCs
    # a re-INVITE from the PBX moving its media: SDP from the contact-centre side
    reinvite = (
        b"INVITE sip:09011112222@203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKre\r\n"
        b"From: <sip:0442003939@192.0.2.10>;tag=tt7\r\nTo: <sip:09011112222@203.0.113.5>;tag=ft7\r\n"
        b"Call-ID: sel-1@203.0.113.5\r\nCSeq: 10 INVITE\r\nContent-Type: application/sdp\r\n"
    )
    sdp = moved._sdp(moved.pbx_media, 3)
    reinvite += b"Content-Length: %d\r\n\r\n" % len(sdp) + sdp
    t = c.end_time + 0.2
    later = [(ts + 0.0, f) for ts, f in moved.rtp_frames()]
    bye = list(moved.signalling()[-2:])
    recs = replay(site, tmp_path, packets + [(t, udp_frame(*PBX, *TRUNK, reinvite))] + later + bye, capsys)
    [rec] = recs
    assert rec["streams"][0]["packets"] == 100  # caller's audio before and after the move
    assert rec["streams"][1]["packets"] == 100


def test_capture_end_counts_each_call_once(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answered = call(talk=1.0)
    ringing = call(call_id="ringing-1", start=T + 0.5, outcome="cancel", ring=30.0, seed=12,
                   caller_media=("203.0.113.40", 41010))
    packets = [p for p in answered.packets() if p[0] < answered.end_time] + ringing.signalling()[:3]
    recs = replay(site, tmp_path, packets, capsys)
    assert len(recs) == 1
    assert "1 recorded, 0 not designated, 0 not inbound, 1 unanswered" in site.summary  # type: ignore[attr-defined]


def test_next_call_behind_nat_on_the_same_ports_is_not_mixed_into_the_last(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A call whose media reuses the public address of a call that just ended (BYE, media still
    lingering) keeps its own audio, and the ended call gets none of it."""
    first = call(talk=1.0, seed=31)
    second = call(call_id="nat-next", start=first.end_time + 0.1, talk=1.0, seed=32, nat_private="10.0.0.9")
    recs = {r["call_id"]: r for r in replay(site, tmp_path, first.packets() + second.packets(), capsys)}
    assert [s["packets"] for s in recs[first.call_id]["streams"]] == [50, 50]
    assert [s["packets"] for s in recs["nat-next"]["streams"]] == [50, 50]


def test_sip_over_tls_is_counted_and_said(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from frames import tcp_frame

    hello = b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03" + bytes(32)  # a TLS ClientHello's start
    packets = [(T + i, tcp_frame("203.0.113.5", 40000 + i, "192.0.2.10", 5061, 1, 0, 0x18, hello)) for i in range(3)]
    assert replay(site, tmp_path, packets, capsys) == []
    assert site.log.count("SIP over TLS seen on port 5061") == 1  # type: ignore[attr-defined]  # said once


# -- a display name that is not UTF-8 (issue 16, item 8) ----------------------------------------------


class ShiftJisCall(SipCall):
    """A call whose caller's display name is Shift_JIS, as a Japanese phone or PBX sends it: 川崎ソ,
    whose last byte (0x5C) is a backslash to a parser reading latin-1."""

    def _message(self, *args: object, **kw: object) -> bytes:
        return super()._message(*args, **kw).replace(b'"Caller"', b'"' + "川崎ソ".encode("shift_jis") + b'"')  # type: ignore[arg-type]


def test_shift_jis_display_name_does_not_lose_the_call(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from storage.wav import channel_bytes

    c = ShiftJisCall(**{f.name: getattr(call(), f.name) for f in dataclasses.fields(SipCall)})
    assert "川崎ソ".encode("shift_jis") in c.packets()[0][1]
    [rec] = replay(site, tmp_path, c.packets(), capsys)
    assert (rec["did"], rec["caller"], rec["state"]) == ("+81442003939", "09011112222", "complete")
    data = site.wav_bytes(rec)
    assert [channel_bytes(data, 1), channel_bytes(data, 2)] == c.expected_channels()
    assert "malformed: 0 SIP" in site.summary  # type: ignore[attr-defined]


# -- the Request-URI is authoritative; phone-context (issue 16, item 9) --------------------------------


@pytest.mark.parametrize("called", [
    "sip:0312345678@192.0.2.10",  # another complete number
    "sip:+81312345678@192.0.2.10;user=phone",
    "sip:2003940;phone-context=+8144@192.0.2.10",  # complete once its context is applied
])
def test_designated_number_in_to_or_diversion_does_not_make_another_number_recorded(
        called: str, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called=called, to="sip:0442003939@192.0.2.10",
             extra_headers=("Diversion: <sip:0442002111@192.0.2.10>;reason=unconditional;counter=1",
                            "P-Called-Party-ID: <tel:+81-44-200-3939>"))
    assert replay(site, tmp_path, c.packets(), capsys) == []
    assert "0 recorded, 1 not designated" in site.summary  # type: ignore[attr-defined]
    assert site.stored_files() == [] and site.spool_files() == []


def test_to_names_the_called_number_when_the_request_uri_is_an_extension(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called="sip:3001@192.0.2.10", to="sip:0442003939@192.0.2.10")
    [rec] = replay(site, tmp_path, c.packets(), capsys)
    assert rec["did"] == "+81442003939"


@pytest.mark.parametrize("called", [
    "sip:2003939;phone-context=+8144@192.0.2.10;user=phone",
    "tel:200-3939;phone-context=+81-44",
])
def test_local_number_with_phone_context_is_the_designated_number(
        called: str, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = call(called=called, to=called)
    [rec] = replay(site, tmp_path, c.packets(), capsys)
    assert (rec["did"], rec["did_label"]) == ("+81442003939", "サンキューコールかわさき")


def test_local_number_in_a_domains_context_stays_local(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = "sip:2003939;phone-context=pbx.example.jp@192.0.2.10"
    assert replay(site, tmp_path, call(called=local, to=local).packets(), capsys) == []
    assert "1 not designated" in site.summary  # type: ignore[attr-defined]
    # not a complete number, so To may name the number called
    [rec] = replay(site, tmp_path, call(call_id="sel-2", called=local, seed=8, start=T + 10).packets(), capsys)
    assert rec["call_id"] == "sel-2" and rec["did"] == "+81442003939"
