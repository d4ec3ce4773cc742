"""Regenerate the fixtures in this folder: each ``NAME.pcap`` with ``NAME.json`` (its expected results).

    python pcap_fixtures/make_fixtures.py            # write them
    python pcap_fixtures/make_fixtures.py --check    # exit 1 when a committed file differs

The JSON lists, for every call, whether it must be recorded and, if so, the SHA-256 and length of
each WAV channel a correct recorder writes, plus the counters the replay must show.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

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
        "loss-gap": (
            "An inbound call where 5 caller packets are lost in the network: the gap is silence, the rest in place.",
            [(SipCall("call-loss-1@203.0.113.5", "sip:0448563113@192.0.2.10", "sip:0448563113@192.0.2.10",
                      "09011112222", T, seed=61, lose=(20, 21, 22, 23, 50)), "0448563113")],
        ),
    }


PBX_SIDE = ("192.0.2.10", 5060)
TRUNK_SIDE = ("203.0.113.5", 5060)


def demo_calls() -> list[tuple[SipCall, str | None]]:
    """The demo capture for ``make run``: a morning's mix at the contact centre."""
    calls: list[tuple[SipCall, str | None]] = []
    for name, (_, entries) in fixtures().items():
        offset = len(calls) * 20.0
        for call, number in entries:
            call = dataclasses.replace(call, start=call.start + offset)
            calls.append((call, number))
    return calls


def build(name: str, description: str, entries: list[tuple[SipCall, str | None]], folder: str) -> None:
    packets = []
    recordings, not_recorded = [], []
    for call, number in entries:
        packets += call.packets()
        if number is None:
            not_recorded.append(call.call_id)
        else:
            recordings.append(designated(call, number))
    count = write_pcap(os.path.join(folder, name + ".pcap"), packets)
    expected = {
        "description": description,
        "packets": count,
        "recordings": sorted(recordings, key=lambda r: r["call_id"]),
        "not_recorded": sorted(not_recorded),
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
