"""Real-world captures (../shared/pcaps/public): every one replays cleanly, and the G.711 audio of
the calls we record is confirmed packet by packet by Wireshark's dissectors (tshark, pyshark).

Each file's called users are designated in the test's DID list, so each SIP call with audio is a
call recorderd must record. Skips when the folder or tshark is absent."""
from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import PUBLIC, Site, needs_tool, public_capture

from capture.decode import decode_udp
from capture.sip import SipMessage, looks_like_sip
from capture.source import CaptureFile
from storage.wav import channel_bytes, read_info

pytestmark = pytest.mark.integration

# The called users of the calls in MANIFEST.md, designated for these tests.
CALLED_USERS = [
    "test", "francisco", "061963177", "4321", "97239287044", "101", "1111", "telephone2", "2301",
    "telephone1", "84254978362", "204", "1002", "79108", "201", "service", "08019200028",
]

# The signalled G.711 streams (SSRCs) each capture carries, which must end up in a recording.
# refer-transfer-g711u-dtmf.pcap is absent on purpose: its answered call is to the auto attendant
# (user 0, not designated here) and transferred with REFER; the call to 204 that follows (Referred-By)
# is one received on another number, not recorded (tests/test_transfers.py).
G711_STREAMS = {
    "asterisk-reinvite-g711u.pcapng": {0x3ADF0949, 0x5A95A557},
    "fax-t38-reinvite.pcap": {0x0EAF0EAF, 0x17D90134},  # an SBC's two faces: one recording (tests/test_legs.py)
    "forking-cancel-g711u.pcap": {0x3C261D4B, 0xE2521B79},
    "g711u-proxy-simple.pcapng": {0x998E0300, 0x1AAFF501},
    "pbx-2leg-g711u-8min.pcap": {0x054F45C9, 0xF3271435},
    "sip-call-g711a-rtcp.pcap": {0xD2BD4E3E, 0x58F33DEA},
    "sip-tcp-g711a-cn.pcap": {0x42F433D4, 0x5A3361B3},  # SIP over TCP, comfort noise
    "sip-tcp-g711a-dtmf-nat.pcap": {0x93451AB2, 0x421970FE},  # SIP over TCP, RFC 2833 DTMF
}
ALL = sorted(p.name for p in PUBLIC.glob("*.pcap*")) if PUBLIC.exists() else ["(absent)"]


def designate_all(tmp: Path) -> Site:
    return Site(tmp, [{"number": u, "label": f"test-{u}", "kind": "user"} for u in CALLED_USERS]).init()


# Calls whose audio is not G.711: (codec, how it is kept, WAV rate) of each recording with media.
OTHER_CODECS = {
    "ws-sip-rtp-g729a.pcap": [("G729", "not-decoded", 0)],
    "ws-sip-rtp-l16.pcap": [("L16", "transcoded", 8000), ("L16", "transcoded", 16000),
                            ("L16", "transcoded", 11025), ("L16", "transcoded", 48000)],
    "g722-call-register-noise.pcapng": [("G722", "transcoded", 16000)],
    "opus-oneway-proxy.pcapng": [("OPUS", "transcoded", 48000)],
    "cisco-sip-tcp-opus-h264.pcap": [("OPUS", "transcoded", 48000)],
}


def stored(site: Site) -> list:  # type: ignore[type-arg]
    store = site.open_store()
    try:
        return [(row, b"".join(store.reading.plaintext(row)),
                 b"".join(store.reading.plaintext(row, pcap=True)) if row.pcap_path else b"")
                for row in store.reading.recordings()]
    finally:
        store.close()


@pytest.mark.parametrize("name", ALL)
def test_every_public_capture_replays_cleanly(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = public_capture(name)
    site = designate_all(tmp_path)
    assert site.replay(path) == 0
    assert site.spool_files() == []
    for row, main, pcap in stored(site):
        if pcap:  # the evidence pcap reads back as a capture of the call's frames
            evidence = tmp_path / f"{row.id}.pcap"
            evidence.write_bytes(pcap)
            with CaptureFile(evidence) as source:
                assert sum(len(b) for b in source.batches()) > 0
        if row.audio == "not-decoded":
            assert main == pcap
            continue
        info = read_info(main)
        assert (info.channels, info.rate, info.frames) == (2, row.rate, row.frames)
        assert len(main) == info.data_offset + 2 * info.width * info.frames
    with_media = sorted((r.codec, r.audio, r.rate) for r, _, _ in stored(site) if any(s["packets"] for s in r.streams))
    if name in OTHER_CODECS:
        assert with_media == sorted(OTHER_CODECS[name])
    else:
        assert all(codec in ("PCMU", "PCMA") and audio == "exact" for codec, audio, _ in with_media)


def tshark_rtp(path: Path) -> dict[int, list[tuple[int, int, int, bytes]]]:
    """ssrc -> [(seq, timestamp, payload type, payload)] as Wireshark decodes them. RTP is found
    heuristically too, and T.38 is off: in fax-t38-reinvite the T.38 re-INVITEs are refused (488)
    and the audio goes on as RTP, which the SDP-following T.38 dissector would mislabel."""
    out = subprocess.run(
        [needs_tool("tshark"), "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "--disable-protocol", "t38",
         "-Y", "rtp && !icmp", "-T", "fields", "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.timestamp",
         "-e", "rtp.p_type", "-e", "rtp.payload"],
        capture_output=True, text=True, check=True,
    ).stdout
    streams: dict[int, list[tuple[int, int, int, bytes]]] = defaultdict(list)
    for line in out.splitlines():
        ssrc, seq, ts, pt, payload = (line.split("\t") + [""] * 5)[:5]
        if ssrc and seq:
            streams[int(ssrc, 16)].append((int(seq), int(ts), int(pt), bytes.fromhex(payload.replace(":", ""))))
    return streams


@pytest.mark.parametrize("name", sorted(G711_STREAMS))
def test_g711_payloads_confirmed_by_tshark(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = public_capture(name)
    site = designate_all(tmp_path)
    assert site.replay(path) == 0
    wireshark = tshark_rtp(path)
    covered: set[int] = set()
    for rec in site.list(capsys):
        data = site.wav_bytes(rec)
        pt_of_codec = {"PCMU": 0, "PCMA": 8}[rec["codec"]]
        for stream in rec["streams"]:
            if not stream["packets"]:
                continue
            channel = channel_bytes(data, stream["channel"])
            seen = set()
            for ssrc in stream["ssrcs"]:
                anchors = [(ts, pos) for s, ts, pos in stream["anchors"] if s == ssrc]
                for seq, ts, pt, payload in wireshark[ssrc]:
                    if pt != pt_of_codec:
                        continue
                    places = [pos + ((ts - ts0 + 2**31) % 2**32 - 2**31) for ts0, pos in anchors]
                    assert any(channel[p : p + len(payload)] == payload for p in places), (
                        f"{rec['id']} channel {stream['channel']}: SSRC {ssrc:#x} seq {seq} not at its place"
                    )
                    seen.add((ssrc, seq))
                covered.add(ssrc)
            assert len(seen) == stream["packets"], f"{rec['id']} channel {stream['channel']}"
    assert G711_STREAMS[name] <= covered


@pytest.mark.parametrize("name", ["g711u-proxy-simple.pcapng", "sngrep-aaa-cancel-auth.pcap",
                                  "forking-cancel-g711u.pcap", "asterisk-reinvite-g711u.pcapng",
                                  "sip-ipv6-udp.pcap"])
def test_sip_parsing_matches_pyshark(name: str) -> None:
    """Every SIP message over UDP: the same Call-ID, method or status, and CSeq as Wireshark's."""
    path = public_capture(name)
    needs_tool("tshark")
    pyshark = pytest.importorskip("pyshark")
    ours = []
    with CaptureFile(path) as source:
        for batch in source.batches():
            for _, linktype, frame in batch:
                udp = decode_udp(linktype, frame)
                if isinstance(udp, tuple) and looks_like_sip(udp[4]):
                    msg = SipMessage.parse(udp[4])
                    ours.append((msg.call_id, msg.method or str(msg.status), "{} {}".format(*msg.cseq)))
    # pyshark runs tshark from the main thread's asyncio loop; a test before this one (the
    # console's, on anyio) may have left none set: give it one (pyshark keeps using it)
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    capture = pyshark.FileCapture(str(path), display_filter="sip && udp && !icmp", keep_packets=False)
    theirs = []
    try:
        for pkt in capture:
            sip = pkt.sip
            method = sip.get_field_value("Method") or sip.get_field_value("Status-Code")
            theirs.append((sip.get_field_value("Call-ID"), method, sip.get_field_value("CSeq")))
    finally:
        capture.close()
        # pyshark attached a SafeChildWatcher to that loop: a SIGCHLD handler on a loop nobody runs
        # again, whose wake-up pipe every later test's child then wrote to until it was full
        # (BlockingIOError warnings in make test, one per SIGCHLD after that): detached here
        asyncio.get_child_watcher().close()
    assert theirs and ours == theirs


@pytest.mark.parametrize("name,codec", [("g722-call-register-noise.pcapng", "G722"),
                                        ("cisco-sip-tcp-opus-h264.pcap", "OPUS")])
def test_transcoded_audio_is_each_packet_decoded_in_its_place(name: str, codec: str, tmp_path: Path) -> None:
    """Each payload Wireshark shows, decoded in arrival order with a fresh decoder, is in the WAV
    at its timestamp's place (16-bit PCM, both channels interleaved)."""
    from storage import codecs

    path = public_capture(name)
    site = designate_all(tmp_path)
    assert site.replay(path) == 0
    wireshark = tshark_rtp(path)
    checked = 0
    for row, main, _pcap in stored(site):
        if row.codec != codec or row.audio != "transcoded":
            continue
        for stream in row.streams:
            if not stream["packets"]:
                continue
            clock = {"G722": 8000, "OPUS": 48000}[codec]
            fmt = codecs.audio_format(codec, clock, 1)
            assert fmt is not None
            decode = codecs.new_decoder(fmt, clock, 1)
            channel = channel_bytes(main, stream["channel"])
            for ssrc in stream["ssrcs"]:
                anchors = [(ts, pos) for s, ts, pos in stream["anchors"] if s == ssrc]
                pts = {pt for _, _, pt, _ in wireshark[ssrc]}
                audio_pt = min(pts, key=lambda p: -sum(1 for *_, q, _ in wireshark[ssrc] if q == p))  # the commonest
                previous = None
                for seq, ts, pt, payload in wireshark[ssrc]:
                    if pt != audio_pt or (seq, ts, pt, payload) == previous:
                        continue  # (cisco-sip-tcp-opus-h264 has every frame twice: a mirror's copy, decoded once)
                    previous = (seq, ts, pt, payload)
                    pcm = decode(payload)
                    place = [2 * fmt.ratio * (pos + ((ts - ts0 + 2**31) % 2**32 - 2**31)) for ts0, pos in anchors]
                    assert any(channel[p : p + len(pcm)] == pcm for p in place), f"{name} SSRC {ssrc:#x} seq {seq}"
                    checked += 1
    assert checked > 30


def test_evidence_pcap_holds_every_frame_of_the_call(tmp_path: Path) -> None:
    """The G.729 call cannot be decoded here: its recording is the original RTP and SIP, frame by
    frame as captured (Wireshark counts the same RTP packets in it)."""
    path = public_capture("ws-sip-rtp-g729a.pcap")
    site = designate_all(tmp_path)
    assert site.replay(path) == 0
    [(row, main, pcap)] = stored(site)
    assert (row.codec, row.audio, row.state) == ("G729", "not-decoded", "complete")
    evidence = tmp_path / "evidence.pcap"
    evidence.write_bytes(pcap)
    original = {frame for batch in CaptureFile(path).batches() for _, _, frame in batch}
    kept = [frame for batch in CaptureFile(evidence).batches() for _, _, frame in batch]
    assert set(kept) <= original  # byte-identical frames
    assert len(tshark_rtp(evidence)[0x044559A1]) == 425  # every RTP packet of the call (MANIFEST.md)
