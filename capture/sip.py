"""SIP message parsing (RFC 3261), without side effects.

``SipMessage.parse(data)`` turns one SIP message into a frozen dataclass, or raises ``ValueError``
saying what was wrong. Header names are case-insensitive and compact forms are expanded; folded
header lines are joined. The tracker applies what this returns; nothing here keeps state.

Headers are read tolerantly: a header line that is not UTF-8 (a Shift_JIS display name from a
Japanese PBX or phone) is read as latin-1, one character per byte, so its structure (quotes, <>,
parameters) survives and the message is kept; ``not_utf8`` counts such lines for the tracker. The
URI and tag comparisons only ever look at ASCII, so a display name can never lose a call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE = 65_535
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "r": "refer-to", "b": "referred-by", "o": "event", "u": "allow-events", "x": "session-expires",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity",
    "n": "identity-info",
}
METHODS = frozenset(
    b"INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK UPDATE INFO SUBSCRIBE NOTIFY REFER MESSAGE PUBLISH".split()
)
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_QUOTE_THEN_URI = re.compile(r'"[ \t]*<')


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP request or response."""

    method: str | None  # request method; None for a response
    request_uri: str  # request line URI; "" for a response
    status: int  # response status; 0 for a request
    headers: dict[str, tuple[str, ...]]  # lower-case full names -> values in order
    body: bytes
    size: int  # bytes this message took in the input (head + body)
    not_utf8: int = 0  # header lines read as latin-1 because they were not UTF-8

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.header("cseq")
        if value is None:
            raise ValueError("no CSeq header")
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"malformed CSeq header {value!r}")
        return int(parts[0]), parts[1].upper()

    @property
    def content_type(self) -> str:
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        head_end = data.find(b"\r\n\r\n")
        sep = 4
        if head_end < 0:
            head_end = data.find(b"\n\n")
            sep = 2
        if head_end < 0:
            raise ValueError("no blank line ending the headers")
        lines, not_utf8 = _head_lines(data[:head_end])
        method, request_uri, status = _start_line(lines[0])
        headers = _headers(lines[1:])
        body_start = head_end + sep
        available = len(data) - body_start
        length_values = headers.get("content-length")
        if length_values:
            text = length_values[0].strip()
            if not text.isdigit():
                raise ValueError(f"Content-Length {text!r} is not a number")
            length = int(text)
            if length > available:
                raise ValueError(f"body shorter than Content-Length ({available} < {length})")
        else:
            length = available  # allowed over UDP (RFC 3261 18.3)
        for required in ("call-id", "cseq", "from", "to"):
            if required not in headers:
                raise ValueError(f"missing {required} header")
        body = data[body_start : body_start + length]
        return cls(method, request_uri, status, headers, body, body_start + length, not_utf8)


def _head_lines(head: bytes) -> tuple[list[str], int]:
    """The header block's lines, and how many of them were not UTF-8 (read as latin-1 instead).
    Line by line, so a line that is UTF-8 reads the same in every message of a dialog."""
    try:
        return head.decode("utf-8").replace("\r\n", "\n").split("\n"), 0
    except UnicodeDecodeError:
        pass
    lines = []
    odd = 0
    for raw in head.replace(b"\r\n", b"\n").split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
            odd += 1
    return lines, odd


def _start_line(line: str) -> tuple[str | None, str, int]:
    if line.startswith(SIP_VERSION + " "):
        parts = line.split(" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            raise ValueError(f"malformed status line {line[:40]!r}")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise ValueError(f"status code {status} out of range")
        return None, "", status
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != SIP_VERSION:
        raise ValueError(f"malformed request line {line[:40]!r}")
    method, uri = parts[0], parts[1]
    if not _TOKEN.match(method):
        raise ValueError(f"malformed method {method[:20]!r}")
    return method.upper(), uri, 0


def _headers(lines: list[str]) -> dict[str, tuple[str, ...]]:
    headers: dict[str, list[str]] = {}
    name = ""
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not name:
                raise ValueError("continuation line before any header")
            headers[name][-1] += " " + line.strip()
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ValueError(f"header line without a name: {line[:40]!r}")
        name = line[:colon].strip().lower()
        if not _TOKEN.match(name):
            raise ValueError(f"malformed header name {name[:40]!r}")
        name = COMPACT.get(name, name)
        headers.setdefault(name, []).append(line[colon + 1 :].strip())
    return {k: tuple(v) for k, v in headers.items()}


def looks_like_sip(payload: bytes) -> bool:
    """A cheap test on the first bytes: a SIP start line, not RTP or other traffic."""
    if payload[:8] == b"SIP/2.0 ":
        return True
    space = payload.find(b" ", 0, 12)
    return space > 0 and payload[:space] in METHODS


# -- addresses ----------------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <...>. When a backslash left a
    quote open to the end (a Shift_JIS character whose second byte is 0x5C, read as latin-1), the
    value is split again with backslashes taken literally."""
    items, closed = _split_list(value, escapes=True)
    return items if closed else _split_list(value, escapes=False)[0]


def _split_list(value: str, *, escapes: bool) -> tuple[list[str], bool]:
    items: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or not escapes or value[i - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append(value[start:i].strip())
            start = i + 1
    items.append(value[start:].strip())
    return [item for item in items if item], not quoted


def name_addr(value: str) -> tuple[str, dict[str, str]]:
    """``(uri, header parameters)`` of a From/To/Contact-style value."""
    value = value.strip()
    if value.startswith('"'):
        close = _display_name_end(value)
        if close < 0:
            raise ValueError("unterminated display name")
        value = value[close + 1 :].strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise ValueError("'<' without '>' in address")
        uri, rest = value[lt + 1 : gt].strip(), value[gt + 1 :]
    else:
        uri, _, rest = value.partition(";")
        rest = ";" + rest if rest else ""
        uri = uri.strip()
    params: dict[str, str] = {}
    for item in rest.split(";"):
        item = item.strip()
        if item:
            key, _, val = item.partition("=")
            params[key.strip().lower()] = val.strip()
    return uri, params


def _display_name_end(value: str) -> int:
    """Where the quoted display name at the start of ``value`` closes (-1: it does not). RFC 3261
    escapes first; when that close is not followed by '<', the first quote that is: a Shift_JIS
    character's second byte can be 0x5C (a backslash in latin-1) and seem to escape the quote."""
    i, n = 1, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            break
        i += 1
    close = i if i < n else -1
    if close >= 0 and value[close + 1 :].lstrip().startswith("<"):
        return close
    literal = _QUOTE_THEN_URI.search(value, 1)
    return literal.start() if literal else close


def header_tag(value: str | None) -> str:
    """The ``tag`` parameter of a From or To value ('' when absent or unreadable)."""
    if not value:
        return ""
    try:
        return name_addr(value)[1].get("tag", "")
    except ValueError:
        return ""


def uri_user(uri: str) -> str:
    """The user part of a sip:, sips: or tel: URI, unescaped; '' when there is none."""
    return uri_user_context(uri)[0]


def uri_user_context(uri: str) -> tuple[str, str]:
    """``(user, phone-context)`` of a sip:, sips: or tel: URI, unescaped: the phone-context
    parameter (RFC 3966 5.1.5) of a local number, e.g. ``sip:2003939;phone-context=+8144@pbx`` or
    ``tel:200-3939;phone-context=+81-44`` ('' when absent); ``("", "")`` when there is no user."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return "", ""
    scheme = scheme.strip().lower()
    if scheme == "tel":
        user = rest
    elif scheme in ("sip", "sips"):
        rest = rest.split("?", 1)[0]
        at = rest.rfind("@")
        if at < 0:
            return "", ""
        user = rest[:at].split(":", 1)[0]
    else:
        return "", ""
    number, _, params = user.partition(";")
    context = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "phone-context":
            context = unquote(value).strip()
            break
    return unquote(number).strip(), context
