"""RingingCalls: the designated calls not yet answered, per source of their INVITE, oldest first.

A flood of INVITEs that nobody answers must not fill the call table and lock genuine calls out.
The tracker bounds these dialogs apart from the answered ones: each source may hold
``per_source`` of them (its oldest makes room for its newest), and when the whole table is full
the oldest unanswered call of the source holding the most is dropped. An answered call (or one
recording early media) is never dropped for a new INVITE.

Every operation is O(1): the calls of a source sit in an insertion-ordered dict, and sources are
kept in buckets by how many unanswered calls they hold, so the largest is found without a scan.
A call that was answered or ended since it was added is removed when the tracker says so
(``discard``), or passed over when it reaches the front.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class RingingCalls(Generic[C]):
    def __init__(self, per_source: int) -> None:
        self.per_source = max(1, per_source)
        self._by_source: dict[bytes, dict[str, C]] = {}  # source -> Call-ID -> call, oldest first
        self._source_of: dict[str, bytes] = {}  # Call-ID -> source
        self._buckets: dict[int, dict[bytes, None]] = {}  # count -> sources holding that many
        self._top = 0  # the largest count held by a source

    def __len__(self) -> int:
        return len(self._source_of)

    def add(self, source: bytes, call_id: str, call: C) -> None:
        calls = self._by_source.setdefault(source, {})
        self._move(source, len(calls), len(calls) + 1)
        calls[call_id] = call
        self._source_of[call_id] = source

    def discard(self, call_id: str) -> None:
        """The call was answered, started recording, or ended: it is no longer a ringing one."""
        source = self._source_of.pop(call_id, None)
        if source is None:
            return
        calls = self._by_source[source]
        del calls[call_id]
        self._move(source, len(calls) + 1, len(calls))
        if not calls:
            del self._by_source[source]

    def count(self, source: bytes) -> int:
        return len(self._by_source.get(source, ()))

    def oldest_of(self, source: bytes, ringing: Callable[[C], bool]) -> C | None:
        """The oldest call of ``source`` still ringing (``ringing(call)``); the others met on the
        way are dropped from this registry."""
        calls = self._by_source.get(source)
        while calls:
            call_id, call = next(iter(calls.items()))
            if ringing(call):
                return call
            self.discard(call_id)
            calls = self._by_source.get(source)
        return None

    def oldest_of_largest(self, ringing: Callable[[C], bool]) -> C | None:
        """The oldest ringing call of the source that holds the most of them."""
        while self._top:
            source = next(iter(self._buckets[self._top]))
            call = self.oldest_of(source, ringing)
            if call is not None:
                return call
        return None

    def _move(self, source: bytes, old: int, new: int) -> None:
        if old:
            bucket = self._buckets[old]
            del bucket[source]
            if not bucket:
                del self._buckets[old]
                if self._top == old:
                    self._top = new  # counts move by one: the next largest is the new count
        if new:
            self._buckets.setdefault(new, {})[source] = None
            if new > self._top:
                self._top = new
