"""MediaMap: where the RTP of recorded calls is expected to arrive.

Keys are ``(address bytes, port)`` of the receiving side as its SDP announced it; the value is the
stream assembler of the direction that flows *into* that endpoint. An RTP packet finds its call
with one dict lookup on its destination; a packet with no entry is not ours and is dropped at once.
"""
from __future__ import annotations

import socket
from typing import Any

from .fast import fastpath

Endpoint = tuple[bytes, int]


def endpoint(address: str, port: int) -> Endpoint:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.inet_pton(family, address), port


class MediaMap:
    def __init__(self) -> None:
        self._streams: dict[Endpoint, Any] = {}
        self.get = self._streams.get  # the hot-path lookup
        # the same routes for the C fast path (IPv4 endpoints; it leaves IPv6 to the Python path)
        self.table = fastpath.FastPath() if fastpath is not None else None

    def __len__(self) -> int:
        return len(self._streams)

    def owner(self, key: Endpoint) -> Any:
        return self._streams.get(key)

    def register(self, key: Endpoint, stream: Any) -> Any:
        """Route ``key`` to ``stream``; returns the stream it replaces, if any."""
        previous = self._streams.get(key)
        self._streams[key] = stream
        if self.table is not None:
            self.table.set(key[0], key[1], stream)
        return previous

    def unregister(self, key: Endpoint, stream: Any) -> None:
        """Forget ``key`` if it still routes to ``stream`` (a newer call may have taken it)."""
        if self._streams.get(key) is stream:
            del self._streams[key]
            if self.table is not None:
                self.table.discard(key[0], key[1])
