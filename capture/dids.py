"""Designated numbers (DIDs) and the normalisation that lets them match in any written form.

Japanese numbers are compared in E.164: ``044-200-3939``, ``0442003939``, ``+81442003939``,
``+81-44-200-3939``, ``tel:+81-44-200-3939``, ``sip:0442003939@pbx;user=phone`` and the
international-prefix form ``01081442003939`` are one number. A configured entry that is not a
phone number (a bare extension such as ``2301`` or a SIP user such as ``reception``) matches the
signalled user part literally (case-insensitively for names).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

COUNTRY_CODE = "81"
INTERNATIONAL_PREFIX = "010"
_VISUAL = re.compile(r"[\s\-.()]")
_PHONE_CHARS = re.compile(r"^\+?[0-9\s\-.()]+$")
_SIP_USER = re.compile(r"^[A-Za-z0-9_.!~*'&=+$,?/%-]+$")


def to_e164(text: str) -> str | None:
    """The E.164 form (``+81...``) of a Japanese or international number, or None."""
    digits = _VISUAL.sub("", text)
    if not digits:
        return None
    if digits.startswith("+"):
        rest = digits[1:]
        return "+" + rest if rest.isdigit() and 8 <= len(rest) <= 15 else None
    if not digits.isdigit():
        return None
    if digits.startswith(INTERNATIONAL_PREFIX) and len(digits) > 5:
        rest = digits[len(INTERNATIONAL_PREFIX) :]
        return "+" + rest if 8 <= len(rest) <= 15 else None
    if digits.startswith("0") and not digits.startswith("00") and len(digits) in (10, 11):
        return "+" + COUNTRY_CODE + digits[1:]
    return None


@dataclass(frozen=True, slots=True)
class Did:
    number: str  # as configured, e.g. "044-200-3939"
    label: str
    key: str  # "+81442003939" for a phone number, the lower-cased user for an extension

    @property
    def e164(self) -> str:
        return self.key


def parse_did(number: str) -> str:
    """The matching key of a configured number; ``ValueError`` when it is neither a phone number
    nor an extension or SIP user."""
    text = number.strip()
    if not text:
        raise ValueError("is empty")
    looks_phone = text.startswith(("0", "+")) or bool(_VISUAL.search(text))
    if looks_phone:
        if not _PHONE_CHARS.match(text):
            raise ValueError("is not a phone number")
        e164 = to_e164(text)
        if e164 is None:
            raise ValueError("is not a phone number (expected e.g. 044-200-3939 or +81442003939)")
        return e164
    return parse_user(text)


def parse_user(user: str) -> str:
    """The matching key of an entry that is literally a SIP user or extension (``kind: user``),
    for PBXs that signal something other than a Japanese number (e.g. a foreign trunk's DID)."""
    text = user.strip()
    if not _SIP_USER.match(text):
        raise ValueError("is not a phone number, extension or SIP user")
    return text.lower()


class DidDirectory:
    """The designated numbers, looked up by any written form of a called number."""

    def __init__(self, dids: list[Did]) -> None:
        self._by_key = {d.key: d for d in dids}
        self.dids = tuple(dids)

    def __len__(self) -> int:
        return len(self.dids)

    def match(self, user: str) -> Did | None:
        """The designated number that ``user`` (a URI user part or tel number) is, if any."""
        if not user:
            return None
        e164 = to_e164(user)
        if e164 is not None:
            found = self._by_key.get(e164)
            if found is not None:
                return found
        return self._by_key.get(user.lower())
