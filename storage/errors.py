"""What the store refuses with: one error family for every part of it (storage/store.py and its parts)."""
from __future__ import annotations


class StoreError(Exception):
    pass


class StoreNotInitialised(StoreError):
    pass


class IntegrityError(StoreError):
    pass
