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
])  # fmt: skip
def test_malformed_sdp(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionDescription.parse(data)


def test_every_truncated_prefix() -> None:
    for cut in range(len(OFFER)):
        try:
            SessionDescription.parse(OFFER[:cut])
        except ValueError as exc:
            assert str(exc)
