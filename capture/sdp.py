"""SDP parsing (RFC 4566 / RFC 3264), without side effects.

Only what a passive recorder needs: where each media stream is received (address and port), which
payload types it offers and what they mean, and its direction. The parser is strict about the lines
it uses and ignores the others.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NotRequired, TypedDict

MAX_SDP = 16_384
MAX_MEDIA = 16
DIRECTIONS = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))
# RFC 3551 static payload types that a recorder can meet on a voice line.
STATIC_PAYLOADS: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
    10: ("L16", 44100), 11: ("L16", 44100), 13: ("CN", 8000), 18: ("G729", 8000),
}


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # upper-case encoding name, e.g. "PCMU", "TELEPHONE-EVENT"
    rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    kind: str  # "audio", "video", "image", ...
    port: int
    proto: str  # "RTP/AVP", "RTP/SAVP", "udptl", ...
    formats: tuple[str, ...]
    address: str | None  # connection address in effect for this stream (media or session c=)
    codecs: dict[int, Codec]
    direction: str

    @property
    def receives(self) -> bool:
        """Whether the party that sent this description expects to receive on it."""
        return self.port != 0 and self.direction in ("sendrecv", "recvonly") and not _is_null(self.address)

    @property
    def secure(self) -> bool:
        return "SAVP" in self.proto


class _Section(TypedDict):
    """One m= section while its lines are read (a Media once the description is whole)."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    codecs: dict[int, Codec]
    address: NotRequired[str]  # its own c= line's
    direction: NotRequired[str]  # its own a= direction's


@dataclass(frozen=True, slots=True)
class SessionDescription:
    media: tuple[Media, ...]

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        if len(data) > MAX_SDP:
            raise ValueError(f"SDP of {len(data)} bytes exceeds {MAX_SDP}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a Shift_JIS session name (s=, i=): only ASCII fields are read
            text = data.decode("latin-1")
        lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
        if not lines or not lines[0].startswith("v="):
            raise ValueError("SDP does not start with v=")
        session_addr: str | None = None
        session_dir = "sendrecv"
        media: list[_Section] = []
        for line in lines:
            if len(line) < 2 or line[1] != "=":
                raise ValueError(f"malformed SDP line {line[:40]!r}")
            kind, value = line[0], line[2:]
            current = media[-1] if media else None
            if kind == "m":
                if len(media) >= MAX_MEDIA:
                    raise ValueError(f"more than {MAX_MEDIA} media sections")
                media.append(_media_line(value))
            elif kind == "c":
                addr = _connection(value)
                if current is None:
                    session_addr = addr
                else:
                    current["address"] = addr
            elif kind == "a":
                name, _, arg = value.partition(":")
                if name in DIRECTIONS:
                    if current is None:
                        session_dir = name
                    else:
                        current["direction"] = name
                elif name == "rtpmap" and current is not None:
                    pt, codec = _rtpmap(arg)
                    current["codecs"][pt] = codec
        out = []
        for m in media:
            codecs = m["codecs"]
            for fmt in m["formats"]:
                if fmt.isdigit() and int(fmt) in STATIC_PAYLOADS and int(fmt) not in codecs:
                    name, rate = STATIC_PAYLOADS[int(fmt)]
                    codecs[int(fmt)] = Codec(name, rate)
            out.append(
                Media(
                    kind=m["kind"],
                    port=m["port"],
                    proto=m["proto"],
                    formats=m["formats"],
                    address=m.get("address", session_addr),
                    codecs=codecs,
                    direction=m.get("direction", session_dir),
                )
            )
        return cls(tuple(out))


def _media_line(value: str) -> _Section:
    parts = value.split()
    if len(parts) < 3:
        raise ValueError(f"malformed m= line {value[:40]!r}")
    port_text = parts[1].split("/", 1)[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad port {parts[1]!r} in m= line")
    return {"kind": parts[0].lower(), "port": int(port_text), "proto": parts[2], "formats": tuple(parts[3:]),
            "codecs": {}}


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ValueError(f"malformed c= line {value[:60]!r}")
    addr = parts[2].split("/", 1)[0]
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"c= address {addr[:60]!r} is not an IP address") from None
    return addr


def _rtpmap(arg: str) -> tuple[int, Codec]:
    pt_text, _, encoding = arg.partition(" ")
    if not pt_text.isdigit() or int(pt_text) > 127:
        raise ValueError(f"bad rtpmap payload type {pt_text[:10]!r}")
    fields = encoding.strip().split("/")
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError(f"malformed rtpmap {arg[:40]!r}")
    channels = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 1
    return int(pt_text), Codec(fields[0].upper(), int(fields[1]), channels)


def _is_null(address: str | None) -> bool:
    return address is None or address in ("0.0.0.0", "::")


def sdp_in_body(content_type: str, body: bytes) -> bytes | None:
    """The SDP a SIP body carries: the body itself, or the application/sdp part of a multipart
    body (RFC 5621, e.g. SDP beside ISUP or a PIDF); None when there is none."""
    if not body:
        return None
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    if kind == "application/sdp":
        return body
    if not kind.startswith("multipart/"):
        return None
    boundary = ""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, sep, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = part.lstrip(b"\n").partition(b"\n\n")
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type" and value.split(";")[0].strip().lower() == "application/sdp":
                return content.rstrip(b"\r\n")
    return None
