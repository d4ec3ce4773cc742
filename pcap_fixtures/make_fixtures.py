"""Regenerate the fixtures in this folder: each ``NAME.pcap`` with ``NAME.json`` (its expected results).

    python pcap_fixtures/make_fixtures.py            # write them
    python pcap_fixtures/make_fixtures.py --check    # exit 1 when a committed file differs

The JSON lists, for every call, whether it must be recorded and, if so, the SHA-256 and length of
each WAV channel a correct recorder writes, plus the counters the replay must show.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from generator import SipCall, write_pcap  # noqa: E402

from recorderd.config import load_dids  # noqa: E402

DIDS = load_dids(os.path.join(os.path.dirname(HERE), "config", "dids.yaml"))
T = 1_790_000_000.0  # 2026-09-21 23:13:20 JST: a fixed, arbitrary day


def designated(call: SipCall, number: str) -> dict:
    did = DIDS.match(number)
    assert did is not None, number
    return call.expected_recording(did.key, did.label)


def fixtures() -> dict[str, tuple[str, list[tuple[SipCall, str | None]]]]:
    """name -> (description, [(call, designated number or None when it must not be recorded)])."""
    return {
        "inbound-mulaw": (
            "One inbound call to 044-200-3939 (national form in the Request-URI), G.711 mu-law both ways, BYE.",
            [(SipCall("call-mulaw-1@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                      "09011112222", T, seed=11), "0442003939")],
        ),
        "inbound-e164": (
            "An inbound call to the city hall main line signalled in E.164 with user=phone, To as a tel: URI.",
            [(SipCall("call-e164-1@203.0.113.5", "sip:+81442002111@192.0.2.10;user=phone", "tel:+81-44-200-2111",
                      "+819033334444", T, seed=12), "+81442002111")],
        ),
        "inbound-alaw": (
            "An inbound call to the Kawasaki ward office (044-201-3113 written with separators), G.711 A-law.",
            [(SipCall("call-alaw-1@203.0.113.5", "sip:044-201-3113@192.0.2.10;user=phone", "sip:044-201-3113@192.0.2.10",
                      "0311112222", T, codec="PCMA", seed=13), "0442013113")],
        ),
        "not-designated": (
            "Calls to numbers that are not designated, including near misses (one digit less, one digit more, "
            "one digit different): nothing may be recorded.",
            [
                (SipCall("call-other-1@203.0.113.5", "sip:0442003938@192.0.2.10", "sip:0442003938@192.0.2.10",
                         "09011112222", T, seed=21), None),
                (SipCall("call-other-2@203.0.113.5", "sip:044200393@192.0.2.10", "sip:044200393@192.0.2.10",
                         "09011112222", T + 5, seed=22, caller_media=("203.0.113.21", 40002)), None),
                (SipCall("call-other-3@203.0.113.5", "sip:04420039390@192.0.2.10", "sip:04420039390@192.0.2.10",
                         "09011112222", T + 10, seed=23, caller_media=("203.0.113.22", 40004)), None),
            ],
        ),
        "outbound-presenting-did": (
            "An outbound call from the contact centre presenting 044-200-3939 as caller ID to a citizen's mobile: "
            "the called number is not designated, so nothing is recorded.",
            [(SipCall("call-out-1@192.0.2.10", "sip:09055556666@203.0.113.5", "sip:09055556666@203.0.113.5",
                      "0442003939", T, seed=31, sip_src=PBX_SIDE, sip_dst=TRUNK_SIDE), None)],
        ),
        "overlapping": (
            "Two inbound calls to two designated numbers that overlap in time, on different media ports.",
            [
                (SipCall("call-ovl-1@203.0.113.5", "sip:0445566666@192.0.2.10", "sip:0445566666@192.0.2.10",
                         "09077778888", T, talk=4.0, seed=41), "0445566666"),
                (SipCall("call-ovl-2@203.0.113.5", "sip:0449655100@192.0.2.10", "sip:0449655100@192.0.2.10",
                         "0451234567", T + 1.3, talk=3.0, seed=42, caller_media=("203.0.113.23", 40010),
                         pbx_media=("192.0.2.20", 20010)), "0449655100"),
            ],
        ),
        "cancelled": (
            "An inbound call to a designated number that the caller hangs up while it rings (CANCEL, 487), and one "
            "the contact centre rejects (486): unanswered calls without media are not recorded.",
            [
                (SipCall("call-cancel-1@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                         "09011112222", T, ring=3.0, outcome="cancel", seed=51), None),
                (SipCall("call-busy-1@203.0.113.5", "sip:0442003939@192.0.2.10", "sip:0442003939@192.0.2.10",
                         "09011112222", T + 5, ring=1.0, outcome="rejected", seed=52), None),
            ],
        ),
        "fragmented-invite": (
            "An inbound call whose INVITE (and other large SIP messages) arrive as IPv4 fragments, last first.",
            [(call("call-frag-1", "0442003939", seed=71, fragment=256), "0442003939")],
        ),
        "qinq": (
            "An inbound call on a SPAN port that delivers QinQ-tagged frames (802.1ad outer, 802.1Q inner).",
            [(call("call-qinq-1", "0442002111", seed=72, tags=(0x88A8, 0x8100)), "0442002111")],
        ),
        "ipv6": (
            "An inbound call entirely over IPv6 (SIP and RTP), SDP with c=IN IP6.",
            [(call("call-v6-1", "0442013113", seed=73, sip_src=("2001:db8:5::5", 5060), sip_dst=("2001:db8:10::10", 5060),
                   caller_media=("2001:db8:5::20", 40000), pbx_media=("2001:db8:10::20", 20000)), "0442013113")],
        ),
        "tcp-split": (
            "An inbound call signalled over TCP, every SIP message split over 200-byte segments; the PBX's "
            "sequence numbers wrap past 2^32.",
            [(call("call-tcp-1", "0442710130", seed=74, transport="tcp", tcp_segment=200,
                   sip_src=("203.0.113.5", 50074)), "0442710130")],
        ),
        "tcp-coalesced": (
            "An inbound call signalled over TCP where consecutive messages of one side (100, 180, 200) share a segment.",
            [(call("call-tcp-2", "0443221960", seed=75, transport="tcp", coalesce=True,
                   sip_src=("203.0.113.5", 50075)), "0443221960")],
        ),
        "hold": (
            "An inbound call put on hold by the PBX (re-INVITE sendonly) for 5 s, no media during the hold, "
            "then resumed; the caller's phone resumes with its timestamp where it stopped. The hold is silence.",
            [(call("call-hold-1", "0445566666", seed=76, talk=3.0, hold=(1.0, 5.0)), "0445566666")],
        ),
        "nat": (
            "A caller behind NAT: its SDP shows 10.0.0.5, its RTP comes from the public address and the PBX "
            "answers there. Both directions are recorded.",
            [(call("call-nat-1", "0447443113", seed=77, nat_private="10.0.0.5"), "0447443113")],
        ),
        "ssrc-change": (
            "The caller's stream changes SSRC (and sequence/timestamp base) mid-call; the audio stays in place.",
            [(call("call-ssrc-1", "0448613113", seed=78, ssrc_change_at=60), "0448613113")],
        ),
        "wrap-around": (
            "The caller's RTP sequence number and timestamp wrap around (65535 -> 0, 2^32 -> 0) mid-call.",
            [(call("call-wrap-1", "0449353113", seed=79, seq_start=65500, ts_start=0xFFFFF000), "0449353113")],
        ),
        "loss-reorder": (
            "Caller packets lost, reordered and duplicated in the network: each lands in its place, the gap is silence.",
            [(call("call-lr-1", "0449655100", seed=80, lose=(30, 31), reorder=((10, 11), (40, 42)), duplicate=(20,)),
              "0449655100")],
        ),
        "b2bua": (
            "The PBX is a B2BUA: the trunk leg to the DID, then its own leg (another Call-ID, same caller, To "
            "still the DID) to the operator's phone. One conversation, one recording.",
            [(call("call-b2bua-1", "0442003939", seed=81, b2bua=True), "0442003939")],
        ),
        "forking": (
            "Forking: two early dialogs (180 with two To-tags), the second answers.",
            [(call("call-fork-1", "0442002111", seed=82, forking=True), "0442002111")],
        ),
        "dtmf": (
            "An inbound call where the caller keys 1 and # (RFC 4733 events): kept as events, not mixed into the audio.",
            [(call("call-dtmf-1", "0442003939", seed=83, dtmf=((50, "1"), (90, "#"))), "0442003939")],
        ),
        "multipart-sdp": (
            "An INVITE whose SDP travels in a multipart/mixed body beside an ISUP part (SIP-I trunks).",
            [(call("call-mp-1", "0442013113", seed=84, multipart=True), "0442013113")],
        ),
        "g722": (
            "An HD-voice inbound call in G.722: decoded to a 16-bit PCM WAV at 16 kHz (transcoded), placed by timestamp.",
            [(call("call-g722-1", "0442002111", seed=86, codec="G722"), "0442002111")],
        ),
        "g729": (
            "An inbound call in G.729, which cannot be decoded here: recorded as its original RTP (evidence pcap).",
            [(call("call-g729-1", "0442003939", seed=87, codec="G729"), "0442003939")],
        ),
        "srtp-offer": (
            "An inbound designated call negotiating SRTP (RTP/SAVP, a=crypto): its media cannot be decrypted "
            "passively, so it is not recorded, and that is counted and said.",
            [(call("call-srtp-1", "0442003939", seed=85, srtp=True), None)],
        ),
        "rtp-foreign-source": (
            "An inbound call whose media endpoints are flooded with RTP from an address not in the call, half of "
            "it with the sender's SSRC spoofed: dropped and counted, the WAV is the clean call's.",
            [(call("call-foreign-1", "0442003939", seed=88, flood=300), "0442003939")],
        ),
        "loss-gap": (
            "An inbound call where 5 caller packets are lost in the network: the gap is silence, the rest in place.",
            [(SipCall("call-loss-1@203.0.113.5", "sip:0448563113@192.0.2.10", "sip:0448563113@192.0.2.10",
                      "09011112222", T, seed=61, lose=(20, 21, 22, 23, 50)), "0448563113")],
        ),
    }


def call(call_id: str, number: str, **options: object) -> SipCall:
    """An inbound call from the trunk to ``number`` at the PBX, 3 s of audio each way."""
    return SipCall(call_id + "@203.0.113.5", f"sip:{number}@192.0.2.10", f"sip:{number}@192.0.2.10", "09011112222",
                   T, **options)  # type: ignore[arg-type]


PBX_SIDE = ("192.0.2.10", 5060)
TRUNK_SIDE = ("203.0.113.5", 5060)


# Counters the replay must show for a fixture (besides its recordings).
COUNTERS = {
    "b2bua": {"calls_second_leg": 1, "calls_recorded": 1},
    "srtp-offer": {"srtp_media": 2, "calls_codec_unsupported": 1, "calls_recorded": 0},
    "nat": {"media_source_learned": 1},
    "rtp-foreign-source": {"rtp_other_source": 600, "calls_recorded": 1},
}
NOT_IN_DEMO = ("rtp-foreign-source",)  # a flood is not a morning's mix


def derived_counters(name: str, entries: list[tuple[SipCall, str | None]]) -> dict[str, int]:
    """Counters that follow from what the generator sent (every SIP message must come through)."""
    counters = dict(COUNTERS.get(name, {}))
    calls = [c for c, _ in entries]
    if any(c.transport == "tcp" for c in calls):
        counters["tcp_messages"] = sum(len(c.messages()) for c in calls if c.transport == "tcp")
    if any(c.fragment for c in calls):
        counters["fragments_reassembled"] = sum(len(m) + 8 > c.fragment for c in calls if c.fragment for _, _, m in c.messages())
    return counters


def demo_calls() -> list[tuple[SipCall, str | None]]:
    """The demo capture for ``make run``: a morning's mix at the contact centre."""
    calls: list[tuple[SipCall, str | None]] = []
    for name, (_, entries) in fixtures().items():
        if name in NOT_IN_DEMO:
            continue
        offset = len(calls) * 20.0
        for call, number in entries:
            call = dataclasses.replace(call, start=call.start + offset)
            calls.append((call, number))
    return calls


# A fixture from a topic module (``fx_*.py`` beside this file, each with a ``FIXTURES`` dict of
# name -> TopicFixture): its calls, an optional ``transform`` of the whole packet list (wrap it in an
# encapsulation, duplicate or cut frames, ...) and the counters the replay must show. A call is any
# object with SipCall's ``packets()``, ``expected_recording(did, label)``, ``call_id``, ``transport``
# and ``fragment``. Topic fixtures are not part of the demo day.
@dataclasses.dataclass(frozen=True)
class TopicFixture:
    description: str
    entries: list[tuple[SipCall, str | None]]
    transform: Callable[[list[tuple[float, bytes]]], list[tuple[float, bytes]]] | None = None
    counters: dict[str, int] = dataclasses.field(default_factory=dict)


def topic_fixtures() -> dict[str, TopicFixture]:
    found: dict[str, TopicFixture] = {}
    for path in sorted(glob.glob(os.path.join(HERE, "fx_*.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        for name, fixture in module.FIXTURES.items():
            assert name not in found and name not in fixtures(), f"fixture {name} defined twice"
            found[name] = fixture
    return found


def build(name: str, description: str, entries: list[tuple[SipCall, str | None]], folder: str,
          topic: TopicFixture | None = None) -> None:
    packets = []
    recordings, not_recorded = [], []
    for call, number in entries:
        packets += call.packets()
        if number is None:
            not_recorded.append(call.call_id)
        else:
            recordings.append(designated(call, number))
    counters = derived_counters(name, entries)
    if topic is not None:
        if topic.transform is not None:
            packets = topic.transform(sorted(packets, key=lambda p: p[0]))
        counters.update(topic.counters)
    count = write_pcap(os.path.join(folder, name + ".pcap"), packets)
    expected = {
        "description": description,
        "packets": count,
        "recordings": sorted(recordings, key=lambda r: r["call_id"]),
        "not_recorded": sorted(not_recorded),
        "counters": counters,
    }
    with open(os.path.join(folder, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=2)
        f.write("\n")


def build_all(folder: str) -> list[str]:
    names = []
    for name, (description, entries) in fixtures().items():
        build(name, description, entries, folder)
        names.append(name)
    build("demo-day", "The make-run demo: every fixture's calls one after another.", demo_calls(), folder)
    for name, topic in topic_fixtures().items():
        build(name, topic.description, topic.entries, folder, topic)
        names.append(name)
    return names + ["demo-day"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args()
    if not args.check:
        names = build_all(HERE)
        print(f"wrote {len(names)} fixtures to {HERE}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        differ = []
        for name in build_all(tmp):
            for ext in (".pcap", ".json"):
                with open(os.path.join(tmp, name + ext), "rb") as a, open(os.path.join(HERE, name + ext), "rb") as b:
                    if a.read() != b.read():
                        differ.append(name + ext)
    for name in differ:
        print(f"differs from the generator: {name}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
