"""The called number: a local number completed by its phone-context (RFC 3966 5.1.5) before the
E.164 comparison, and which written forms are a complete number (the Request-URI then decides)."""
from __future__ import annotations

import pytest
from conftest import ROOT

from capture.dids import complete_number
from recorderd.config import load_dids

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))


@pytest.mark.parametrize("user,context,e164", [
    ("2003939", "+8144", "+81442003939"),
    ("200-3939", "+81-44", "+81442003939"),
    ("0442003939", "+81", "+81442003939"),  # a national number in the country's context stays itself
    ("0442003939", "+8144", "+81442003939"),
    ("+81442003939", "+1-212", "+81442003939"),  # a global number: the context does not apply
    ("0442003939", "", "+81442003939"),
    ("0312345678", "", "+81312345678"),
    ("2003939", "pbx.example.jp", None),  # a domain's context: a local number
    ("0442003939", "pbx.example.jp", None),
    ("3001", "+8144", None),  # an extension under the area's context is no Japanese number
    ("3001", "", None),
    ("reception", "+8144", None),
    ("2003939", "+81-4x", None),
])
def test_complete_number(user: str, context: str, e164: str | None) -> None:
    assert complete_number(user, context) == e164


def test_match_honours_phone_context() -> None:
    found = DIDS.match("2003939", "+8144")
    assert found is not None and found.key == "+81442003939"
    assert DIDS.match("2003939") is None
    assert DIDS.match("2003939", "pbx.example.jp") is None
    assert DIDS.match("2003940", "+8144") is None
