"""Designated numbers (DIDs) and the normalisation that lets them match in any written form.

Japanese numbers are compared in E.164: ``044-200-3939``, ``0442003939``, ``+81442003939``,
``+81-44-200-3939``, ``tel:+81-44-200-3939``, ``sip:0442003939@pbx;user=phone`` and the
international-prefix form ``01081442003939`` are one number. A configured entry that is not a
phone number (a bare extension such as ``2301`` or a SIP user such as ``reception``) matches the
signalled user part literally (case-insensitively for names).

A local number with a ``phone-context`` (RFC 3966) is completed with the context's digits before
it is compared: ``2003939`` in ``+81-44`` is ``+81442003939`` (a national number, ``0...``, in a
``+81`` context stays itself). A context that is a domain name leaves it a local number: it then
matches only an entry that is that extension.
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


def complete_number(user: str, context: str = "") -> str | None:
    """The E.164 form of a called user part with its phone-context ('' when none), or None when it
    is not a complete number (an extension, a SIP user, a local number in a domain's context)."""
    if not context:
        return to_e164(user)
    digits = _VISUAL.sub("", user)
    if digits.startswith("+"):
        return to_e164(digits)  # a global number: a context does not apply (RFC 3966 5.1.5)
    prefix = _VISUAL.sub("", context)
    if not prefix.startswith("+") or not prefix[1:].isdigit() or not digits.isdigit():
        return None  # a domain name (or nonsense): a local number
    if prefix.startswith("+" + COUNTRY_CODE) and digits.startswith("0"):
        return to_e164(digits)  # a national number, trunk prefix included
    e164 = to_e164(prefix + digits)
    if e164 is not None and e164.startswith("+" + COUNTRY_CODE) and len(e164) not in (12, 13):
        return None  # not a Japanese number (9 or 10 digits after +81): e.g. an extension under the area's context
    return e164


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

    def match(self, user: str, context: str = "") -> Did | None:
        """The designated number that ``user`` (a URI user part or tel number, with the URI's
        phone-context if it has one) is, if any."""
        if not user:
            return None
        e164 = complete_number(user, context)
        if e164 is not None:
            found = self._by_key.get(e164)
            if found is not None:
                return found
        return self._by_key.get(user.lower())
