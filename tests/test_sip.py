"""SIP parsing: real message shapes, compact and folded headers, every truncation, addresses."""
from __future__ import annotations

import pytest

from capture.sip import SipMessage, header_tag, looks_like_sip, name_addr, split_list, uri_user

INVITE = (
    b"INVITE sip:0442003939@192.0.2.10;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Taro" <sip:09011112222@203.0.113.5>;tag=1928301774\r\n'
    b"To: <sip:0442003939@192.0.2.10>\r\n"
    b"Call-ID: a84b4c76e66710@203.0.113.5\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:09011112222@203.0.113.5>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_invite_fields() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.method == "INVITE" and msg.status == 0 and msg.is_request
    assert msg.request_uri == "sip:0442003939@192.0.2.10;user=phone"
    assert msg.call_id == "a84b4c76e66710@203.0.113.5"
    assert msg.cseq == (314159, "INVITE")
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\n"
    assert msg.size == len(INVITE)
    assert header_tag(msg.header("from")) == "1928301774"
    assert header_tag(msg.header("to")) == ""


def test_response_compact_case_insensitive_and_folded() -> None:
    data = (
        b"SIP/2.0 200 OK\r\n"
        b"v: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds\r\n"
        b"f: <sip:a@b>;tag=1\r\n"
        b"T: <sip:0442003939@192.0.2.10>\r\n"
        b"  ;tag=2\r\n"
        b"i: abc\r\n"
        b"cSeQ: 1 invite\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = SipMessage.parse(data)
    assert msg.status == 200 and msg.method is None
    assert msg.call_id == "abc"
    assert msg.cseq == (1, "INVITE")
    assert header_tag(msg.header("to")) == "2"
    assert "via" in msg.headers


def test_body_beyond_content_length_is_not_part_of_message() -> None:
    msg = SipMessage.parse(INVITE.replace(b"Content-Length: 4", b"Content-Length: 2"))
    assert msg.body == b"v="


@pytest.mark.parametrize("data,message", [
    (b"INVITE sip:x SIP/2.0\r\nCall-ID: 1\r\n", "no blank line"),
    (b"INVITE sip:x SIP/3.0\r\n\r\n", "malformed request line"),
    (b"SIP/2.0 99 Odd\r\n\r\n", "malformed status line"),
    (b"SIP/2.0 700 Odd\r\n\r\n", "out of range"),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"), "shorter than Content-Length"),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: x"), "is not a number"),
    (INVITE.replace(b"CSeq: 314159 INVITE\r\n", b""), "missing cseq"),
    (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "header line without a name"),
    (b"INVITE sip:x SIP/2.0\r\n Call-ID: 1\r\n\r\n", "continuation line before any header"),
    (INVITE.replace(b"Taro", b"\xff\xfe"), "not UTF-8"),
])  # fmt: skip
def test_malformed_messages_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SipMessage.parse(data)


def test_every_truncated_prefix_is_parsed_or_rejected_with_a_reason() -> None:
    for cut in range(len(INVITE)):
        try:
            msg = SipMessage.parse(INVITE[:cut])
        except ValueError as exc:
            assert str(exc)
        else:  # only possible once the headers are complete
            assert INVITE[:cut].find(b"\r\n\r\n") > 0 and msg.call_id


@pytest.mark.parametrize("uri,user", [
    ("sip:0442003939@192.0.2.10", "0442003939"),
    ("sip:+81442003939;npdi@pbx;user=phone", "+81442003939"),
    ("sips:alice:secret@example.com:5061", "alice"),
    ("tel:+81-44-200-3939;phone-context=+81", "+81-44-200-3939"),
    ("sip:%2B81442003939@pbx", "+81442003939"),
    ("sip:pbx.example.com", ""),
    ("mailto:x@y", ""),
    ("nonsense", ""),
])  # fmt: skip
def test_uri_user(uri: str, user: str) -> None:
    assert uri_user(uri) == user


def test_name_addr_forms() -> None:
    assert name_addr('"A, B" <sip:1@h;lr>;tag=x') == ("sip:1@h;lr", {"tag": "x"})
    assert name_addr("sip:1@h;tag=y") == ("sip:1@h", {"tag": "y"})
    assert name_addr("<tel:+8144>") == ("tel:+8144", {})
    with pytest.raises(ValueError, match="without '>'"):
        name_addr("<sip:1@h")
    with pytest.raises(ValueError, match="unterminated"):
        name_addr('"abc <sip:1@h>')


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Doe, J" <sip:1@h;a=b,c>;reason=x, <sip:2@h>'
    assert split_list(value) == ['"Doe, J" <sip:1@h;a=b,c>;reason=x', "<sip:2@h>"]


def test_looks_like_sip() -> None:
    assert looks_like_sip(INVITE)
    assert looks_like_sip(b"SIP/2.0 180 Ringing\r\n")
    assert not looks_like_sip(b"\x80\x00\x00\x01")
    assert not looks_like_sip(b"GET / HTTP/1.1\r\n")
