"""SDP parsing: where each stream is received, its codecs and direction, and strict errors."""
from __future__ import annotations

import pytest

from capture.sdp import Codec, SessionDescription

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 203.0.113.20\r\ns=-\r\nc=IN IP4 203.0.113.20\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
    b"m=video 40002 RTP/AVP 96\r\nc=IN IP6 2001:db8::1\r\na=rtpmap:96 H264/90000\r\na=sendonly\r\n"
)


def test_offer() -> None:
    sdp = SessionDescription.parse(OFFER)
    audio, video = sdp.media
    assert (audio.kind, audio.port, audio.proto, audio.address) == ("audio", 40000, "RTP/AVP", "203.0.113.20")
    assert audio.formats == ("0", "8", "101")
    assert audio.codecs == {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000), 101: Codec("TELEPHONE-EVENT", 8000)}
    assert audio.direction == "sendrecv" and audio.receives and not audio.secure
    assert (video.address, video.direction, video.receives) == ("2001:db8::1", "sendonly", False)


def test_hold_forms_do_not_receive() -> None:
    for hold in (b"a=inactive", b"a=sendonly"):
        sdp = SessionDescription.parse(OFFER.replace(b"a=ptime:20", hold))
        assert sdp.media[0].receives is False
    sdp = SessionDescription.parse(OFFER.replace(b"c=IN IP4 203.0.113.20", b"c=IN IP4 0.0.0.0"))
    assert sdp.media[0].receives is False


def test_srtp_is_flagged() -> None:
    sdp = SessionDescription.parse(OFFER.replace(b"RTP/AVP 0 8", b"RTP/SAVP 0 8"))
    assert sdp.media[0].secure


@pytest.mark.parametrize("data,message", [
    (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "does not start with v="),
    (OFFER.replace(b"c=IN IP4 203.0.113.20", b"c=IN IP4 pbx.example"), "is not an IP address"),
    (OFFER.replace(b"m=audio 40000", b"m=audio 99999"), "bad port"),
    (OFFER.replace(b"a=rtpmap:101 telephone-event/8000", b"a=rtpmap:101 telephone-event"), "malformed rtpmap"),
    (OFFER.replace(b"t=0 0", b"t 0 0"), "malformed SDP line"),
    (b"v=0\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 17, "more than 16 media"),
])
def test_malformed_sdp(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionDescription.parse(data)


# What parsing OFFER cut anywhere gives. Each line of OFFER owns the cuts that keep 1 .. len+2 of its
# bytes (its CRLF included); the lines before a cut are whole and valid, so the kept part of the cut
# line decides. Per line: (at most this many bytes of the line kept, outcome), in order; past the last
# entry the prefix is a valid description ("ok"). {value} is what the kept part has after "x=",
# {last} its last field and {rtpmap} what follows "rtpmap:", as the parser reports them.
PREFIX_OUTCOMES: list[tuple[bytes, list[tuple[int, str]]]] = [
    (b"v=0", [(1, "SDP does not start with v=")]),
    (b"o=- 1 1 IN IP4 203.0.113.20", [(1, "malformed SDP line 'o'")]),
    (b"s=-", [(1, "malformed SDP line 's'")]),
    (b"c=IN IP4 203.0.113.20", [
        (1, "malformed SDP line 'c'"),
        (len(b"c=IN IP4 "), "malformed c= line {value!r}"),
        (len(b"c=IN IP4 203.0.113."), "c= address {last!r} is not an IP address"),  # 203.0.113.2 is one
    ]),
    (b"t=0 0", [(1, "malformed SDP line 't'")]),
    (b"m=audio 40000 RTP/AVP 0 8 101", [(1, "malformed SDP line 'm'"), (len(b"m=audio 40000 "), "malformed m= line {value!r}")]),
    (b"a=rtpmap:101 telephone-event/8000", [
        (1, "malformed SDP line 'a'"),
        (len(b"a=rtpma"), "ok"),  # an attribute this parser does not read
        (len(b"a=rtpmap:"), "bad rtpmap payload type ''"),
        (len(b"a=rtpmap:101 telephone-event/"), "malformed rtpmap {rtpmap!r}"),
    ]),
    (b"a=ptime:20", [(1, "malformed SDP line 'a'")]),
    (b"m=video 40002 RTP/AVP 96", [(1, "malformed SDP line 'm'"), (len(b"m=video 40002 "), "malformed m= line {value!r}")]),
    (b"c=IN IP6 2001:db8::1", [
        (1, "malformed SDP line 'c'"),
        (len(b"c=IN IP6 "), "malformed c= line {value!r}"),
        (len(b"c=IN IP6 2001:db8:"), "c= address {last!r} is not an IP address"),  # 2001:db8:: is one
    ]),
    (b"a=rtpmap:96 H264/90000", [
        (1, "malformed SDP line 'a'"),
        (len(b"a=rtpma"), "ok"),
        (len(b"a=rtpmap:"), "bad rtpmap payload type ''"),
        (len(b"a=rtpmap:96 H264/"), "malformed rtpmap {rtpmap!r}"),
    ]),
    (b"a=sendonly", [(1, "malformed SDP line 'a'")]),
]


def _outcome(data: bytes) -> str:
    """'ok, N media' or 'ValueError: <its message>'; any other exception fails the test as it is."""
    try:
        return f"ok, {len(SessionDescription.parse(data).media)} media"
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_the_table_is_offer() -> None:
    assert b"".join(line + b"\r\n" for line, _ in PREFIX_OUTCOMES) == OFFER


def test_every_truncated_prefix_gives_its_exact_error() -> None:
    assert _outcome(b"") == "ValueError: SDP does not start with v="
    start = 0
    media = 0
    checked = 0
    for line, steps in PREFIX_OUTCOMES:
        media += line.startswith(b"m=")
        for kept in range(1, len(line) + 3):
            part = (line + b"\r\n")[:kept].decode().strip()
            value = part[2:].strip()
            template = next((outcome for most, outcome in steps if kept <= most), "ok")
            expected = "ok, {media} media" if template == "ok" else "ValueError: " + template
            expected = expected.format(
                media=media, value=value, last=(value.split() or [""])[-1], rtpmap=value.partition(":")[2]
            )
            cut = start + kept
            assert _outcome(OFFER[:cut]) == expected, f"cut at {cut}: {OFFER[max(0, cut - 20):cut]!r}"
            checked += 1
        start += len(line) + 2
    assert checked == len(OFFER)
