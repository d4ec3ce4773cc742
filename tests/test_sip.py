"""SIP parsing: real message shapes, compact and folded headers, every truncation, addresses."""
from __future__ import annotations

import pytest

from capture.sip import SipMessage, header_tag, looks_like_sip, name_addr, split_list, uri_user, uri_user_context

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
])
def test_malformed_messages_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SipMessage.parse(data)


SJIS_NAME = "川崎ソ".encode("shift_jis")  # its last byte is 0x5C: a backslash before the closing quote


def test_shift_jis_display_name_is_read_and_counted_not_refused() -> None:
    data = INVITE.replace(b'"Taro"', b'"' + SJIS_NAME + b'"')
    msg = SipMessage.parse(data)
    assert msg.not_utf8 == 1 and msg.call_id == "a84b4c76e66710@203.0.113.5"
    uri, params = name_addr(msg.header("from"))  # type: ignore[arg-type]
    assert (uri, params) == ("sip:09011112222@203.0.113.5", {"tag": "1928301774"})
    assert header_tag(msg.header("from")) == "1928301774"
    assert SipMessage.parse(INVITE).not_utf8 == 0


def test_a_utf8_header_reads_the_same_beside_a_shift_jis_one() -> None:
    """Line by line: the UTF-8 lines of a message with one Shift_JIS line read as UTF-8 (a dialog's
    Call-ID and tags compare equal whatever its other messages carry)."""
    utf8 = INVITE.replace(b"a84b4c76e66710", "通話".encode()).replace(b'"Taro"', '"太郎"'.encode())
    mixed = utf8.replace('"太郎"'.encode(), b'"' + SJIS_NAME + b'"')
    assert SipMessage.parse(utf8).call_id == SipMessage.parse(mixed).call_id == "通話@203.0.113.5"
    assert SipMessage.parse(mixed).not_utf8 == 1


@pytest.mark.parametrize("value,uri,tag", [
    ('"\x83\\" <sip:1@h>;tag=a', "sip:1@h", "a"),  # Shift_JIS ソ read as latin-1
    ('"\x95\\\x8e\xa6" <sip:1@h>;tag=b', "sip:1@h", "b"),  # 表示
    ('"a\\"b" <sip:1@h>;tag=c', "sip:1@h", "c"),  # an RFC 3261 escaped quote still works
    ('"x" <sip:1@h>;tag=d;p="q"', "sip:1@h", "d"),
    ('"\x83\\" <sip:1@h>;tag=e;p="q"', "sip:1@h", "e"),
])
def test_display_name_with_a_backslash_trail_byte(value: str, uri: str, tag: str) -> None:
    assert name_addr(value)[0] == uri and header_tag(value) == tag


def test_split_list_with_a_backslash_trail_byte() -> None:
    assert split_list('"\x83\\" <sip:1@h>, "b" <sip:2@h>') == ['"\x83\\" <sip:1@h>', '"b" <sip:2@h>']


@pytest.mark.parametrize("uri,user,context", [
    ("sip:2003939;phone-context=+8144@192.0.2.10;user=phone", "2003939", "+8144"),
    ("tel:200-3939;phone-context=+81-44", "200-3939", "+81-44"),
    ("tel:2003939;isub=1;Phone-Context=%2B8144", "2003939", "+8144"),
    ("sip:2003939;phone-context=pbx.example.jp@192.0.2.10", "2003939", "pbx.example.jp"),
    ("sip:0442003939@192.0.2.10", "0442003939", ""),
    ("sip:pbx.example.com", "", ""),
])
def test_uri_user_context(uri: str, user: str, context: str) -> None:
    assert uri_user_context(uri) == (user, context)
    assert uri_user(uri) == user


def _outcome(data: bytes) -> str:
    """'ok' or 'ValueError: <its message>'; any other exception fails the test as it is."""
    try:
        SipMessage.parse(data)
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_every_truncated_prefix_is_rejected_with_its_exact_reason() -> None:
    """A message cut anywhere (a datagram cut by the snap length, a TCP segment): without its blank
    line it is not yet a message; with it, the body is short of Content-Length."""
    body_start = INVITE.index(b"\r\n\r\n") + 4
    for cut in range(len(INVITE)):
        if cut < body_start:
            expected = "ValueError: no blank line ending the headers"
        else:
            expected = f"ValueError: body shorter than Content-Length ({cut - body_start} < 4)"
        assert _outcome(INVITE[:cut]) == expected, f"cut at {cut}: {INVITE[max(0, cut - 20):cut]!r}"
    assert _outcome(INVITE) == "ok"


def test_every_truncated_head_closed_by_a_blank_line_gives_its_exact_reason() -> None:
    """The head cut anywhere and then ended by a blank line (what a forger or a broken SBC can send):
    the cut line decides. A cut start line is malformed; a header line cut before its colon has no
    name; a Content-Length cut before its value is not a number, with it the body is short of it;
    otherwise the first of Call-ID, CSeq, From and To not yet present is missing (an empty value counts
    as present: the parser only asks that they are there), and with all four the head parses."""
    lines = INVITE[: INVITE.index(b"\r\n\r\n")].split(b"\r\n")
    required = ["call-id", "cseq", "from", "to"]
    seen: set[str] = set()
    start = 0
    checked = 0
    for index, line in enumerate(lines):
        for kept in range(0 if index == 0 else 1, len(line) + 3):
            part = (line + b"\r\n")[:kept].decode()
            text = part.rstrip("\r\n")  # (a lone CR kept at the end of a header line is stripped with it)
            name, colon, value = text.partition(":")
            if index == 0:  # whole, or whole with its CRLF; with a lone CR after it, it is not
                whole = kept in (len(line), len(line) + 2)
                expected = "missing call-id header" if whole else f"malformed request line {part[:40]!r}"
            elif not colon:
                expected = f"header line without a name: {text[:40]!r}"
            elif name == "Content-Length":
                digits = value.strip()
                body = 2 if kept == len(line) + 2 else 0  # its own CRLF then ends the head: the blank line's is body
                expected = f"Content-Length {digits!r} is not a number" if not digits else f"body shorter than Content-Length ({body} < 4)"
            else:
                missing = [h for h in required if h not in seen | {name.lower()}]
                expected = f"missing {missing[0]} header" if missing else "ok"
            expected = expected if expected == "ok" else "ValueError: " + expected
            cut = start + kept
            assert _outcome(INVITE[:cut] + b"\r\n\r\n") == expected, f"cut at {cut}: {INVITE[max(0, cut - 20):cut]!r}"
            checked += 1
        seen.add(line.decode().partition(":")[0].lower())
        start += len(line) + 2
    assert checked == start + 1  # every cut from 0 to the end of the head's last line


@pytest.mark.parametrize("uri,user", [
    ("sip:0442003939@192.0.2.10", "0442003939"),
    ("sip:+81442003939;npdi@pbx;user=phone", "+81442003939"),
    ("sips:alice:secret@example.com:5061", "alice"),
    ("tel:+81-44-200-3939;phone-context=+81", "+81-44-200-3939"),
    ("sip:%2B81442003939@pbx", "+81442003939"),
    ("sip:pbx.example.com", ""),
    ("mailto:x@y", ""),
    ("nonsense", ""),
])
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
