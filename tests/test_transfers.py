"""Transfers (capture/transfer.py): the caller of a recorded call goes on being recorded, as the
next part of the same conversation; a call received on another number and transferred to a
designated one is not recorded; nothing is matched by the caller's number alone."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import FIXTURES, Site, public_capture
from test_legs import replay, write

from capture.call import conversation_token


def test_a_blind_transfer_is_the_next_part_of_the_conversation() -> None:
    pipeline, sink = replay(FIXTURES / "transfer-blind.pcap")
    first, second = sink.ended["xfer-blind-1@203.0.113.5"].info, sink.ended["xfer-blind-2@203.0.113.5"].info
    assert (first.part, first.part_reason) == (1, "") and len(first.conversation) == 16  # its own token
    assert first.conversation != conversation_token(first.call_id, 0.0, first.did)  # (of its INVITE's time too)
    assert (second.conversation, second.part, second.part_reason) == (first.conversation, 2, "transfer")
    # called 2001 (an extension), kept under the number the caller dialled, with the same caller
    assert (second.did, second.did_label, second.caller) == (first.did, first.did_label, first.caller)
    assert pipeline.counters["calls_transferred"] == 1 and pipeline.counters["calls_designated"] == 1


def test_an_attended_transfer_follows_the_replaces() -> None:
    pipeline, sink = replay(FIXTURES / "transfer-attended.pcap")
    assert sorted(sink.ended) == ["xfer-attended-1@203.0.113.5", "xfer-attended-2@203.0.113.5"]  # not the consultation
    second = sink.ended["xfer-attended-2@203.0.113.5"].info
    first = sink.ended["xfer-attended-1@203.0.113.5"].info
    assert (second.conversation, second.part) == (first.conversation, 2)


def test_the_parts_are_listed_together(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert site.replay(FIXTURES / "transfer-blind.pcap") == 0
    recs = site.list(capsys)
    assert [(r["call_id"], r["part"], r["parts"]) for r in recs] == [
        ("xfer-blind-1@203.0.113.5", 1, 2), ("xfer-blind-2@203.0.113.5", 2, 2)]
    assert recs[0]["conversation"] == recs[1]["conversation"]


def _blind(**changes: object):  # type: ignore[no-untyped-def]
    import fx_transfers

    first = fx_transfers.designated_call("t-blind-1@203.0.113.5", "09012349999", fx_transfers.T, 181,
                                         refer_to="sip:2001@192.0.2.10")
    second = fx_transfers.transferred(first, "t-blind-2@203.0.113.5", "2001", 182,
                                      ("Referred-By: <sip:operator@192.0.2.10>",))
    return first, dataclasses.replace(second, **changes)


def test_a_new_invite_to_another_extension_is_not_the_transfer(tmp_path: Path) -> None:
    """Same caller, from the address the REFER went to, at the right time, but not to the Refer-To
    target: not matched (never by the caller alone), and 2009 is not designated."""
    first, second = _blind(called="sip:2009@192.0.2.10", to="sip:2009@192.0.2.10")
    pipeline, sink = replay(write(tmp_path, [first, second]))
    assert sorted(sink.ended) == ["t-blind-1@203.0.113.5"]
    assert pipeline.counters["calls_transferred"] == 0 and pipeline.counters["calls_not_designated"] == 1


def test_the_invite_long_after_the_refer_is_not_the_transfer(tmp_path: Path) -> None:
    first, second = _blind()
    second = dataclasses.replace(second, start=second.start + 40.0)
    pipeline, sink = replay(write(tmp_path, [first, second]))
    assert sorted(sink.ended) == ["t-blind-1@203.0.113.5"]


def test_a_refer_sent_by_the_caller_is_not_followed(tmp_path: Path) -> None:
    """The caller transferring the operator away leaves the caller's conversation: the operator's
    new call is not the caller's."""
    import fx_transfers

    @dataclasses.dataclass
    class CallerRefers(fx_transfers.Part):
        def messages(self):  # type: ignore[no-untyped-def]
            out = []
            for t, forward, data in super().messages():
                if data.startswith(b"REFER "):  # the same REFER, from the caller's side
                    data = self._message("REFER sip:pbx@192.0.2.10 SIP/2.0", "4 REFER", to_tag=True,
                                         extra=("Refer-To: <sip:2001@192.0.2.10>",))
                    forward = True
                out.append((t, forward, data))
            return out

    first, second = _blind()
    first = CallerRefers(**{f.name: getattr(first, f.name) for f in dataclasses.fields(fx_transfers.Part)})
    # the operator's side then calls 2001 from the PBX's address (its own new call)
    second = dataclasses.replace(second, sip_src=("192.0.2.10", 5060), sip_dst=("192.0.2.31", 5060))
    pipeline, sink = replay(write(tmp_path, [first, second]))
    assert sorted(sink.ended) == ["t-blind-1@203.0.113.5"]
    assert pipeline.counters["calls_transferred"] == 0


def test_a_call_transferred_in_from_a_number_not_designated_is_not_recorded() -> None:
    pipeline, sink = replay(FIXTURES / "transfer-in-not-designated.pcap")
    assert sink.ended == {}
    assert pipeline.counters["calls_transferred_in"] == 1


def test_a_long_call_not_designated_transferred_in_is_not_recorded(tmp_path: Path) -> None:
    """The REFER comes 100 s into a call to a number that is not designated (long after its INVITE
    was forgotten): the call it makes to 044-200-3939 is still one received elsewhere."""
    import fx_transfers

    elsewhere = fx_transfers.Part("t-in-1@203.0.113.5", "sip:0449999999@192.0.2.10", "sip:0449999999@192.0.2.10",
                                  "09012348888", fx_transfers.T, talk=101.0, refer_at=100.0, seed=187,
                                  refer_to="sip:0442003939@192.0.2.10")
    second = fx_transfers.Part("t-in-2@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                               "09012348888", elsewhere.refer_time + 0.1, seed=188,
                               extra_headers=("Referred-By: <sip:operator@192.0.2.10>",))
    pipeline, sink = replay(write(tmp_path, [elsewhere, second]))
    assert sink.ended == {} and pipeline.counters["calls_transferred_in"] == 1


def test_a_referred_by_alone_does_not_stop_a_designated_call(tmp_path: Path) -> None:
    """A call transferred to 044-200-3939 on another system (no REFER on this mirror) arrives on
    the designated number: it is recorded."""
    import fx_transfers

    call = fx_transfers.designated_call("t-ext-1@203.0.113.5", "09012347777", fx_transfers.T, 189,
                                        extra_headers=("Referred-By: <sip:someone@198.51.100.77>",))
    pipeline, sink = replay(write(tmp_path, [call]))
    assert sorted(sink.ended) == ["t-ext-1@203.0.113.5"] and pipeline.counters["calls_transferred_in"] == 0


def test_the_public_refer_transfer_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """refer-transfer-g711u-dtmf.pcap: 201's call to the auto attendant (user 0) is answered and transferred with REFER (Refer-To 204); 201 then
    calls 204 with Referred-By. With 204 and 201 designated, recorderd sees the REFER in a dialog
    it does not record, and the transferred call is one received on another number: nothing is
    recorded, the call counted in calls_transferred_in."""
    path = public_capture("refer-transfer-g711u-dtmf.pcap")
    site = Site(tmp_path, [{"number": u, "label": f"test-{u}", "kind": "user"} for u in ("204", "201")]).init()
    assert site.replay(path) == 0
    assert site.list(capsys) == []
    dids = tmp_path / "refer-dids.yaml"
    dids.write_text('dids:\n  - {number: "204", label: "t", kind: "user"}\n  - {number: "201", label: "u", kind: "user"}\n',
                    encoding="utf-8")
    pipeline, sink = replay(path, dids)
    assert sink.ended == {} and pipeline.counters["calls_transferred_in"] == 1
    assert pipeline.counters["sip_messages"] > 0 and pipeline.counters["sip_malformed"] == 0


def test_the_transferred_part_of_a_recorded_call_in_the_public_capture(tmp_path: Path) -> None:
    """The same capture with the auto attendant's user (0, the first call's Request-URI and To)
    designated: the transferred call to 204 becomes its part 2, under its number."""
    path = public_capture("refer-transfer-g711u-dtmf.pcap")
    dids = tmp_path / "dids.yaml"
    dids.write_text('dids:\n  - {number: "0", label: "t", kind: "user"}\n', encoding="utf-8")
    pipeline, sink = replay(path, dids)
    first = sink.ended["673b0437-dc3f99dd-699f99a7-92fd8066@192.168.5.10"].info
    second = sink.ended["f49fa0af-e84c7379-6649d13e-60bbc1c9@192.168.5.10"].info
    assert (first.part, second.conversation, second.part, second.part_reason) == (1, first.conversation, 2, "transfer")
    assert (second.did, second.caller) == (first.did, first.caller)
    assert pipeline.counters["calls_transferred"] == 1


def test_a_second_callers_invite_just_after_the_refer_is_not_the_transfer(tmp_path: Path) -> None:
    """The REFER went to the carrier trunk, from which every inbound INVITE comes: another caller's
    INVITE to the same extension 50 ms after the REFER (before the transferred caller's) is not the
    transfer and is not filed under the first caller's number; the real one still is."""
    import fx_transfers

    first, second = _blind()
    other = fx_transfers.Part("t-other-1@203.0.113.5", "sip:2001@192.0.2.10", "sip:2001@192.0.2.10", "08099998888",
                              first.refer_time + 0.05, caller_media=("203.0.113.20", 43000),
                              pbx_media=("192.0.2.32", 23000), seed=190)
    assert other.sip_src == first.sip_src  # the same trunk address the REFER went to
    pipeline, sink = replay(write(tmp_path, [first, other, second]))
    assert sorted(sink.ended) == ["t-blind-1@203.0.113.5", "t-blind-2@203.0.113.5"]
    part = sink.ended["t-blind-2@203.0.113.5"].info
    conversation = sink.ended["t-blind-1@203.0.113.5"].info.conversation
    assert (part.conversation, part.part, part.caller) == (conversation, 2, "09012349999")
    assert pipeline.counters["calls_transferred"] == 1 and pipeline.counters["calls_not_designated"] == 1
    assert all(h.info.caller != "08099998888" for h in sink.ended.values())


def test_a_replaces_naming_a_recorded_call_from_another_caller_is_not_its_part(tmp_path: Path) -> None:
    """A Replaces naming the recorded dialog, but another caller in From: not the transfer (the new
    call would have been filed under the recorded caller's number); 2001 is not designated."""
    first, second = _blind(caller="08077776666", extra_headers=("Replaces: t-blind-1@203.0.113.5;to-tag=x;from-tag=y",))
    first = dataclasses.replace(first, refer_to="")
    pipeline, sink = replay(write(tmp_path, [first, second]))
    assert sorted(sink.ended) == ["t-blind-1@203.0.113.5"]
    assert pipeline.counters["calls_transferred"] == 0 and pipeline.counters["calls_not_designated"] == 1


def _forged_refer(at: float, target: str, call_id: str = "forged-1@198.51.100.66",
                  src: str = "198.51.100.66", dst: str = "203.0.113.5") -> tuple[float, bytes]:
    from frames import udp_frame

    refer = (f"REFER sip:x@{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bKforged\r\n"
             f"From: <sip:a@{src}>;tag=f1\r\nTo: <sip:b@{dst}>;tag=t1\r\nCall-ID: {call_id}\r\n"
             f"CSeq: 1 REFER\r\nRefer-To: <sip:{target}@192.0.2.10>\r\nContact: <sip:a@{src}>\r\n"
             "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    return at, udp_frame(src, 5060, dst, 5060, refer)


def test_a_forged_refer_in_a_dialog_never_seen_does_not_stop_a_designated_call(tmp_path: Path) -> None:
    """One REFER in a dialog no one saw (Refer-To the designated number, addressed to the trunk)
    before a designated call that was transferred on another system (Referred-By): the call is
    recorded. Only a REFER in a dialog seen and ignored as not designated makes a call transferred in."""
    import fx_transfers
    from frames import write_pcap

    real = fx_transfers.designated_call("t-xin-1@203.0.113.5", "09012347777", fx_transfers.T + 10, 191,
                                        extra_headers=("Referred-By: <sip:operator@other-system.example>",))
    forged = [_forged_refer(real.start - 10.0, "0442003939")]  # its dialog never seen; sent to the trunk
    path = tmp_path / "capture.pcap"
    write_pcap(str(path), sorted(real.packets() + forged, key=lambda p: p[0]))
    pipeline, sink = replay(path)
    assert sorted(sink.ended) == ["t-xin-1@203.0.113.5"]
    assert pipeline.counters["calls_transferred_in"] == 0 and pipeline.counters["calls_designated"] == 1


def test_a_refer_from_outside_a_dialog_not_designated_changes_nothing(tmp_path: Path) -> None:
    """A dialog seen and ignored as not designated, but the REFER naming its Call-ID comes from a
    third address: not that dialog's transfer; the designated call with Referred-By is recorded."""
    import fx_transfers
    from frames import write_pcap

    elsewhere = fx_transfers.Part("t-in-1@203.0.113.5", "sip:0449999999@192.0.2.10", "sip:0449999999@192.0.2.10",
                                  "09012348888", fx_transfers.T, seed=192)
    second = fx_transfers.Part("t-in-2@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                               "09012348888", fx_transfers.T + 2.0, seed=193,
                               extra_headers=("Referred-By: <sip:operator@192.0.2.10>",))
    forged = _forged_refer(fx_transfers.T + 1.9, "0442003939", "t-in-1@203.0.113.5", "198.51.100.66", "203.0.113.5")
    path = tmp_path / "capture.pcap"
    write_pcap(str(path), sorted(elsewhere.packets() + second.packets() + [forged], key=lambda p: p[0]))
    pipeline, sink = replay(path)
    assert sorted(sink.ended) == ["t-in-2@203.0.113.5"] and pipeline.counters["calls_transferred_in"] == 0


def test_a_call_transferred_in_is_one_of_the_same_caller(tmp_path: Path) -> None:
    """A call not designated is transferred to 044-200-3939 (REFER in its dialog), but the INVITE
    that comes to 044-200-3939 just after, with Referred-By, is another caller's: it is recorded."""
    import fx_transfers

    elsewhere = fx_transfers.Part("t-in-1@203.0.113.5", "sip:0449999999@192.0.2.10", "sip:0449999999@192.0.2.10",
                                  "09012348888", fx_transfers.T, seed=194, refer_to="sip:0442003939@192.0.2.10")
    second = fx_transfers.Part("t-in-2@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                               "09055554444", elsewhere.refer_time + 0.1, seed=195,
                               extra_headers=("Referred-By: <sip:operator@192.0.2.10>",))
    pipeline, sink = replay(write(tmp_path, [elsewhere, second]))
    assert sorted(sink.ended) == ["t-in-2@203.0.113.5"] and pipeline.counters["calls_transferred_in"] == 0


def test_a_transfer_to_an_outside_number_is_not_followed(tmp_path: Path) -> None:
    """The operator transfers the caller to a mobile (a complete number, not designated): the
    caller's conversation with a third party is not recorded; the REFER (sent twice) is counted once."""
    import fx_transfers

    first = fx_transfers.designated_call("t-out-1@203.0.113.5", "09012346666", fx_transfers.T, 196,
                                         refer_to="sip:09011112222@192.0.2.10")
    again = dataclasses.replace(first, refer_at=first.refer_at + 0.5)  # the REFER retransmitted
    second = fx_transfers.transferred(first, "t-out-2@203.0.113.5", "09011112222", 197,
                                      ("Referred-By: <sip:operator@192.0.2.10>",))
    from frames import write_pcap

    refers = [p for p in again.packets() if b"REFER sip:" in p[1] and p[0] >= again.refer_time]
    path = tmp_path / "capture.pcap"
    write_pcap(str(path), sorted(first.packets() + refers + second.packets(), key=lambda p: p[0]))
    pipeline, sink = replay(path)
    assert sorted(sink.ended) == ["t-out-1@203.0.113.5"]
    assert pipeline.counters["calls_transfer_not_followed"] == 1 and pipeline.counters["calls_transferred"] == 0
    assert pipeline.counters["calls_not_designated"] == 1


def test_a_transfer_to_another_designated_number_is_followed(tmp_path: Path) -> None:
    """A complete number that is designated (044-200-2111, the city hall) is inside: the caller's
    call there is the conversation's part 2, under the number first called."""
    import fx_transfers

    first = fx_transfers.designated_call("t-in-city-1@203.0.113.5", "09012345555", fx_transfers.T, 198,
                                         refer_to="sip:+81442002111@192.0.2.10")
    second = fx_transfers.transferred(first, "t-in-city-2@203.0.113.5", "0442002111", 199,
                                      ("Referred-By: <sip:operator@192.0.2.10>",))
    pipeline, sink = replay(write(tmp_path, [first, second]))
    part = sink.ended["t-in-city-2@203.0.113.5"].info
    assert (part.part, part.part_reason, part.did) == (2, "transfer", sink.ended["t-in-city-1@203.0.113.5"].info.did)
    assert pipeline.counters["calls_transfer_not_followed"] == 0 and pipeline.counters["calls_designated"] == 1


def test_the_replay_summary_counts_calls_transferred_in(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """Every call seen is in some bucket of recorderd replay's summary: the transferred-in one too."""
    capsys.readouterr()
    assert site.replay(FIXTURES / "transfer-in-not-designated.pcap") == 0
    out = capsys.readouterr().out
    assert "0 recorded" in out and "1 not designated" in out and "1 transferred in" in out
