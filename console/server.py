"""``recorderd-console``: the console's HTTPS server (uvicorn), as the unit runs it.

HTTPS only (``console.tls_cert`` / ``console.tls_key``); uvicorn's own access log is off (it would
print query strings: a search's caller digits): the console logs method, route, status and time.

A client cannot hold the console: a connection whose request head has not fully arrived within
:data:`HEAD_DEADLINE` seconds is closed (uvicorn itself waits for ever, and every waiting connection
counts in ``limit_concurrency``: 200 half-sent requests made it answer 503 to everyone), and one
address holds at most :data:`PER_ADDRESS` connections (more are closed at once). X-Forwarded-For
and the like are not believed: the console has no proxy in front, the peer address is the client's.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from recorderd import version
from recorderd.config import Config, ConfigError, load

HEAD_DEADLINE = 10.0  # seconds for a request line and its headers, from its first byte (or the connection)
PER_ADDRESS = 20  # open connections from one client address; a browser opens about six


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head and a cap per client address."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        counts: dict[str, int] = self.server_state.__dict__.setdefault("console_per_address", {})
        address = self.client[0] if self.client else "-"
        self._address: str | None = None
        if counts.get(address, 0) >= PER_ADDRESS:
            transport.abort()  # no answer: one address does not get to hold the console
            return
        self._address = address
        counts[address] = counts.get(address, 0) + 1
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the first bytes of a new request: its head has a deadline
            self._arm_head()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection is done)
            self._disarm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        address = getattr(self, "_address", None)
        if address is not None:
            counts = self.server_state.__dict__.get("console_per_address", {})
            left = counts.get(address, 1) - 1
            if left > 0:
                counts[address] = left
            else:
                counts.pop(address, None)
            self._address = None
        super().connection_lost(exc)

    def _arm_head(self) -> None:
        if getattr(self, "_head_timer", None) is None:
            self._head_timer = self.loop.call_later(HEAD_DEADLINE, self._head_late)

    def _disarm_head(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.abort()


def uvicorn_config(app: Any, config: Config) -> uvicorn.Config:
    """uvicorn as the console runs: TLS, no access log of its own, no Server or Date header, the
    guarded protocol, and the peer address as the client's (no proxy headers believed)."""
    return uvicorn.Config(
        app, host=config["console.listen"], port=config["console.port"],
        ssl_certfile=config["console.tls_cert"], ssl_keyfile=config["console.tls_key"],
        access_log=False, log_config=None, server_header=False, date_header=False,
        timeout_keep_alive=5, limit_concurrency=200, h11_max_incomplete_event_size=16 * 1024,
        http=GuardedH11, proxy_headers=False, forwarded_allow_ips="",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recorderd-console", description="The recorder's web console (HTTPS).")
    parser.add_argument("--config", default="/etc/recorderd/recorderd.yaml", help="site config")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load(args.config, dids_optional=True)
    except (ConfigError, OSError) as exc:
        print(f"recorderd-console: {exc}", file=sys.stderr)
        return 2
    from .app import create_app

    app = create_app(config)
    server = uvicorn.Server(uvicorn_config(app, config))
    try:
        server.run()
    except OSError as exc:  # a port taken, a certificate that cannot be read
        print(f"recorderd-console: {exc}", file=sys.stderr)
        return 1
    return 0
