"""Which called numbers are designated: every written form matches, near misses never do."""
from __future__ import annotations

import pytest
from conftest import ROOT

from capture.dids import parse_did, to_e164
from recorderd.config import load_dids

DIDS = load_dids(str(ROOT / "config" / "dids.yaml"))


def test_the_eleven_numbers_of_the_guideline() -> None:
    assert len(DIDS) == 11
    assert {d.key for d in DIDS.dids} == {
        "+81442003939", "+81442002111", "+81442013113", "+81442710130", "+81443221960", "+81445566666",
        "+81447443113", "+81448613113", "+81448563113", "+81449353113", "+81449655100",
    }
    assert DIDS.match("0442003939").label == "サンキューコールかわさき"  # type: ignore[union-attr]


@pytest.mark.parametrize("written", [
    "0442003939", "044-200-3939", "+81442003939", "+81-44-200-3939", "+81 44 200 3939", "(044) 200-3939",
    "01081442003939", "044.200.3939",
])
def test_every_written_form_matches(written: str) -> None:
    did = DIDS.match(written)
    assert did is not None and did.key == "+81442003939"


@pytest.mark.parametrize("near_miss", [
    "044200393", "04420039390", "0442003938", "0442003393", "+8144200393", "+814420039399", "81442003939",
    "2003939", "0081442003939", "", "+", "sipp", "0442003939x",
])
def test_near_misses_do_not_match(near_miss: str) -> None:
    assert DIDS.match(near_miss) is None


def test_to_e164() -> None:
    assert to_e164("09012345678") == "+819012345678"
    assert to_e164("0120-123-456") == "+81120123456"
    assert to_e164("12345") is None


@pytest.mark.parametrize("number,key", [("2301", "2301"), ("Reception", "reception"), ("044-200-3939", "+81442003939")])
def test_extensions_and_sip_users(number: str, key: str) -> None:
    assert parse_did(number) == key


@pytest.mark.parametrize("number", ["044-200-39x9", "044-200-393", "+81-44", "a b", "sip:1@h", ""])
def test_bad_configured_numbers(number: str) -> None:
    with pytest.raises(ValueError):
        parse_did(number)
