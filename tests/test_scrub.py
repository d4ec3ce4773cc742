"""The scrubber that keeps caller numbers out of the audit log, casework and hold reasons
(issue 16, item 7): every written form of a Japanese number is masked, in any text around it;
recording ids, dates, times and references are kept as written."""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from storage.scrub import MASK, scrub, scrub_tree


@pytest.mark.parametrize("form", [
    "090-8765-4321", "090 8765 4321", "090.8765.4321", "(090)8765-4321", "(090) 8765-4321", "090\u20108765\u20104321",
    "090\u20138765\u20134321", "090\u22128765\u22124321", "090ー8765ー4321", "090－8765－4321", "090/8765/4321",
    "+81 90 8765 4321", "+81-90-8765-4321", "+819087654321", "(+81) 90-8765-4321", "＋８１　９０　８７６５　４３２１",
    "０９０－８７６５－４３２１", "０９０ー８７６５ー４３２１", "09087654321", "090\u200b8765\u200b4321", "090\u00ad8765\u00ad4321",
    "〇九〇ー八七六五ー四三二一", "090\\u200b8765\\u30004321", "044-200-3939", "0120-123-456", "200-3939", "090・8765・4321",
    "090、8765、4321", "090,8765,4321", "090，8765，4321", "090_8765_4321", "090〜8765〜4321", "090～8765～4321",
])
def test_every_written_form_is_masked(form: str) -> None:
    assert scrub(f"caller {form} was rude") == f"caller {MASK} was rude"
    assert scrub(f"発信者{form}から苦情") == f"発信者{MASK}から苦情"


@pytest.mark.parametrize("text", [
    "20261201-100409-3f9a0c12b4", "20261201-100409-1234567890", "/home/alice/20261201-100409-3f9a0c12b4.wav",
    "hold until 2026-10-01, ref K-2026-0012", "2026-12-01T10:04:09+09:00", "2026-12-01 10:04:09.123",
    "(2026-12-01)", "2026/12/01 10:04", "2026.1.5", "10:04:09", "10:00-12:00", "extension 2301 and 110",
    "2026-12-01 3 calls", "row 123456 of 999999", "2026-12-01 - 2026-12-05", "10:00 2026-12-01 11:00:00", "本庁舎代表", "", "no digits at all",
    "20261201-100409-3f9a0c1234 20261201-100410-3f9a0c12b4", "ids 20261201-100409-3f9a0c12b4, 20261201-100410-3f9a0c12b4",
])
def test_ids_dates_times_and_short_numbers_are_kept(text: str) -> None:
    assert scrub(text) == text


def test_only_the_number_is_replaced_next_to_what_is_kept() -> None:
    assert scrub("2026-12-01 090 8765 4321 (K-2026-0012)") == f"2026-12-01 {MASK} (K-2026-0012)"
    # A date glued to a number by separators is part of its run: masked with it, never the reverse.
    assert scrub("tel 044 200 3939 2026-12-01") == f"tel {MASK}"
    # What is not masked stays exactly as typed (no NFKC of the whole text).
    assert scrub("ｶﾜｻｷ㈱ ０９０ー８７６５ー４３２１ 様") == f"ｶﾜｻｷ㈱ {MASK} 様"


def test_scrub_tree_goes_through_dicts_and_lists_and_keeps_digests() -> None:
    digest = "0123456789" * 6 + "abcd"
    tree = {"filters": {"did": "090-8765-4321", "from": "2026-12-01"}, "recordings": ["20261201-100409-3f9a0c12b4",
            "09087654321"], "sha256": digest, "note": ["a", {"x": "+81 90 8765 4321"}], "count": 12345678,
            "09087654321": True, "through_hash": "not a digest 09087654321"}
    assert scrub_tree(tree) == {
        "filters": {"did": MASK, "from": "2026-12-01"}, "recordings": ["20261201-100409-3f9a0c12b4", MASK],
        "sha256": digest, "note": ["a", {"x": MASK}], "count": 12345678, MASK: True,
        "through_hash": f"not a digest {MASK}"}


# -- properties: a generated Japanese number, written any way, leaves no digit behind -------------

SEPARATORS = [" ", "-", ".", "/", "(", ")", "・", "ー", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015",
              "\u2212", "－", "　", "．", "／", "\u3000", ",", "、", "，", "_", "~", "〜", "～"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e"]
CONTEXT = st.text(st.characters(blacklist_categories=("Nd", "No", "Nl", "Cs")).filter(
    lambda ch: not any(c.isdigit() for c in unicodedata.normalize("NFKC", ch)) and ch not in "〇一二三四五六七八九+＋(（"), max_size=12)


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(the number's digits, the number as someone wrote it)."""
    national = draw(st.sampled_from("123456789")) + draw(st.text("0123456789", min_size=8, max_size=9))
    international = draw(st.booleans())
    digits = ("81" + national) if international else ("0" + national)
    rest = national if international else "0" + national
    cuts = sorted(draw(st.sets(st.integers(1, len(rest) - 1), max_size=5)))
    groups = [rest[a:b] for a, b in zip([0, *cuts], [*cuts, len(rest)], strict=False)]
    out = ("+81" + draw(st.sampled_from(["", " ", "-", ") "]))) if international else ""
    if international and out.endswith(") "):
        out = "(" + out
    for i, group in enumerate(groups):
        if i:
            out += "".join(draw(st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=3)))
        for ch in group:
            if draw(st.booleans()):
                ch = chr(ord(ch) - ord("0") + ord("０"))  # full width
            out += ch + (draw(st.sampled_from(INVISIBLE)) if draw(st.integers(0, 9)) == 0 else "")
    return digits, out


def digits_in(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isdigit())


@settings(max_examples=3000, deadline=None)
@given(written_numbers(), CONTEXT, CONTEXT)
@example(("09087654321", "090-8765-4321"), "caller ", " was rude")
@example(("819087654321", "+81 90 8765 4321"), "", "")
@example(("8120121231", "+81-2012-12-31"), "", "")  # a date inside an international number
@example(("0120121234", "0120/12/1234"), "", "")
def test_no_digit_of_a_written_number_survives(number: tuple[str, str], before: str, after: str) -> None:
    digits, written = number
    assert digits_in(written) == digits
    clean = scrub(before + written + after)
    assert digits_in(clean) == "" and MASK in clean
    # Error texts quote what was typed with repr(): \u200b, \u3000... are read as the characters.
    # The escapes' own hex digits are not the number's: they go, read left to right so that an
    # escaped backslash before an "x" is not taken for the start of an escape.
    quoted = scrub(f"failed: no recording {before + written + after!r}")
    assert digits_in(re.sub(r"\\(\\|x..|u....|U........)", "", quoted)) == "" and MASK in quoted


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_scrub_never_fails_and_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once
