"""Derived keys: one per purpose, fixed for a master key, different between purposes and masters."""
from __future__ import annotations

import os

import pytest

from storage.keys import derive


def test_each_purpose_has_its_own_stable_key() -> None:
    master = os.urandom(32)
    seal, digest = derive(master, "audit-seal"), derive(master, "caller-digest")
    assert len(seal) == len(digest) == 32
    assert seal != digest and master not in (seal, digest)
    assert derive(master, "audit-seal") == seal
    assert derive(os.urandom(32), "audit-seal") != seal


def test_an_unknown_purpose_or_a_short_master_is_refused() -> None:
    with pytest.raises(ValueError):
        derive(os.urandom(32), "audio")
    with pytest.raises(ValueError):
        derive(b"short", "audit-seal")
